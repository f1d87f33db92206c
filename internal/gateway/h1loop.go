package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/eventloop"
	"weir.dev/weir/internal/http1"
)

// loopServer serves the plaintext HTTP listeners on event loops (internal/eventloop),
// as nginx and HAProxy do: one goroutine per loop, raw non-blocking sockets, no
// goroutine, park or wake-up per connection or request, and upstream connections
// pooled per loop. A loop serves a request itself when it is an HTTP/1.1 request
// without a body (http1.ParseRequest) whose rule sends it to HTTP/1.1 backends; the
// request goes through the same routing, admission, upstream attempts, response
// processing and accounting as on net/http. At the first request it does not serve —
// a body, an upgrade, HTTP/1.0, a head over 4 KiB, anything malformed, a rule with an
// h2c backend — the loop hands the connection, with the bytes it has read, to the
// listener's net/http server, which serves it from then on.
type loopServer struct {
	g     *Gateway
	loops []*h1Loop
	wg    sync.WaitGroup
}

// maxH1Loops caps the event loops (one per P up to this).
const maxH1Loops = 8

func newLoopServer(g *Gateway) (*loopServer, error) {
	s := &loopServer{g: g}
	n := min(runtime.GOMAXPROCS(0), maxH1Loops)
	for range n {
		lp, err := eventloop.New()
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("gateway: %w", err)
		}
		hl := &h1Loop{s: s, lp: lp, scratch: make([]byte, 32<<10), conns: map[*loopConn]struct{}{},
			idle: map[netip.AddrPort][]*upConn{}}
		hl.bw = bufio.NewWriterSize(&hl.sink, 4<<10)
		hl.sweeper = eventloop.NewTimer(hl.sweep)
		lp.Do(func() { lp.Schedule(&hl.sweeper, lp.Now()+sweepEvery) })
		s.loops = append(s.loops, hl)
		s.wg.Go(func() {
			if err := lp.Run(hl.exit); err != nil {
				g.log.Error("gateway: event loop stopped", "err", err)
			}
		})
	}
	return s, nil
}

// stop closes every connection of every loop and waits for the loops to end.
func (s *loopServer) stop() {
	for _, hl := range s.loops {
		hl.lp.Stop()
	}
	s.wg.Wait()
}

// onLoops runs fn on every loop and waits for it (a loop that has exited is skipped).
func (s *loopServer) onLoops(fn func(hl *h1Loop)) {
	var wg sync.WaitGroup
	for _, hl := range s.loops {
		wg.Add(1)
		if !hl.lp.Do(func() { defer wg.Done(); fn(hl) }) {
			wg.Done()
		}
	}
	wg.Wait()
}

// loopListener is one plaintext listener on the loops.
type loopListener struct {
	s       *loopServer
	ln      net.Listener
	fd      int // a duplicate of the listener's socket, non-blocking
	handoff *handoffListener
	table   func() *table
	open    atomic.Int64 // connections on the loops
	closing atomic.Bool

	maxHeader     int
	headerTimeout time.Duration
	idleTimeout   time.Duration
}

// listen makes the loops accept on ln's socket; connections they do not serve go to
// handoff (served by net/http).
func (s *loopServer) listen(ln net.Listener, handoff *handoffListener, table func() *table) (*loopListener, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("gateway: event loops need a TCP listener, not %T", ln)
	}
	// A duplicate of the socket (non-blocking as the original: the flag is shared)
	// whose accepted sockets inherit TCP_NODELAY (the net package sets it per
	// connection).
	fd := -1
	rc, err := tl.SyscallConn()
	if err == nil {
		if cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
			err = cerr
		}
	}
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	if err != nil {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
		return nil, fmt.Errorf("gateway: listener socket: %w", err)
	}
	o := s.g.opts
	ll := &loopListener{s: s, ln: ln, fd: fd, handoff: handoff, table: table,
		maxHeader: o.MaxHeaderBytes, headerTimeout: o.ReadHeaderTimeout, idleTimeout: o.IdleTimeout}
	var errs []error
	var mu sync.Mutex
	s.onLoops(func(hl *h1Loop) {
		if err := hl.lp.Register(fd, &acceptor{ll: ll, hl: hl}, eventloop.ListenerEvents); err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	})
	if err := errors.Join(errs...); err != nil {
		ll.stopAccepting()
		return nil, fmt.Errorf("gateway: epoll_ctl listener: %w", err)
	}
	return ll, nil
}

// stopAccepting takes the listener off the loops and closes its socket (the
// connections stay).
func (ll *loopListener) stopAccepting() {
	if ll.closing.Swap(true) {
		return
	}
	ll.s.onLoops(func(hl *h1Loop) { _ = hl.lp.Unregister(ll.fd) })
	_ = unix.Close(ll.fd)
	_ = ll.ln.Close() // at once, so that the address may be opened again
}

// closeConns closes the listener's connections that wait for a request (all of them,
// cutting requests short, with all), marks the others to close after their response,
// and returns how many are left.
func (ll *loopListener) closeConns(all bool) int {
	ll.s.onLoops(func(hl *h1Loop) {
		for c := range hl.conns {
			if c.ll == ll {
				c.closeAfter = true
				if all || (c.x == nil && len(c.out) == 0) {
					c.close()
				}
			}
		}
	})
	return int(ll.open.Load())
}

