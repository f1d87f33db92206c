package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"weir.dev/weir/internal/model"
)

// rawExchange sends raw bytes on a new connection and reads n responses.
func rawExchange(t *testing.T, addr, raw string, n int, method string) ([]*http.Response, [][]byte, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var resps []*http.Response
	var bodies [][]byte
	for range n {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("response %d: %v", len(resps), err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v", len(resps), err)
		}
		resps = append(resps, resp)
		bodies = append(bodies, body)
	}
	return resps, bodies, &bufConn{Conn: c, br: br}
}

type bufConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.br.Read(p) }

func TestTransportPipelinedAndKeepAlive(t *testing.T) {
	a := startEcho(t, "a")
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), prefixRule("r", "/", backend("a", 1, a))))

	t.Run("pipelined", func(t *testing.T) {
		raw := "GET /one HTTP/1.1\r\nHost: h\r\n\r\nGET /two HTTP/1.1\r\nHost: h\r\n\r\nGET /three HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
		resps, bodies, c := rawExchange(t, tg.addr, raw, 3, "GET")
		for i, p := range []string{"/one", "/two", "/three"} {
			var rep echoReply
			if err := json.Unmarshal(bodies[i], &rep); err != nil || resps[i].StatusCode != 200 || rep.Path != p {
				t.Fatalf("response %d: %d %s (%v)", i, resps[i].StatusCode, bodies[i], err)
			}
		}
		if !resps[2].Close {
			t.Fatal("Connection: close request not answered with Connection: close")
		}
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("connection still open after Connection: close (%d bytes)", n)
		}
	})
	t.Run("HTTP/1.0 keep-alive", func(t *testing.T) {
		raw := "GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /k2 HTTP/1.0\r\n\r\n"
		resps, _, c := rawExchange(t, tg.addr, raw, 2, "GET")
		if resps[0].StatusCode != 200 || resps[0].Header.Get("Connection") != "keep-alive" || resps[0].ContentLength <= 0 || resps[0].Proto != "HTTP/1.0" {
			t.Fatalf("first: %d %v %d %s", resps[0].StatusCode, resps[0].Header, resps[0].ContentLength, resps[0].Proto)
		}
		if resps[1].StatusCode != 200 || resps[1].Header.Get("Connection") != "" {
			t.Fatalf("second: %d %v", resps[1].StatusCode, resps[1].Header)
		}
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("HTTP/1.0 connection without keep-alive still open")
		}
	})
	t.Run("HEAD and 204", func(t *testing.T) {
		raw := "HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET /status/204 HTTP/1.1\r\nHost: h\r\n\r\n"
		c, err := net.Dial("tcp", tg.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, raw)
		br := bufio.NewReader(c)
		for _, m := range []string{"HEAD", "GET"} {
			resp, err := http.ReadResponse(br, &http.Request{Method: m})
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := io.Copy(io.Discard, resp.Body); n != 0 || resp.TransferEncoding != nil {
				t.Fatalf("%s: %d body bytes, %v", m, n, resp.TransferEncoding)
			}
		}
	})
}

// TestTransportHandsOffMidStream: a GET served by the event loops, then a POST
// with a body (net/http from then on), then a GET, on one connection.
func TestTransportHandsOffMidStream(t *testing.T) {
	a := startEcho(t, "a")
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), prefixRule("r", "/", backend("a", 1, a))))
	raw := "GET /first HTTP/1.1\r\nHost: h\r\n\r\n" +
		"POST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /third HTTP/1.1\r\nHost: h\r\n\r\n"
	resps, bodies, _ := rawExchange(t, tg.addr, raw, 3, "GET")
	for i, want := range []echoReply{{Method: "GET", Path: "/first"}, {Method: "POST", Path: "/second", Body: "hello"}, {Method: "GET", Path: "/third"}} {
		var rep echoReply
		if err := json.Unmarshal(bodies[i], &rep); err != nil || resps[i].StatusCode != 200 || rep.Method != want.Method || rep.Path != want.Path || rep.Body != want.Body {
			t.Fatalf("response %d: %d %s", i, resps[i].StatusCode, bodies[i])
		}
	}
	// Also when the request that is handed off arrives on its own, after a pause.
	c, err := net.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for i, req := range []string{"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok", "GET /c HTTP/1.1\r\nHost: h\r\n\r\n"} {
		_, _ = io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
}

