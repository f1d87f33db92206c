package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"weir.dev/weir/internal/model"
)

func TestDownstreamLimits(t *testing.T) {
	a := startEcho(t, "a")
	tg := startGateway(t, Options{MaxBodyBytes: 1024, MaxHeaderBytes: 4096, ReadHeaderTimeout: 300 * time.Millisecond},
		httpConfig(freeAddr(t), prefixRule("r", "/", backend("a", 1, a))))
	t.Run("body too large", func(t *testing.T) {
		resp, err := http.Post(tg.url+"/", "text/plain", bytes.NewReader(make([]byte, 4096)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", resp.StatusCode)
		}
	})
	t.Run("body within limit", func(t *testing.T) {
		resp, err := http.Post(tg.url+"/", "text/plain", strings.NewReader("small"))
		if err != nil {
			t.Fatal(err)
		}
		var rep echoReply
		_ = json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if resp.StatusCode != 200 || rep.Body != "small" {
			t.Fatalf("status %d body %q", resp.StatusCode, rep.Body)
		}
	})
	t.Run("headers too large", func(t *testing.T) {
		resp, _ := get(t, http.DefaultClient, "GET", tg.url+"/", map[string]string{"X-Big": strings.Repeat("x", 16384)})
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", resp.StatusCode)
		}
	})
	t.Run("slowloris", func(t *testing.T) {
		c, err := net.Dial("tcp", tg.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")) // never finishes the headers
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, err = io.ReadAll(c)
		if time.Since(start) > 4*time.Second {
			t.Fatalf("connection held open %v past ReadHeaderTimeout (%v)", time.Since(start), err)
		}
	})
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestIngressListenersAndAccessLog(t *testing.T) {
	a := startEcho(t, "a")
	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	httpAddr := freeAddr(t)
	cfg := &model.GatewayConfig{Listeners: []*model.Listener{{Ingress: "http", Protocol: model.ProtocolHTTP,
		Sections: []*model.Section{{Name: "ingress", Hosts: []*model.VirtualHost{{Matches: []*model.RouteMatch{prefixRule("default/ing/0-0", "/", backend("a", 1, a))}}}}}}}}
	tg := startGateway(t, Options{IngressHTTPAddr: httpAddr, AccessLog: true, Logger: log}, cfg)
	if got := tg.Addresses()[httpAddr]; got != httpAddr {
		t.Fatalf("addresses %v", tg.Addresses())
	}
	resp, rep := get(t, http.DefaultClient, "GET", "http://"+httpAddr+"/hello", map[string]string{"X-Request-Id": "abc"})
	if resp.StatusCode != 200 || rep.Name != "a" {
		t.Fatalf("ingress: %d", resp.StatusCode)
	}
	eventually(t, 2*time.Second, func() bool { return strings.Contains(logs.String(), `"msg":"access"`) }, "no access log record")
	var rec map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(line, `"msg":"access"`) {
			_ = json.Unmarshal([]byte(line), &rec)
		}
	}
	if rec["requestId"] != "abc" || rec["route"] != "default/ing/0-0" || rec["status"] != float64(200) || rec["path"] != "/hello" || rec["upstream"] != a.addr.String() {
		t.Fatalf("access record %v", rec)
	}
}

func TestSlowStartRamps(t *testing.T) {
	// A cluster whose second endpoint just appeared gives it a small share at first.
	be := backend("svc", 1)
	be.Endpoints = []model.Endpoint{{Addr: mustAddr("10.0.0.1"), Port: 80, Ready: true, Weight: 1}}
	be.Policy.Algorithm = "WeightedRoundRobin"
	be.Policy.SlowStart = &model.SlowStart{Window: time.Minute, Aggression: 1, MinWeightPercent: 10}
	c := newCluster("svc", false)
	t0 := time.Now().Add(-2 * time.Minute)
	c.update(be, t0)
	be2 := *be
	be2.Endpoints = append(be2.Endpoints, model.Endpoint{Addr: mustAddr("10.0.0.2"), Port: 80, Ready: true, Weight: 1})
	now := time.Now()
	c.update(&be2, now)
	st := c.state.Load()
	counts := map[int]int{}
	for range 1000 {
		counts[st.picker.Pick(0)]++
	}
	if counts[1] > 200 || counts[1] == 0 {
		t.Fatalf("new endpoint got %d of 1000 picks at the start of its window; want about 10 %%", counts[1])
	}
	if st.rampUntil.IsZero() {
		t.Fatal("cluster does not know it is ramping")
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestMetricsOfRemovedRoutesForgotten(t *testing.T) {
	a := startEcho(t, "a")
	reg := prometheus.NewRegistry()
	addr := freeAddr(t)
	tg := startGateway(t, Options{Registerer: reg}, httpConfig(addr, prefixRule("old", "/", backend("a", 1, a))))
	get(t, http.DefaultClient, "GET", tg.url+"/", nil)
	if n := testutil.ToFloat64(tg.metrics.requests.WithLabelValues("old", "default/a:80", "2xx")); n != 1 {
		t.Fatalf("requests %v", n)
	}
	tg.sync(t, httpConfig(addr, prefixRule("new", "/", backend("a", 1, a))))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && l.GetValue() == "old" {
					t.Fatalf("%s still has route=old", mf.GetName())
				}
			}
		}
	}
}

// TestUpstreamConnectionReuse covers the upstream keep-alive pool: a connection the
// backend closed while idle is replaced without an error, Connection: close answers
// are not reused, HEAD and 204 answers keep the connection.
func TestUpstreamConnectionReuse(t *testing.T) {
	var conns atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/close":
				w.Header().Set("Connection", "close")
			case "/empty":
				w.WriteHeader(http.StatusNoContent)
				return
			}
			_, _ = w.Write([]byte("ok"))
		}),
		IdleTimeout: 100 * time.Millisecond,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ap := netip.MustParseAddrPort(ln.Addr().String())
	be := &model.Backend{ID: "default/b:80", PortID: "default/b:http", Weight: 1, Policy: model.DefaultPolicy(),
		Endpoints: []model.Endpoint{{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Weight: 1}}}
	rm := prefixRule("r", "/", be)
	rm.Rule.Retry.Attempts = 0 // staleness must be handled below retries
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), rm))
	do := func(method, path string) int {
		t.Helper()
		req, _ := http.NewRequest(method, tg.url+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 5 {
		if code := do("GET", "/"); code != 200 {
			t.Fatalf("GET: %d", code)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("5 sequential GETs used %d upstream connections, want 1", n)
	}
	if do("HEAD", "/") != 200 || do("GET", "/empty") != 204 || do("GET", "/") != 200 {
		t.Fatal("HEAD/204")
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("HEAD and 204 answers cost new connections: %d", n)
	}
	time.Sleep(300 * time.Millisecond) // the backend closes the idle connection
	for range 3 {
		if code := do("GET", "/"); code != 200 {
			t.Fatalf("GET after the backend closed the idle connection: %d", code)
		}
	}
	before := conns.Load()
	do("GET", "/close")
	do("GET", "/")
	if conns.Load() != before+1 {
		t.Fatalf("connection after Connection: close was reused (%d → %d)", before, conns.Load())
	}
}

func TestUpstreamSkipsEarlyHints(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = w.Write([]byte("final"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ap := netip.MustParseAddrPort(ln.Addr().String())
	be := &model.Backend{ID: "default/b:80", PortID: "default/b:http", Weight: 1, Policy: model.DefaultPolicy(),
		Endpoints: []model.Endpoint{{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Weight: 1}}}
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
	resp, err := http.Get(tg.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "final" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}
