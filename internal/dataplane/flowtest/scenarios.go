package flowtest

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Packet is the first packet of a connection.
type Packet struct {
	Src, Dst string
	Proto    string // "tcp" or "udp"
	Port     int
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
}

// Scenarios are the packet flows every kernel data plane must get right.
func Scenarios() []Scenario {
	type shares = map[string]float64
	dnat := func(masq bool, s shares) Outcome { return Outcome{Verdict: "DNAT", Endpoints: s, Masq: masq} }
	tcp := func(src, dst string, port int) Packet { return Packet{Src: src, Dst: dst, Proto: "tcp", Port: port} }
	udp := func(src, dst string, port int) Packet { return Packet{Src: src, Dst: dst, Proto: "udp", Port: port} }
	drop, reject, accept := Outcome{Verdict: "DROP"}, Outcome{Verdict: "REJECT"}, Outcome{Verdict: "ACCEPT"}
	const third = 1.0 / 3
	return []Scenario{
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
	}
}
