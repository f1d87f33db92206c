package model

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func withExternalIPs(ips ...string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.ExternalIPs = ips }
}

// TestExternalPolicySets follows kube-proxy's CategorizeEndpoints and the EXT chains of
// its proxiers: which endpoints external traffic uses from outside (External) and from
// the node or its pods (ShortCircuit), including a ClusterIP Service with externalIPs,
// which the API server lets keep externalTrafficPolicy Local (apiservice.ExternalPolicyLocal).
func TestExternalPolicySets(t *testing.T) {
	const (
		e0 = "10.0.0.0:8080"
		e1 = "10.0.0.1:8080"
	)
	tests := []struct {
		name         string
		svc          []func(*corev1.Service)
		eps          []discoveryv1.Endpoint
		local        bool // ExternalTrafficLocal
		external     []string
		extVerdict   Verdict
		shortCircuit []string
		scVerdict    Verdict
	}{
		{
			name:         "ClusterIP with externalIPs, eTP Local: local endpoints only",
			svc:          opts(withExternalIPs("192.0.2.1"), externalLocal),
			eps:          []discoveryv1.Endpoint{ep("10.0.0.0"), ep("10.0.0.1", local)},
			local:        true,
			external:     []string{e1},
			shortCircuit: []string{e0, e1},
		},
		{
			name:         "ClusterIP with externalIPs, eTP Local, no local endpoint: drop, node still short-circuits",
			svc:          opts(withExternalIPs("192.0.2.1"), externalLocal),
			eps:          []discoveryv1.Endpoint{ep("10.0.0.0"), ep("10.0.0.1")},
			local:        true,
			external:     []string{},
			extVerdict:   Drop,
			shortCircuit: []string{e0, e1},
		},
		{
			name:         "ClusterIP with externalIPs, eTP Cluster",
			svc:          opts(withExternalIPs("192.0.2.1")),
			eps:          []discoveryv1.Endpoint{ep("10.0.0.0"), ep("10.0.0.1", local)},
			external:     []string{e0, e1},
			shortCircuit: []string{e0, e1},
		},
		{
			name:         "ClusterIP without externalIPs: eTP Local ignored",
			svc:          opts(externalLocal),
			eps:          []discoveryv1.Endpoint{ep("10.0.0.0"), ep("10.0.0.1", local)},
			external:     []string{e0, e1},
			shortCircuit: []string{e0, e1},
		},
		{
			name:         "iTP Local and eTP Local: the short-circuit ignores iTP (kube-proxy's clusterPolicyChain)",
			svc:          opts(withType(corev1.ServiceTypeNodePort), internalLocal, externalLocal),
			eps:          []discoveryv1.Endpoint{ep("10.0.0.0"), ep("10.0.0.1")},
			local:        true,
			external:     []string{},
			extVerdict:   Drop,
			shortCircuit: []string{e0, e1},
		},
		{
			name:         "eTP Local, only terminating endpoints elsewhere: short-circuit to them",
			svc:          opts(withType(corev1.ServiceTypeLoadBalancer), externalLocal),
			eps:          []discoveryv1.Endpoint{ep("10.0.0.0", terminating), ep("10.0.0.1", notReady)},
			local:        true,
			external:     []string{},
			extVerdict:   Drop,
			shortCircuit: []string{e0},
		},
		{
			name:         "eTP Local, no endpoint at all: reject everywhere",
			svc:          opts(withType(corev1.ServiceTypeNodePort), externalLocal),
			local:        true,
			external:     []string{},
			extVerdict:   Reject,
			shortCircuit: []string{},
			scVerdict:    Reject,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{Services: []*corev1.Service{service("web", tc.svc...)}}
			if len(tc.eps) > 0 {
				objs.EndpointSlices = append(objs.EndpointSlices, endpointSlice("web", "web-1", nil, tc.eps...))
			}
			svc := mustService(t, Translate(objs, thisNode), "web")
			if svc.ExternalTrafficLocal != tc.local {
				t.Errorf("ExternalTrafficLocal = %v, want %v", svc.ExternalTrafficLocal, tc.local)
			}
			p := svc.Ports[0]
			for _, c := range []struct {
				what    string
				set     EndpointSet
				want    []string
				verdict Verdict
			}{{"external", p.External, tc.external, tc.extVerdict}, {"short-circuit", p.ShortCircuit, tc.shortCircuit, tc.scVerdict}} {
				if got := addrPorts(c.set.Endpoints); !reflect.DeepEqual(got, c.want) {
					t.Errorf("%s endpoints = %v, want %v", c.what, got, c.want)
				}
				if c.set.Verdict != c.verdict || c.set.IPv4Verdict != c.verdict {
					t.Errorf("%s verdict = %v (IPv4 %v), want %v", c.what, c.set.Verdict, c.set.IPv4Verdict, c.verdict)
				}
			}
			for k, want := range map[SetKind]EndpointSet{ClusterSet: p.Cluster, ExternalSet: p.External, ShortCircuitSet: p.ShortCircuit} {
				if got := p.Set(k); !reflect.DeepEqual(got, want) {
					t.Errorf("Set(%d) = %v", k, got)
				}
			}
		})
	}
}

