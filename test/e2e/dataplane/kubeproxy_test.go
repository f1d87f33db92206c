package dataplane_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/dataplane/iptables"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/dataplane/nftables"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/netnstest"
)

// The kube-proxy settings cases run with the client's second address, podIP, in
// --cluster-cidr (a pod) and its first, clientIP, outside (elsewhere), node ports on the
// IPv4 client network only (--nodeport-addresses of one family), and whoami backends on
// :9090 that answer with the address they see the connection come from.
const (
	podIP        = "10.100.0.3"
	whoamiPort   = 9090
	extLocalIP   = "198.18.0.40" // externalIPs of a ClusterIP Service with Local policy
	lbIP4, lbIP6 = "198.18.0.50", "fd00:97::50"
)

func TestNFTablesKubeProxySettings(t *testing.T) {
	runKubeProxySuite(t, false, func(p model.ProxyConfig) (mode, error) {
		return nftables.New(nftables.Options{Options: kernel.Options{Proxy: p}})
	})
}

func TestIPTablesKubeProxySettings(t *testing.T) {
	runKubeProxySuite(t, true, func(p model.ProxyConfig) (mode, error) {
		return iptables.New(iptables.Options{Options: kernel.Options{Proxy: p}})
	})
}

// kubeProxyServices: b1 is on this node, b0 and b2 elsewhere.
func kubeProxyServices() []*model.Service {
	who := func(i int, local bool) model.Endpoint { return endpoint(i, whoamiPort, local) }

	cluster := service("who", "10.96.0.60", model.TCP, 80, who(0, false))

	// NodePort, Local policy, no local endpoint.
	npLocal := service("np-local-none", "10.96.0.61", model.TCP, 80, who(2, false))
	npLocal.Type = model.NodePort
	npLocal.ExternalTrafficLocal = true
	npLocal.Ports[0].NodePort = 30061
	npLocal.Ports[0].External = flowtest.Dropped()

	// ClusterIP with externalIPs and Local policy: b1 local.
	extLocal := service("ext-local", "10.96.0.62", model.TCP, 80, who(1, true), who(2, false))
	extLocal.ExternalIPs = []netip.Addr{netip.MustParseAddr(extLocalIP)}
	extLocal.ExternalTrafficLocal = true
	extLocal.Ports[0].External = flowtest.Forward(who(1, true))

	// LoadBalancer with IPv4 source ranges only: the IPv6 LB IP stays open.
	lb := service("lb-v4-ranges", "10.96.0.63,fd00:96::63", model.TCP, 80, who(0, false), endpoint6(0, whoamiPort))
	lb.Type = model.LoadBalancer
	lb.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr(lbIP4), netip.MustParseAddr(lbIP6)}
	lb.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	lb.Ports[0].NodePort = 30063

	// A dual-stack node port: IPv4 is limited by --nodeport-addresses, IPv6 is not.
	np := service("np-dual", "10.96.0.64,fd00:96::64", model.TCP, 80, who(0, false), endpoint6(0, whoamiPort))
	np.Type = model.NodePort
	np.Ports[0].NodePort = 30064

	return []*model.Service{cluster, npLocal, extLocal, lb, np}
}

