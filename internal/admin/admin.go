// Package admin serves weir's admin HTTP API: liveness and readiness, Prometheus
// metrics, the live Snapshot as JSON and a dashboard that draws it.
package admin

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

//go:embed dashboard.html
var dashboardHTML []byte

// Options configure the admin server.
type Options struct {
	// Addr to listen on, for example 127.0.0.1:9901.
	Addr string
	// Gatherer is the registry whose metrics /metrics serves.
	Gatherer prometheus.Gatherer
	// Snapshot returns the Snapshot in force (nil before the first sync).
	Snapshot func() *model.Snapshot
	// Ready reports readiness; /readyz answers 503 until it is true. Nil means ready once
	// a Snapshot exists.
	Ready func() bool
	// Sections adds named sections to /api/snapshot (for example endpoint health).
	Sections map[string]func() any
	// HealthOnly serves /healthz and /readyz and nothing else: a health port that may be
	// opened to the node's network (as kube-proxy's 10256) while the admin API stays on
	// loopback.
	HealthOnly bool
	// ConfigError is the error of the latest configuration load, nil when it was valid
	// (the configuration in force is then older than the files). Nil means none.
	ConfigError func() error
	// SyncError is the error of the latest data plane sync, nil when it applied
	// cleanly. Nil means none.
	SyncError func() error
	// Health is the health overlay's status, for endpoint health in /api/summary and
	// /api/service; nil leaves it out.
	Health func() []health.EndpointStatus
	// Traffic walks the endpoints the data planes reported connections or requests
	// for (health.Overlay.Traffic), for per-endpoint rates in /api/service; nil leaves
	// them out.
	Traffic func(fn func(k health.Key, successes, failures uint64))
	// Mode names the L4 data plane, for the dashboard.
	Mode string
	// SampleInterval is how often the counters the dashboard shows are read; zero is 2 s.
	SampleInterval time.Duration
	Logger         *slog.Logger
}

// Server is a running admin server.
type Server struct {
	opts    Options
	ln      net.Listener
	srv     *http.Server
	sampler *sampler
}

// Listen binds the admin address. Serve starts answering.
func Listen(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Snapshot == nil {
		opts.Snapshot = func() *model.Snapshot { return nil }
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", opts.Addr, err)
	}
	if opts.SampleInterval <= 0 {
		opts.SampleInterval = 2 * time.Second
	}
	s := &Server{opts: opts, ln: ln, sampler: newSampler(opts.Gatherer, opts.Traffic, opts.SampleInterval)}
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	if s.opts.Gatherer != nil && !s.opts.HealthOnly {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			s.sample(ctx)
		}()
	}
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("admin: %w", err)
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(shutdownCtx)
		<-errc
		return nil
	}
}

// sample reads the counters the dashboard shows every SampleInterval until ctx ends.
func (s *Server) sample(ctx context.Context) {
	t := time.NewTicker(s.opts.SampleInterval)
	defer t.Stop()
	for {
		if err := s.sampler.sample(time.Now()); err != nil {
			s.opts.Logger.Debug("admin: gather metrics", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Handler is the admin API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready() {
			http.Error(w, "not ready: no configuration applied yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if s.opts.HealthOnly {
		return mux
	}
	if s.opts.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /api/snapshot", s.serveSnapshot)
	mux.HandleFunc("GET /api/summary", func(w http.ResponseWriter, r *http.Request) {
		s.writeJSON(w, r, s.summary())
	})
	mux.HandleFunc("GET /api/service", func(w http.ResponseWriter, r *http.Request) {
		d := s.serviceDetail(r.URL.Query().Get("name"))
		if d == nil {
			http.Error(w, "no such Service in the configuration in force", http.StatusNotFound)
			return
		}
		s.writeJSON(w, r, d)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(dashboardHTML)
	})
	return mux
}

func (s *Server) ready() bool {
	if s.opts.Ready != nil {
		return s.opts.Ready()
	}
	return s.opts.Snapshot() != nil
}

func (s *Server) serveSnapshot(w http.ResponseWriter, _ *http.Request) {
	view := map[string]any{"snapshot": s.opts.Snapshot(), "configErrors": s.configErrors(), "syncErrors": s.syncErrors()}
	for name, f := range s.opts.Sections {
		view[name] = f()
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(view); err != nil {
		s.opts.Logger.Warn("admin: encode snapshot", "err", err)
	}
}

// configErrors are the lines of the latest configuration load's error (one problem a
// line, "file:line: object: field: message"), or nil.
func (s *Server) configErrors() []string { return errorLines(s.opts.ConfigError) }

// syncErrors are the lines of the latest data plane sync's error, or nil.
func (s *Server) syncErrors() []string { return errorLines(s.opts.SyncError) }

func errorLines(f func() error) []string {
	if f == nil {
		return nil
	}
	err := f()
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}