// TestSourceRanges follows kube-proxy's newBaseServiceInfo and firewall chains: ranges
// restrict only their own family, a /0 lifts a family's restriction, and a range that
// holds the node's IP admits the family's LoadBalancer IPs as sources.
func TestSourceRanges(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	node := Node{Name: "node-a", IPs: [2]netip.Addr{netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("fd00::2")}}
	tests := []struct {
		name   string
		ranges []string
		node   Node
		v4, v6 []netip.Prefix
	}{
		{name: "IPv4 ranges only: IPv6 unrestricted", ranges: []string{"10.0.0.0/8"}, node: node, v4: pfx("10.0.0.0/8")},
		{name: "IPv6 ranges only: IPv4 unrestricted", ranges: []string{"2001:db8::/32"}, node: node, v6: pfx("2001:db8::/32")},
		{name: "a /0 lifts its family only", ranges: []string{"0.0.0.0/0", "10.0.0.0/8", "2001:db8::/32"}, node: node, v6: pfx("2001:db8::/32")},
		{name: "a range holding the node's IP admits the LoadBalancer IPs of the family",
			ranges: []string{"192.168.0.0/24", "2001:db8::/32"}, node: node,
			v4: pfx("192.168.0.0/24", "203.0.113.1/32", "203.0.113.2/32"), v6: pfx("2001:db8::/32")},
		{name: "IPv6 node IP in range", ranges: []string{"fd00::/64"}, node: node, v6: pfx("fd00::/64", "2001:db8:1::1/128")},
		{name: "unknown node IP counts as loopback", ranges: []string{"127.0.0.0/8"}, node: Node{Name: "node-a"},
			v4: pfx("127.0.0.0/8", "203.0.113.1/32", "203.0.113.2/32")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := service("lb", withType(corev1.ServiceTypeLoadBalancer), withClusterIPs("10.96.0.10", "fd00:96::10"), func(s *corev1.Service) {
				s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
				s.Spec.LoadBalancerSourceRanges = tc.ranges
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.1"}, {IP: "203.0.113.2"}, {IP: "2001:db8:1::1"}}
			})
			svc := mustService(t, Translate(&Objects{Services: []*corev1.Service{in}}, tc.node), "lb")
			if got := svc.SourceRanges(false); !reflect.DeepEqual(got, tc.v4) {
				t.Errorf("IPv4 ranges = %v, want %v", got, tc.v4)
			}
			if got := svc.SourceRanges(true); !reflect.DeepEqual(got, tc.v6) {
				t.Errorf("IPv6 ranges = %v, want %v", got, tc.v6)
			}
		})
	}
}

// TestRoutes is the table of kube-proxy's masquerade and short-circuit rules
// (syncProxyRules of its nftables and iptables proxiers): source in, endpoint set and
// masquerade out.
func TestRoutes(t *testing.T) {
	cidr := PodMatch{CIDR: netip.MustParsePrefix("10.244.0.0/16")}
	cluster := &Service{}
	local := &Service{ExternalTrafficLocal: true}
	tests := []struct {
		name  string
		cfg   ProxyConfig
		pods  PodMatch
		svc   *Service // nil: the ClusterIP route
		src   Source
		route Route
	}{
		{name: "ClusterIP: no masquerade by default", src: FromElsewhere, route: Route{ClusterSet, false}},
		{name: "ClusterIP from the node: no masquerade by default", src: FromNode, route: Route{ClusterSet, false}},
		{name: "ClusterIP with --masquerade-all", cfg: ProxyConfig{MasqueradeAll: true}, src: FromPod, pods: cidr, route: Route{ClusterSet, true}},
		{name: "ClusterIP from outside the cluster CIDR: masquerade", pods: cidr, src: FromElsewhere, route: Route{ClusterSet, true}},
		{name: "ClusterIP from the node with a cluster CIDR: masquerade", pods: cidr, src: FromNode, route: Route{ClusterSet, true}},
		{name: "ClusterIP from a pod: no masquerade", pods: cidr, src: FromPod, route: Route{ClusterSet, false}},
		{name: "eTP Cluster: external set, masquerade", svc: cluster, src: FromElsewhere, route: Route{ExternalSet, true}},
		{name: "eTP Cluster from a pod: external set, masquerade", svc: cluster, pods: cidr, src: FromPod, route: Route{ExternalSet, true}},
		{name: "eTP Local from outside: local endpoints, no masquerade", svc: local, src: FromElsewhere, route: Route{ExternalSet, false}},
		{name: "eTP Local from the node: short-circuit, masquerade", svc: local, src: FromNode, route: Route{ShortCircuitSet, true}},
		{name: "eTP Local from a pod: short-circuit, no masquerade", svc: local, pods: cidr, src: FromPod, route: Route{ShortCircuitSet, false}},
		{name: "eTP Local from a pod nobody recognises: local endpoints", svc: local, src: FromPod, route: Route{ExternalSet, false}},
		{name: "eTP Local with --masquerade-all: still unmasqueraded", cfg: ProxyConfig{MasqueradeAll: true}, svc: local, src: FromElsewhere, route: Route{ExternalSet, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got Route
			if tc.svc == nil {
				got = tc.cfg.ClusterIP(tc.src, tc.pods)
			} else {
				got = tc.cfg.External(tc.svc, tc.src, tc.pods)
			}
			if got != tc.route {
				t.Errorf("route = %+v, want %+v", got, tc.route)
			}
		})
	}
}

