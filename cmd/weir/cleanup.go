package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"weir.dev/weir/internal/dataplane/ebpf"
	"weir.dev/weir/internal/dataplane/iptables"
	"weir.dev/weir/internal/dataplane/ipvs"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/dataplane/netpol"
	"weir.dev/weir/internal/dataplane/nftables"
)

// kernelModes are the modes whose rules stay in the kernel after weir exits.
var kernelModes = []string{"nftables", "iptables", "ebpf", "ipvs"}

// kernelRules are one kernel mode's rules, for finding and removing them.
type kernelRules interface {
	Leftovers(ctx context.Context) (bool, error)
	Cleanup(ctx context.Context) error
	Close()
}

func kernelRulesOf(mode string) (kernelRules, error) {
	opts := kernel.Options{DisableHealthCheck: true}
	switch mode {
	case "nftables":
		return nftables.New(nftables.Options{Options: opts})
	case "iptables":
		// Removing rules must not turn route_localnet on, as serving localhost node
		// ports would.
		return iptables.New(iptables.Options{Options: opts, DisableLocalhostNodePorts: true})
	case "ebpf":
		return ebpf.Pins{Path: ebpf.DefaultPinPath}, nil
	case "ipvs":
		return ipvs.New(ipvs.Options{Options: opts})
	}
	return nil, fmt.Errorf("%q is not a kernel mode", mode)
}

// removeRules removes one kernel mode's rules.
func removeRules(ctx context.Context, mode string) error {
	r, err := kernelRulesOf(mode)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Cleanup(ctx)
}

// cleanupOtherModes removes the rules that earlier runs in other kernel modes left, as
// kube-proxy does at start: after a switch from iptables to nftables (or back) the old
// mode's rules would otherwise keep catching traffic. It needs root; without it, or
// without a mode's tools, that mode is not checked.
func cleanupOtherModes(ctx context.Context, mode string, log *slog.Logger) {
	if os.Geteuid() != 0 {
		log.Debug("not root: the rules of other kernel modes are not checked")
		return
	}
	for _, other := range kernelModes {
		if other == mode {
			continue
		}
		r, err := kernelRulesOf(other)
		if err != nil {
			log.Debug("kernel mode not checked for leftover rules", "mode", other, "err", err)
			continue
		}
		found, err := r.Leftovers(ctx)
		switch {
		case err != nil:
			log.Warn("could not check for rules left by another kernel mode", "mode", other, "err", err)
		case found:
			if err := r.Cleanup(ctx); err != nil {
				log.Warn("could not remove the rules an earlier run left", "mode", other, "err", err)
			} else {
				log.Info("removed the rules an earlier run left in another kernel mode", "mode", other, "running_mode", mode)
			}
		}
		r.Close()
	}
}

// cleanupNetworkPolicy removes the network-policy table an earlier run with
// --network-policy left: without the flag, its rules would keep enforcing old policies.
func cleanupNetworkPolicy(ctx context.Context, log *slog.Logger) {
	if os.Geteuid() != 0 {
		return
	}
	e, err := netpol.New(netpol.Options{})
	if err != nil {
		log.Debug("network policy table not checked", "err", err)
		return
	}
	if found, err := e.Leftovers(ctx); err != nil || !found {
		return
	}
	if err := e.Cleanup(ctx); err != nil {
		log.Warn("could not remove the network policy table an earlier run left", "err", err)
		return
	}
	log.Info("removed the network policy table an earlier run left (run without --network-policy)")
}

// ipvsAvailable reports whether the kernel has IPVS loaded (built in or the module).
func ipvsAvailable() bool {
	_, err := os.Stat("/proc/net/ip_vs")
	return err == nil
}

func newCleanupCommand() *cobra.Command {
	var mode, pinPath string
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove every kernel rule weir made (nftables tables, iptables chains, eBPF pins, IPVS)",
		Long: `Remove the nftables tables ("ip weir", "ip6 weir"), the iptables chains (WEIR-*),
the eBPF programs and maps pinned under --ebpf-pin-path, and ipvs mode's virtual servers,
dummy interface (weir-ipvs0) and tables ("ip weir-ipvs", "ip6 weir-ipvs") that weir run
--mode nftables|iptables|ebpf|ipvs programmed, leaving the kernel as weir found it. With
--mode all, a kernel without IPVS has no ipvs state to remove.
Run it after stopping weir: in the kernel modes the rules keep serving after weir exits.
(weir run removes the rules of the kernel modes it does not use when it starts.)`,
		Example: `  weir cleanup
  weir cleanup --mode nftables`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if mode != "all" && !slices.Contains(kernelModes, mode) {
				return fmt.Errorf("--mode %q: want all, nftables, iptables, ebpf or ipvs", mode)
			}
			var errs []error
			for _, m := range kernelModes {
				if mode != "all" && mode != m {
					continue
				}
				err := removeRules(cmd.Context(), m)
				if m == "ebpf" {
					err = ebpf.Pins{Path: pinPath}.Cleanup(cmd.Context())
				}
				if err != nil && mode == "all" && m == "ipvs" && !ipvsAvailable() {
					fmt.Fprintf(cmd.OutOrStdout(), "ipvs: the kernel has no IPVS, nothing to remove\n")
					continue
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", m, err))
					continue
				}
				what := map[string]string{"nftables": "tables", "iptables": "chains", "ebpf": "pinned programs and maps", "ipvs": "virtual servers, interface and tables"}[m]
				fmt.Fprintf(cmd.OutOrStdout(), "%s: removed weir's %s\n", m, what)
			}
			if mode == "all" {
				e, err := netpol.New(netpol.Options{})
				if err == nil {
					err = e.Cleanup(cmd.Context())
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("network policy: %w", err))
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "network policy: removed table inet %s\n", netpol.TableName)
				}
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "all", "which rules to remove: all, nftables, iptables, ebpf or ipvs")
	cmd.Flags().StringVar(&pinPath, "ebpf-pin-path", ebpf.DefaultPinPath, "where weir run --mode ebpf pinned its maps and program links")
	return cmd
}
