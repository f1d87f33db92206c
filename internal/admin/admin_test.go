package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/model"
)

func TestAdminEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "weir_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()

	var snap atomic.Pointer[model.Snapshot]
	srv, err := Listen(Options{
		Addr:     "127.0.0.1:0",
		Gatherer: reg,
		Snapshot: snap.Load,
		Sections: map[string]func() any{"health": func() any { return map[string]bool{"10.0.0.1:80": false} }},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + srv.Addr().String()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	if code, _ := get("/readyz"); code != 503 {
		t.Fatalf("/readyz before a snapshot = %d, want 503", code)
	}
	snap.Store(&model.Snapshot{Version: 7, Services: []*model.Service{{
		Key: model.ServiceKey{Namespace: "default", Name: "web"}, Type: model.ClusterIP,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
		Ports: []*model.ServicePort{{Protocol: model.TCP, Port: 80,
			Cluster: model.EndpointSet{Verdict: model.Reject}}},
	}}})
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz after a snapshot = %d, want 200", code)
	}
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, "weir_test_total 1") {
		t.Fatalf("/metrics = %d %q", code, body)
	}
	code, body = get("/api/snapshot")
	if code != 200 {
		t.Fatalf("/api/snapshot = %d", code)
	}
	var view struct {
		Snapshot model.Snapshot
		Health   map[string]bool
	}
	if err := json.Unmarshal([]byte(body), &view); err != nil {
		t.Fatalf("decode: %v\n%s", err, body)
	}
	if view.Snapshot.Version != 7 || view.Snapshot.Services[0].Ports[0].Cluster.Verdict != model.Reject || view.Health["10.0.0.1:80"] {
		t.Fatalf("unexpected view %+v", view)
	}
	if !strings.Contains(body, `"Verdict": "reject"`) {
		t.Fatalf("verdict not written by name:\n%s", body)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, "<title>weir</title>") {
		t.Fatalf("dashboard = %d", code)
	}
}
