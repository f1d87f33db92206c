package userspace

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/eventloop"
	"weir.dev/weir/internal/model"
)

// listenTCP opens a non-blocking listening socket on ap for the event loops. Errors
// read as the net package's ("listen tcp4 192.0.2.10:80: bind: cannot assign
// requested address") and wrap the errno.
func listenTCP(network string, ap netip.AddrPort) (int, error) {
	opErr := func(call string, err error) error {
		return &net.OpError{Op: "listen", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: os.NewSyscallError(call, err)}
	}
	family := unix.AF_INET
	if ap.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, opErr("socket", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		_ = unix.Close(fd)
		return -1, opErr("setsockopt", err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			_ = unix.Close(fd)
			return -1, opErr("setsockopt", err)
		}
	}
	// Accepted sockets inherit TCP_NODELAY: one setsockopt per listener, not per
	// connection.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		_ = unix.Close(fd)
		return -1, opErr("setsockopt", err)
	}
	if err := unix.Bind(fd, sockaddrOf(ap)); err != nil {
		_ = unix.Close(fd)
		return -1, opErr("bind", err)
	}
	// The kernel caps the backlog at net.core.somaxconn.
	if err := unix.Listen(fd, 65535); err != nil {
		_ = unix.Close(fd)
		return -1, opErr("listen", err)
	}
	return fd, nil
}

func sockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	a := ap.Addr()
	if a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
}

// acceptor is a listener registered with one loop: the loop's handler for it.
type acceptor struct {
	l  *listener
	lp *tcpLoop
}

// addTo makes lp accept on the listener. It runs on lp.
func (l *listener) addTo(lp *tcpLoop) { (&acceptor{l: l, lp: lp}).register() }

// register adds the listening socket to the loop (level-triggered, so that a loop
// that stopped after acceptBatch connections is told again; exclusive, so that a new
// connection wakes one loop).
func (a *acceptor) register() {
	if err := a.lp.el.Register(a.l.fd, a, eventloop.ListenerEvents); err != nil {
		a.l.p.log.Error("epoll_ctl listener", "frontend", a.l.key.String(), "err", err)
		return
	}
	a.lp.acceptors[a.l] = a
}

// removeFrom makes lp stop accepting on the listener. It runs on lp.
func (l *listener) removeFrom(lp *tcpLoop) {
	if lp.acceptors[l] != nil {
		delete(lp.acceptors, l)
		_ = lp.el.Unregister(l.fd)
	}
	lp.retry = slices.DeleteFunc(lp.retry, func(a *acceptor) bool { return a.l == l })
}

// Ready accepts new connections.
func (a *acceptor) Ready(*eventloop.Loop, uint32) { a.accept() }

func (a *acceptor) accept() {
	l, lp := a.l, a.lp
	for range acceptBatch {
		// Not unix.Accept4, which asks for SO_PROTOCOL of every IPv4 connection (for
		// L2TP): a getsockopt per connection.
		fd, client, err := eventloop.Accept(l.fd)
		if err == nil {
			l.accepted(lp, fd, client)
			continue
		}
		switch err {
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED, unix.EPERM, unix.EPROTO, unix.ENETDOWN, unix.ENOPROTOOPT,
			unix.EHOSTDOWN, unix.ENONET, unix.EHOSTUNREACH, unix.EOPNOTSUPP, unix.ENETUNREACH:
			continue // that connection failed (accept(2)): take the next
		}
		// Out of descriptors or memory, or worse: stop accepting on this loop for a
		// while (level-triggered, the pending connection would be reported at once).
		l.p.log.Warn("accept", "frontend", l.key.String(), "err", err, "retry_in", acceptRetry)
		l.removeFrom(lp)
		lp.retry = append(lp.retry, a)
		lp.el.Schedule(&lp.retryTimer, lp.now()+acceptRetry)
		return
	}
}

