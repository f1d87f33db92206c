// Command l7gw runs weir's L7 gateway alone for bench/l7.sh: one HTTP listener whose
// single route sends everything to the given backend endpoints, as the gateway would
// serve an HTTPRoute with one backendRef. It stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/gateway"
	"weir.dev/weir/internal/model"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18080", "address to serve")
	backends := flag.String("backends", "127.0.0.1:18000", "comma-separated backend endpoints (ip:port)")
	alg := flag.String("algorithm", string(balance.RoundRobin), "scheduler")
	noLoops := flag.Bool("no-event-loops", false, "serve with net/http alone (its server, httputil.ReverseProxy, http.Transport) instead of event loops")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here until exit")
	traceFile := flag.String("trace", "", "write a runtime execution trace here until exit")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "l7gw:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "l7gw:", err)
			os.Exit(1)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "l7gw:", err)
			os.Exit(1)
		}
		if err := trace.Start(f); err != nil {
			fmt.Fprintln(os.Stderr, "l7gw:", err)
			os.Exit(1)
		}
		defer func() { trace.Stop(); f.Close() }()
	}
	if err := run(*listen, *backends, balance.Algorithm(*alg), gateway.Options{DisableEventLoops: *noLoops}); err != nil {
		fmt.Fprintln(os.Stderr, "l7gw:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(listen, backends string, alg balance.Algorithm, opts gateway.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pol := model.DefaultPolicy()
	pol.Algorithm = alg
	be := &model.Backend{Service: model.ServiceKey{Namespace: "bench", Name: "backend"}, Port: 80, ID: "bench/backend:80",
		PortID: "bench/backend:http", Weight: 1, Policy: pol}
	for _, s := range strings.Split(backends, ",") {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("backend %q: %w", s, err)
		}
		be.Endpoints = append(be.Endpoints, model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1})
	}
	rule := &model.Rule{Route: model.RouteRef{Kind: "HTTPRoute", Namespace: "bench", Name: "route"}, ID: "bench/route/0",
		Backends: []*model.Backend{be}, Policy: pol, Retry: pol.Retry, ResponseTimeout: pol.ResponseTimeout} // as the model fills a rule
	cfg := &model.GatewayConfig{Listeners: []*model.Listener{{Address: listen, Protocol: model.ProtocolHTTP, Sections: []*model.Section{{
		Name: "bench/gw/http", Hosts: []*model.VirtualHost{{Matches: []*model.RouteMatch{{Path: model.PathMatch{Type: model.PathPrefix, Value: "/"}, Rule: rule}}}}}}}}}
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g, err := gateway.New(opts)
	if err != nil {
		return err
	}
	if err := g.Sync(ctx, &model.Snapshot{Gateway: cfg}); err != nil {
		return err
	}
	fmt.Println("l7gw: serving", listen)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return g.Shutdown(sctx)
}
