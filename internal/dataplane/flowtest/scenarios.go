package flowtest

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"weir.dev/weir/internal/model"
)

// Packet is the first packet of a connection.
type Packet struct {
	Src, Dst string
	Proto    string // "tcp" or "udp"
	Port     int
	// Iif is the interface the packet came in on; "" for the node's own packets and
	// when it does not matter.
	Iif string
}

// Outcome is what a data plane's rules do to a packet.
type Outcome struct {
	Verdict   string             // "DNAT", "DROP", "REJECT" or "ACCEPT" (not weir's)
	Endpoints map[string]float64 // DNAT targets and their probabilities
	Masq      bool
}

func (o Outcome) String() string {
	eps := make([]string, 0, len(o.Endpoints))
	for ep, p := range o.Endpoints {
		eps = append(eps, fmt.Sprintf("%s=%.3f", ep, p))
	}
	slices.Sort(eps)
	return fmt.Sprintf("%s [%s] masq=%v", o.Verdict, strings.Join(eps, " "), o.Masq)
}

// Matches reports whether o is want: the same verdict, masquerade and endpoint shares.
func (o Outcome) Matches(want Outcome) bool {
	return o.Verdict == want.Verdict && o.Masq == want.Masq && SameShares(o.Endpoints, want.Endpoints)
}

// SameShares compares endpoint probabilities.
func SameShares(got, want map[string]float64) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if math.Abs(got[k]-v) > 1e-6 {
			return false
		}
	}
	return true
}

// NodeIPs are the local addresses of node a, the node the scenarios run on.
func NodeIPs() []string { return []string{"192.168.0.2", "fd00:192::2", "127.0.0.1"} }

// The client that session affinity of shop/sticky already sent to StickyEndpoint: a
// tracer puts it in its affinity record for that endpoint.
const (
	StickyClient   = "10.9.0.99"
	StickyEndpoint = "10.2.0.9:80"
)

// Scenario is a packet sent to Services() on node a and what must happen to it.
type Scenario struct {
	Name string
	IPv6 bool
	Pkt  Packet
	Want Outcome
	// IPTables, when set, is iptables mode's outcome where it differs from Want: with
	// --iptables-localhost-nodeports (its default) it serves node ports on 127.0.0.1.
	IPTables *Outcome
}