// h1Loop is one event loop and what it owns.
type h1Loop struct {
	s       *loopServer
	lp      *eventloop.Loop
	scratch []byte // read buffer shared by the loop's sockets
	conns   map[*loopConn]struct{}
	idle    map[netip.AddrPort][]*upConn // kept-alive upstream connections by endpoint
	sink    appendWriter                 // what bw writes: a request being serialized
	bw      *bufio.Writer
	load    atomic.Int64 // connections it serves (read by the other loops)
	sweeper eventloop.Timer
	date    []byte // the Date header of second dateAt
	dateAt  int64
}

func (hl *h1Loop) dateHeader(now time.Time) []byte {
	if hl.dateAt != now.Unix() {
		hl.dateAt, hl.date = now.Unix(), now.UTC().AppendFormat(hl.date[:0], http.TimeFormat)
	}
	return hl.date
}

// exit closes what the loop owns when it stops.
func (hl *h1Loop) exit() {
	for c := range hl.conns {
		c.close()
	}
	for ap, list := range hl.idle {
		for _, u := range list {
			u.close()
		}
		delete(hl.idle, ap)
	}
}

// appendWriter collects what is written to it.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// acceptor is a listener's socket on one loop.
type acceptor struct {
	ll *loopListener
	hl *h1Loop
}

// acceptBatch bounds the connections one loop accepts per wake-up.
const acceptBatch = 64

func (a *acceptor) Ready(lp *eventloop.Loop, _ uint32) {
	ll, hl := a.ll, a.hl
	for range acceptBatch {
		fd, peer, err := eventloop.Accept(ll.fd)
		if err != nil {
			if err != unix.EAGAIN && err != unix.ECONNABORTED && err != unix.EINTR {
				hl.s.g.log.Debug("gateway: accept", "err", err)
			}
			return
		}
		if ll.closing.Load() {
			_ = eventloop.Close(fd)
			continue
		}
		// A new connection wakes one loop (EPOLLEXCLUSIVE), which would keep every
		// connection of a burst; each goes to the loop serving the fewest instead.
		to := hl
		for _, o := range hl.s.loops {
			if o.load.Load() < to.load.Load() {
				to = o
			}
		}
		ll.open.Add(1)
		to.load.Add(1)
		if to == hl {
			hl.adopt(ll, fd, peer)
		} else if !to.lp.Do(func() { to.adopt(ll, fd, peer) }) {
			to.load.Add(-1)
			ll.open.Add(-1)
			_ = eventloop.Close(fd)
		}
	}
}

// adopt starts serving an accepted connection (counted in ll.open and hl.load).
func (hl *h1Loop) adopt(ll *loopListener, fd int, peer netip.AddrPort) {
	c := &loopConn{hl: hl, ll: ll, fd: fd, remote: peer.String(), writable: true}
	c.timer = eventloop.NewTimer(c.timeout)
	x := &c.xs
	x.tryTimer = eventloop.NewTimer(x.tryTimeout)
	x.headTimer = eventloop.NewTimer(x.headTimeout)
	x.reqTimer = eventloop.NewTimer(x.requestTimeout)
	x.backoff = eventloop.NewTimer(x.backoffDone)
	if err := hl.lp.Register(fd, c, eventloop.EdgeEvents); err != nil {
		_ = eventloop.Close(fd)
		ll.open.Add(-1)
		hl.load.Add(-1)
		return
	}
	hl.conns[c] = struct{}{}
	hl.lp.Schedule(&c.timer, hl.lp.Now()+ll.headerTimeout)
}

// loopConn is one downstream connection on a loop.
type loopConn struct {
	hl       *h1Loop
	ll       *loopListener
	fd       int
	remote   string
	in       []byte // read, not yet used
	out      []byte // to write
	readable bool
	writable bool
	drain    bool // the client shut down: read until EOF, not only until a short read
	eof      bool
	closed   bool
	// closeAfter: close once the response in flight (or being written) is done.
	closeAfter bool
	served     bool // a request was answered: the idle timeout applies, not the header one
	serving    bool // inside next: a finished exchange leaves the next request to it
	// handOffAfter: the connection goes to net/http (for this reason) once c.out is
	// written.
	handOffAfter string
	headTimer    bool      // the timer is the header timeout, not the idle one
	x            *exchange // the request in flight (&xs), or nil
	xs           exchange
	// What each request reuses from the one before it (nothing holds a request or its
	// state once it is answered).
	reuse http1.RequestBuffers
	st    reqState
	timer eventloop.Timer // header or idle timeout while no request is in flight
	resp  localResponse
}

// maxLoopHead is the longest request head a loop parses (net/http's read buffer); a
// longer one goes to net/http.
const maxLoopHead = 4 << 10

// maxPendingOut is how much response a slow client may have waiting before the loop
// stops reading the backend.
const maxPendingOut = 256 << 10

