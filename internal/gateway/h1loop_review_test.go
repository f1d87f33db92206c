package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/model"
)

// Review tests of the event-loop HTTP/1.1 path (h1loop.go). Each compares the loops
// with net/http on the same request, or
// checks a counter after a path has run. The cases that found a bug say which (the
// `was` fields; line numbers at d76b38d): each failed before its fix.

// reviewPattern is the byte at offset i of a large body.
func reviewPattern(i int) byte { return "0123456789abcdef"[i%16] }

// bigBackend is a net/http backend: /big/<n> answers n pattern bytes with a
// Content-Length, /chunked/<n> the same chunked, /close/<n> the same without framing
// (the body ends when the connection closes), anything else "ok".
func bigBackend(t *testing.T) model.Endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var size int
		switch {
		case strings.HasPrefix(r.URL.Path, "/big/"):
			size, _ = strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/big/"))
			w.Header().Set("Content-Length", strconv.Itoa(size))
		case strings.HasPrefix(r.URL.Path, "/close/"): // no framing: the body ends when the connection does
			size, _ = strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/close/"))
			c, bw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
			for sent := 0; sent < size; sent += len(chunk) {
				if _, err := bw.Write(chunk[:min(len(chunk), size-sent)]); err != nil {
					return
				}
			}
			_ = bw.Flush()
			return
		case strings.HasPrefix(r.URL.Path, "/chunked/"):
			size, _ = strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/chunked/"))
		default:
			_, _ = io.WriteString(w, "ok")
			return
		}
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := w.Write(chunk[:min(len(chunk), size-sent)]); err != nil {
				return
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ap := netip.MustParseAddrPort(ln.Addr().String())
	return model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}
}

// readPatternBody reads a response body of pattern bytes and returns how many came
// (and the error that ended it, nil at a clean end).
func readPatternBody(resp *http.Response) (int, error) {
	buf := make([]byte, 32<<10)
	total := 0
	for {
		n, err := resp.Body.Read(buf)
		for j, b := range buf[:n] {
			if b != reviewPattern(total+j) {
				return total + j, fmt.Errorf("body differs at %d", total+j)
			}
		}
		total += n
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// smallSendBuffer sets a small SO_SNDBUF on the gateway's listening socket, which the
// sockets it accepts inherit (without send-buffer autotuning, which would otherwise
// let the kernel absorb megabytes): the loops' own backlog (c.out) then fills with a
// response of a few hundred KiB.
func smallSendBuffer(t *testing.T, tg *testGateway) {
	t.Helper()
	tg.mu.Lock()
	l := tg.listeners[tg.addr]
	tg.mu.Unlock()
	if l == nil {
		t.Fatalf("no listener %s", tg.addr)
	}
	rc, err := l.ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 32<<10) }); err != nil || serr != nil {
		t.Fatalf("SO_SNDBUF: %v %v", err, serr)
	}
}

