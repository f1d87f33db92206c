package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"weir.dev/weir/internal/dataplane/iptables"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/dataplane/nftables"
)

func newCleanupCommand() *cobra.Command {
	var mode string
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove every kernel rule weir made (nftables tables, iptables chains)",
		Long: `Remove the nftables tables ("ip weir", "ip6 weir") and the iptables chains (WEIR-*)
that weir run --mode nftables|iptables programmed, leaving the kernel as weir found it.
Run it after stopping weir, or to switch modes.`,
		Example: `  weir cleanup
  weir cleanup --mode nftables`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var errs []error
			if mode == "all" || mode == "nftables" {
				p, err := nftables.New(nftables.Options{Options: kernel.Options{DisableHealthCheck: true}})
				if err == nil {
					err = p.Cleanup(cmd.Context())
					p.Close()
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("nftables: %w", err))
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), "nftables: removed weir's tables")
				}
			}
			if mode == "all" || mode == "iptables" {
				p, err := iptables.New(iptables.Options{Options: kernel.Options{DisableHealthCheck: true}})
				if err == nil {
					err = p.Cleanup(cmd.Context())
					p.Close()
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("iptables: %w", err))
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), "iptables: removed weir's chains")
				}
			}
			if mode != "all" && mode != "nftables" && mode != "iptables" {
				return fmt.Errorf("--mode %q: want all, nftables or iptables", mode)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "all", "which rules to remove: all, nftables or iptables")
	return cmd
}