func (c *loopConn) Ready(_ *eventloop.Loop, ev uint32) {
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.readable = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.drain = true // no edge will follow the end: read until it, not to a short read
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.writable = true
	}
	c.pump()
}

// pump writes what waits, reads what came and serves the requests it completes.
func (c *loopConn) pump() {
	if len(c.out) > 0 && c.writable && !c.flush() {
		return
	}
	if c.closed || c.handOffAfter != "" {
		return
	}
	hadEOF := c.eof
	if !c.readIn() {
		return
	}
	switch {
	case c.eof && !hadEOF && c.x != nil && !c.x.headSent:
		// The client went away (or half-closed) while its request ran, before its
		// answer began: net/http's server cancels the request then too. (Requests read
		// before the end of the stream are answered.)
		c.x.clientGone()
		c.close()
	case c.x != nil:
		// In flight: a half-closed client still reads its answers; next() closes the
		// connection after the last request it sent.
	case c.x == nil && len(c.out) == 0 && c.closeAfter:
		c.close()
	case c.x == nil:
		c.next() // at EOF, the requests read before it are still answered
	}
}

// readIn reads what the client sent, as much as the buffer allows (while a request
// is in flight only to notice the client going away; pipelined requests wait). It
// returns false when the connection failed and was closed; a clean end of the
// client's stream sets eof.
func (c *loopConn) readIn() bool {
	for c.readable && !c.eof && len(c.in) < maxLoopHead+len(c.hl.scratch) {
		n, err := eventloop.Read(c.fd, c.hl.scratch)
		switch {
		case err == unix.EAGAIN:
			c.readable = false
			return true
		case err != nil:
			c.close() // reset: nothing can be written either
			return false
		case n == 0:
			c.eof = true
			return true
		}
		c.in = append(c.in, c.hl.scratch[:n]...)
		if n < len(c.hl.scratch) && !c.drain {
			c.readable = false
		}
	}
	return true
}

// flush writes what waits; false when the connection failed (and was closed).
func (c *loopConn) flush() bool {
	for len(c.out) > 0 {
		n, err := eventloop.Write(c.fd, c.out)
		if err == unix.EAGAIN {
			c.writable = false
			return true
		}
		if err != nil {
			if c.x != nil {
				c.x.clientGone()
			}
			c.close()
			return false
		}
		if c.x != nil {
			c.x.outStart = max(c.x.outStart-n, 0)
		}
		if n == len(c.out) {
			c.out = c.out[:0]
			break
		}
		c.out = c.out[:copy(c.out, c.out[n:])]
	}
	if c.x != nil && c.x.paused {
		c.x.paused = false
		c.x.upPump() // may finish the exchange, and queue or write more
	}
	if c.closed || len(c.out) > 0 {
		return !c.closed
	}
	switch {
	case c.x != nil:
	case c.handOffAfter != "":
		c.handOff(c.handOffAfter) // what was queued before it is out
		return false
	case c.closeAfter:
		c.close()
		return false
	}
	return true
}

// next serves the requests waiting in c.in, one at a time.
func (c *loopConn) next() {
	if c.serving {
		return
	}
	c.serving = true
	defer func() { c.serving = false }()
	for c.x == nil && !c.closed && c.handOffAfter == "" {
		lp := c.hl.lp
		if c.closeAfter {
			if len(c.out) == 0 {
				c.close()
			}
			return
		}
		end, bad := http1.HeadEnd(c.in)
		if bad || (end == 0 && len(c.in) >= maxLoopHead) || end > maxLoopHead || end > c.ll.maxHeader {
			c.handOff("request")
			return
		}
		if end == 0 {
			if c.readable && !c.eof {
				// More came than the buffer took while a request was in flight.
				if !c.readIn() {
					return
				}
				if c.readable || c.eof || len(c.in) > 0 {
					continue
				}
			}
			if c.eof {
				// The client finished sending: close once the answers are out.
				c.closeAfter = true
				if len(c.out) == 0 {
					c.close()
				}
				return
			}
			// Waiting: for a request (the idle timeout, or the header one for the
			// first), or for the rest of a head (the header timeout from its first
			// byte: slowloris).
			switch {
			case len(c.in) == 0 && c.served:
				lp.Schedule(&c.timer, lp.Now()+c.ll.idleTimeout)
				c.headTimer = false
			case len(c.in) == 0 || !c.headTimer || !c.timer.Scheduled():
				lp.Schedule(&c.timer, lp.Now()+c.ll.headerTimeout)
				c.headTimer = true
			}
			return
		}
		sr, ok := http1.ParseRequest(c.in[:end], c.remote, &c.reuse)
		if !ok || sr.Req.ProtoMinor != 1 {
			c.handOff("request")
			return
		}
		if !c.serve(sr, end) {
			return
		}
	}
}

