// Package healthcheck serves the health-check node ports of Services with
// externalTrafficPolicy: Local, as kube-proxy does: each port answers 200 with the
// count of the Service's local endpoints, or 503 when there are none, so that an
// external load balancer sends traffic only to nodes that can serve it. Both kernel
// data planes use it.
package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"weir.dev/weir/internal/model"
)

// Service is what one health-check node port reports.
type Service struct {
	Key            model.ServiceKey
	Port           int32
	LocalEndpoints int
}

// Listen opens a listener for a port; tests replace it to bind loopback.
type Listen func(port int32) (net.Listener, error)

// Options configure a Server.
type Options struct {
	Logger *slog.Logger
	// Listen defaults to TCP on every address of the current network namespace.
	Listen Listen
}

// Server runs one HTTP server per health-check node port. Its zero value is not usable;
// call New. Close stops every server it started.
type Server struct {
	log    *slog.Logger
	listen Listen

	mu    sync.Mutex
	ports map[int32]*portServer
}

type portServer struct {
	srv *http.Server
	wg  sync.WaitGroup

	mu  sync.Mutex
	svc Service
}

// New returns a Server serving nothing yet.
func New(opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	listen := opts.Listen
	if listen == nil {
		listen = func(port int32) (net.Listener, error) {
			return net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(int(port))))
		}
	}
	return &Server{log: log, listen: listen, ports: map[int32]*portServer{}}
}

// FromSnapshot lists the health-check node ports snap asks for.
func FromSnapshot(snap *model.Snapshot) []Service {
	var out []Service
	for _, svc := range snap.Services {
		if !svc.Proxied() || !svc.ExternalTrafficLocal || svc.HealthCheckNodePort == 0 {
			continue
		}
		out = append(out, Service{Key: svc.Key, Port: svc.HealthCheckNodePort, LocalEndpoints: svc.LocalEndpoints})
	}
	return out
}

// Sync serves exactly services: it opens listeners for new ports, updates counts and
// closes ports no longer asked for. A port that cannot be opened is reported in the
// error; the others are still served.
func (s *Server) Sync(services []Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := make(map[int32]Service, len(services))
	for _, svc := range services {
		want[svc.Port] = svc
	}
	var errs []error
	for port, ps := range s.ports {
		if _, ok := want[port]; !ok {
			ps.close()
			delete(s.ports, port)
		}
	}
	for port, svc := range want {
		if ps, ok := s.ports[port]; ok {
			ps.mu.Lock()
			ps.svc = svc
			ps.mu.Unlock()
			continue
		}
		ln, err := s.listen(port)
		if err != nil {
			errs = append(errs, fmt.Errorf("health check node port %d for %s: %w", port, svc.Key, err))
			continue
		}
		ps := &portServer{svc: svc}
		ps.srv = &http.Server{Handler: ps, ReadHeaderTimeout: 5 * time.Second}
		ps.wg.Add(1)
		go func() {
			defer ps.wg.Done()
			if err := ps.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Warn("health check server stopped", "port", port, "err", err)
			}
		}()
		s.ports[port] = ps
	}
	return errors.Join(errs...)
}

// Close stops every server.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for port, ps := range s.ports {
		ps.close()
		delete(s.ports, port)
	}
}

func (ps *portServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = ps.srv.Shutdown(ctx)
	ps.wg.Wait()
}

type body struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints int `json:"localEndpoints"`
}

func (ps *portServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	ps.mu.Lock()
	svc := ps.svc
	ps.mu.Unlock()
	var b body
	b.Service.Namespace = svc.Key.Namespace
	b.Service.Name = svc.Key.Name
	b.LocalEndpoints = svc.LocalEndpoints
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if svc.LocalEndpoints == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	_ = json.NewEncoder(w).Encode(b)
}