// TestReviewLoopSlowClientResponses: large responses to a client that reads slowly,
// or not at all for a while, compared on the two transports. Each case sends raw requests, waits, then reads every response whole,
// slowly when slow is set.
func TestReviewLoopSlowClientResponses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		raws  []string // one connection each
		wants []int    // per response: the body size (-1: the small "ok" answer)
		wait  time.Duration
		slow  bool
		opts  func(o *Options)
		// was: the bug of the event loops this case found, "" if none.
		was string
	}{
		{name: "keep-alive, slow reader",
			raws:  []string{"GET /big/1500000 HTTP/1.1\r\nHost: h\r\n\r\nGET /small HTTP/1.1\r\nHost: h\r\n\r\n"},
			wants: []int{1500000, -1}, slow: true},
		{name: "client sends Connection: close, slow reader",
			raws: []string{
				"GET /big/1000000 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
				"GET /big/1300000 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
				"GET /big/1700000 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
			},
			wants: []int{-2}, slow: true,
			was: "h1loop.go flush (l. 384-390 at d76b38d): flush resumes the paused backend (upPump); when the exchange completes inside it with " +
				"output still queued (the nested flush hit EAGAIN), flush then sees c.x == nil && c.closeAfter and closes the " +
				"connection, dropping the queued tail of the response"},
		{name: "body until the backend closes, slow reader",
			raws: []string{
				"GET /close/1000000 HTTP/1.1\r\nHost: h\r\n\r\n",
				"GET /close/1300000 HTTP/1.1\r\nHost: h\r\n\r\n",
				"GET /close/1700000 HTTP/1.1\r\nHost: h\r\n\r\n",
			},
			wants: []int{-2}, slow: true,
			was: "h1loop.go flush (l. 384-390 at d76b38d), as for Connection: close: a close-delimited body sets closeAfter, and the tail " +
				"queued when the backend's EOF completes the exchange inside flush's upPump is dropped"},
		{name: "client sends Connection: close, reads late",
			raws:  []string{"GET /big/200000 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"},
			wants: []int{200000}, wait: 300 * time.Millisecond},
		{name: "pipelined request handed off behind a queued response",
			raws:  []string{"GET /big/200000 HTTP/1.1\r\nHost: h\r\n\r\nGET /small HTTP/1.0\r\n\r\n"},
			wants: []int{200000, -1}, wait: 300 * time.Millisecond,
			was: "h1loop.go next/handOff (l. 412, 448, 514-527 at d76b38d): next() hands the connection to the fast server while c.out still holds the " +
				"previous response's tail; detach forgets c.out, so the client gets a truncated first response and then the second"},
		{name: "response queued past the idle timeout",
			raws:  []string{"GET /big/200000 HTTP/1.1\r\nHost: h\r\n\r\n"},
			wants: []int{200000}, wait: 400 * time.Millisecond,
			opts: func(o *Options) { o.IdleTimeout = 100 * time.Millisecond },
			was: "h1loop.go next (l. 437-439 at d76b38d) and timeout (l. 507-511): with the response's tail still queued in c.out, next() " +
				"arms the idle timeout and timeout() closes the connection (c.x == nil), dropping the tail; net/http starts " +
				"the idle timeout once the response is written"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, srv := range transports {
				t.Run(srv.name, func(t *testing.T) {
					be := backend("b", 1)
					be.Endpoints = []model.Endpoint{bigBackend(t)}
					opts := srv.opts
					if tc.opts != nil {
						tc.opts(&opts)
					}
					tg := startGateway(t, opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
					smallSendBuffer(t, tg)
					for ci, raw := range tc.raws {
						wants := tc.wants
						if len(wants) == 1 && wants[0] == -2 { // the size in the request line
							_, rest, _ := strings.Cut(strings.TrimPrefix(raw, "GET /"), "/")
							n, _ := strconv.Atoi(strings.Fields(rest)[0])
							wants = []int{n}
						}
						reviewSlowExchange(t, tg.addr, raw, wants, tc.wait, tc.slow, ci)
					}
				})
			}
		})
	}
}

// reviewSlowExchange sends raw on a new connection with a small receive buffer, waits,
// and reads the responses (slowly: a pause every 16 KiB).
func reviewSlowExchange(t *testing.T, addr, raw string, wants []int, wait time.Duration, slow bool, ci int) {
	t.Helper()
	c := dialSmallReceiveBuffer(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	time.Sleep(wait) // not an assertion: the client is late
	var r io.Reader = c
	if slow {
		r = &slowReader{r: c}
	}
	br := bufio.NewReaderSize(r, 4096)
	for i, want := range wants {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("connection %d, response %d: %v", ci, i, err)
		}
		if want < 0 {
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
				t.Fatalf("connection %d, response %d: %d %q %v", ci, i, resp.StatusCode, body, err)
			}
			continue
		}
		n, err := readPatternBody(resp)
		if err != nil || n != want || resp.StatusCode != 200 {
			t.Fatalf("connection %d, response %d: status %d, %d of %d bytes: %v", ci, i, resp.StatusCode, n, want, err)
		}
	}
}

// dialSmallReceiveBuffer connects with a 16 KiB SO_RCVBUF set before connect (set
// after it, the window scale agreed in the handshake no longer fits the buffer, and
// a stream of small segments can stall the connection in the kernel).
func dialSmallReceiveBuffer(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<10) }); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// slowReader reads at most 16 KiB at a time with a short pause before each read.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(200 * time.Microsecond)
	return s.r.Read(p[:min(len(p), 16<<10)])
}

// cannedBackend answers each request with the raw response canned[path] (the
// connection stays open for the next request unless the path starts with /close).
func cannedBackend(t *testing.T, canned map[string]string) model.Endpoint {
	t.Helper()
	return serveConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			resp, ok := canned[req.URL.Path]
			if !ok {
				resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
			}
			if _, err := io.WriteString(c, resp); err != nil || strings.HasPrefix(req.URL.Path, "/close") {
				return
			}
		}
	})
}

