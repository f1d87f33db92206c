package admin

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

// bigSnapshot has n Services of m endpoints each.
func bigSnapshot(n, m int) *model.Snapshot {
	snap := &model.Snapshot{Version: 7}
	for i := range n {
		set := model.EndpointSet{Verdict: model.Forward}
		var eps []model.Endpoint
		for j := range m {
			eps = append(eps, model.Endpoint{
				Addr: netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(j + 1)}), Port: 8080,
				Ready: true, Serving: true, NodeName: fmt.Sprintf("node-%d", j%3), Zone: "zone-a", Weight: 1,
			})
		}
		set.Endpoints = eps
		snap.Services = append(snap.Services, &model.Service{
			Key:        model.ServiceKey{Namespace: "default", Name: fmt.Sprintf("svc-%04d", i)},
			Type:       model.ClusterIP,
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{172, 30, byte(i >> 8), byte(i)})},
			Policy:     &model.Policy{},
			Ports: []*model.ServicePort{{
				Name: "http", Protocol: model.TCP, Port: 80, Endpoints: eps, Cluster: set, External: set,
			}},
		})
	}
	return snap
}

// TestSummarySize: at 1,000 Services × 10 endpoints the dashboard's poll is small.
func TestSummarySize(t *testing.T) {
	snap := bigSnapshot(1000, 10)
	reg := prometheus.NewRegistry()
	conns := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weir_l4_connections_total", Help: "x"}, []string{"service_port", "frontend"})
	reg.MustRegister(conns)
	srv, err := Listen(Options{Addr: "127.0.0.1:0", Gatherer: reg, Snapshot: func() *model.Snapshot { return snap }, SampleInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Traffic on a tenth of the Services, so that they carry sparklines.
	for i := 0; i < 1000; i += 10 {
		conns.WithLabelValues(fmt.Sprintf("default/svc-%04d:http", i), "x").Add(1)
	}
	stop := time.Now().Add(time.Second)
	for time.Now().Before(stop) {
		for i := 0; i < 1000; i += 10 {
			conns.WithLabelValues(fmt.Sprintf("default/svc-%04d:http", i), "x").Add(5)
		}
		time.Sleep(50 * time.Millisecond)
	}
	size := func(path string, gzip bool) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+srv.Addr().String()+path, nil)
		if gzip {
			req.Header.Set("Accept-Encoding", "gzip")
		} else {
			req.Header.Set("Accept-Encoding", "identity")
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return len(b), resp.Header.Get("Content-Encoding")
	}
	full, _ := size("/api/snapshot", false)
	raw, _ := size("/api/summary", false)
	zipped, enc := size("/api/summary", true)
	detail, _ := size("/api/service?name=default/svc-0010", false)
	t.Logf("1,000 Services × 10 endpoints: /api/snapshot %d B; /api/summary %d B, %d B gzipped (%s); /api/service for one Service %d B",
		full, raw, zipped, enc, detail)
	if enc != "gzip" {
		t.Error("/api/summary not gzipped for a client that accepts it")
	}
	if zipped > 64<<10 {
		t.Errorf("/api/summary is %d B gzipped at 1,000 Services, want under 64 KiB", zipped)
	}
}

func TestSummaryJSON(t *testing.T) {
	snap := bigSnapshot(2, 2)
	srv, err := Listen(Options{Addr: "127.0.0.1:0", Snapshot: func() *model.Snapshot { return snap }, Mode: "nftables",
		ConfigError: func() error {
			return fmt.Errorf("web.yaml:3: Service default/web: spec.ports[0].port: 70000 is not in 1..65535")
		},
		SyncError: func() error { return fmt.Errorf("nftables: add rule: no such file or directory") }})
	if err != nil {
		t.Fatal(err)
	}
	rec := &strings.Builder{}
	resp := httptestGet(t, srv, "/api/summary")
	rec.WriteString(resp)
	for _, want := range []string{`"version":7`, `"mode":"nftables"`, `"configErrors":["web.yaml:3: Service default/web`, `"syncErrors":["nftables: add rule: no such file or directory"]`,
		`"totals":{"services":2,"ports":2,"endpoints":4,"readyEndpoints":4`, `{"name":"default/svc-0000","type":"ClusterIP","addresses":["172.30.0.0:80/TCP"],"endpoints":2,"ready":2}`} {
		if !strings.Contains(rec.String(), want) {
			t.Errorf("no %s in %s", want, rec.String())
		}
	}
	if d := httptestGet(t, srv, "/api/service?name=default/svc-0001"); !strings.Contains(d, `"endpoints":[{"address":"10.0.1.1:8080","ready":true,"serving":true,"node":"node-0","zone":"zone-a"}`) {
		t.Errorf("service detail: %s", d)
	}
}

func httptestGet(t *testing.T, srv *Server, path string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Body.String()
}

func TestQuantile(t *testing.T) {
	// 100 observations: 50 in (0, 0.01], 40 in (0.01, 0.1], 10 in (0.1, 1].
	bs := []bucket{{0.01, 50}, {0.1, 90}, {1, 100}, {math.Inf(1), 100}}
	for _, tc := range []struct{ q, want float64 }{{0.5, 0.01}, {0.7, 0.055}, {0.99, 0.91}} {
		if got := quantile(tc.q, bs); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := quantile(0.5, []bucket{{1, 0}, {math.Inf(1), 0}}); got != 0 {
		t.Errorf("quantile without observations = %v", got)
	}
}

// TestEndpointRates: the connections or requests the data planes report per endpoint
// (health.Overlay.Traffic) become per-endpoint rates and error shares in /api/service.
func TestEndpointRates(t *testing.T) {
	snap := bigSnapshot(1, 2)
	ep := snap.Services[0].Ports[0].Endpoints[0].AddrPort()
	var ok, bad uint64
	traffic := func(fn func(k health.Key, successes, failures uint64)) {
		fn(health.Key{ServicePort: "default/svc-0000:http", Endpoint: ep}, ok, bad)
	}
	srv, err := Listen(Options{Addr: "127.0.0.1:0", Gatherer: prometheus.NewRegistry(), Traffic: traffic,
		Snapshot: func() *model.Snapshot { return snap }})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		ok, bad = uint64(i)*18, uint64(i)*2 // 10 per second, a tenth failing
		if err := srv.sampler.sample(t0.Add(time.Duration(i) * 2 * time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	d := httptestGet(t, srv, "/api/service?name=default/svc-0000")
	if want := `{"address":"10.0.0.1:8080","ready":true,"serving":true,"node":"node-0","zone":"zone-a","rate":[10,10],"errorRate":0.1}`; !strings.Contains(d, want) {
		t.Errorf("service detail: %s\nwant %s", d, want)
	}
	if strings.Count(d, `"rate"`) != 1 {
		t.Errorf("an endpoint without traffic shows a rate: %s", d)
	}
}
