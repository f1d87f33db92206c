// Command l4proxy runs weir's userspace data plane alone, over a hand-built Snapshot,
// for bench/l4.sh: each -map frontend=endpoint[,endpoint…] becomes a ClusterIP Service
// whose ClusterIP:port is the frontend. It runs until SIGINT or SIGTERM, then drains.
//
//	l4proxy -map 127.0.20.1:9001=127.0.0.1:9101 -map 127.0.20.1:9002=127.0.0.1:9102
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
	"strings"
	"syscall"
	"time"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane/userspace"
	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

type maps []string

func (m *maps) String() string     { return strings.Join(*m, " ") }
func (m *maps) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var ms maps
	flag.Var(&ms, "map", "frontend=endpoint[,endpoint…] (repeatable)")
	alg := flag.String("algorithm", string(balance.RoundRobin), "scheduler")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "l4proxy:", err)
			os.Exit(1)
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	if err := run(ms, balance.Algorithm(*alg)); err != nil {
		fmt.Fprintln(os.Stderr, "l4proxy:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(ms maps, alg balance.Algorithm) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	snap := &model.Snapshot{Version: 1}
	for i, m := range ms {
		front, backs, ok := strings.Cut(m, "=")
		if !ok {
			return fmt.Errorf("-map %q: want frontend=endpoint[,endpoint…]", m)
		}
		fa, err := netip.ParseAddrPort(front)
		if err != nil {
			return fmt.Errorf("-map %q: %w", m, err)
		}
		var eps []model.Endpoint
		for _, b := range strings.Split(backs, ",") {
			ba, err := netip.ParseAddrPort(b)
			if err != nil {
				return fmt.Errorf("-map %q: %w", m, err)
			}
			eps = append(eps, model.Endpoint{Addr: ba.Addr(), Port: int32(ba.Port()), Ready: true, Serving: true, Weight: 1})
		}
		set := model.EndpointSet{Verdict: model.Forward, Endpoints: eps}
		snap.Services = append(snap.Services, &model.Service{
			Key:        model.ServiceKey{Namespace: "bench", Name: fmt.Sprintf("svc%d", i)},
			Type:       model.ClusterIP,
			ClusterIPs: []netip.Addr{fa.Addr()},
			Policy:     &model.Policy{Algorithm: alg},
			Ports:      []*model.ServicePort{{Protocol: model.TCP, Port: int32(fa.Port()), Endpoints: eps, Cluster: set, External: set}},
		})
	}
	h, err := health.New(health.Options{Logger: log})
	if err != nil {
		return err
	}
	defer h.Close()
	p, err := userspace.New(userspace.Options{Logger: log, Health: h, DrainTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := p.Sync(ctx, snap); err != nil {
		_ = p.Close()
		return err
	}
	<-ctx.Done()
	return p.Shutdown(context.Background())
}
