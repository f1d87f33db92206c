package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// flagGroups order the flags of weir run and weir demo by area in --help. A flag in no
// group is listed under "Other".
var flagGroups = []struct {
	title string
	flags []string
}{
	{"Configuration source (files, or a Kubernetes API server)", []string{
		"config", "max-manifest-size", "kubeconfig", "in-cluster", "api-server", "namespace", "label-selector", "status-address"}},
	{"L4 data plane", []string{
		"mode", "cleanup-other-modes", "node-name", "zone", "nodeport-addresses", "drain-timeout", "min-sync-interval",
		"udp-max-flows", "udp-max-flows-per-source", "ebpf-cgroup", "ebpf-pin-path", "network-policy"}},
	{"L4 data plane: kube-proxy's settings, under its flag names", []string{
		"bind-address", "masquerade-all", "cluster-cidr", "detect-local-mode", "pod-bridge-interface",
		"pod-interface-name-prefix", "iptables-localhost-nodeports"}},
	{"L7 gateway (Ingress and Gateway API)", []string{
		"gateway", "ingress-http-addr", "ingress-https-addr", "trusted-proxies", "access-log", "h2c", "gateway-event-loops",
		"gateway-service-type", "gateway-namespace", "gateway-pod-selector", "gateway-service-ports"}},
	{"Cluster DNS", []string{"dns-addr", "cluster-domain", "dns-ttl", "dns-upstream"}},
	{"Admin API and health", []string{"admin-addr", "health-addr"}},
	{"Logging", []string{"log-format", "log-level"}},
}

// groupFlags makes cmd's help list its flags by area.
func groupFlags(cmd *cobra.Command) {
	cmd.SetUsageFunc(func(c *cobra.Command) error {
		w := c.OutOrStderr()
		fmt.Fprintf(w, "Usage:\n  %s\n", c.UseLine())
		if c.HasExample() {
			fmt.Fprintf(w, "\nExamples:\n%s\n", c.Example)
		}
		seen := map[string]bool{}
		section := func(title string, names []string) {
			fs := pflag.NewFlagSet(title, pflag.ContinueOnError)
			for _, n := range names {
				if f := c.Flags().Lookup(n); f != nil && !seen[n] {
					seen[n] = true
					fs.AddFlag(f)
				}
			}
			if fs.HasFlags() {
				fmt.Fprintf(w, "\n%s:\n%s", title, fs.FlagUsages())
			}
		}
		for _, g := range flagGroups {
			section(g.title, g.flags)
		}
		var rest []string
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if !seen[f.Name] {
				rest = append(rest, f.Name)
			}
		})
		section("Other", rest)
		return nil
	})
}

// versionLine is what --version and the first line of weir version print.
func versionLine() string {
	commit, date, modified := buildVCS()
	return formatVersion(commit, date, modified)
}

func formatVersion(commit, date string, modified bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "weir %s", version)
	if commit != "" {
		fmt.Fprintf(&b, " commit %s", commit)
		if modified {
			b.WriteString(" (modified)")
		}
	}
	if date != "" {
		fmt.Fprintf(&b, " built from a commit of %s", date)
	}
	return b.String()
}
