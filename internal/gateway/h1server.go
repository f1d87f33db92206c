package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"weir.dev/weir/internal/http1"
)

// fastServer is weir's own HTTP/1.1 server for a plaintext listener. Each connection
// is served by one goroutine with pooled buffers and no per-request goroutine: it
// parses simple requests itself (http1.ParseRequest: HTTP/1.x without a body, upgrade
// or Expect) and answers them with fastResponse. At the first request it does not
// serve — a body, an upgrade (WebSocket, h2c), the HTTP/2 preface, anything malformed
// or oversize — it hands the connection, with the bytes it has read but not used, to
// the listener's net/http server through a channel-backed net.Listener, and net/http
// serves it from then on. So both servers call the same handler, and every hard case
// stays on net/http.
type fastServer struct {
	ln      net.Listener     // the bound socket
	loops   *loopListener    // when set, the event loops accept on ln and serve first
	handoff *handoffListener // what net/http serves
	srv     *http.Server
	handler func(ctx context.Context, w http.ResponseWriter, r *http.Request)
	log     func(msg string, args ...any)
	baseCtx context.Context

	maxHeader     int
	headerTimeout time.Duration // ReadHeaderTimeout, or ReadTimeout if shorter
	idleTimeout   time.Duration
	writeTimeout  time.Duration

	readers, writers sync.Pool
	date             atomic.Pointer[dateValue]

	closing   atomic.Bool
	watchStop chan struct{} // ends watch
	watchDone chan struct{}
	mu        sync.Mutex
	conns     map[*fastConn]struct{}
	wg        sync.WaitGroup // connection goroutines
}

const (
	fastReadBufferSize  = 4 << 10 // as net/http; a longer head goes to net/http
	fastWriteBufferSize = 8 << 10
	// bufferBeforeChunking is how much body a response holds before it must choose
	// between Content-Length and chunked framing (net/http's figure).
	bufferBeforeChunking = 2048
)

func newFastServer(ln net.Listener, srv *http.Server, baseCtx context.Context, maxHeader int, headerTimeout, readTimeout, idleTimeout, writeTimeout time.Duration,
	handler func(ctx context.Context, w http.ResponseWriter, r *http.Request), log func(string, ...any)) *fastServer {
	if readTimeout > 0 && (headerTimeout <= 0 || readTimeout < headerTimeout) {
		headerTimeout = readTimeout
	}
	if idleTimeout <= 0 {
		idleTimeout = readTimeout
	}
	fs := &fastServer{
		ln: ln, handoff: newHandoffListener(ln.Addr()), srv: srv, handler: handler, log: log,
		baseCtx:   context.WithValue(baseCtx, http.ServerContextKey, srv),
		maxHeader: maxHeader, headerTimeout: headerTimeout, idleTimeout: idleTimeout, writeTimeout: writeTimeout,
		conns: map[*fastConn]struct{}{}, watchStop: make(chan struct{}), watchDone: make(chan struct{}),
	}
	fs.readers.New = func() any { return bufio.NewReaderSize(nil, fastReadBufferSize) }
	fs.writers.New = func() any { return bufio.NewWriterSize(nil, fastWriteBufferSize) }
	go fs.watch() // stopped by shutdown
	return fs
}

// slowRequest is how long a request may run before its connection is watched for the
// client going away.
const slowRequest = 100 * time.Millisecond

// watch starts a background read on the connections whose request has run for
// slowRequest, so that a client that goes away cancels its request (net/http reads in
// the background during every request; here only slow ones pay for it).
func (fs *fastServer) watch() {
	defer close(fs.watchDone)
	t := time.NewTicker(slowRequest)
	defer t.Stop()
	for {
		select {
		case <-fs.watchStop:
			return
		case now := <-t.C:
			limit := now.Add(-slowRequest).UnixNano()
			fs.mu.Lock()
			for fc := range fs.conns {
				if since := fc.since.Load(); since != 0 && since < limit {
					fc.startBackgroundRead()
				}
			}
			fs.mu.Unlock()
		}
	}
}