// TestTransportMatchesNetHTTP sends the same raw requests to a gateway with weir's
// own server and proxy path and to one with net/http's server and
// httputil.ReverseProxy, and compares what the backend received and what the
// client got (status, headers but Date, body).
func TestTransportMatchesNetHTTP(t *testing.T) {
	a := startEcho(t, "a")
	mk := func(opts Options) *testGateway {
		rm := prefixRule("r", "/", backend("a", 1, a))
		rm.Rule.Filters = []model.Filter{
			{Type: model.FilterRequestHeaders, Headers: &model.HeaderModifier{Set: []model.Header{{Name: "X-Set", Value: "s"}}, Remove: []string{"X-Drop"}}},
			{Type: model.FilterResponseHeaders, Headers: &model.HeaderModifier{Add: []model.Header{{Name: "X-Resp", Value: "r"}}}},
		}
		opts.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		return startGateway(t, opts, httpConfig(freeAddr(t), rm))
	}
	// The event loops, and net/http with httputil.ReverseProxy.
	fast := mk(Options{})
	slow := mk(Options{DisableEventLoops: true})
	for _, tc := range []struct{ name, raw, method string }{
		{"plain", "GET /x?a=1 HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\nUser-Agent: u\r\n\r\n", "GET"},
		{"no user agent", "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n", "GET"},
		{"hop-by-hop", "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nProxy-Authorization: x\r\nTE: trailers, gzip\r\n\r\n", "GET"},
		{"forwarding from a trusted proxy", "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nForwarded: for=10.0.0.1\r\n\r\n", "GET"},
		{"filters", "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\nX-Drop: 1\r\nX-Set: old\r\n\r\n", "GET"},
		{"semicolon query", "GET /q?a=1;b=2 HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n", "GET"},
		{"HTTP/1.0", "GET /ten HTTP/1.0\r\nX-Request-Id: 1\r\n\r\n", "GET"},
		{"HEAD", "HEAD / HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n", "HEAD"},
		{"204", "GET /status/204 HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n", "GET"},
		{"503", "GET /status/503 HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n", "GET"},
		{"event stream", "GET /sse HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n", "GET"},
		{"close", "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\nConnection: close\r\n\r\n", "GET"},
		{"bad header name (400)", "GET / HTTP/1.1\r\nHost: h\r\nBad Name: 1\r\n\r\n", "GET"},
		{"missing host (400)", "GET / HTTP/1.1\r\n\r\n", "GET"},
		{"HTTP/2.0 version (505)", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", "GET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			var backendSaw [2]*echoReply
			for i, tg := range []*testGateway{fast, slow} {
				a.mu.Lock()
				a.last = nil
				a.mu.Unlock()
				resps, bodies, _ := rawExchange(t, tg.addr, tc.raw, 1, tc.method)
				resp := resps[0]
				resp.Header.Del("Date")
				var b strings.Builder
				b.WriteString(resp.Status + " " + resp.Proto + "\n")
				_ = resp.Header.Write(&b)
				b.WriteString("te=" + strings.Join(resp.TransferEncoding, ",") + "\n")
				if resp.Header.Get("Content-Type") == "application/json" {
					var rep echoReply
					_ = json.Unmarshal(bodies[0], &rep)
					backendSaw[i] = &rep
				} else {
					b.Write(bodies[0])
				}
				got[i] = b.String()
			}
			if got[0] != got[1] {
				t.Fatalf("client got\n%s\nfrom the event loops, and\n%s\nfrom net/http", got[0], got[1])
			}
			if !reflect.DeepEqual(backendSaw[0], backendSaw[1]) {
				t.Fatalf("backend saw\n%+v\nthrough the event loops, and\n%+v\nthrough ReverseProxy", backendSaw[0], backendSaw[1])
			}
		})
	}
}