func TestDetectLocal(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/56")
	tests := []struct {
		name   string
		d      DetectLocal
		err    bool
		v4, v6 PodMatch
	}{
		{name: "default: nothing recognised"},
		{name: "ClusterCIDR dual-stack", d: DetectLocal{ClusterCIDRs: []netip.Prefix{v4, v6}}, v4: PodMatch{CIDR: v4}, v6: PodMatch{CIDR: v6}},
		{name: "ClusterCIDR one family", d: DetectLocal{Mode: LocalModeClusterCIDR, ClusterCIDRs: []netip.Prefix{v6}}, v6: PodMatch{CIDR: v6}},
		{name: "two CIDRs of one family", d: DetectLocal{ClusterCIDRs: []netip.Prefix{v4, netip.MustParsePrefix("10.0.0.0/8")}}, err: true},
		{name: "BridgeInterface", d: DetectLocal{Mode: LocalModeBridgeInterface, BridgeInterface: "cbr0"},
			v4: PodMatch{Interface: "cbr0"}, v6: PodMatch{Interface: "cbr0"}},
		{name: "BridgeInterface without a name", d: DetectLocal{Mode: LocalModeBridgeInterface}, err: true},
		{name: "InterfaceNamePrefix", d: DetectLocal{Mode: LocalModeInterfaceNamePrefix, InterfaceNamePrefix: "veth"},
			v4: PodMatch{Interface: "veth", InterfacePrefix: true}, v6: PodMatch{Interface: "veth", InterfacePrefix: true}},
		{name: "NodeCIDR is not offered", d: DetectLocal{Mode: "NodeCIDR"}, err: true},
		{name: "unknown mode", d: DetectLocal{Mode: "Bogus"}, err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.d.Validate(); (err != nil) != tc.err {
				t.Fatalf("Validate = %v, want error %v", err, tc.err)
			}
			if tc.err {
				return
			}
			if got := tc.d.Pods(false); got != tc.v4 {
				t.Errorf("IPv4 = %+v, want %+v", got, tc.v4)
			}
			if got := tc.d.Pods(true); got != tc.v6 {
				t.Errorf("IPv6 = %+v, want %+v", got, tc.v6)
			}
		})
	}
}

// TestNodePorts follows kube-proxy's TestNewNodePortAddresses
// (pkg/proxy/util/nodeport_addresses_test.go): prefixes of one family leave the other
// family serving node ports on all its addresses.
func TestNodePorts(t *testing.T) {
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	tests := []struct {
		name   string
		in     []netip.Prefix
		v4, v6 NodePortAddrs
	}{
		{name: "unset: all", v4: NodePortAddrs{All: true, Loopback: true}, v6: NodePortAddrs{All: true}},
		{name: "IPv4 only: IPv6 all", in: []netip.Prefix{p("192.168.0.0/24")},
			v4: NodePortAddrs{Prefixes: []netip.Prefix{p("192.168.0.0/24")}}, v6: NodePortAddrs{All: true}},
		{name: "IPv6 only: IPv4 all", in: []netip.Prefix{p("fd00::/64")},
			v4: NodePortAddrs{All: true, Loopback: true}, v6: NodePortAddrs{Prefixes: []netip.Prefix{p("fd00::/64")}}},
		{name: "a /0 is all", in: []netip.Prefix{p("192.168.0.0/24"), p("0.0.0.0/0"), p("::/0")},
			v4: NodePortAddrs{All: true, Loopback: true}, v6: NodePortAddrs{All: true}},
		{name: "loopback listed", in: []netip.Prefix{p("127.0.0.1/32"), p("192.168.0.5/24")},
			v4: NodePortAddrs{Prefixes: []netip.Prefix{p("127.0.0.1/32"), p("192.168.0.0/24")}, Loopback: true}, v6: NodePortAddrs{All: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ProxyConfig{NodePortAddresses: tc.in}
			if got := c.NodePorts(false); !reflect.DeepEqual(got, tc.v4) {
				t.Errorf("IPv4 = %+v, want %+v", got, tc.v4)
			}
			if got := c.NodePorts(true); !reflect.DeepEqual(got, tc.v6) {
				t.Errorf("IPv6 = %+v, want %+v", got, tc.v6)
			}
		})
	}
}