// serve accepts connections until the listener is closed. net/http's server must be
// serving fs.handoff (srv.Serve) alongside.
func (fs *fastServer) serve() error {
	var delay time.Duration
	for {
		c, err := fs.ln.Accept()
		if err != nil {
			if fs.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Temporary errors (EMFILE …): back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			fs.log("gateway: accept error; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !fs.adopt(c, nil) {
			return nil
		}
	}
}

// adopt serves c, whose first bytes are pre (already read), on a goroutine of its
// own. It returns false, with c closed, when the server is closing.
func (fs *fastServer) adopt(c net.Conn, pre []byte) bool {
	if len(pre) > 0 {
		c = &prefixConn{Conn: c, pre: pre}
	}
	fc := &fastConn{fs: fs, c: c, remote: c.RemoteAddr().String()}
	fc.ctx, fc.cancel = context.WithCancel(fs.baseCtx)
	fs.mu.Lock()
	if fs.closing.Load() {
		fs.mu.Unlock()
		fc.cancel()
		_ = c.Close()
		return false
	}
	fs.conns[fc] = struct{}{}
	fs.wg.Add(1)
	fs.mu.Unlock()
	go fc.serve()
	return true
}

// shutdown stops accepting, closes idle connections at once and the others when
// their response is done, waits for them until ctx ends and then closes what is
// left; net/http's server (the handed-off connections) shuts down alongside.
func (fs *fastServer) shutdown(ctx context.Context) error {
	fs.stopAccepting()
	var srvErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		if srvErr = fs.srv.Shutdown(ctx); srvErr != nil {
			_ = fs.srv.Close()
		}
	}()
	wait := time.Millisecond
	for {
		if fs.closeIdle() == 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			fs.closeAll()
			fs.wg.Wait()
			<-done
			fs.stopWatch()
			return errors.Join(ctx.Err(), srvErr)
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
	fs.wg.Wait()
	<-done
	fs.stopWatch()
	return srvErr
}

// stopAccepting closes the listener at once, so that its address may be opened again.
func (fs *fastServer) stopAccepting() {
	if fs.closing.Swap(true) {
		return
	}
	if fs.loops != nil {
		fs.loops.stopAccepting()
	}
	_ = fs.ln.Close()
}

func (fs *fastServer) stopWatch() {
	fs.mu.Lock()
	select {
	case <-fs.watchStop:
	default:
		close(fs.watchStop)
	}
	fs.mu.Unlock()
	<-fs.watchDone
}

// closeIdle closes the connections waiting for a request and returns how many
// connections are left.
func (fs *fastServer) closeIdle() int {
	left := 0
	if fs.loops != nil {
		left = fs.loops.closeIdle()
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for fc := range fs.conns {
		if fc.idle.Load() {
			_ = fc.c.Close()
		}
	}
	return left + len(fs.conns)
}

func (fs *fastServer) closeAll() {
	if fs.loops != nil {
		fs.loops.closeAll()
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for fc := range fs.conns {
		fc.cancel()
		_ = fc.c.Close()
	}
}

func (fs *fastServer) untrack(fc *fastConn) {
	fs.mu.Lock()
	delete(fs.conns, fc)
	fs.mu.Unlock()
	fs.wg.Done()
}

// dateValue is the Date header of one second.
type dateValue struct {
	unix int64
	text []byte
}

func (fs *fastServer) dateHeader(now time.Time) []byte {
	d := fs.date.Load()
	if d == nil || d.unix != now.Unix() {
		d = &dateValue{unix: now.Unix(), text: now.UTC().AppendFormat(make([]byte, 0, 29), http.TimeFormat)}
		fs.date.Store(d)
	}
	return d.text
}

// fastConn is one connection served by the fast server.
type fastConn struct {
	fs     *fastServer
	c      net.Conn
	remote string
	ctx    context.Context // the requests' base context; cancelled when the connection ends
	cancel context.CancelFunc
	idle   atomic.Bool // waiting for the next request
	br     *bufio.Reader
	resp   fastResponse

	// The background read of a slow request (see fastServer.watch).
	since  atomic.Int64 // when the request in the handler started (Unix ns); 0 outside
	bg     atomic.Int32 // bgNone, bgAllowed (in the handler), bgRunning
	bgMu   sync.Mutex   // orders the read deadline changes of watch and serve
	bgWG   sync.WaitGroup
	bgByte [1]byte
	bgHas  bool // bgByte holds the first byte of what the client sent next
	gone   bool // the background read saw the client go away
}

const (
	bgNone int32 = iota
	bgAllowed
	bgRunning
)

// startBackgroundRead reads one byte of the connection while the handler runs: the
// client going away (EOF, reset) cancels the request's context; a byte (a pipelined
// request) is kept for the next read.
func (fc *fastConn) startBackgroundRead() {
	fc.bgMu.Lock()
	defer fc.bgMu.Unlock()
	fc.bgWG.Add(1)
	if !fc.bg.CompareAndSwap(bgAllowed, bgRunning) {
		fc.bgWG.Done()
		return
	}
	_ = fc.c.SetReadDeadline(time.Time{})
	go func() {
		defer fc.bgWG.Done()
		n, err := fc.c.Read(fc.bgByte[:])
		fc.bgHas = n == 1
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			fc.gone = true
			fc.cancel()
		}
	}()
}

// stopBackgroundRead ends the background read, if one was started, once the handler
// returned.
func (fc *fastConn) stopBackgroundRead() {
	fc.since.Store(0)
	if fc.bg.CompareAndSwap(bgAllowed, bgNone) {
		return
	}
	fc.bgMu.Lock()
	_ = fc.c.SetReadDeadline(time.Unix(1, 0)) // unblock it now
	fc.bgMu.Unlock()
	fc.bgWG.Wait()
	_ = fc.c.SetReadDeadline(time.Time{}) // the next wait sets its own
	fc.bg.Store(bgNone)
}

// Read is what the connection's bufio.Reader reads: the byte a background read took,
// then the connection.
func (fc *fastConn) Read(p []byte) (int, error) {
	if fc.bgHas && len(p) > 0 {
		fc.bgHas = false
		p[0] = fc.bgByte[0]
		return 1, nil
	}
	return fc.c.Read(p)
}

// bufferedRequest is how many bytes of further requests are already read.
func (fc *fastConn) bufferedRequest() int { return fc.br.Buffered() }

func (fc *fastConn) serve() {
	fs := fc.fs
	c := fc.c
	br := fs.readers.Get().(*bufio.Reader)
	br.Reset(fc)
	fc.br = br
	// The write buffer is taken for each response and given back while the connection
	// waits, so that idle connections hold only their read buffer.
	var bw *bufio.Writer
	releaseWriter := func() error {
		if bw == nil {
			return nil
		}
		err := bw.Flush()
		bw.Reset(nil)
		fs.writers.Put(bw)
		bw = nil
		return err
	}
	handedOff := false
	defer func() {
		if p := recover(); p != nil && p != http.ErrAbortHandler { //nolint:errorlint // net/http compares the same way
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			fs.log("gateway: panic serving "+fc.remote, "panic", fmt.Sprint(p), "stack", string(buf))
		}
		if !handedOff {
			_ = releaseWriter() // what the handler wrote before a panic, as net/http does
			_ = c.Close()
			fc.bgWG.Wait() // a background read left by a panic ends with the close
		} else if bw != nil {
			bw.Reset(nil)
			fs.writers.Put(bw)
		}
		fc.cancel()
		br.Reset(nil)
		fs.readers.Put(br)
		fs.untrack(fc)
	}()
	w := &fc.resp
	w.fc = fc
	first := true
	for {
		if br.Buffered() == 0 {
			if err := releaseWriter(); err != nil {
				return
			}
			fc.idle.Store(true)
			if fs.closing.Load() {
				return
			}
			wait := fs.idleTimeout
			if first {
				wait = fs.headerTimeout
			}
			if wait > 0 {
				_ = c.SetReadDeadline(time.Now().Add(wait))
			} else if !first {
				_ = c.SetReadDeadline(time.Time{})
			}
			if _, err := br.Peek(1); err != nil {
				return
			}
			fc.idle.Store(false)
		}
		// The head usually came whole: the header deadline is set only when it
		// must be waited for (the first request's is already).
		n, simple, err := fs.readHead(br, c, first)
		first = false
		if err != nil {
			return
		}
		var sr http1.Request
		if simple {
			head, _ := br.Peek(n)
			sr, simple = http1.ParseRequest(head, fc.remote, nil)
		}
		if !simple {
			if releaseWriter() != nil {
				return
			}
			handedOff = fc.handOff(br)
			return
		}
		_, _ = br.Discard(n)
		if bw == nil {
			bw = fs.writers.Get().(*bufio.Writer)
			bw.Reset(c)
		}
		w.bw = bw
		if fs.writeTimeout > 0 {
			_ = c.SetWriteDeadline(time.Now().Add(fs.writeTimeout))
		}
		w.reset(sr)
		fc.since.Store(time.Now().UnixNano())
		fc.bg.Store(bgAllowed)
		fs.handler(fc.ctx, w, sr.Req)
		fc.stopBackgroundRead()
		if fc.gone {
			return
		}
		w.finish()
		if w.err != nil || w.closeAfter {
			return
		}
	}
}

// readHead waits until br holds a whole request head and returns its length,
// setting the read-header deadline before it waits (unless deadlineSet).
// simple is false when the fast server will not parse it: a line ended by a bare LF,
// or a head that does not fit in the buffer or exceeds MaxHeaderBytes.
func (fs *fastServer) readHead(br *bufio.Reader, c net.Conn, deadlineSet bool) (n int, simple bool, err error) {
	for {
		buf, _ := br.Peek(br.Buffered())
		end, bad := http1.HeadEnd(buf)
		switch {
		case bad:
			return 0, false, nil
		case end > 0:
			return end, end <= fs.maxHeader, nil
		case len(buf) >= br.Size() || len(buf) > fs.maxHeader:
			return 0, false, nil
		}
		if !deadlineSet {
			deadlineSet = true
			var d time.Time
			if fs.headerTimeout > 0 {
				d = time.Now().Add(fs.headerTimeout)
			}
			_ = c.SetReadDeadline(d)
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return 0, false, err
		}
	}
}

// handOff gives the connection to net/http with the bytes read but not yet used.
func (fc *fastConn) handOff(br *bufio.Reader) bool {
	pre, _ := br.Peek(br.Buffered())
	pc := &prefixConn{Conn: fc.c, pre: bytes.Clone(pre)}
	if fc.bgHas { // not read by br yet: it comes after br's bytes
		pc.pre = append(pc.pre, fc.bgByte[0])
		fc.bgHas = false
	}
	_ = fc.c.SetReadDeadline(time.Time{})
	_ = fc.c.SetWriteDeadline(time.Time{})
	return fc.fs.handoff.push(pc)
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

// handoffListener is the net.Listener net/http serves: the connections the fast
// server hands over.
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

// push hands c to net/http; false (c closed) when the server is closed.
func (l *handoffListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		_ = c.Close()
		return false
	}
}

// fastResponse is the fast server's http.ResponseWriter. It frames the body as
// net/http does: the handler's Content-Length, else a length computed when the whole
// body fits in 2 KiB by the time the handler returns, else chunked (HTTP/1.1) or
// close-delimited (HTTP/1.0); it adds Date, sniffs a missing Content-Type, keeps
// HEAD and 1xx/204/304 answers bodiless, sends declared trailers, and decides
// keep-alive as net/http does. Flush (and http.ResponseController's Flush) sends what
// is written at once.
type fastResponse struct {
	fc     *fastConn
	bw     *bufio.Writer
	header http.Header
	head   []byte // the handler's headers, serialized at WriteHeader
	buf    []byte // body held before the head is sent (at most bufferBeforeChunking)

	status           int
	contentLength    int64 // -1 unknown
	written          int64
	isHEAD, http11   bool
	wantsClose       bool
	wants10KeepAlive bool

	wroteHeader, headSent, handlerDone bool
	bodyAllowed, chunked, closeAfter   bool
	haveType, haveCE, haveDate         bool
	connSet                            bool   // the handler set Connection
	conn                               string // its first value
	connHead                           []byte // its serialized lines
	trailers                           []string
	prefixTrailers                     bool
	err                                error
	scratch                            [24]byte // numbers being written (a local array would escape)
}

func (w *fastResponse) reset(sr http1.Request) {
	if w.header == nil {
		w.header = make(http.Header)
	} else {
		clear(w.header)
	}
	w.head, w.buf, w.connHead, w.trailers = w.head[:0], w.buf[:0], w.connHead[:0], w.trailers[:0]
	w.status, w.contentLength, w.written = 0, -1, 0
	w.isHEAD = sr.Req.Method == http.MethodHead
	w.http11 = sr.Req.ProtoMinor == 1
	w.wantsClose, w.wants10KeepAlive = sr.WantsClose, sr.KeepAlive10
	w.wroteHeader, w.headSent, w.handlerDone = false, false, false
	w.bodyAllowed, w.chunked, w.closeAfter = false, false, false
	w.haveType, w.haveCE, w.haveDate, w.connSet, w.conn = false, false, false, false, ""
	w.prefixTrailers, w.err = false, nil
}

func (w *fastResponse) Header() http.Header { return w.header }

func bodyAllowedForStatus(code int) bool {
	switch {
	case code >= 100 && code <= 199, code == http.StatusNoContent, code == http.StatusNotModified:
		return false
	}
	return true
}

func (w *fastResponse) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// Informational: sent at once with the current headers.
		w.writeStatusLine(code)
		for k, vs := range w.header {
			if k != "Content-Length" && k != "Transfer-Encoding" {
				w.head = appendHeaderLines(w.head[:0], k, vs)
				_, _ = w.bw.Write(w.head)
			}
		}
		w.head = w.head[:0]
		_, _ = w.bw.WriteString("\r\n")
		if err := w.bw.Flush(); err != nil && w.err == nil {
			w.err = err
		}
		return
	}
	w.wroteHeader = true
	w.status = code
	w.bodyAllowed = bodyAllowedForStatus(code)
	if cl := w.header.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.contentLength = v
		} else {
			delete(w.header, "Content-Length")
		}
	}
	// Serialize the headers now: what the handler sets afterwards are trailers.
	for k, vs := range w.header {
		switch k {
		case "Transfer-Encoding":
			continue // framing is decided here
		case "Connection":
			w.connSet = true
			if len(vs) > 0 {
				w.conn = vs[0]
			}
			w.connHead = appendHeaderLines(w.connHead, k, vs)
			continue
		case "Content-Type":
			w.haveType = true
			if code == http.StatusNotModified {
				continue
			}
		case "Content-Length":
			if !w.bodyAllowed {
				continue
			}
		case "Content-Encoding":
			w.haveCE = len(vs) > 0 && vs[0] != ""
		case "Date":
			w.haveDate = true
		case "Trailer":
			for _, v := range vs {
				w.declareTrailers(v)
			}
		}
		if len(k) > len(http.TrailerPrefix) && k[:len(http.TrailerPrefix)] == http.TrailerPrefix {
			w.prefixTrailers = true
			continue
		}
		w.head = appendHeaderLines(w.head, k, vs)
	}
}

