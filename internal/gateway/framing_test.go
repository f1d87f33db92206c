package gateway

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"weir.dev/weir/internal/http1"
	"weir.dev/weir/internal/model"
)

// smuggled is the request hidden in each hostile request below: it must never reach
// the backend as a request of its own.
const smuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"

// TestHostileRequestFraming: requests whose framing a server or proxy in front of weir
// may read otherwise (RFC 9112 sections 6.1, 6.3, 7.1 and 11.2) are answered 400 or
// end the connection, on every transport, and the request smuggled in them never
// reaches the backend.
func TestHostileRequestFraming(t *testing.T) {
	cases := []struct {
		name, raw string
		want400   bool // else: 400 or the connection ends
	}{
		{"Content-Length and Transfer-Encoding",
			"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 41\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, true},
		{"Transfer-Encoding and Content-Length",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n24\r\n" + smuggled + "\r\n0\r\n\r\n", true},
		{"two Content-Lengths",
			"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 36\r\n\r\n" + smuggled, true},
		{"Transfer-Encoding folded (obs-fold)",
			"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 41\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + smuggled, true},
		{"a folded line",
			"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 36\r\n\r\n" + smuggled, true},
		{"space before the colon",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\nContent-Length: 41\r\n\r\n0\r\n\r\n" + smuggled, true},
		{"HTTP/1.0 with Transfer-Encoding",
			"POST / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n24\r\n" + smuggled + "\r\n0\r\n\r\n" + smuggled, true},
		{"HTTP/1.0 with Transfer-Encoding, Content-Length",
			"POST / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, true},
		{"bad chunk size",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + smuggled, false},
		{"chunk size overflow",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff0\r\n" + smuggled, false},
		{"space before a chunk extension",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0 ;x\r\n\r\n" + smuggled, false},
		{"bare LF in a chunk line",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n" + smuggled, false},
		{"after an upgrade the backend refused",
			"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" +
				"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 41\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, false},
		{"after an h2c upgrade",
			"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n" +
				"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 41\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, false},
		{"chunk data longer than its size",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n" + smuggled, false},
	}
	forFramingListener(t, func(t *testing.T, tb *targetBackend, dial func() net.Conn) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := tb.smuggled()
				codes, closed := hostileExchange(t, dial(), tc.raw)
				switch {
				case tc.want400 && (len(codes) != 1 || codes[0] != http.StatusBadRequest || !closed):
					t.Errorf("answered %v, closed %v; want one 400 and the connection closed", codes, closed)
				case !tc.want400 && !closed && (len(codes) == 0 || codes[0] != http.StatusBadRequest):
					t.Errorf("answered %v, connection open; want 400 or the connection closed", codes)
				}
				if n := tb.smuggled(); n != before {
					t.Fatalf("the smuggled request reached the backend (%d times)", n-before)
				}
			})
		}
		// And a plain chunked request, a bare-LF head (net/http reads both) and a
		// request after them on the same connection are served.
		codes, _ := hostileExchange(t, dial(), "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
			"GET /b HTTP/1.1\nHost: h\n\n"+
			"GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
		if len(codes) != 3 || codes[0] != 200 || codes[1] != 200 || codes[2] != 200 {
			t.Fatalf("well-framed requests answered %v", codes)
		}
	})
}

// forFramingListener runs f once per listener a client's request framing reaches: a
// plaintext one on each transport (helpers_test.go's transports), and an HTTPS one
// (net/http behind TLS, HTTP/1.1). dial opens a connection to it; tb is its backend.
func forFramingListener(t *testing.T, f func(t *testing.T, tb *targetBackend, dial func() net.Conn)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			tb := startTargetBackend(t)
			tg := startGateway(t, tr.opts, httpConfig(freeAddr(t), prefixRule("r", "/", tb.backend("b"))))
			f(t, tb, func() net.Conn {
				c, err := net.DialTimeout("tcp", tg.addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				return c
			})
		})
	}
	t.Run("HTTPS", func(t *testing.T) {
		tb := startTargetBackend(t)
		crt, key := certPEM(t, "h")
		cfg := httpConfig(freeAddr(t), prefixRule("r", "/", tb.backend("b")))
		cfg.Listeners[0].Protocol = model.ProtocolHTTPS
		cfg.Listeners[0].Sections[0].Certificates = []model.Certificate{{Source: "default/h", CertPEM: crt, KeyPEM: key}}
		tg := startGateway(t, Options{}, cfg)
		f(t, tb, func() net.Conn {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", tg.addr,
				&tls.Config{InsecureSkipVerify: true, ServerName: "h", NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			return c
		})
	})
}

// hostileExchange writes raw on c and reads responses until the gateway closes the
// connection (closed) or stops answering for a second.
func hostileExchange(t *testing.T, c net.Conn, raw string) (codes []int, closed bool) {
	t.Helper()
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			return codes, !(errors.As(err, &ne) && ne.Timeout())
		}
		codes = append(codes, resp.StatusCode)
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return codes, true
		}
		if resp.Close {
			_, err := br.ReadByte()
			var ne net.Error
			return codes, !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// smuggled counts the requests for /smuggled the backend got.
func (tb *targetBackend) smuggled() int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	n := 0
	for _, r := range tb.reqs {
		if r.RequestURI == "/smuggled" {
			n++
		}
	}
	return n
}

// TestUpstreamResponseHeads: what a backend's response head may be is the same on
// every transport, and net/http's client rules: bare LF and obs-fold read as
// http.ReadResponse reads them, one 64 KiB bound on a head (http1.MaxResponseHead),
// and at most five informational responses before the final one.
func TestUpstreamResponseHeads(t *testing.T) {
	informational := func(n int) string { return strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", n) }
	cases := []struct {
		name, resp string
		code       int
		header     string // X-A's value, when code is 200
	}{
		{"bare LF", "HTTP/1.1 200 OK\nX-A: lf\nContent-Length: 2\n\nok", 200, "lf"},
		{"bare LF on one line", "HTTP/1.1 200 OK\r\nX-A: mixed\nContent-Length: 2\r\n\r\nok", 200, "mixed"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", 200, "a b"},
		{"head under the bound", "HTTP/1.1 200 OK\r\nX-A: big\r\nX-Pad: " + strings.Repeat("p", 60<<10) + "\r\nContent-Length: 2\r\n\r\nok", 200, "big"},
		{"head over the bound", "HTTP/1.1 200 OK\r\nX-A: big\r\nX-Pad: " + strings.Repeat("p", 65<<10) + "\r\nContent-Length: 2\r\n\r\nok", 502, ""},
		{"five informational", informational(5) + "HTTP/1.1 200 OK\r\nX-A: after\r\nContent-Length: 2\r\n\r\nok", 200, "after"},
		{"six informational", informational(6) + "HTTP/1.1 200 OK\r\nX-A: after\r\nContent-Length: 2\r\n\r\nok", 502, ""},
		{"ten thousand informational", informational(10000) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 502, ""},
		{"Content-Length beside chunked", "HTTP/1.1 200 OK\r\nX-A: te\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 200, "te"},
		{"two Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", 502, ""},
		{"malformed", "HTTP/1.1 200 OK\r\nX-A a\r\nContent-Length: 2\r\n\r\nok", 502, ""},
	}
	forEdgeTransport(t, func(t *testing.T, opts Options) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ep := serveConns(t, func(c net.Conn) {
					if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
						return
					}
					_, _ = io.WriteString(c, tc.resp)
				})
				be := &model.Backend{ID: "default/b:80", PortID: "default/b:http", Weight: 1, Policy: model.DefaultPolicy(), Endpoints: []model.Endpoint{ep}}
				tg := startGateway(t, opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
				resp, body, relayed := finalExchange(t, tg.addr, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
				if relayed > http1.MaxInformational+1 {
					t.Fatalf("%d informational responses relayed", relayed)
				}
				if resp.StatusCode != tc.code {
					t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.code)
				}
				if tc.code == 200 && (resp.Header.Get("X-A") != tc.header || body != "ok") {
					t.Fatalf("X-A %q body %q, want %q ok", resp.Header.Get("X-A"), body, tc.header)
				}
			})
		}
	})
}

// finalExchange sends one raw request and reads its final response whole, counting the
// informational responses before it.
func finalExchange(t *testing.T, addr, req string) (*http.Response, string, int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for n := 0; ; n++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		if resp.StatusCode >= 200 {
			body, _ := io.ReadAll(resp.Body)
			return resp, string(body), n
		}
	}
}

// TestRequestWithPartOfTheNext: a request followed, in the same write, by the start of
// the next one is answered at once on every transport (the guard holds back only the
// unfinished head), and the next one when its head is complete.
func TestRequestWithPartOfTheNext(t *testing.T) {
	forFramingListener(t, func(t *testing.T, _ *targetBackend, dial func() net.Conn) {
		for _, first := range []string{"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok", "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"} {
			partOfTheNext(t, dial(), first)
		}
	})
}

func partOfTheNext(t *testing.T, c net.Conn, first string) {
	t.Helper()
	defer c.Close()
	br := bufio.NewReader(c)
	for _, w := range []struct{ write, want string }{
		{first + "GET /b HTTP/1.1\r\nHo", "/a"},
		{"st: h\r\n\r\n", "/b"},
	} {
		if _, err := io.WriteString(c, w.write); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer for %s: %v", w.want, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if got := resp.Header.Get("X-Target"); resp.StatusCode != 200 || got != w.want {
			t.Fatalf("answer %d for %q, want 200 for %s", resp.StatusCode, got, w.want)
		}
	}
}