// Scenarios are the packet flows every kernel data plane must get right.
func Scenarios() []Scenario {
	type shares = map[string]float64
	dnat := func(masq bool, s shares) Outcome { return Outcome{Verdict: "DNAT", Endpoints: s, Masq: masq} }
	tcp := func(src, dst string, port int) Packet { return Packet{Src: src, Dst: dst, Proto: "tcp", Port: port} }
	udp := func(src, dst string, port int) Packet { return Packet{Src: src, Dst: dst, Proto: "udp", Port: port} }
	drop, reject, accept := Outcome{Verdict: "DROP"}, Outcome{Verdict: "REJECT"}, Outcome{Verdict: "ACCEPT"}
	const third = 1.0 / 3
	out := scenarios([]row{
		{"ClusterIP reaches both endpoints", false, tcp("10.9.0.1", "172.30.0.10", 80), dnat(false, shares{"10.1.0.1:8080": 0.5, "10.2.0.1:8080": 0.5})},
		{"ClusterIP from the node itself", false, tcp("192.168.0.2", "172.30.0.10", 80), dnat(false, shares{"10.1.0.1:8080": 0.5, "10.2.0.1:8080": 0.5})},
		{"hairpin is masqueraded", false, tcp("10.1.0.1", "172.30.0.10", 80), dnat(true, shares{"10.1.0.1:8080": 0.5, "10.2.0.1:8080": 0.5})},
		{"ClusterIP on an unserved port is rejected", false, tcp("10.9.0.1", "172.30.0.10", 81), reject},
		{"ClusterIP UDP on an unserved port is rejected", false, udp("10.9.0.1", "172.30.0.10", 80), reject},
		{"no endpoints is rejected", false, tcp("10.9.0.1", "172.30.0.11", 80), reject},
		{"internalTrafficPolicy Local without local endpoint drops", false, tcp("10.9.0.1", "172.30.0.12", 80), drop},
		{"NodePort from outside is masqueraded", false, tcp("198.51.100.7", "192.168.0.2", 30080), dnat(true, shares{"10.1.0.3:80": 0.5, "10.2.0.3:80": 0.5})},
		{"NodePort on a non-local address is not a node port", false, tcp("198.51.100.7", "192.168.9.9", 30080), accept},
		{"NodePort on loopback is not served", false, tcp("127.0.0.1", "127.0.0.1", 30080), accept},
		{"NodePort Local goes to the local endpoint unmasqueraded", false, tcp("198.51.100.7", "192.168.0.2", 30081), dnat(false, shares{"10.1.0.4:80": 1})},
		{"NodePort Local from the node uses every endpoint", false, tcp("192.168.0.2", "192.168.0.2", 30081), dnat(true, shares{"10.1.0.4:80": 0.5, "10.2.0.4:80": 0.5})},
		{"NodePort Local without local endpoint drops", false, tcp("198.51.100.7", "192.168.0.2", 30082), drop},
		{"LoadBalancer Local without local endpoint drops", false, tcp("198.51.100.7", "203.0.113.15", 80), drop},
		{"its ClusterIP still forwards", false, tcp("10.9.0.1", "172.30.0.15", 80), dnat(false, shares{"10.2.0.5:80": 1})},
		{"LoadBalancer from an allowed source", false, tcp("198.51.100.7", "203.0.113.16", 443), dnat(true, shares{"10.2.0.6:8443": 1})},
		{"LoadBalancer from another source drops", false, tcp("192.0.2.99", "203.0.113.16", 443), drop},
		{"source ranges do not apply to the node port", false, tcp("192.0.2.99", "192.168.0.2", 30443), dnat(true, shares{"10.2.0.6:8443": 1})},
		{"externalIP", false, tcp("192.0.2.99", "192.0.2.17", 80), dnat(true, shares{"10.2.0.7:80": 1})},
		{"affinity: a new client picks at random", false, tcp("10.9.0.1", "172.30.0.18", 80), dnat(false, shares{"10.2.0.8:80": 0.5, StickyEndpoint: 0.5})},
		{"affinity: a known client keeps its endpoint", false, tcp(StickyClient, "172.30.0.18", 80), dnat(false, shares{StickyEndpoint: 1})},
		{"terminating fallback", false, tcp("10.9.0.1", "172.30.0.19", 80), dnat(false, shares{"10.2.0.10:80": 1})},
		{"dual stack IPv4", false, tcp("10.9.0.1", "172.30.0.20", 80), dnat(false, shares{"10.2.0.20:80": 1})},
		{"dual stack IPv6", true, tcp("fd00:9::1", "fd00:30::20", 80), dnat(false, shares{"[fd00:2::20]:80": 0.5, "[fd00:2::21]:80": 0.5})},
		{"IPv6 unserved port is rejected", true, tcp("fd00:9::1", "fd00:30::20", 81), reject},
		{"weights 3:1", false, tcp("10.9.0.1", "172.30.0.21", 80), dnat(false, shares{"10.2.0.21:80": 0.75, "10.2.0.22:80": 0.25})},
		{"round robin shares evenly", false, tcp("10.9.0.1", "172.30.0.22", 80), dnat(false, shares{"10.2.0.23:80": third, "10.2.0.24:80": third, "10.2.0.25:80": third})},
		// iptables cannot do Maglev and falls back on Random; nftables hashes the source.
		{"Maglev splits evenly", false, tcp("10.9.0.1", "172.30.0.23", 80), dnat(false, shares{"10.2.0.26:80": 0.5, "10.2.0.27:80": 0.5})},
		{"UDP service", false, udp("10.9.0.1", "172.30.0.53", 53), dnat(false, shares{"10.2.0.53:53": 1})},
		{"TCP on the same port", false, tcp("10.9.0.1", "172.30.0.53", 53), dnat(false, shares{"10.2.0.53:53": 1})},
		{"not a Service", false, tcp("10.9.0.1", "10.2.0.1", 8080), accept},
		// externalTrafficPolicy Local without a local endpoint: traffic from the node
		// itself goes to every endpoint, masqueraded (kube-proxy's short-circuit).
		{"NodePort Local without local endpoint, from the node: every endpoint", false, tcp("192.168.0.2", "192.168.0.2", 30082), dnat(true, shares{"10.2.0.5:80": 1})},
		{"LoadBalancer Local without local endpoint, from the node: every endpoint", false, tcp("192.168.0.2", "203.0.113.15", 80), dnat(true, shares{"10.2.0.5:80": 1})},
		// externalIPs of a ClusterIP Service honour externalTrafficPolicy Local.
		{"externalIP Local: local endpoint, unmasqueraded", false, tcp("198.51.100.7", "192.0.2.24", 80), dnat(false, shares{"10.1.0.30:80": 1})},
		{"externalIP Local from the node: every endpoint, masqueraded", false, tcp("192.168.0.2", "192.0.2.24", 80), dnat(true, shares{"10.1.0.30:80": 0.5, "10.2.0.30:80": 0.5})},
		{"externalIP Local without local endpoint drops", false, tcp("198.51.100.7", "192.0.2.25", 80), drop},
		{"externalIP Local without local endpoint, from the node: every endpoint", false, tcp("192.168.0.2", "192.0.2.25", 80), dnat(true, shares{"10.2.0.31:80": 1})},
		// loadBalancerSourceRanges restrict their own family only.
		{"IPv4 source ranges: IPv4 LoadBalancer IP from another source drops", false, tcp("192.0.2.99", "203.0.113.26", 80), drop},
		{"IPv4 source ranges: IPv4 LoadBalancer IP from an allowed source", false, tcp("198.51.100.7", "203.0.113.26", 80), dnat(true, shares{"10.2.0.32:80": 1})},
		{"IPv4 source ranges leave the IPv6 LoadBalancer IP open", true, tcp("2001:db8:99::1", "2001:db8::26", 80), dnat(true, shares{"[fd00:2::32]:80": 1})},
		// Source ranges holding the node's IP admit the LoadBalancer IP as a source.
		{"source ranges with the node's IP admit the LoadBalancer IP", false, tcp("203.0.113.27", "203.0.113.27", 80), dnat(true, shares{"10.2.0.33:80": 1})},
		{"source ranges with the node's IP admit the node", false, tcp("192.168.0.2", "203.0.113.27", 80), dnat(true, shares{"10.2.0.33:80": 1})},
		{"source ranges with the node's IP still drop others", false, tcp("198.51.100.7", "203.0.113.27", 80), drop},
		{"IPv6 NodePort", true, tcp("fd00:9::1", "fd00:192::2", 30028), dnat(true, shares{"[fd00:2::34]:80": 1})},
		{"NodePort Local on loopback is not served", false, tcp("127.0.0.1", "127.0.0.1", 30081), accept},
		{"IPv6 NodePort on loopback is never served", true, tcp("::1", "::1", 30028), accept},
	})
	localhost := map[string]Outcome{
		"NodePort on loopback is not served":       dnat(true, shares{"10.1.0.3:80": 0.5, "10.2.0.3:80": 0.5}),
		"NodePort Local on loopback is not served": dnat(true, shares{"10.1.0.4:80": 0.5, "10.2.0.4:80": 0.5}),
	}
	for i := range out {
		if o, ok := localhost[out[i].Name]; ok {
			out[i].IPTables = &o
		}
	}
	return out
}