// serve starts one request whose head is c.in[:end]. It returns false when the
// connection went to net/http.
func (c *loopConn) serve(sr http1.Request, end int) bool {
	g := c.hl.s.g
	r := sr.Req
	start := c.hl.lp.Time()
	t := c.ll.table()
	w := &c.resp
	w.reset()
	st, m := g.route(g.ctx, w, r, t, start, &c.st)
	if st != nil && !st.rule.loopable {
		c.handOff("route")
		return false
	}
	c.in = c.in[:copy(c.in, c.in[end:])]
	c.served = true
	c.hl.lp.Cancel(&c.timer)
	if sr.WantsClose || c.ll.closing.Load() {
		c.closeAfter = true
	}
	isHEAD := r.Method == http.MethodHead
	if st == nil { // no route: answered
		c.writeLocal(w, isHEAD)
		return true
	}
	st.sw.ResponseWriter = w
	br := g.admit(&st.sw, r, m, st)
	if br == nil {
		c.writeLocal(w, isHEAD)
		st.sw.code = w.status()
		g.finish(r, st, start)
		return true
	}
	x := &c.xs // the connection's one exchange, made anew (its timers and buffer kept)
	*x = exchange{c: c, r: r, st: st, a: &st.a, cl: br.cl, start: start, isHEAD: isHEAD, req: x.req[:0],
		tryTimer: x.tryTimer, reqTimer: x.reqTimer, backoff: x.backoff, headTimer: x.headTimer}
	c.x = x
	x.startRequest()
	return true
}

// writeLocal queues an answer the gateway made itself.
func (c *loopConn) writeLocal(w *localResponse, isHEAD bool) {
	c.out = w.appendTo(c.out, isHEAD, c.closeAfter, c.hl.dateHeader(time.Now()))
	if c.writable {
		c.flush()
	}
}

// timeout ends a connection that waited too long for a request head. The wait
// starts again while an answer is still being written (as net/http's idle timeout
// starts after the response).
func (c *loopConn) timeout(lp *eventloop.Loop) {
	switch {
	case c.x != nil:
	case len(c.out) > 0:
		lp.Schedule(&c.timer, lp.Now()+c.ll.idleTimeout)
	default:
		c.close()
	}
}

// handOff gives the connection, with what it has read, to net/http, once what is
// queued for it (the end of an earlier answer) is written.
func (c *loopConn) handOff(reason string) {
	if len(c.out) > 0 {
		c.handOffAfter = reason
		return
	}
	c.hl.s.g.metrics.handoffs.WithLabelValues(reason).Inc()
	pre := append([]byte(nil), c.in...)
	fd := c.fd
	c.detach()
	_ = c.hl.lp.Unregister(fd)
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		c.hl.s.g.log.Debug("gateway: hand-off", "err", err)
		return
	}
	if len(pre) > 0 {
		nc = &prefixConn{Conn: nc, pre: pre}
	}
	c.ll.handoff.push(nc)
}

// prefixConn reads pre before the connection.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite lets net/http half-close after an error answer, as on a *net.TCPConn.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// handoffListener is the net.Listener net/http serves on a listener the loops accept
// on: the connections they hand over.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// push hands c to net/http, or closes it when the server is closed.
func (l *handoffListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// shutdown stops accepting, closes idle connections at once and the others when their
// response is done, waits for them until ctx ends and then closes what is left; srv
// (the handed-off connections) shuts down alongside.
func (ll *loopListener) shutdown(ctx context.Context, srv *http.Server) error {
	ll.stopAccepting()
	var srvErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		if srvErr = srv.Shutdown(ctx); srvErr != nil {
			_ = srv.Close()
		}
	}()
	wait := time.Millisecond
	for ll.closeConns(false) > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			ll.closeConns(true)
			<-done
			return errors.Join(ctx.Err(), srvErr)
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
	<-done
	return srvErr
}

// detach takes the connection off its loop's books (its descriptor stays open).
func (c *loopConn) detach() {
	c.closed = true
	c.hl.lp.Cancel(&c.timer)
	delete(c.hl.conns, c)
	c.ll.open.Add(-1)
	c.hl.load.Add(-1)
}

func (c *loopConn) close() {
	if c.closed {
		return
	}
	if c.x != nil {
		c.x.clientGone()
	}
	c.detach()
	c.hl.lp.Forget(c.fd)
	_ = eventloop.Close(c.fd)
}

// exchange is the loops' side of one request in flight from a loop connection to a
// backend: the bytes, timers and upstream connection. The proxy core's state (st,
// with its attempts a) holds and gives back every counter.
type exchange struct {
	c      *loopConn
	r      *http.Request
	st     *reqState
	a      *attempts // &st.a
	cl     *cluster
	start  time.Time
	isHEAD bool
	req    []byte // the upstream request, for every try
	up     *upConn

	tryTimer, reqTimer, backoff eventloop.Timer
	headTimer                   eventloop.Timer // the rule's ResponseTimeout, from the request written to the response head

	headSent bool // the response head went downstream
	outStart int  // where in c.out this response starts (earlier answers before it)
	code     int
	framing  http1.Framing
	left     int64 // http1.BodyLength: bytes still to come
	chunks   http1.ChunkScanner
	reusable bool // the upstream connection may serve another request
	paused   bool // the client's backlog is full: the backend is not read
	done     bool
}