// serveConns is a backend on loopback that runs handle on each connection it accepts
// (and closes the connection after); it stops with the test.
func serveConns(t *testing.T, handle func(net.Conn)) model.Endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	ap := netip.MustParseAddrPort(ln.Addr().String())
	return model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}
}

// renderResponses reads n responses from raw sent on a new connection and renders
// what a client sees of each (headers less Date, framing, body). A response cut short
// (no head, or a body that ends in an error) renders as "cut short", whether or not
// its head came: net/http then may or may not have flushed the head.
func renderResponses(t *testing.T, addr, raw string, methods ...string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var b strings.Builder
	for i, method := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			fmt.Fprintf(&b, "response %d: cut short\n", i)
			break
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			fmt.Fprintf(&b, "response %d: cut short\n", i)
			break
		}
		resp.Header.Del("Date")
		fmt.Fprintf(&b, "%s %s close=%v\n", resp.Status, resp.Proto, resp.Close)
		_ = resp.Header.Write(&b)
		fmt.Fprintf(&b, "te=%v cl=%d body=%q\n", resp.TransferEncoding, resp.ContentLength, body)
	}
	return b.String()
}

// TestReviewLoopResponsesMatchNetHTTP: backend responses at the edges of HTTP/1.1
// framing, relayed by the event loops and, as the reference, by net/http with
// ReverseProxy over http.Transport: what the client sees must be the same.
func TestReviewLoopResponsesMatchNetHTTP(t *testing.T) {
	const ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
	canned := map[string]string{
		"/304":          "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
		"/204":          "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n",
		"/head":         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
		"/cl-and-te":    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"/extra":        ok + "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nEVIL",
		"/close-bad":    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
		"/close-short":  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nshort",
		"/chunk-ext":    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n",
		"/conn-hdr":     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: X-Secret\r\nX-Secret: 1\r\nContent-Length: 2\r\n\r\nok",
		"/dup-cl":       "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		"/head-chunked": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
		"/head-none":    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
		"/no-type":      "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>hi</html>",
	}
	be := backend("b", 1)
	be.Endpoints = []model.Endpoint{cannedBackend(t, canned)}
	be.Policy.Outlier.ConsecutiveFailures = 1000
	configs := []struct {
		name string
		opts Options
	}{
		{"event loops", Options{}},
		{"net/http and ReverseProxy", Options{DisableEventLoops: true}},
	}
	for _, tc := range []struct {
		name, raw string
		methods   []string
		was       map[int]string // config index → the bug this case found there
	}{
		{name: "304 with Content-Length and Content-Type", raw: "GET /304 HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"GET"},
			was: map[int]string{0: "h1loop.go appendPlainHead (l. 1496 at d76b38d) relays Content-Length and Content-Type on a 304; " +
				"net/http's server drops both (suppressedHeaders304), as the fast server does"}},
		{name: "204 with Content-Length", raw: "GET /204 HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"GET"}},
		{name: "HEAD, then GET", raw: "HEAD /head HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"HEAD", "GET"}},
		{name: "HEAD answered chunked", raw: "HEAD /head-chunked HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"HEAD", "GET"}},
		{name: "HEAD answered without length", raw: "HEAD /head-none HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"HEAD", "GET"}},
		{name: "Content-Length and chunked", raw: "GET /cl-and-te HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"GET"}},
		{name: "more than Content-Length, then the next request",
			raw: "GET /extra HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"GET", "GET"},
		},
		{name: "bad chunk framing", raw: "GET /close-bad HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"GET"}},
		{name: "body shorter than Content-Length", raw: "GET /close-short HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"GET"}},
		{name: "chunk extension", raw: "GET /chunk-ext HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"GET"}},
		{name: "Connection names a header", raw: "GET /conn-hdr HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"GET"}},
		{name: "two different Content-Lengths", raw: "GET /dup-cl HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"GET"}},
		{name: "no Content-Type", raw: "GET /no-type HTTP/1.1\r\nHost: h\r\n\r\n", methods: []string{"GET"},
			was: map[int]string{0: "the paths differed: the loops relayed no Content-Type, net/http's servers sniffed one; now none adds one, " +
				"as nginx, HAProxy and Envoy relay it (statusWriter.WriteHeader)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, cfg := range configs { // new gateways per case: no upstream connection shared between cases
				tg := startGateway(t, cfg.opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
				got = append(got, renderResponses(t, tg.addr, tc.raw, tc.methods...))
			}
			ref := len(configs) - 1
			for i := range ref {
				if got[i] == got[ref] {
					continue
				}
				t.Errorf("%s:\n%s\n%s:\n%s", configs[i].name, got[i], configs[ref].name, got[ref])
			}
		})
	}
}

// TestReviewLoopAbortKeepsEarlierResponse: a pipelined response whose body turns out
// malformed is cut short, but the response queued before it (for a slow client) must
// still arrive whole, as on the goroutine servers.
func TestReviewLoopAbortKeepsEarlierResponse(t *testing.T) {
	big := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 200000\r\n\r\n"
	var body strings.Builder
	for i := range 200000 {
		body.WriteByte(reviewPattern(i))
	}
	canned := map[string]string{
		"/big":       big + body.String(),
		"/close-bad": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
	}
	ep := cannedBackend(t, canned)
	for _, srv := range transports {
		t.Run(srv.name, func(t *testing.T) {
			be := backend("b", 1)
			be.Endpoints = []model.Endpoint{ep}
			tg := startGateway(t, srv.opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
			smallSendBuffer(t, tg)
			c := dialSmallReceiveBuffer(t, tg.addr)
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(c, "GET /big HTTP/1.1\r\nHost: h\r\n\r\nGET /close-bad HTTP/1.1\r\nHost: h\r\n\r\n")
			time.Sleep(300 * time.Millisecond) // a late reader: the first response waits in the gateway
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("first response: %v", err)
			}
			if n, err := readPatternBody(resp); n != 200000 || err != nil {
				t.Fatalf("first response: %d of 200000 bytes: %v", n, err)
			}
		})
	}
}

// TestReviewLoopBreakerCountsOtherLoopsIdleConnections: with maxConnections 1, one
// request after another (never two at once) must not overflow the breaker, as with
// http.Transport, whose kept-alive connection serves the next request. The loops
// keep an idle pool per loop, and a kept-alive connection on one loop counts against
// the cluster's limit while the next request, on another loop, has to dial.
func TestReviewLoopBreakerCountsOtherLoopsIdleConnections(t *testing.T) {
	a := startEcho(t, "a")
	for _, srv := range transports {
		t.Run(srv.name, func(t *testing.T) {
			be := backend("a", 1, a)
			be.Policy.CircuitBreaker.MaxConnections = 1
			tg := startGateway(t, srv.opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
			if srv.loops {
				if tg.loops == nil || len(tg.loops.loops) < 2 {
					t.Skip("needs two event loops (GOMAXPROCS >= 2)")
				}
			}
			// Two client connections held open: the loops spread them over two loops.
			var conns []net.Conn
			for range 2 {
				c, err := net.Dial("tcp", tg.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				conns = append(conns, c)
			}
			for round := range 2 {
				for i, c := range conns {
					_, _ = io.WriteString(c, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						t.Fatalf("round %d, connection %d: %v", round, i, err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					if resp.StatusCode != 200 {
						t.Fatalf("round %d, connection %d: %d (overflow %q), want 200: one request at a time", round, i,
							resp.StatusCode, resp.Header.Get("X-Weir-Overflow"))
					}
				}
			}
		})
	}
}

// TestReviewLoopHalfCloseLargeResponse: a client that shuts down its side once its
// answer has begun, and reads the large answer slowly, gets it whole, as the fast
// server does. (A client's end of stream that arrives before the answer begins cancels
// the request, on the loops as in net/http's server and nginx: it cannot be told from
// a client that went away. So the client here half-closes after the head.)
func TestReviewLoopHalfCloseLargeResponse(t *testing.T) {
	for _, srv := range transports[:2] {
		t.Run(srv.name, func(t *testing.T) {
			be := backend("b", 1)
			be.Endpoints = []model.Endpoint{bigBackend(t)}
			tg := startGateway(t, srv.opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
			smallSendBuffer(t, tg)
			c := dialSmallReceiveBuffer(t, tg.addr)
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(c, "GET /big/1000000 HTTP/1.1\r\nHost: h\r\n\r\n")
			br := bufio.NewReader(&slowReader{r: c})
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.(*net.TCPConn).CloseWrite()
			if n, err := readPatternBody(resp); n != 1000000 || err != nil || resp.StatusCode != 200 {
				t.Fatalf("status %d, %d of 1000000 bytes: %v", resp.StatusCode, n, err)
			}
		})
	}
}
