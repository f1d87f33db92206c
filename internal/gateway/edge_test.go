package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"weir.dev/weir/internal/model"
)

// Tests of what a hostile client sends: each runs on every transport a plaintext
// listener has, with raw requests over real loopback sockets.

// forEdgeTransport runs f once per transport (helpers_test.go's transports).
func forEdgeTransport(t *testing.T, f func(t *testing.T, opts Options)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { f(t, tr.opts) })
	}
}

// edgeExchange sends one raw request (its head written as given, so that the target and
// headers reach the gateway unchanged) and reads the response whole.
func edgeExchange(t *testing.T, addr, req string) (*http.Response, string) {
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
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, string(body)
}

// targetBackend is a loopback backend that records the request target and headers of
// every request it gets.
type targetBackend struct {
	ep   model.Endpoint
	mu   sync.Mutex
	reqs []*http.Request
}

func startTargetBackend(t *testing.T) *targetBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tb := &targetBackend{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tb.mu.Lock()
		tb.reqs = append(tb.reqs, r)
		tb.mu.Unlock()
		w.Header().Set("X-Target", r.RequestURI)
		_, _ = io.WriteString(w, "backend")
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ap := netip.MustParseAddrPort(ln.Addr().String())
	tb.ep = model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}
	return tb
}

func (tb *targetBackend) backend(name string) *model.Backend {
	return &model.Backend{Service: model.ServiceKey{Namespace: "default", Name: name}, Port: 80, ID: "default/" + name + ":80",
		PortID: "default/" + name + ":http", Weight: 1, Policy: model.DefaultPolicy(), Endpoints: []model.Endpoint{tb.ep}}
}

func (tb *targetBackend) count() int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return len(tb.reqs)
}

func (tb *targetBackend) last() *http.Request {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.reqs) == 0 {
		return nil
	}
	return tb.reqs[len(tb.reqs)-1]
}

// TestDotSegmentBypass: on a route exposing only /public, dot segments (plain or
// escaped), escaped letters and encoded slashes never reach the backend as a /public
// match (nginx answers 404 to all of these); what does match is forwarded normalised.
func TestDotSegmentBypass(t *testing.T) {
	forEdgeTransport(t, func(t *testing.T, opts Options) {
		tb := startTargetBackend(t)
		tg := startGateway(t, opts, httpConfig(freeAddr(t), prefixRule("public", "/public", tb.backend("pub"))))
		for _, target := range []string{"/public/../admin", "/public/%2e%2e/admin", "/%70ublic/../admin", "/public%2F..%2Fadmin",
			"/public/%2E%2E/admin", "/public/.%2e/admin", "/public/./../admin", "/public%2fadmin"} {
			resp, _ := edgeExchange(t, tg.addr, "GET "+target+" HTTP/1.1\r\nHost: example.com\r\n\r\n")
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s: %d, want 404", target, resp.StatusCode)
			}
		}
		if n := tb.count(); n != 0 {
			t.Fatalf("the backend got %d requests, want none", n)
		}
		for target, want := range map[string]string{
			"/public/./x":        "/public/x",
			"/%70ublic/x?q=%2e":  "/public/x?q=%2e",
			"/public/a/../b":     "/public/b",
			"/public/caf%c3%a9":  "/public/caf%C3%A9",
			"/public/a%2fb/../c": "/public/c",
			"/public/a%2Fb":      "/public/a%2Fb",
		} {
			resp, body := edgeExchange(t, tg.addr, "GET "+target+" HTTP/1.1\r\nHost: example.com\r\n\r\n")
			if resp.StatusCode != http.StatusOK || body != "backend" {
				t.Errorf("%s: %d %q", target, resp.StatusCode, body)
				continue
			}
			if got := resp.Header.Get("X-Target"); got != want {
				t.Errorf("%s forwarded as %q, want %q", target, got, want)
			}
		}
		resp, _ := edgeExchange(t, tg.addr, "GET /public/%zz HTTP/1.1\r\nHost: example.com\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("malformed escape: %d, want 400", resp.StatusCode)
		}
	})
}