// startRequest serializes the upstream request and makes the first try.
func (x *exchange) startRequest() {
	g, hl := x.c.hl.s.g, x.c.hl
	g.prepareH1(x.r, x.st)
	hl.sink.b = hl.sink.b[:0]
	hl.bw.Reset(&hl.sink)
	err := http1.WriteRequest(hl.bw, x.r)
	if err == nil {
		err = hl.bw.Flush()
	}
	x.req = append(x.req[:0], hl.sink.b...)
	x.a.init(g.up, x.st, x.r.Method, true, false, x.start)
	if err != nil {
		x.fail(err)
		return
	}
	if d := x.st.rule.rule.RequestTimeout; d > 0 {
		hl.lp.Schedule(&x.reqTimer, hl.lp.Now()+d)
	}
	x.try()
}

// try sends the request to the next endpoint.
func (x *exchange) try() {
	hl := x.c.hl
	ep, err := x.a.begin()
	if err != nil {
		x.fail(err)
		return
	}
	if d := x.a.perTry(); d > 0 {
		hl.lp.Schedule(&x.tryTimer, hl.lp.Now()+d)
	}
	x.reusable = true
	u, err := hl.upstream(ep, x.cl)
	switch {
	case errors.Is(err, errOverflow): // the connection breaker: not the endpoint's failure
		x.fail(err)
	case err != nil:
		x.tryFailed(err, false)
	default:
		x.attach(u)
	}
}

// attach sends the request on u.
func (x *exchange) attach(u *upConn) {
	u.x, x.up = x, u
	u.sent, u.in = 0, u.in[:0]
	if !u.connecting {
		u.send()
	}
}

// upPump reads the backend while the client keeps up.
func (x *exchange) upPump() {
	if u := x.up; u != nil && !x.paused {
		u.pump()
	}
}

// onHead handles a response head; rest is what followed it.
func (x *exchange) onHead(u *upConn, end int) {
	if !x.st.editsResponse() {
		if h, ok := http1.ScanResponse(u.in[:end], x.isHEAD); ok && h.Code >= 200 {
			x.respond(u, end, h, nil)
			return
		}
	}
	resp, framing, n, ok := http1.ParseResponse(u.in[:end], x.isHEAD)
	if !ok {
		x.tryFailed(errors.New("malformed HTTP response from backend"), false)
		return
	}
	if resp.StatusCode < 200 {
		u.in = u.in[:copy(u.in, u.in[end:])]
		if resp.StatusCode == http.StatusSwitchingProtocols {
			x.tryFailed(fmt.Errorf("backend tried to switch protocol %q when none was requested", resp.Header.Get("Upgrade")), false)
			return
		}
		u.informational++
		if u.informational > http1.MaxInformational {
			x.tryFailed(errors.New("too many informational responses"), false)
			return
		}
		u.onData() // skipped, as http.Transport does
		return
	}
	x.respond(u, end, http1.ResponseHead{Code: resp.StatusCode, Framing: framing, Length: n, Close: resp.Close}, resp)
}

// respond passes on a response head (u.in[:end], with h what it says): relayed line
// by line, or rebuilt from resp when the response is edited (resp not nil). A status
// the retry policy retries goes to the next try instead.
func (x *exchange) respond(u *upConn, end int, h http1.ResponseHead, resp *http.Response) {
	hl := x.c.hl
	if x.a.answered(h.Code, false) {
		// Retried: this connection is dropped rather than drained.
		hl.lp.Cancel(&x.tryTimer)
		x.detachUp(false)
		x.retry()
		return
	}
	hl.lp.Cancel(&x.headTimer)
	x.code = h.Code
	x.framing, x.left = h.Framing, h.Length
	if h.Close || x.r.Close {
		x.reusable = false
	}
	c := x.c
	if h.Framing == http1.BodyUntilClose {
		c.closeAfter = true
	}
	date := c.hl.dateHeader(time.Now())
	x.outStart = len(c.out)
	if resp != nil {
		removeHopByHop(resp.Header)
		hl.s.g.applyResponse(resp, x.st)
		c.out = appendResponseHead(c.out, resp, h.Framing, c.closeAfter, date)
	} else {
		c.out = http1.AppendRelayedHead(c.out, u.in[:end], h, c.closeAfter, date)
	}
	x.headSent = true
	x.st.sw.code = x.code
	if h.Framing == http1.BodyNone {
		x.complete()
		return
	}
	rest := u.in[end:] // body() copies it before anything may reuse the buffer
	u.in = u.in[:0]
	x.body(rest)
}

// body passes response body bytes on.
func (x *exchange) body(p []byte) {
	c := x.c
	switch x.framing {
	case http1.BodyLength:
		take := int64(len(p))
		if take > x.left {
			take = x.left
			x.reusable = false // more than announced
		}
		c.out = append(c.out, p[:take]...)
		x.left -= take
		if x.left == 0 {
			x.complete()
			return
		}
	case http1.BodyChunked:
		n, end, err := x.chunks.Scan(p)
		if err != nil {
			x.abort(err)
			return
		}
		c.out = append(c.out, p[:n]...)
		if end {
			if n < len(p) {
				x.reusable = false
			}
			x.complete()
			return
		}
	case http1.BodyUntilClose:
		c.out = append(c.out, p...)
	}
	if c.writable && !c.flush() {
		return
	}
	if len(c.out) > maxPendingOut {
		x.paused = true
	}
}

