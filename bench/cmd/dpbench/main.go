// Command dpbench measures weir's L4 data planes at scale in network namespaces (root
// only). See docs/dataplanes.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"weir.dev/weir/internal/dataplane/dpbench"
)

func main() {
	modes := flag.String("modes", "nftables,iptables,userspace,ebpf", "data planes to measure")
	ns := flag.String("n", "100,1000,5000,10000", "Service counts")
	eps := flag.Int("endpoints", 10, "endpoints per Service")
	connects := flag.Int("connects", 200, "connections per latency measurement")
	maxFull := flag.Duration("max-full-sync", 60*time.Second, "skip a mode's larger N once its full sync, extrapolated from the last N, would take longer")
	jsonOut := flag.String("json", "", "write results as JSON to this file")
	svgOut := flag.String("svg", "", "write the plot to this SVG file")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "dpbench needs root: it creates network namespaces")
		os.Exit(2)
	}
	var counts []int
	for _, s := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad -n %q\n", s)
			os.Exit(2)
		}
		counts = append(counts, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	results, err := dpbench.Run(ctx, dpbench.Options{
		Modes: strings.Split(*modes, ","), Ns: counts, Endpoints: *eps, Connects: *connects,
		MaxFullSync: *maxFull, Log: os.Stderr,
	})
	dpbench.WriteTable(os.Stdout, results)
	if *jsonOut != "" {
		data, _ := json.MarshalIndent(results, "", "  ")
		if werr := os.WriteFile(*jsonOut, data, 0o644); werr != nil {
			fmt.Fprintln(os.Stderr, werr)
		}
	}
	if *svgOut != "" && len(results) > 0 {
		f, ferr := os.Create(*svgOut)
		if ferr == nil {
			ferr = dpbench.WriteSVG(f, results)
			f.Close()
		}
		if ferr != nil {
			fmt.Fprintln(os.Stderr, ferr)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