// accepted starts serving one connection by the listener's target: forwarded to an
// endpoint, reset (Reject) or held (Drop, source range).
func (l *listener) accepted(lp *tcpLoop, fd int, client netip.AddrPort) {
	st := l.state.Load()
	t, m := l.target(st, client.Addr()), st.metrics
	l.p.open.Add(1)
	c := &tcpConn{lp: lp, t: t, m: m, client: side{fd: fd}, server: side{fd: -1}, k: -1}
	c.timer = eventloop.NewTimer(func(*eventloop.Loop) { c.timeout() })
	c.client.c, c.server.c = c, c
	c.client.writable = true
	c.up = dir{src: &c.client, dst: &c.server}
	c.down = dir{src: &c.server, dst: &c.client}
	lp.conns[c] = struct{}{}

	if !st.spec.allowed(client.Addr()) {
		m.sourceRange.Inc()
		c.hold()
		return
	}
	switch t.verdict {
	case model.Reject:
		m.reject.Inc()
		c.reset()
		return
	case model.Drop:
		m.drop.Inc()
		c.hold()
		return
	}
	if err := lp.el.Register(fd, &c.client, eventloop.EdgeEvents); err != nil {
		l.p.log.Error("epoll_ctl", "frontend", l.key.String(), "err", err)
		c.reset()
		return
	}
	c.clientAddr = client
	c.first = t.first(client, l.key.addr, time.Now())
	c.attempts = min(len(t.backends), maxAttempts)
	c.connect()
}

type connState uint8

const (
	accepted   connState = iota // choosing a backend
	holding                     // Drop: no data, reset at the connect timeout
	connecting                  // connect in flight to backend k
	established
	closed
)

// tcpConn is one accepted connection, owned by the loop that accepted it.
type tcpConn struct {
	lp         *tcpLoop
	t          *target
	m          *frontendMetrics
	state      connState
	clientAddr netip.AddrPort

	client, server side
	up, down       dir // client→server, server→client

	first, attempts, attempt int // connect retries over t.backends
	k                        int // the backend, -1 before the first connect
	started                  time.Time

	last  time.Duration   // loop time of the last read that returned data, either direction
	timer eventloop.Timer // connect timeout, hold end or the next idle check
	rst   bool            // close the client with a reset
}

// side is one socket of a connection and what its last events said.
type side struct {
	c        *tcpConn
	fd       int
	readable bool // data or EOF may be waiting
	writable bool // the send buffer may have room
	drain    bool // the peer shut down: read until EOF, not only until a short read
}

// dir is one direction of a connection.
type dir struct {
	src, dst *side
	buf      *[copyBufferSize]byte // bytes read but not yet written: buf[off:end]
	off, end int
	splice   bool   // bulk mode: src → pipe → dst
	pipe     [2]int // read end, write end; 0 until the first splice
	inPipe   int
	eof      bool // src reached EOF
	done     bool // EOF passed on (or the whole connection is closing)
	bytes    int64
}

// empty reports whether d holds no bytes read but not yet written.
func (d *dir) empty() bool { return d.off == d.end && d.inPipe == 0 }

// copyBufferSize is the loop's read buffer: a read that fills it switches its direction
// to splice.
const copyBufferSize = 16 << 10

// maxSplice is how much one splice(2) moves; pipes are sized to match.
const maxSplice = 1 << 20

var errConnectTimeout = errors.New("connect timeout")

// Ready records what the events say and moves the connection on.
func (s *side) Ready(_ *eventloop.Loop, ev uint32) {
	c := s.c
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.readable = true // a read reports the error or EOF
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.drain = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.writable = true
	}
	switch c.state {
	case accepted, closed:
	case holding:
		c.discard()
	case connecting:
		if s != &c.server {
			return // the client's bytes wait for the connection
		}
		if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			err := eventloop.SocketError(s.fd)
			if err == nil {
				err = unix.ECONNREFUSED
			}
			c.retry(err)
			return
		}
		if ev&unix.EPOLLOUT != 0 {
			c.established()
		}
	case established:
		c.pump()
	}
}

// connect starts a non-blocking connect to the next backend to try, or resets the
// client when every attempt failed.
func (c *tcpConn) connect() {
	lp := c.lp
	t := c.t
	for c.attempt < c.attempts {
		k := (c.first + c.attempt) % len(t.backends)
		c.attempt++
		b := t.backends[k]
		b.load.Begin()
		c.started = time.Now()
		fd, err := eventloop.Dial(b.addr)
		if err == nil {
			c.server = side{c: c, fd: fd}
			if err = lp.el.Register(fd, &c.server, eventloop.EdgeEvents); err != nil {
				_ = eventloop.Close(fd)
				c.server.fd = -1
			}
		}
		if err != nil {
			c.connectFailed(k, err)
			continue
		}
		c.k = k
		c.state = connecting
		lp.schedule(c, lp.now()+t.connectTimeout)
		return
	}
	c.m.exhausted.Inc()
	c.reset()
}