// complete ends the exchange once the whole response is on its way.
func (x *exchange) complete() {
	c := x.c
	x.stop()
	x.a.end()
	x.detachUp(x.reusable)
	x.finish()
	if c.writable && !c.flush() {
		return
	}
	if !c.closed {
		c.next()
	}
}

// stop ends the exchange's timers: it is over.
func (x *exchange) stop() {
	lp := x.c.hl.lp
	x.done = true
	lp.Cancel(&x.tryTimer)
	lp.Cancel(&x.reqTimer)
	lp.Cancel(&x.backoff)
	lp.Cancel(&x.headTimer)
}

// finish hands the exchange to the core's finish, which gives back what it holds.
func (x *exchange) finish() {
	x.c.x = nil
	x.c.hl.s.g.finish(x.r, x.st, x.start)
}

// detachUp ends the upstream connection's part: back to the pool or closed.
func (x *exchange) detachUp(keep bool) {
	u := x.up
	if u == nil {
		return
	}
	x.up, u.x = nil, nil
	x.c.hl.lp.Cancel(&x.headTimer)
	if keep && !u.eof {
		x.c.hl.putIdle(u)
	} else {
		u.close()
	}
}

// tryFailed ends a try that got no response: retried, or answered with an error.
func (x *exchange) tryFailed(err error, timedOut bool) {
	hl := x.c.hl
	hl.lp.Cancel(&x.tryTimer)
	x.detachUp(false)
	if x.a.failed(err, timedOut, false) {
		x.retry()
		return
	}
	x.fail(err)
}

// retry waits the backoff and tries the next endpoint.
func (x *exchange) retry() {
	hl := x.c.hl
	x.a.backoff(true)
	hl.lp.Schedule(&x.backoff, hl.lp.Now()+x.a.backoffDelay())
}

// fail answers a request that got no response, as proxyError does.
func (x *exchange) fail(err error) {
	c := x.c
	x.stop()
	x.detachUp(false)
	w := &c.resp
	w.reset()
	c.hl.s.g.answerError(w, x.r, x.st, err)
	x.st.sw.code = w.status()
	x.finish()
	c.writeLocal(w, x.isHEAD)
	if !c.closed {
		c.next()
	}
}

// abort ends an exchange whose response was cut short: the client sees its
// connection close, as net/http's server does after http.ErrAbortHandler, once the
// answers queued before this one are written.
func (x *exchange) abort(err error) {
	c := x.c
	c.hl.s.g.log.Debug("gateway: response body copy failed", "path", x.r.URL.Path, "err", err)
	x.stop()
	x.detachUp(false)
	keep := 0
	if x.headSent {
		keep = x.outStart // 0 when part of this answer is already out
	}
	x.finish()
	c.out = c.out[:keep]
	c.closeAfter = true
	if len(c.out) == 0 {
		c.close()
	} else if c.writable {
		c.flush()
	}
}

// clientGone ends the exchange of a client that went away (499, as the goroutine
// paths record a cancelled request).
func (x *exchange) clientGone() {
	if x.done {
		return
	}
	x.stop()
	x.detachUp(false)
	if !x.headSent {
		x.st.sw.code = 499
	}
	x.finish()
}

// backoffDone: the wait before a retry is over.
func (x *exchange) backoffDone(*eventloop.Loop) {
	x.a.backoff(false)
	x.try()
}

// tryTimeout: the try's own timeout passed.
func (x *exchange) tryTimeout(*eventloop.Loop) {
	if x.headSent {
		x.abort(context.DeadlineExceeded)
		return
	}
	x.tryFailed(context.DeadlineExceeded, true)
}

// headTimeout: the response head did not come within the rule's ResponseTimeout of
// the request being written: the try failed (504, or a retry).
func (x *exchange) headTimeout(*eventloop.Loop) {
	if x.up != nil && !x.headSent {
		x.tryFailed(context.DeadlineExceeded, true)
	}
}

// requestTimeout: the rule's request timeout passed.
func (x *exchange) requestTimeout(*eventloop.Loop) {
	if x.headSent {
		x.abort(context.DeadlineExceeded)
		return
	}
	x.fail(context.DeadlineExceeded)
}

// upConn is one upstream connection of a loop.
type upConn struct {
	hl            *h1Loop
	cl            *cluster // whose connection count it is in
	ap            netip.AddrPort
	fd            int
	x             *exchange // the request it carries; nil while idle
	in            []byte
	sent          int
	connecting    bool
	reused        bool
	idle          bool // in the loop's pool
	readable      bool
	drain         bool
	eof           bool
	closed        bool
	informational int
	idleSince     time.Duration
}

// upstreamIdleTimeout closes kept-alive upstream connections unused this long.
const upstreamIdleTimeout = 90 * time.Second

// maxIdlePerEndpoint bounds the kept-alive connections to one endpoint per loop.
const maxIdlePerEndpoint = 1024