// TestTransportShutdownDrains: Shutdown closes idle connections at once and lets a
// request in flight finish.
func TestTransportShutdownDrains(t *testing.T) {
	a := startEcho(t, "a")
	g, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	if err := g.Sync(context.Background(), &model.Snapshot{Gateway: httpConfig(addr, prefixRule("r", "/", backend("a", 1, a)))}); err != nil {
		t.Fatal(err)
	}
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_, _ = io.WriteString(idle, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(idle), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("idle connection's first request: %v", err)
	}
	done := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/delay/300ms")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	eventually(t, 5*time.Second, func() bool { return a.hits.Load() >= 2 }, "slow request did not reach the backend")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if code := <-done; code != 200 {
		t.Fatalf("request in flight during shutdown: %d", code)
	}
	_ = idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("idle connection not closed by shutdown: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}

// TestTransportSlowlorisOnKeptConnection: a partial head after a served request is
// bound by ReadHeaderTimeout, not by IdleTimeout.
func TestTransportSlowlorisOnKeptConnection(t *testing.T) {
	a := startEcho(t, "a")
	tg := startGateway(t, Options{ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: time.Minute},
		httpConfig(freeAddr(t), prefixRule("r", "/", backend("a", 1, a))))
	c, err := net.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n") // never finished
	start := time.Now()
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("connection with a partial head not closed: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("partial head held the connection %v", d)
	}
}

// TestTransportMatchesNetHTTPResponses compares both servers and proxy paths on
// answers the echo backend does not give: trailers, chunked and large bodies, 304,
// and an HTTP/1.0 client for a body of unknown length.
func TestTransportMatchesNetHTTPResponses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("0123456789abcdef", 5000) // 80 000 bytes: several copy buffers
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailers":
			w.Header().Set("Trailer", "X-Sum")
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
		case "/chunked":
			w.Header().Set("Content-Type", "text/plain")
			for range 3 {
				_, _ = io.WriteString(w, "part ")
				w.(http.Flusher).Flush()
			}
		case "/big":
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			_, _ = io.WriteString(w, big)
		case "/bigchunked":
			_, _ = io.WriteString(w, big)
		case "/notmodified":
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
		case "/nocontenttype":
			_, _ = io.WriteString(w, "<html><body>hi</body></html>")
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ap := netip.MustParseAddrPort(ln.Addr().String())
	mk := func(opts Options) *testGateway {
		be := &model.Backend{ID: "default/b:80", PortID: "default/b:http", Weight: 1, Policy: model.DefaultPolicy(),
			Endpoints: []model.Endpoint{{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Weight: 1}}}
		return startGateway(t, opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
	}
	fast := mk(Options{})
	slow := mk(Options{DisableEventLoops: true})
	for _, tc := range []struct{ name, raw string }{
		{"trailers", "GET /trailers HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n"},
		{"chunked", "GET /chunked HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n"},
		{"big", "GET /big HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n"},
		{"big chunked", "GET /bigchunked HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n"},
		{"big chunked to HTTP/1.0", "GET /bigchunked HTTP/1.0\r\nX-Request-Id: 1\r\n\r\n"},
		{"chunked to HTTP/1.0 keep-alive", "GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\nX-Request-Id: 1\r\n\r\n"},
		{"304", "GET /notmodified HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n"},
		{"sniffed type", "GET /nocontenttype HTTP/1.1\r\nHost: h\r\nX-Request-Id: 1\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			for i, tg := range []*testGateway{fast, slow} {
				resps, bodies, _ := rawExchange(t, tg.addr, tc.raw, 1, "GET")
				resp := resps[0]
				resp.Header.Del("Date")
				var b strings.Builder
				b.WriteString(resp.Status + " " + resp.Proto + " close=" + strconv.FormatBool(resp.Close) + "\n")
				_ = resp.Header.Write(&b)
				b.WriteString("te=" + strings.Join(resp.TransferEncoding, ",") + " cl=" + strconv.FormatInt(resp.ContentLength, 10) + "\n")
				_ = resp.Trailer.Write(&b)
				b.WriteString(strconv.Itoa(len(bodies[0])) + " bytes, starting " + string(bodies[0][:min(len(bodies[0]), 40)]))
				got[i] = b.String()
			}
			if got[0] != got[1] {
				t.Fatalf("event loops:\n%s\n\nnet/http and ReverseProxy:\n%s", got[0], got[1])
			}
		})
	}
}

// TestTransportClientGoneCancels: a client that goes away during a slow bodyless
// request cancels it (the backend sees its request's context end), as with net/http;
// and a slow request on a connection that stays open is answered normally, with the
// pipelined request behind it.
func TestTransportClientGoneCancels(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cancelled := make(chan struct{}, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond)
			_, _ = io.WriteString(w, "slow")
			return
		}
		if r.URL.Path != "/hang" {
			_, _ = io.WriteString(w, r.Method+" fast")
			return
		}
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ap := netip.MustParseAddrPort(ln.Addr().String())
	be := &model.Backend{ID: "default/b:80", PortID: "default/b:http", Weight: 1, Policy: model.DefaultPolicy(),
		Endpoints: []model.Endpoint{{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Weight: 1}}}
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), prefixRule("r", "/", be)))

	resps, bodies, _ := rawExchange(t, tg.addr, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n", 2, "GET")
	if resps[0].StatusCode != 200 || string(bodies[0]) != "slow" || resps[1].StatusCode != 200 || string(bodies[1]) != "GET fast" {
		t.Fatalf("slow then pipelined: %d %q, %d %q", resps[0].StatusCode, bodies[0], resps[1].StatusCode, bodies[1])
	}

	// The next request arrives while the slow one runs: the background read takes its
	// first byte, which must not be lost.
	pc, err := net.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_ = pc.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(pc, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
	time.Sleep(250 * time.Millisecond)
	_, _ = io.WriteString(pc, "GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
	pbr := bufio.NewReader(pc)
	for _, want := range []string{"slow", "GET fast"} {
		resp, err := http.ReadResponse(pbr, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("%d %q, want %q", resp.StatusCode, body, want)
		}
	}

	c, err := net.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET /hang HTTP/1.1\r\nHost: h\r\n\r\n")
	time.Sleep(400 * time.Millisecond) // past slowRequest and a watch tick
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not cancelled when the client went away")
	}
}
