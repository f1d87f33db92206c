// Command weir is the Kubernetes service load-balancing stack in one binary: L4 data
// planes (userspace, iptables, nftables), an L7 gateway and cluster DNS, configured by
// Kubernetes manifests or a live API server.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "weir:", err)
		os.Exit(1)
	}
}