// row is a Scenario without a mode of its own, for the tables.
type row struct {
	name string
	ipv6 bool
	pkt  Packet
	want Outcome
}

func scenarios(rows []row) []Scenario {
	out := make([]Scenario, len(rows))
	for i, r := range rows {
		out[i] = Scenario{Name: r.name, IPv6: r.ipv6, Pkt: r.pkt, Want: r.want}
	}
	return out
}

// ConfigScenarios are scenarios under kube-proxy settings other than the defaults.
type ConfigScenarios struct {
	Name      string
	Proxy     model.ProxyConfig
	Scenarios []Scenario
}

// ProxyConfigScenarios are the packet flows that kube-proxy's settings change, traced
// through Services() on node a: --masquerade-all, --detect-local-mode with its
// companions, and --nodeport-addresses.
func ProxyConfigScenarios() []ConfigScenarios {
	type shares = map[string]float64
	dnat := func(masq bool, s shares) Outcome { return Outcome{Verdict: "DNAT", Endpoints: s, Masq: masq} }
	tcp := func(src, dst string, port int) Packet { return Packet{Src: src, Dst: dst, Proto: "tcp", Port: port} }
	via := func(p Packet, iif string) Packet { p.Iif = iif; return p }
	accept := Outcome{Verdict: "ACCEPT"}
	web := shares{"10.1.0.1:8080": 0.5, "10.2.0.1:8080": 0.5}
	npLocalAll := shares{"10.1.0.4:80": 0.5, "10.2.0.4:80": 0.5}
	prefixes := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	return []ConfigScenarios{
		{Name: "masquerade-all", Proxy: model.ProxyConfig{MasqueradeAll: true}, Scenarios: scenarios([]row{
			{"ClusterIP from a pod is masqueraded", false, tcp("10.9.0.1", "172.30.0.10", 80), dnat(true, web)},
			{"IPv6 ClusterIP is masqueraded", true, tcp("fd00:9::1", "fd00:30::20", 80), dnat(true, shares{"[fd00:2::20]:80": 0.5, "[fd00:2::21]:80": 0.5})},
			{"NodePort Local from outside stays unmasqueraded", false, tcp("198.51.100.7", "192.168.0.2", 30081), dnat(false, shares{"10.1.0.4:80": 1})},
		})},
		{Name: "cluster-cidr", Proxy: model.ProxyConfig{DetectLocal: model.DetectLocal{Mode: model.LocalModeClusterCIDR, ClusterCIDRs: prefixes("10.0.0.0/8")}}, Scenarios: scenarios([]row{
			{"ClusterIP from a pod is not masqueraded", false, tcp("10.9.0.1", "172.30.0.10", 80), dnat(false, web)},
			{"ClusterIP from outside the pod network is masqueraded", false, tcp("198.51.100.7", "172.30.0.10", 80), dnat(true, web)},
			{"ClusterIP from the node is masqueraded", false, tcp("192.168.0.2", "172.30.0.10", 80), dnat(true, web)},
			{"IPv6 has no cluster CIDR: not masqueraded", true, tcp("2001:db8:99::1", "fd00:30::20", 80), dnat(false, shares{"[fd00:2::20]:80": 0.5, "[fd00:2::21]:80": 0.5})},
			{"NodePort Local from a pod: every endpoint, unmasqueraded", false, tcp("10.9.0.1", "192.168.0.2", 30081), dnat(false, npLocalAll)},
			{"NodePort Local without local endpoint from a pod: every endpoint", false, tcp("10.9.0.1", "192.168.0.2", 30082), dnat(false, shares{"10.2.0.5:80": 1})},
			{"LoadBalancer Local without local endpoint from a pod: every endpoint", false, tcp("10.9.0.1", "203.0.113.15", 80), dnat(false, shares{"10.2.0.5:80": 1})},
			{"NodePort Local from outside: local endpoint, unmasqueraded", false, tcp("198.51.100.7", "192.168.0.2", 30081), dnat(false, shares{"10.1.0.4:80": 1})},
			{"NodePort Local from the node: every endpoint, masqueraded", false, tcp("192.168.0.2", "192.168.0.2", 30081), dnat(true, npLocalAll)},
		})},
		{Name: "bridge-interface", Proxy: model.ProxyConfig{DetectLocal: model.DetectLocal{Mode: model.LocalModeBridgeInterface, BridgeInterface: "cbr0"}}, Scenarios: scenarios([]row{
			{"ClusterIP from the bridge is not masqueraded", false, via(tcp("10.9.0.1", "172.30.0.10", 80), "cbr0"), dnat(false, web)},
			{"ClusterIP from another interface is masqueraded", false, via(tcp("10.9.0.1", "172.30.0.10", 80), "eth0"), dnat(true, web)},
			{"NodePort Local from the bridge: every endpoint", false, via(tcp("10.9.0.1", "192.168.0.2", 30081), "cbr0"), dnat(false, npLocalAll)},
		})},
		{Name: "interface-name-prefix", Proxy: model.ProxyConfig{DetectLocal: model.DetectLocal{Mode: model.LocalModeInterfaceNamePrefix, InterfaceNamePrefix: "veth"}}, Scenarios: scenarios([]row{
			{"ClusterIP from a veth is not masqueraded", false, via(tcp("10.9.0.1", "172.30.0.10", 80), "veth1234"), dnat(false, web)},
			{"ClusterIP from eth0 is masqueraded", false, via(tcp("10.9.0.1", "172.30.0.10", 80), "eth0"), dnat(true, web)},
			{"NodePort Local from a veth: every endpoint", false, via(tcp("10.9.0.1", "192.168.0.2", 30081), "veth1234"), dnat(false, npLocalAll)},
		})},
		{Name: "nodeport-addresses IPv4 only", Proxy: model.ProxyConfig{NodePortAddresses: prefixes("192.168.1.0/24")}, Scenarios: scenarios([]row{
			{"IPv4 node address outside the prefixes does not serve node ports", false, tcp("198.51.100.7", "192.168.0.2", 30028), accept},
			{"IPv6 serves node ports on all its addresses", true, tcp("fd00:9::1", "fd00:192::2", 30028), dnat(true, shares{"[fd00:2::34]:80": 1})},
		})},
		{Name: "nodeport-addresses IPv6 only", Proxy: model.ProxyConfig{NodePortAddresses: prefixes("fd00:99::/64")}, Scenarios: scenarios([]row{
			{"IPv4 serves node ports on all its addresses", false, tcp("198.51.100.7", "192.168.0.2", 30028), dnat(true, shares{"10.2.0.34:80": 1})},
			{"IPv6 node address outside the prefixes does not serve node ports", true, tcp("fd00:9::1", "fd00:192::2", 30028), accept},
		})},
	}
}
