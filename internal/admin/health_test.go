package admin

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestHealthOnly: the public health port answers /healthz and /readyz and nothing of the
// admin API (no metrics, snapshot or dashboard).
func TestHealthOnly(t *testing.T) {
	var ready atomic.Bool
	srv, err := Listen(Options{
		Addr: "127.0.0.1:0", Gatherer: prometheus.NewRegistry(), Ready: ready.Load, HealthOnly: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	get := func(path string) int {
		t.Helper()
		resp, err := http.Get("http://" + srv.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d, want 200", code)
	}
	if code := get("/readyz"); code != 503 {
		t.Errorf("/readyz before ready = %d, want 503", code)
	}
	ready.Store(true)
	if code := get("/readyz"); code != 200 {
		t.Errorf("/readyz once ready = %d, want 200", code)
	}
	for _, p := range []string{"/metrics", "/api/snapshot", "/"} {
		if code := get(p); code != 404 {
			t.Errorf("%s on the health port = %d, want 404", p, code)
		}
	}
}
