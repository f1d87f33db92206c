package main

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"weir.dev/weir/internal/model"
)

// TestProxyFlags: kube-proxy's flags, names and defaults, into model.ProxyConfig.
func TestProxyFlags(t *testing.T) {
	parse := func(args ...string) (runFlags, error) {
		var f runFlags
		cmd := &cobra.Command{}
		f.register(cmd)
		err := cmd.Flags().Parse(args)
		return f, err
	}
	f, err := parse()
	if err != nil {
		t.Fatal(err)
	}
	if f.detectLocalMode != "ClusterCIDR" || !f.iptablesLocalhostNodePorts || f.masqueradeAll {
		t.Errorf("defaults: detect-local-mode %q, iptables-localhost-nodeports %v, masquerade-all %v", f.detectLocalMode, f.iptablesLocalhostNodePorts, f.masqueradeAll)
	}
	if c, err := f.proxyConfig(); err != nil || c.DetectLocal.Pods(false).Enabled() || c.MasqueradeAll {
		t.Errorf("default config %+v, %v: want nothing recognised, no masquerade", c, err)
	}

	f, err = parse("--masquerade-all", "--cluster-cidr", "10.244.0.0/16,fd00:244::/56", "--nodeport-addresses", "192.168.0.0/24",
		"--iptables-localhost-nodeports=false")
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.proxyConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := model.ProxyConfig{
		MasqueradeAll: true,
		DetectLocal: model.DetectLocal{Mode: model.LocalModeClusterCIDR, ClusterCIDRs: []netip.Prefix{
			netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/56")}},
		NodePortAddresses: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24")},
	}
	if !reflect.DeepEqual(c, want) || f.iptablesLocalhostNodePorts {
		t.Errorf("config = %+v, want %+v", c, want)
	}

	for _, bad := range [][]string{
		{"--detect-local-mode", "NodeCIDR"},
		{"--detect-local-mode", "BridgeInterface"},
		{"--detect-local-mode", "Bogus"},
		{"--cluster-cidr", "10.0.0.0/8,10.1.0.0/16"},
		{"--cluster-cidr", "nonsense"},
	} {
		f, err := parse(bad...)
		if err == nil {
			_, err = f.proxyConfig()
		}
		if err == nil || !strings.Contains(err.Error(), "-") {
			t.Errorf("%v: err = %v, want an error naming the flag", bad, err)
		}
	}
}