// upstream returns a kept-alive connection to ep, or dials one (counted against the
// cluster's maxConnections: errOverflow).
func (hl *h1Loop) upstream(ep *endpoint, cl *cluster) (*upConn, error) {
	now := hl.lp.Now()
	list := hl.idle[ep.ap]
	for len(list) > 0 {
		u := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		hl.idle[ep.ap] = list
		u.idle = false
		u.cl.idleConns.Add(-1)
		if now-u.idleSince < upstreamIdleTimeout && !u.eof {
			u.reused = true
			return u, nil
		}
		u.close()
	}
	if !cl.takeConn() {
		// Kept-alive connections count against maxConnections, as in Envoy, but they
		// sit in per-loop pools: one idle on this loop or another gives its slot up.
		if !hl.closeIdleOf(cl) {
			if cl.idleConns.Load() == 0 {
				return nil, errOverflow
			}
			for _, o := range hl.s.loops {
				if o != hl {
					o.lp.Do(func() { o.closeIdleOf(cl) })
				}
			}
		}
		cl.conns.Add(1) // the slot the idle connection gives up (at once, or soon)
	}
	fd, err := eventloop.Dial(ep.ap)
	if err != nil {
		cl.conns.Add(-1)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ep.ap), Err: err}
	}
	u := &upConn{hl: hl, cl: cl, ap: ep.ap, fd: fd, connecting: true}
	if err := hl.lp.Register(fd, u, eventloop.EdgeEvents); err != nil {
		_ = eventloop.Close(fd)
		cl.conns.Add(-1)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ep.ap), Err: err}
	}
	return u, nil
}

func (hl *h1Loop) putIdle(u *upConn) {
	list := hl.idle[u.ap]
	if len(list) >= maxIdlePerEndpoint {
		u.close()
		return
	}
	u.idleSince = hl.lp.Now()
	u.informational = 0
	u.idle = true
	u.cl.idleConns.Add(1)
	hl.idle[u.ap] = append(list, u)
}

// closeIdleOf closes one kept-alive connection of cl, if the loop has one.
func (hl *h1Loop) closeIdleOf(cl *cluster) bool {
	for _, list := range hl.idle {
		for _, u := range list {
			if u.cl == cl {
				hl.dropIdle(u)
				return true
			}
		}
	}
	return false
}

// sweepEvery is how often a loop closes the kept-alive connections idle longer than
// upstreamIdleTimeout.
const sweepEvery = 15 * time.Second

// sweep closes the connections idle too long (the oldest are first in each list).
func (hl *h1Loop) sweep(lp *eventloop.Loop) {
	now := lp.Now()
	for ap, list := range hl.idle {
		n := 0
		for n < len(list) && now-list[n].idleSince >= upstreamIdleTimeout {
			n++
		}
		for _, u := range list[:n] {
			u.close()
		}
		if n == len(list) {
			delete(hl.idle, ap)
		} else if n > 0 {
			hl.idle[ap] = append(list[:0], list[n:]...)
		}
	}
	lp.Schedule(&hl.sweeper, now+sweepEvery)
}

func (u *upConn) Ready(_ *eventloop.Loop, ev uint32) {
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		u.readable = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		u.drain = true // read until EOF, not only until a short read
	}
	if u.x == nil {
		// Idle: the backend closed it (or sent what nobody asked for).
		if u.readable {
			u.eof = true
			u.hl.dropIdle(u)
		}
		return
	}
	if u.connecting {
		if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			err := eventloop.SocketError(u.fd)
			if err == nil {
				err = unix.ECONNREFUSED
			}
			u.x.tryFailed(&net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(u.ap), Err: err}, false)
			return
		}
		if ev&unix.EPOLLOUT == 0 {
			return
		}
		u.connecting = false
		u.send()
		return
	}
	if ev&unix.EPOLLOUT != 0 && u.sent < len(u.x.req) {
		u.send()
		return
	}
	u.x.upPump()
}

// dropIdle closes an idle connection and takes it out of the pool.
func (hl *h1Loop) dropIdle(u *upConn) {
	list := hl.idle[u.ap]
	for i, v := range list {
		if v == u {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			hl.idle[u.ap] = list[:len(list)-1]
			break
		}
	}
	u.close()
}

// send writes the request (the rest of it, after a short write).
func (u *upConn) send() {
	x := u.x
	for u.sent < len(x.req) {
		n, err := eventloop.Write(u.fd, x.req[u.sent:])
		if err == unix.EAGAIN {
			return // EPOLLOUT resumes
		}
		if err != nil {
			u.failed(err)
			return
		}
		u.sent += n
	}
	if d := x.st.rule.rule.ResponseTimeout; d > 0 && !x.headTimer.Scheduled() {
		u.hl.lp.Schedule(&x.headTimer, u.hl.lp.Now()+d)
	}
	u.pump()
}

