package gateway

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c" //lint:ignore SA1019 the one server that agrees to an h2c upgrade (net/http's does not)

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
// headers reach the gateway unchanged) and reads its final response whole.
func edgeExchange(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	resp, body, _ := finalExchange(t, addr, req)
	return resp, body
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

// TestConnectionOptionsDoNotStripFilterHeaders: headers a client's Connection header
// names are removed before the route's RequestHeaderModifier runs, so the headers the
// filter sets reach the backend whatever the client names.
func TestConnectionOptionsDoNotStripFilterHeaders(t *testing.T) {
	forEdgeTransport(t, func(t *testing.T, opts Options) {
		tb := startTargetBackend(t)
		rm := prefixRule("r", "/", tb.backend("a"))
		rm.Rule.Filters = []model.Filter{{Type: model.FilterRequestHeaders, Headers: &model.HeaderModifier{
			Set: []model.Header{{Name: "X-Tenant", Value: "set-by-route"}},
			Add: []model.Header{{Name: "X-Added", Value: "added-by-route"}},
		}}}
		tg := startGateway(t, opts, httpConfig(freeAddr(t), rm))
		resp, _ := edgeExchange(t, tg.addr, "GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Tenant, X-Added, X-Secret\r\n"+
			"X-Tenant: from-client\r\nX-Secret: hop\r\nX-Kept: yes\r\n\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		r := tb.last()
		if got := r.Header.Get("X-Tenant"); got != "set-by-route" {
			t.Errorf("X-Tenant %q, want the filter's value", got)
		}
		if got := r.Header.Get("X-Added"); got != "added-by-route" {
			t.Errorf("X-Added %q, want the filter's value", got)
		}
		if r.Header["X-Secret"] != nil {
			t.Error("a header the client's Connection names was forwarded")
		}
		if r.Header.Get("X-Kept") != "yes" {
			t.Error("an ordinary header was dropped")
		}
	})
}

// TestH2CUpgradeNotForwarded: "Upgrade: h2c" is never passed to a backend, even one
// that would agree (golang.org/x/net/http2/h2c): the request is answered in HTTP/1.1 as
// if no upgrade had been asked (Envoy's behaviour); a WebSocket upgrade still works.
func TestH2CUpgradeNotForwarded(t *testing.T) {
	forEdgeTransport(t, func(t *testing.T, opts Options) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var seen []http.Header
		inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen = append(seen, r.Header.Clone())
			mu.Unlock()
			_, _ = io.WriteString(w, r.Proto)
		})
		//lint:ignore SA1019 a backend that agrees to h2c upgrades, which net/http's server never does
		upgrading := h2c.NewHandler(inner, &http2.Server{})
		srv := &http.Server{Handler: upgrading, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		ap := netip.MustParseAddrPort(ln.Addr().String())
		be := &model.Backend{Service: model.ServiceKey{Namespace: "default", Name: "h2"}, Port: 80, ID: "default/h2:80", PortID: "default/h2:http",
			Weight: 1, Policy: model.DefaultPolicy(), Endpoints: []model.Endpoint{{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}}}
		tg := startGateway(t, opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
		resp, body := edgeExchange(t, tg.addr, "GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
			"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
		if resp.StatusCode != http.StatusOK || body != "HTTP/1.1" {
			t.Fatalf("h2c upgrade: %d %q, want 200 served in HTTP/1.1", resp.StatusCode, body)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != 1 {
			t.Fatalf("backend saw %d requests", len(seen))
		}
		for _, k := range []string{"Upgrade", "Http2-Settings"} {
			if v := seen[0][k]; v != nil {
				t.Errorf("backend got %s: %q", k, v)
			}
		}
	})
}

// TestForwardingHeadersFromUntrustedClients: a client that is not a trusted proxy
// cannot choose the forwarding headers the backend sees: weir's own (X-Forwarded-For,
// -Proto, -Host, Forwarded) are set from the connection, and the others (X-Real-IP,
// X-Forwarded-Port, X-Original-URL and the like) are dropped. A trusted proxy's are
// kept and appended to.
func TestForwardingHeadersFromUntrustedClients(t *testing.T) {
	spoofed := "X-Real-IP: 6.6.6.6\r\nX-Forwarded-Port: 1\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\n" +
		"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6\r\n" +
		"True-Client-IP: 6.6.6.6\r\nX-Forwarded-Prefix: /evil\r\n"
	for _, trusted := range []bool{false, true} {
		name := "untrusted"
		if trusted {
			name = "trusted"
		}
		t.Run(name, func(t *testing.T) {
			forEdgeTransport(t, func(t *testing.T, opts Options) {
				if trusted {
					opts.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
				}
				tb := startTargetBackend(t)
				tg := startGateway(t, opts, httpConfig(freeAddr(t), prefixRule("r", "/", tb.backend("a"))))
				resp, _ := edgeExchange(t, tg.addr, "GET /x HTTP/1.1\r\nHost: example.com\r\n"+spoofed+"\r\n")
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
				h := tb.last().Header
				want := map[string]string{
					"X-Real-Ip": "", "X-Forwarded-Port": "", "X-Forwarded-For": "127.0.0.1",
					"X-Forwarded-Proto": "http", "X-Forwarded-Host": "example.com",
					"Forwarded":      `for=127.0.0.1;host="example.com";proto=http`,
					"X-Original-Url": "", "X-Rewrite-Url": "", "True-Client-Ip": "", "X-Forwarded-Prefix": "",
				}
				if trusted {
					want = map[string]string{
						"X-Real-Ip": "6.6.6.6", "X-Forwarded-Port": "1", "X-Forwarded-For": "6.6.6.6, 127.0.0.1",
						"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example",
						"Forwarded":      `for=6.6.6.6, for=127.0.0.1;host="example.com";proto=http`,
						"X-Original-Url": "/admin", "X-Rewrite-Url": "/admin", "True-Client-Ip": "6.6.6.6", "X-Forwarded-Prefix": "/evil",
					}
				}
				for k, v := range want {
					if got := strings.Join(h[k], ", "); got != v {
						t.Errorf("%s: %q, want %q", k, got, v)
					}
				}
			})
		})
	}
}