// connectFailed accounts for a failed connect to backend k.
func (c *tcpConn) connectFailed(k int, err error) {
	c.t.backends[k].load.End()
	c.m.connErrors.Inc()
	c.t.failed(k)
	c.lp.p.log.Debug("connect failed", "service_port", c.t.servicePort, "endpoint", c.t.backends[k].addr.String(), "err", err)
}

// retry abandons the connect in flight and tries the next backend.
func (c *tcpConn) retry(err error) {
	c.lp.el.Forget(c.server.fd)
	_ = eventloop.Close(c.server.fd)
	c.server = side{c: c, fd: -1}
	c.state = accepted
	c.connectFailed(c.k, err)
	c.connect()
}

// established starts relaying once the connect succeeded.
func (c *tcpConn) established() {
	lp := c.lp
	c.state = established
	t, b := c.t, c.t.backends[c.k]
	b.load.Observe(time.Since(c.started))
	t.succeeded(c.k)
	t.chosen(c.clientAddr, c.k, time.Now())
	c.m.conns.Inc()
	c.m.active.Inc()
	c.server.writable = true
	c.last = lp.now()
	lp.schedule(c, c.last+t.idleTimeout)
	c.pump()
}

// timeout runs when the connection is due: the connect timed out, the hold is over,
// or the idle timeout may have passed.
func (c *tcpConn) timeout() {
	switch c.state {
	case holding:
		c.reset()
	case connecting:
		c.retry(errConnectTimeout)
	case established:
		// Checked once per idle period: a connection that carried a byte in the
		// period just ended gets another one, so it closes between one and two idle
		// timeouts after its last byte (and a busy one costs one check per period).
		if idle, due := c.t.idleTimeout, c.timer.Due(); c.last > due-idle {
			c.lp.schedule(c, max(due+idle, c.lp.now()+time.Millisecond))
			return
		}
		c.close()
	}
}

// hold is the userspace form of a drop: the connection gets no data and no answer
// until the client gives up or the connect timeout passes, then a reset.
func (c *tcpConn) hold() {
	c.state = holding
	if err := c.lp.el.Register(c.client.fd, &c.client, eventloop.EdgeEvents); err != nil {
		c.reset()
		return
	}
	c.lp.schedule(c, c.lp.now()+c.t.connectTimeout)
}

// discard reads and drops what a held client sends; its EOF ends the hold.
func (c *tcpConn) discard() {
	for c.client.readable {
		n, err := eventloop.Read(c.client.fd, c.lp.scratch)
		switch {
		case errors.Is(err, unix.EAGAIN):
			c.client.readable = false
		case errors.Is(err, unix.EINTR):
		case err != nil || n == 0:
			c.reset()
			return
		}
	}
}

// pump moves what can be moved in both directions and closes the connection when both
// ended or one failed.
func (c *tcpConn) pump() {
	err := c.up.pump(c, &c.down)
	if err == nil {
		err = c.down.pump(c, &c.up)
	}
	if err != nil || (c.up.done && c.down.done) {
		c.close()
	}
}

