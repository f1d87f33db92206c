// Command dnsbench serves weir's cluster DNS for a generated Snapshot of N ClusterIP
// Services, and writes the same records as a zone file for CoreDNS's file plugin and a
// dnsperf query file. bench/dns.sh drives it.
//
//	dnsbench -services 10000 -write-zone cluster.local.zone -write-queries queries.txt
//	dnsbench -services 10000 -addr 127.0.0.1:5300          # serve until SIGINT/SIGTERM
//	dnsbench -wait 127.0.0.1:5300                           # until the server answers
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"

	"weir.dev/weir/internal/dns"
	"weir.dev/weir/internal/model"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dnsbench:", err)
		os.Exit(1)
	}
}

func run() error {
	services := flag.Int("services", 10000, "number of ClusterIP Services (100 per namespace)")
	addr := flag.String("addr", "", "serve weir's DNS on this address")
	zoneFile := flag.String("write-zone", "", "write the records as a zone file for CoreDNS's file plugin")
	queryFile := flag.String("write-queries", "", "write a dnsperf query file: A lookups of every Service")
	wait := flag.String("wait", "", "query this server until it answers (at most 60 s)")
	flag.Parse()

	switch {
	case *wait != "":
		return waitFor(*wait)
	case *zoneFile != "" || *queryFile != "":
		if *zoneFile != "" {
			if err := writeZone(*zoneFile, *services); err != nil {
				return err
			}
		}
		if *queryFile != "" {
			return writeQueries(*queryFile, *services)
		}
		return nil
	case *addr != "":
		return serve(*addr, *services)
	}
	return errors.New("one of -addr, -write-zone, -write-queries or -wait is needed")
}

// service i is svc-<i> in namespace ns-<i/100> with ClusterIP 10.(100+i>>16).(i>>8).(i)
// and a named port http/TCP 80.
func serviceName(i int) (name, ns string) {
	return fmt.Sprintf("svc-%05d", i), fmt.Sprintf("ns-%03d", i/100)
}

func clusterIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(100 + i>>16), byte(i >> 8), byte(i)})
}

func snapshot(n int) *model.Snapshot {
	snap := &model.Snapshot{Version: 1}
	for i := range n {
		name, ns := serviceName(i)
		snap.Services = append(snap.Services, &model.Service{
			Key:        model.ServiceKey{Namespace: ns, Name: name},
			Type:       model.ClusterIP,
			ClusterIPs: []netip.Addr{clusterIP(i)},
			Ports:      []*model.ServicePort{{Name: "http", Protocol: model.TCP, Port: 80}},
		})
	}
	return snap
}

func serve(addr string, n int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := dns.New(dns.Options{Addr: addr, Logger: log})
	if err != nil {
		return err
	}
	start := time.Now()
	srv.Update(snapshot(n))
	fmt.Fprintf(os.Stderr, "dnsbench: %d Services indexed in %v, serving on %s\n", n, time.Since(start), srv.Addr())
	return srv.Run(ctx)
}

// writeZone writes the records weir serves for the Snapshot (A, SRV, PTR-less) as an
// RFC 1035 zone file.
func writeZone(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "$ORIGIN cluster.local.\n$TTL 5\n")
	fmt.Fprintf(w, "@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n")
	fmt.Fprintf(w, "@ IN NS ns.dns.cluster.local.\nns.dns IN A 127.0.0.1\n")
	fmt.Fprintf(w, "dns-version 28800 IN TXT \"%s\"\n", dns.SchemaVersion)
	for i := range n {
		name, ns := serviceName(i)
		fmt.Fprintf(w, "%s.%s.svc IN A %s\n", name, ns, clusterIP(i))
		fmt.Fprintf(w, "_http._tcp.%s.%s.svc IN SRV 0 100 80 %s.%s.svc.cluster.local.\n", name, ns, name, ns)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeQueries(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := range n {
		name, ns := serviceName(i)
		fmt.Fprintf(w, "%s.%s.svc.cluster.local A\n", name, ns)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func waitFor(addr string) error {
	c := &mdns.Client{Timeout: 500 * time.Millisecond}
	m := new(mdns.Msg)
	m.SetQuestion("svc-00000.ns-000.svc.cluster.local.", mdns.TypeA)
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, _, err := c.Exchange(m, addr)
		if err == nil && r.Rcode == mdns.RcodeSuccess && len(r.Answer) == 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer svc-00000 within 60 s (last error: %v)", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
