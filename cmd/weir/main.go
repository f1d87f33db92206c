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
	ctx, cancel := signalContext()
	defer cancel()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "weir:", err)
		os.Exit(1)
	}
}

// signalContext is cancelled by the first SIGINT or SIGTERM, which starts a graceful
// shutdown; a second one exits at once, without waiting for the drain.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
			return
		}
		s := <-sigs
		fmt.Fprintf(os.Stderr, "weir: second %v: exiting without waiting for the drain\n", s)
		os.Exit(1)
	}()
	return ctx, func() { signal.Stop(sigs); cancel() }
}