// pump copies d.src to d.dst while both are ready: through the loop's buffer while
// reads are small (one read and one write per exchange; what dst cannot take yet is
// kept in d.buf), and with splice(2) through a pipe from the first read that fills
// the buffer on (bulk transfers stay in the kernel). At EOF it half-closes d.dst, or
// leaves the FIN to the full close when the other direction is done too.
func (d *dir) pump(c *tcpConn, other *dir) error {
	for {
		switch {
		case d.inPipe > 0 || d.end > d.off:
			// What waits goes out first: from the pipe (splice) or the buffer (write).
			if !d.dst.writable {
				return nil
			}
			spliced := d.inPipe > 0
			var n int
			var err error
			if spliced {
				n, err = eventloop.Splice(d.pipe[0], d.dst.fd, d.inPipe)
			} else {
				n, err = eventloop.Write(d.dst.fd, d.buf[d.off:d.end])
			}
			if err != nil {
				if errors.Is(err, unix.EAGAIN) {
					d.dst.writable = false
					return nil
				}
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return err
			}
			d.bytes += int64(n)
			if spliced {
				d.inPipe -= n
				continue
			}
			d.off += n
			if d.off == d.end {
				c.lp.p.buffers.Put(d.buf)
				d.buf, d.off, d.end = nil, 0, 0
			}
		case d.done:
			return nil
		case d.eof:
			d.done = true
			if other.done {
				return nil // the full close sends the FIN
			}
			if err := eventloop.Shutdown(d.dst.fd, unix.SHUT_WR); err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			return nil
		case !d.src.readable:
			return nil
		case d.splice:
			if d.pipe[0] == 0 && !d.openPipe() {
				d.splice = false
				continue
			}
			n, err := eventloop.Splice(d.src.fd, d.pipe[1], maxSplice)
			if err != nil {
				if errors.Is(err, unix.EAGAIN) {
					d.src.readable, d.src.drain = false, false
					return nil
				}
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return err
			}
			if n == 0 {
				d.eof = true
				continue
			}
			d.inPipe += n
			c.last = c.lp.now()
		default:
			if err := d.copy(c); err != nil {
				return err
			}
		}
	}
}

// copy reads once into the loop's buffer and writes what it read, keeping the rest.
func (d *dir) copy(c *tcpConn) error {
	buf := c.lp.scratch
	n, err := eventloop.Read(d.src.fd, buf)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) {
			d.src.readable, d.src.drain = false, false
			return nil
		}
		if errors.Is(err, unix.EINTR) {
			return nil
		}
		return err
	}
	if n == 0 {
		d.eof = true
		return nil
	}
	c.last = c.lp.now()
	w := 0
	if d.dst.writable {
		w, err = eventloop.Write(d.dst.fd, buf[:n])
		if err != nil {
			w = 0
			if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
				return err
			}
			d.dst.writable = false
		}
	}
	d.bytes += int64(w)
	if w < n {
		d.buf = c.lp.p.buffers.Get().(*[copyBufferSize]byte)
		d.off, d.end = 0, copy(d.buf[:], buf[w:n])
	}
	switch {
	case n == len(buf):
		d.splice = true
	case !d.src.drain:
		// A short read drained the socket: anything that arrives later is a new edge.
		d.src.readable = false
	}
	return nil
}

// openPipe creates the direction's splice pipe, sized like the net package's.
func (d *dir) openPipe() bool {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return false
	}
	_, _ = unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, maxSplice)
	d.pipe = p
	return true
}

func (d *dir) release(buffers *sync.Pool) {
	if d.buf != nil {
		buffers.Put(d.buf)
		d.buf = nil
	}
	if d.pipe[0] != 0 {
		_ = eventloop.Close(d.pipe[0])
		_ = eventloop.Close(d.pipe[1])
		d.pipe = [2]int{}
	}
}

// reset closes the connection with a TCP RST to the client: kube-proxy's reject, as
// close to an ICMP refusal as a userspace proxy can get (the client's connect
// succeeded; its first read fails).
func (c *tcpConn) reset() {
	c.rst = true
	c.close()
}

// close closes both sockets and accounts for the connection.
func (c *tcpConn) close() {
	if c.state == closed {
		return
	}
	lp := c.lp
	was := c.state
	c.state = closed
	lp.el.Cancel(&c.timer)
	delete(lp.conns, c)
	if c.rst {
		_ = unix.SetsockoptLinger(c.client.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	for _, s := range []*side{&c.client, &c.server} {
		if s.fd >= 0 {
			lp.el.Forget(s.fd)
			_ = eventloop.Close(s.fd)
			s.fd = -1
		}
	}
	c.up.release(&lp.p.buffers)
	c.down.release(&lp.p.buffers)
	switch was {
	case connecting:
		c.t.backends[c.k].load.End()
	case established:
		c.t.backends[c.k].load.End()
		c.m.active.Dec()
		c.m.rx.Add(float64(c.up.bytes))
		c.m.tx.Add(float64(c.down.bytes))
	}
	lp.p.open.Add(-1)
}