func (w *fastResponse) declareTrailers(v string) {
	for len(v) > 0 {
		var f string
		f, v, _ = cutComma(v)
		if f = http.CanonicalHeaderKey(trimOWS(f)); f != "" && httpguts.ValidTrailerHeader(f) {
			w.trailers = append(w.trailers, f)
		}
	}
}

func cutComma(s string) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// appendHeaderLines appends "k: v\r\n" for each value, skipping invalid names and
// turning CR and LF in values into spaces, as net/http's Header.Write does.
func appendHeaderLines(b []byte, k string, vs []string) []byte {
	if !validHeaderName(k) {
		return b
	}
	for _, v := range vs {
		b = append(b, k...)
		b = append(b, ": "...)
		start := len(b)
		b = append(b, v...)
		for i := start; i < len(b); i++ {
			if b[i] == '\r' || b[i] == '\n' {
				b[i] = ' '
			}
		}
		// Trim surrounding whitespace, as textproto.TrimString.
		val := b[start:]
		lo, hi := 0, len(val)
		for lo < hi && isASCIISpace(val[lo]) {
			lo++
		}
		for hi > lo && isASCIISpace(val[hi-1]) {
			hi--
		}
		if lo > 0 || hi < len(val) {
			n := copy(val, val[lo:hi])
			b = b[:start+n]
		}
		b = append(b, "\r\n"...)
	}
	return b
}

func isASCIISpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

func (w *fastResponse) writeStatusLine(code int) {
	if w.http11 {
		_, _ = w.bw.WriteString("HTTP/1.1 ")
	} else {
		_, _ = w.bw.WriteString("HTTP/1.0 ")
	}
	_, _ = w.bw.Write(strconv.AppendInt(w.scratch[:0], int64(code), 10))
	_ = w.bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		_, _ = w.bw.WriteString(text)
	} else {
		_, _ = w.bw.WriteString("status code " + strconv.Itoa(code))
	}
	_, _ = w.bw.WriteString("\r\n")
}

// sendHead writes the status line and headers; p is the start of the body (for the
// Content-Type sniff and, once the handler is done, the Content-Length).
func (w *fastResponse) sendHead(p []byte) {
	w.headSent = true
	trailers := len(w.trailers) > 0 || w.prefixTrailers
	var addCL []byte
	if w.handlerDone && !trailers && w.bodyAllowed && w.contentLength < 0 && (!w.isHEAD || len(p) > 0) {
		w.contentLength = int64(len(p))
		addCL = strconv.AppendInt(w.scratch[4:4], w.contentLength, 10) // [:4] is the status code's
	}
	keepAlives := !w.fc.fs.closing.Load()
	hasCL := w.contentLength >= 0
	addConn := ""
	if w.wants10KeepAlive && (w.isHEAD || hasCL || !w.bodyAllowed) {
		if !w.connSet {
			addConn = "keep-alive"
		}
	} else if !w.http11 || w.wantsClose {
		w.closeAfter = true
	}
	if w.conn == "close" || !keepAlives {
		w.closeAfter = true
	}
	chunked := false
	switch {
	case w.isHEAD || !w.bodyAllowed:
	case hasCL:
	case w.http11:
		chunked = true
	default:
		w.closeAfter = true
	}
	w.chunked = chunked
	dropConn := false
	if w.closeAfter && (!keepAlives || !http1.HasCloseToken(w.conn)) {
		dropConn = true
		addConn = ""
		if w.http11 {
			addConn = "close"
		}
	}

	w.writeStatusLine(w.status)
	bw := w.bw
	_, _ = bw.Write(w.head)
	if w.connSet && !dropConn {
		_, _ = bw.Write(w.connHead)
	}
	if addCL != nil {
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.Write(addCL)
		_, _ = bw.WriteString("\r\n")
	}
	if w.bodyAllowed && !w.haveType && !w.haveCE && len(p) > 0 {
		_, _ = bw.WriteString("Content-Type: ")
		_, _ = bw.WriteString(http.DetectContentType(p))
		_, _ = bw.WriteString("\r\n")
	}
	if !w.haveDate {
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.Write(w.fc.fs.dateHeader(time.Now()))
		_, _ = bw.WriteString("\r\n")
	}
	if chunked {
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if addConn != "" {
		_, _ = bw.WriteString("Connection: ")
		_, _ = bw.WriteString(addConn)
		_, _ = bw.WriteString("\r\n")
	}
	if _, err := bw.WriteString("\r\n"); err != nil && w.err == nil {
		w.err = err
	}
}

func (w *fastResponse) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !w.bodyAllowed {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.headSent {
		if w.contentLength < 0 && len(w.buf)+len(p) <= bufferBeforeChunking {
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		first := w.buf
		if len(first) == 0 {
			first = p
		}
		w.sendHead(first)
		w.writeBody(w.buf)
		w.buf = w.buf[:0]
	}
	w.writeBody(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

func (w *fastResponse) WriteString(s string) (int, error) {
	if w.headSent && !w.chunked && !w.isHEAD && w.bodyAllowed && w.err == nil &&
		(w.contentLength < 0 || w.written+int64(len(s)) <= w.contentLength) {
		w.written += int64(len(s))
		if _, err := w.bw.WriteString(s); err != nil {
			w.err = err
			return 0, err
		}
		return len(s), nil
	}
	return w.Write([]byte(s))
}

func (w *fastResponse) writeBody(p []byte) {
	if len(p) == 0 || w.isHEAD || w.err != nil {
		return
	}
	var err error
	if w.chunked {
		b := strconv.AppendUint(w.scratch[:0], uint64(len(p)), 16)
		b = append(b, '\r', '\n')
		_, _ = w.bw.Write(b)
		_, _ = w.bw.Write(p)
		_, err = w.bw.WriteString("\r\n")
	} else {
		_, err = w.bw.Write(p)
	}
	if err != nil {
		w.err = err
	}
}

// Flush sends the head (choosing chunked or close-delimited framing when no
// Content-Length is set) and everything written so far.
func (w *fastResponse) Flush() { _ = w.FlushError() }

func (w *fastResponse) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.sendHead(w.buf)
		w.writeBody(w.buf)
		w.buf = w.buf[:0]
	}
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = err
	}
	return w.err
}

// finish ends the response after the handler returned.
func (w *fastResponse) finish() {
	w.handlerDone = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.sendHead(w.buf)
		w.writeBody(w.buf)
	}
	if w.chunked && w.err == nil {
		_, _ = w.bw.WriteString("0\r\n")
		for _, k := range w.trailers {
			w.head = appendHeaderLines(w.head[:0], k, w.header[k])
			_, _ = w.bw.Write(w.head)
		}
		if w.prefixTrailers {
			for k, vs := range w.header {
				if len(k) > len(http.TrailerPrefix) && k[:len(http.TrailerPrefix)] == http.TrailerPrefix {
					w.head = appendHeaderLines(w.head[:0], http.CanonicalHeaderKey(k[len(http.TrailerPrefix):]), vs)
					_, _ = w.bw.Write(w.head)
				}
			}
		}
		if _, err := w.bw.WriteString("\r\n"); err != nil {
			w.err = err
		}
	}
	if !w.isHEAD && w.bodyAllowed && w.contentLength >= 0 && w.written != w.contentLength {
		w.closeAfter = true // short body: the connection cannot be reused
	}
	// Pipelined requests waiting: their answers go out with the next flush.
	if w.err == nil && (w.closeAfter || w.fc.bufferedRequest() == 0) {
		if err := w.bw.Flush(); err != nil {
			w.err = err
		}
	}
}