func runKubeProxySuite(t *testing.T, iptablesMode bool, newMode func(model.ProxyConfig) (mode, error)) {
	tp := newTopology(t, 3)
	tp.client.MustRun("ip", "addr", "add", podIP+"/24", "dev", "eth0")
	// External and LoadBalancer IPs route like Service IPs: towards an absent neighbour.
	tp.node.MustRun("ip", "route", "add", "198.18.0.0/15", "via", "10.100.0.254", "dev", "eth-client")
	for i, b := range tp.backends {
		startWhoami(t, b, fmt.Sprintf("b%d", i))
	}
	proxy := model.ProxyConfig{
		DetectLocal:       model.DetectLocal{Mode: model.LocalModeClusterCIDR, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(podIP + "/32")}},
		NodePortAddresses: []netip.Prefix{netip.MustParsePrefix("10.100.0.0/24")},
	}
	tp.start(func() (mode, error) { return newMode(proxy) })
	tp.sync(kubeProxyServices()...)

	client, pod := netip.MustParseAddr(clientIP), netip.MustParseAddr(podIP)
	// masqueraded is the node's address on backend i's link.
	masqueraded := func(i int) string { return fmt.Sprintf("10.244.%d.1", i+1) }
	expect := func(t *testing.T, ns *netnstest.NS, from netip.Addr, addr, wantBackend, wantPeer string) {
		t.Helper()
		name, peer, err := whoami(ns, from, addr, time.Second)
		if err != nil {
			t.Fatalf("%s → %s: %v", from, addr, err)
		}
		if name != wantBackend || (wantPeer != "" && peer != wantPeer) {
			t.Errorf("%s → %s reached %s seeing %s, want %s seeing %s", from, addr, name, peer, wantBackend, wantPeer)
		}
	}
	dropped := func(t *testing.T, from netip.Addr, addr string) {
		t.Helper()
		_, _, err := whoami(tp.client, from, addr, 500*time.Millisecond)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%s → %s: %v, want a timeout (dropped)", from, addr, err)
		}
	}

	t.Run("ClusterIP from outside the cluster CIDR is masqueraded", func(t *testing.T) {
		expect(t, tp.client, client, "10.96.0.60:80", "b0", masqueraded(0))
	})
	t.Run("ClusterIP from a pod keeps its source", func(t *testing.T) {
		expect(t, tp.client, pod, "10.96.0.60:80", "b0", podIP)
	})
	t.Run("NodePort Local without local endpoint drops outside clients", func(t *testing.T) {
		dropped(t, client, nodeIP+":30061")
	})
	t.Run("NodePort Local without local endpoint: a pod reaches every endpoint, unmasqueraded", func(t *testing.T) {
		expect(t, tp.client, pod, nodeIP+":30061", "b2", podIP)
	})
	t.Run("NodePort Local without local endpoint: the node reaches every endpoint", func(t *testing.T) {
		expect(t, tp.node, netip.Addr{}, nodeIP+":30061", "b2", "")
	})
	t.Run("externalIP Local: the local endpoint, unmasqueraded", func(t *testing.T) {
		for range 5 {
			expect(t, tp.client, client, extLocalIP+":80", "b1", clientIP)
		}
	})
	t.Run("externalIP Local: the node reaches every endpoint", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 40 && len(seen) < 2; i++ {
			name, _, err := whoami(tp.node, netip.Addr{}, extLocalIP+":80", time.Second)
			if err != nil {
				t.Fatal(err)
			}
			seen[name] = true
		}
		if !seen["b1"] || !seen["b2"] {
			t.Errorf("the node reached %v, want b1 and b2", seen)
		}
	})
	t.Run("IPv4 source ranges drop other IPv4 sources", func(t *testing.T) {
		dropped(t, client, lbIP4+":80")
	})
	t.Run("IPv4 source ranges leave the IPv6 LoadBalancer IP open", func(t *testing.T) {
		expect(t, tp.client, netip.MustParseAddr(clientIP6), "["+lbIP6+"]:80", "b0", "")
	})
	t.Run("--nodeport-addresses of IPv4 only: IPv6 node ports on all addresses", func(t *testing.T) {
		expect(t, tp.client, netip.MustParseAddr(clientIP6), "["+nodeIP6+"]:30064", "b0", "")
		expect(t, tp.client, client, nodeIP+":30064", "b0", "")
	})
	t.Run("localhost node ports", func(t *testing.T) {
		// The node port addresses do not include loopback here: never served.
		_, _, err := whoami(tp.node, netip.Addr{}, "127.0.0.1:30064", 500*time.Millisecond)
		if err == nil {
			t.Errorf("127.0.0.1:30064 answered with loopback outside --nodeport-addresses")
		}
	})

	// Localhost node ports by default (iptables only): a data plane with the default
	// node port addresses.
	t.Run("localhost node ports by default", func(t *testing.T) {
		tp.node.Do(func() error { tp.dp.Close(); return nil })
		if err := tp.node.Do(func() error { return tp.dp.Cleanup(context.Background()) }); err != nil {
			t.Fatal(err)
		}
		var err error
		if err = tp.node.Do(func() error { tp.dp, err = newMode(model.ProxyConfig{}); return err }); err != nil {
			t.Fatal(err)
		}
		tp.sync(kubeProxyServices()...)
		name, _, err := whoami(tp.node, netip.Addr{}, "127.0.0.1:30064", time.Second)
		switch {
		case iptablesMode && (err != nil || name != "b0"):
			t.Errorf("iptables: 127.0.0.1:30064 → %q, %v; want b0 (--iptables-localhost-nodeports)", name, err)
		case !iptablesMode && err == nil:
			t.Errorf("nftables: 127.0.0.1:30064 answered (%s); kube-proxy's nftables mode never serves localhost node ports", name)
		}
		if iptablesMode {
			if v := strings.TrimSpace(tp.node.MustRun("cat", "/proc/sys/net/ipv4/conf/all/route_localnet")); v != "1" {
				t.Errorf("route_localnet = %s, want 1", v)
			}
		}
		if !iptablesMode && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Logf("nftables: 127.0.0.1:30064: %v", err)
		}
	})
}

// startWhoami serves :9090 in backend ns: each connection gets "<name> <peer address>".
func startWhoami(t *testing.T, ns *netnstest.NS, name string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", whoamiPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			_, _ = fmt.Fprintf(c, "%s %s\n", name, peer)
			c.Close()
		}
	})
}

// whoami connects from ns (from the address from, when valid) to addr and returns the
// backend's name and the source address it saw.
func whoami(ns *netnstest.NS, from netip.Addr, addr string, timeout time.Duration) (name, peer string, err error) {
	err = ns.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		if from.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 128)
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		f := strings.Fields(string(buf[:n]))
		if len(f) != 2 {
			return fmt.Errorf("whoami answered %q", buf[:n])
		}
		name, peer = f[0], f[1]
		return nil
	})
	return name, peer, err
}
