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