// failed ends a try on a connection error. A kept-alive connection that fails
// before any answer may have been closed by the backend while idle: the request goes
// again on a new connection, outside the retry policy but counted as a try, when it
// may safely run twice (replayable: nothing of it was written, or it is idempotent),
// as http.Transport does.
func (u *upConn) failed(err error) {
	x := u.x
	if u.reused && len(u.in) == 0 && !x.headSent && (u.sent == 0 || replayable(x.r)) {
		x.detachUp(false)
		x.a.replayed()
		nu, derr := u.hl.upstream(x.a.ep, x.cl)
		if derr == nil {
			x.attach(nu)
			return
		}
		if errors.Is(derr, errOverflow) {
			x.fail(derr)
			return
		}
		err = derr
	}
	if x.headSent {
		x.abort(err)
		return
	}
	x.tryFailed(err, false)
}

// pump reads the response.
func (u *upConn) pump() {
	x := u.x
	for x != nil && u.x == x && u.readable && !x.paused && !x.done {
		n, err := eventloop.Read(u.fd, u.hl.scratch)
		if err == unix.EAGAIN {
			u.readable = false
			return
		}
		if err != nil {
			u.eof = true
			u.failed(err)
			return
		}
		if n == 0 {
			u.eof = true
			switch {
			case x.headSent && x.framing == http1.BodyUntilClose:
				x.reusable = false
				x.complete()
			case x.headSent:
				x.abort(io.ErrUnexpectedEOF)
			default:
				u.failed(io.ErrUnexpectedEOF)
			}
			return
		}
		if n < len(u.hl.scratch) && !u.drain {
			u.readable = false
		}
		data := u.hl.scratch[:n]
		if x.headSent {
			x.body(data)
			continue
		}
		u.in = append(u.in, data...)
		u.onData()
	}
}

// onData looks for a response head in what was read.
func (u *upConn) onData() {
	x := u.x
	end := http1.LineHeadEnd(u.in) // bare LF taken, as net/http's client does
	switch {
	case end > http1.MaxResponseHead || (end == 0 && len(u.in) > http1.MaxResponseHead):
		x.tryFailed(errors.New("backend response head too large"), false)
	case end > 0:
		x.onHead(u, end)
	}
}

func (u *upConn) close() {
	if u.closed {
		return
	}
	u.closed = true
	if u.idle {
		u.idle = false
		u.cl.idleConns.Add(-1)
	}
	u.hl.lp.Forget(u.fd)
	_ = eventloop.Close(u.fd)
	u.cl.conns.Add(-1)
}

// localResponse is the http.ResponseWriter of the answers a loop makes itself (no
// route, rate limited, redirects, CORS preflights, breaker overflow, upstream errors).
type localResponse struct {
	header http.Header
	code   int
	body   []byte
}

func (w *localResponse) reset() {
	if w.header == nil {
		w.header = http.Header{}
	} else {
		clear(w.header)
	}
	w.code, w.body = 0, w.body[:0]
}

func (w *localResponse) Header() http.Header { return w.header }

func (w *localResponse) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *localResponse) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

func (w *localResponse) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// appendTo serializes the answer as net/http's server would send it.
func (w *localResponse) appendTo(b []byte, isHEAD, closeAfter bool, date []byte) []byte {
	h, code := w.header, w.status()
	delete(h, "Transfer-Encoding")
	delete(h, "Connection")
	bodyOK := http1.BodyAllowedForStatus(code)
	if bodyOK {
		if _, ok := h["Content-Type"]; !ok && len(w.body) > 0 {
			h["Content-Type"] = []string{http.DetectContentType(w.body)}
		}
		h["Content-Length"] = []string{strconv.Itoa(len(w.body))}
	}
	b = appendResponseHead(b, &http.Response{StatusCode: code, Header: h}, http1.BodyLength, closeAfter, date)
	if bodyOK && !isHEAD {
		b = append(b, w.body...)
	}
	return b
}

// appendResponseHead serializes a backend's response head for the client: its
// headers (hop-by-hop ones already removed), the framing weir relays it with, Date
// when the backend gave none, and Connection: close when the connection ends after it.
func appendResponseHead(b []byte, resp *http.Response, framing http1.Framing, closeAfter bool, date []byte) []byte {
	b = http1.AppendStatusLine(b, resp.StatusCode)
	for k, vs := range resp.Header {
		if resp.StatusCode == http.StatusNotModified && (k == "Content-Length" || k == "Content-Type") {
			continue // as net/http's server
		}
		if k == "Content-Length" && (framing == http1.BodyChunked || !http1.BodyAllowedForStatus(resp.StatusCode)) {
			continue
		}
		b = http1.AppendHeaderLines(b, k, vs)
	}
	if framing == http1.BodyChunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
		if len(resp.Trailer) > 0 {
			first := true
			b = append(b, "Trailer: "...)
			for k := range resp.Trailer {
				if !first {
					b = append(b, ", "...)
				}
				first = false
				b = append(b, k...)
			}
			b = append(b, "\r\n"...)
		}
	}
	_, hasDate := resp.Header["Date"]
	return http1.AppendHeadEnd(b, hasDate, date, closeAfter)
}

// editsResponse reports whether the response's head is changed on its way: response
// header filters, CORS, a session cookie.
func (st *reqState) editsResponse() bool {
	return len(st.respHdr) > 0 || st.origin != "" || st.rule.rule.Session != nil
}
