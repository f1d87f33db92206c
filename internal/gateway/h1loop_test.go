package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"weir.dev/weir/internal/http1"
	"weir.dev/weir/internal/model"
)

// TestEventLoopServesSimpleRequests: simple GETs over keep-alive are served by the
// event loops (no hand-off); a request with a body is handed to net/http
// (and on to net/http) and answered; a rule with an h2c backend is handed off too.
func TestEventLoopServesSimpleRequests(t *testing.T) {
	a := startEcho(t, "a")
	reg := prometheus.NewRegistry()
	h2 := backend("h2", 1, a)
	h2.H2C = true
	tg := startGateway(t, Options{Registerer: reg}, httpConfig(freeAddr(t),
		prefixRule("h2", "/h2c", h2), prefixRule("r", "/", backend("a", 1, a))))
	if tg.loops == nil {
		t.Fatal("event loops not started")
	}
	handoffs := func(reason string) float64 { return testutil.ToFloat64(tg.metrics.handoffs.WithLabelValues(reason)) }
	c := &http.Client{Timeout: 10 * time.Second}
	for i := range 50 {
		resp, rep := get(t, c, "GET", tg.url+"/n/"+strconv.Itoa(i), nil)
		if resp.StatusCode != 200 || rep == nil || rep.Path != "/n/"+strconv.Itoa(i) {
			t.Fatalf("GET %d: %d %+v", i, resp.StatusCode, rep)
		}
	}
	if n := handoffs("request") + handoffs("route"); n != 0 {
		t.Fatalf("%v hand-offs for simple GETs", n)
	}
	resp, err := c.Post(tg.url+"/post", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"body":"hello"`) || handoffs("request") != 1 {
		t.Fatalf("POST: %d %s, %v hand-offs", resp.StatusCode, body, handoffs("request"))
	}
	c.CloseIdleConnections()
	// (The echo backend speaks HTTP/1.1 only: the h2c attempt fails, after the hand-off.)
	if _, _ = get(t, c, "GET", tg.url+"/h2c", nil); handoffs("route") != 1 {
		t.Fatalf("h2c route: %v route hand-offs", handoffs("route"))
	}
}

// slowBackend answers every request after delay.
func slowBackend(t *testing.T, delay time.Duration) model.Endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(delay):
		case <-done:
		}
		_, _ = io.WriteString(w, "slow")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { close(done); _ = srv.Close() })
	ap := netip.MustParseAddrPort(ln.Addr().String())
	return model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}
}

// TestTimeouts: a rule's request timeout answers 504; a per-try timeout moves the
// request to another endpoint. On the event loops and on the goroutine server.
func TestTimeouts(t *testing.T) {
	for _, srv := range transports {
		t.Run(srv.name, func(t *testing.T) {
			for _, tc := range []struct {
				name     string
				set      func(r *model.Rule)
				fast     bool // add a fast endpoint beside the slow one
				wantCode int
			}{
				{"request timeout", func(r *model.Rule) { r.RequestTimeout = 150 * time.Millisecond }, false, 504},
				{"backend request timeout", func(r *model.Rule) { r.BackendTimeout = 150 * time.Millisecond }, false, 504},
				{"per-try timeout retried elsewhere", func(r *model.Rule) {
					r.Retry.PerTryTimeout = 150 * time.Millisecond
					r.Retry.RetryOn = []string{"gateway-error"}
				}, true, 200},
			} {
				t.Run(tc.name, func(t *testing.T) {
					be := backend("slow", 1)
					be.Endpoints = []model.Endpoint{slowBackend(t, 3*time.Second)}
					if tc.fast {
						be.Endpoints = append(be.Endpoints, slowBackend(t, 0))
					}
					be.Policy.Outlier.ConsecutiveFailures = 1000
					rm := prefixRule("t", "/", be)
					tc.set(rm.Rule)
					tg := startGateway(t, srv.opts, httpConfig(freeAddr(t), rm))
					c := &http.Client{Timeout: 10 * time.Second}
					for i := range 4 { // round robin: each endpoint first at least once
						start := time.Now()
						resp, err := c.Get(tg.url + "/")
						if err != nil {
							t.Fatal(err)
						}
						resp.Body.Close()
						if resp.StatusCode != tc.wantCode || time.Since(start) > 2*time.Second {
							t.Fatalf("request %d: %d after %v, want %d quickly", i, resp.StatusCode, time.Since(start), tc.wantCode)
						}
					}
				})
			}
		})
	}
}

// TestEventLoopStaleUpstreamConnection: a backend that closes idle keep-alive
// connections costs the client nothing: the loop drops the closed connection (or
// resends on a new one).
func TestEventLoopStaleUpstreamConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{IdleTimeout: 30 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ap := netip.MustParseAddrPort(ln.Addr().String())
	be := backend("b", 1)
	be.Endpoints = []model.Endpoint{{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}}
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
	c := &http.Client{Timeout: 10 * time.Second}
	for i := range 5 {
		resp, err := c.Get(tg.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond) // the backend closes the idle connection
	}
}

// TestEventLoopSlowClient: a large response to a client that reads slowly arrives
// whole (the loop stops reading the backend while the client's backlog is full).
func TestEventLoopSlowClient(t *testing.T) {
	const size = 8 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.Header().Set("Content-Type", "application/octet-stream")
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ap := netip.MustParseAddrPort(ln.Addr().String())
	be := backend("b", 1)
	be.Endpoints = []model.Endpoint{{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}}
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
	for _, path := range []string{"/length", "/chunked"} {
		t.Run(path, func(t *testing.T) {
			c := dialSmallReceiveBuffer(t, tg.addr) // set before connecting: after, it can stall the window
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\nGET /length HTTP/1.1\r\nHost: h\r\n\r\n")
			br := bufio.NewReaderSize(c, 4096)
			for i := range 2 {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64<<10)
				total := 0
				for {
					n, err := resp.Body.Read(buf)
					for j, b := range buf[:n] {
						if b != chunk[(total+j)%16] {
							t.Fatalf("response %d: body differs at %d", i, total+j)
						}
					}
					total += n
					if i == 0 && total%(1<<20) < n {
						time.Sleep(20 * time.Millisecond) // a slow reader
					}
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatalf("response %d after %d bytes: %v", i, total, err)
					}
				}
				if total != size {
					t.Fatalf("response %d: %d bytes, want %d", i, total, size)
				}
			}
		})
	}
}

// TestChunkScanner: the end of a chunked body is found wherever reads split it.
func TestChunkScanner(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		bad        bool
	}{
		{"one chunk", "5\r\nhello\r\n0\r\n\r\n", false},
		{"several, upper-case hex, extension", "3;x=1\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n", false},
		{"trailers", "4\r\nbody\r\n0\r\nX-Sum: 42\r\nX-Other: 1\r\n\r\n", false},
		{"empty", "0\r\n\r\n", false},
		{"bad size", "g\r\nx\r\n0\r\n\r\n", true},
		{"missing CRLF after data", "1\r\nxy\r\n0\r\n\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.body + "NEXT"
			for split := 0; split <= len(in); split++ {
				var s http1.ChunkScanner
				n1, end, err := s.Scan([]byte(in[:split]))
				n2 := 0
				if err == nil && !end {
					n2, end, err = s.Scan([]byte(in[split:]))
				}
				if tc.bad {
					if err == nil {
						t.Fatalf("split %d: no error", split)
					}
					continue
				}
				if err != nil || !end || n1+n2 != len(tc.body) {
					t.Fatalf("split %d: %d+%d bytes, end %v, err %v; want %d", split, n1, n2, end, err, len(tc.body))
				}
			}
		})
	}
}

// responseHeads are backend response heads for the head parsers' tests: the framing
// http1.ParseResponse finds, and whether http1.ScanResponse relays it line by line.
var responseHeads = []struct {
	name, in string
	head     bool // the answer to a HEAD request
	framing  http1.Framing
	plain    bool
}{
	{"length", "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\nx-a:  2 \r\n\r\n", false, http1.BodyLength, true},
	{"odd reason, HTTP/1.0 keep-alive", "HTTP/1.0 201 Made\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n", false, http1.BodyLength, true},
	{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n", false, http1.BodyChunked, true},
	{"chunked with trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum, x-other\r\n\r\n", false, http1.BodyChunked, false},
	{"chunked and length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false, http1.BodyChunked, true},
	{"until close", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", false, http1.BodyUntilClose, true},
	{"HTTP/1.0 until close", "HTTP/1.0 200 OK\r\n\r\n", false, http1.BodyUntilClose, true},
	{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true, http1.BodyNone, true},
	{"204", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-Y: z\r\n\r\n", false, http1.BodyNone, true},
	{"304 with length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nEtag: x\r\n\r\n", false, http1.BodyNone, true},
	{"103", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false, http1.BodyNone, true},
	{"close and hop-by-hop", "HTTP/1.1 200 OK\r\nConnection: close\r\nProxy-Authenticate: x\r\nUpgrade: y\r\nContent-Length: 0\r\n\r\n", false, http1.BodyLength, true},
	{"pragma", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n", false, http1.BodyLength, false},
	{"connection option", "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n", false, http1.BodyLength, false},
}

// describe is what a client reads of a response head.
func describe(r *http.Response) string {
	var trailer []string
	for n := range r.Trailer {
		trailer = append(trailer, n)
	}
	sort.Strings(trailer)
	return fmt.Sprintf("%s %s cl=%d close=%v te=%v trailer=%v %v", r.Status, r.Proto, r.ContentLength, r.Close, r.TransferEncoding, trailer, r.Header)
}

func methodOf(head bool) string {
	if head {
		return "HEAD"
	}
	return "GET"
}

// TestParseUpstreamHeadMatchesReadResponse checks the framing the loops take from a
// response head.
func TestParseUpstreamHeadMatchesReadResponse(t *testing.T) {
	for _, tc := range responseHeads {
		t.Run(tc.name, func(t *testing.T) {
			resp, framing, _, ok := http1.ParseResponse([]byte(tc.in), tc.head)
			if !ok || framing != tc.framing {
				t.Fatalf("ok %v, framing %d, want %d", ok, framing, tc.framing)
			}
			want, err := http.ReadResponse(bufio.NewReader(strings.NewReader(tc.in)), &http.Request{Method: methodOf(tc.head)})
			if err != nil {
				t.Fatal(err)
			}
			resp.Status = want.Status // parsed as sent; relayed in net/http's form
			if got, exp := describe(resp), describe(want); got != exp {
				t.Fatalf("got  %s\nwant %s", got, exp)
			}
		})
	}
	for _, bad := range []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "HTTP/2 200\r\n\r\n"} {
		if _, _, _, ok := http1.ParseResponse([]byte(bad), false); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestPlainHeadMatchesRebuiltHead: a head relayed line by line (http1.ScanResponse,
// http1.AppendRelayedHead) reads, to a client, as the same head rebuilt from a header map
// (http1.ParseResponse, removeHopByHop, appendResponseHead); heads it must not relay
// are refused.
func TestPlainHeadMatchesRebuiltHead(t *testing.T) {
	date := []byte("Mon, 23 Nov 2026 15:00:00 GMT")
	heads := append(responseHeads[:len(responseHeads):len(responseHeads)],
		struct {
			name, in string
			head     bool
			framing  http1.Framing
			plain    bool
		}{"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", false, http1.BodyLength, false},
		struct {
			name, in string
			head     bool
			framing  http1.Framing
			plain    bool
		}{"control character", "HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 0\r\n\r\n", false, http1.BodyLength, false})
	for _, tc := range heads {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := http1.ScanResponse([]byte(tc.in), tc.head)
			if ok != tc.plain {
				t.Fatalf("plain = %v, want %v", ok, tc.plain)
			}
			if !ok || h.Code < 200 {
				return
			}
			resp, framing, n, ok := http1.ParseResponse([]byte(tc.in), tc.head)
			if !ok || framing != h.Framing || (framing == http1.BodyLength && n != h.Length) || resp.StatusCode != h.Code || resp.Close != h.Close {
				t.Fatalf("scan %+v, parse %v %d %d close=%v", h, framing, n, resp.StatusCode, resp.Close)
			}
			removeHopByHop(resp.Header)
			closeAfter := framing == http1.BodyUntilClose
			var got [2]string
			for i, out := range [][]byte{
				http1.AppendRelayedHead(nil, []byte(tc.in), h, closeAfter, date),
				appendResponseHead(nil, resp, framing, closeAfter, date),
			} {
				r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), &http.Request{Method: methodOf(tc.head)})
				if err != nil {
					t.Fatalf("%q: %v", out, err)
				}
				got[i] = describe(r)
			}
			if got[0] != got[1] {
				t.Fatalf("relayed: %s\nrebuilt: %s", got[0], got[1])
			}
		})
	}
}

// TestEventLoopHalfClose: a client that shuts its side down once its answer has
// begun still gets all of it, and the connection closes after it; a client whose end
// of stream comes while its request runs, before the answer, cancels it (as with
// net/http's server and nginx: it cannot be told from a client that went away). The
// requests read together with the end of stream are all answered (printf … | nc); that
// case depends on how the kernel delivers the bytes, so it is not tested here.
func TestEventLoopHalfClose(t *testing.T) {
	a := startEcho(t, "a")
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), prefixRule("r", "/", backend("a", 1, a))))
	t.Run("after the head", func(t *testing.T) {
		c := dialFor(t, tg.addr, 10*time.Second)
		_, _ = io.WriteString(c, "GET /sse HTTP/1.1\r\nHost: h\r\n\r\n") // three events, 300 ms apart
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || strings.Count(string(body), "data:") != 3 {
			t.Fatalf("%d, %q, %v", resp.StatusCode, body, err)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("after the answer: %v, want EOF", err)
		}
	})
	t.Run("while the request runs", func(t *testing.T) {
		c := dialFor(t, tg.addr, 10*time.Second)
		before := a.hits.Load()
		_, _ = io.WriteString(c, "GET /delay/2s HTTP/1.1\r\nHost: h\r\n\r\n")
		eventually(t, 5*time.Second, func() bool { return a.hits.Load() > before }, "the request did not reach the backend")
		start := time.Now()
		_ = c.(*net.TCPConn).CloseWrite()
		if _, err := c.Read(make([]byte, 1)); err != io.EOF || time.Since(start) > time.Second {
			t.Fatalf("read %v after %v, want EOF at once (the request cancelled)", err, time.Since(start))
		}
	})
}

// dialFor connects to addr for at most d; the connection closes with the test.
func dialFor(t *testing.T, addr string, d time.Duration) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(d))
	return c
}

// TestEventLoopBackendCloses: a body that ends when the backend closes is relayed
// whole (the client's connection then closes too), and a backend's Connection: close
// is honoured (the next request dials again).
func TestEventLoopBackendCloses(t *testing.T) {
	var accepted atomic.Int64
	be := backend("b", 1)
	be.Endpoints = []model.Endpoint{serveConns(t, func(c net.Conn) {
		accepted.Add(1)
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		if req.URL.Path == "/until-close" {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstreamed until close")
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
	})}
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), prefixRule("r", "/", be)))

	resps, bodies, c := rawExchange(t, tg.addr, "GET /until-close HTTP/1.1\r\nHost: h\r\n\r\n", 1, "GET")
	if resps[0].StatusCode != 200 || string(bodies[0]) != "streamed until close" || !resps[0].Close {
		t.Fatalf("until close: %d %q close=%v", resps[0].StatusCode, bodies[0], resps[0].Close)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("client connection still open after a close-delimited body")
	}
	before := accepted.Load()
	for i := range 3 {
		resps, bodies, _ := rawExchange(t, tg.addr, "GET /close HTTP/1.1\r\nHost: h\r\n\r\n", 1, "GET")
		if resps[0].StatusCode != 200 || string(bodies[0]) != "ok" {
			t.Fatalf("request %d: %d %q", i, resps[0].StatusCode, bodies[0])
		}
	}
	if n := accepted.Load() - before; n != 3 {
		t.Fatalf("%d backend connections for 3 requests answered with Connection: close", n)
	}
}
