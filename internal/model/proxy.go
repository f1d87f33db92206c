package model

import (
	"fmt"
	"net/netip"
)

// ProxyConfig holds the node-wide settings of kube-proxy that change where a
// connection to a Service goes and whether it is masqueraded, under kube-proxy's flag
// names. Every L4 data plane takes one in its options and asks its methods, so each
// rule is written here once; the data plane only expresses the answer (rules in the
// kernel, a choice of target in userspace).
type ProxyConfig struct {
	// MasqueradeAll masquerades every connection to a ClusterIP (--masquerade-all).
	MasqueradeAll bool
	// DetectLocal tells traffic from pods apart (--detect-local-mode and its
	// companions).
	DetectLocal DetectLocal
	// NodePortAddresses limits node ports to the node's addresses in these prefixes,
	// family by family (--nodeport-addresses); see NodePorts.
	NodePortAddresses []netip.Prefix
}

// LocalMode is kube-proxy's --detect-local-mode.
type LocalMode string

// The modes weir knows. kube-proxy's NodeCIDR (the Node object's spec.podCIDRs) is
// not offered: ClusterCIDR with this node's pod CIDR does the same.
const (
	LocalModeClusterCIDR         LocalMode = "ClusterCIDR" // source in --cluster-cidr
	LocalModeBridgeInterface     LocalMode = "BridgeInterface"
	LocalModeInterfaceNamePrefix LocalMode = "InterfaceNamePrefix"
)

// DetectLocal is how traffic from pods is recognised: kube-proxy's --detect-local-mode
// with --cluster-cidr, --pod-bridge-interface or --pod-interface-name-prefix. The zero
// value is kube-proxy's default, ClusterCIDR without a CIDR: nothing is recognised.
type DetectLocal struct {
	Mode LocalMode // "" is ClusterCIDR
	// ClusterCIDRs are the pod network, at most one per family (--cluster-cidr).
	ClusterCIDRs []netip.Prefix
	// BridgeInterface is the pods' bridge (--pod-bridge-interface).
	BridgeInterface string
	// InterfaceNamePrefix starts the name of every pod interface
	// (--pod-interface-name-prefix).
	InterfaceNamePrefix string
}

// Validate reports a mode weir does not know, or one without the setting it needs.
func (d DetectLocal) Validate() error {
	switch d.Mode {
	case "", LocalModeClusterCIDR:
		var v4, v6 int
		for _, p := range d.ClusterCIDRs {
			if p.Addr().Is4() {
				v4++
			} else {
				v6++
			}
		}
		if v4 > 1 || v6 > 1 {
			return fmt.Errorf("--cluster-cidr: at most one CIDR per IP family, got %v", d.ClusterCIDRs)
		}
	case LocalModeBridgeInterface:
		if d.BridgeInterface == "" {
			return fmt.Errorf("--detect-local-mode %s needs --pod-bridge-interface", d.Mode)
		}
	case LocalModeInterfaceNamePrefix:
		if d.InterfaceNamePrefix == "" {
			return fmt.Errorf("--detect-local-mode %s needs --pod-interface-name-prefix", d.Mode)
		}
	case "NodeCIDR":
		return fmt.Errorf("--detect-local-mode NodeCIDR is not supported (weir does not read the Node's spec.podCIDRs): use ClusterCIDR with --cluster-cidr set to this node's pod CIDR")
	default:
		return fmt.Errorf("--detect-local-mode %q: want ClusterCIDR, BridgeInterface or InterfaceNamePrefix", d.Mode)
	}
	return nil
}

// PodMatch is how a data plane recognises traffic from pods in one family: by source
// address, or by the interface it came in on. The zero PodMatch recognises nothing.
type PodMatch struct {
	CIDR netip.Prefix // the source address is in CIDR
	// Interface is the input interface's name, or, when InterfacePrefix, the start of
	// it.
	Interface       string
	InterfacePrefix bool
}

// Enabled reports whether the match recognises anything.
func (m PodMatch) Enabled() bool { return m.CIDR.IsValid() || m.Interface != "" }

// Pods returns how pods are recognised in one family (kube-proxy's
// LocalTrafficDetector of that family's proxier).
func (d DetectLocal) Pods(ipv6 bool) PodMatch {
	switch d.Mode {
	case "", LocalModeClusterCIDR:
		for _, p := range d.ClusterCIDRs {
			if p.Addr().Is6() == ipv6 {
				return PodMatch{CIDR: p.Masked()}
			}
		}
	case LocalModeBridgeInterface:
		return PodMatch{Interface: d.BridgeInterface}
	case LocalModeInterfaceNamePrefix:
		return PodMatch{Interface: d.InterfaceNamePrefix, InterfacePrefix: true}
	}
	return PodMatch{}
}

// Source is where a new connection comes from, as far as kube-proxy's rules tell
// sources apart.
type Source uint8

// The sources.
const (
	// FromElsewhere is any other client: another node, an outside client, or a pod the
	// detector does not recognise.
	FromElsewhere Source = iota
	// FromPod is a pod that DetectLocal recognises.
	FromPod
	// FromNode is this node itself: a local source address (nftables `fib saddr type
	// local`, iptables `--src-type LOCAL`).
	FromNode
)

// Route is what happens to a new connection to one of a port's frontends: which of
// its endpoint sets it goes to, and whether its source is masqueraded (the endpoint
// then sees the node's address). Hairpin traffic (an endpoint reaching itself) is
// always masqueraded besides.
type Route struct {
	Set        SetKind
	Masquerade bool
}

// ClusterIP is the route of a connection to a ClusterIP from src: the Cluster set,
// masqueraded with --masquerade-all, or, when pods are recognised (pods is
// DetectLocal.Pods of the family), whenever it does not come from a pod. kube-proxy
// masquerades the latter so that a route to the Service range through any node works.
func (c ProxyConfig) ClusterIP(src Source, pods PodMatch) Route {
	masq := c.MasqueradeAll || (pods.Enabled() && src != FromPod)
	return Route{Set: ClusterSet, Masquerade: masq}
}

// External is the route of a connection from src to a node port, external IP or
// LoadBalancer IP of svc. With externalTrafficPolicy Cluster it goes to the External
// set, masqueraded (the endpoint may be on another node). With Local, it goes to the
// local endpoints (External) unmasqueraded, except that traffic from the node goes
// to the ShortCircuit set, masqueraded (the node's source would not route back), and
// traffic from a recognised pod goes to the ShortCircuit set unmasqueraded: kube-proxy
// treats both as if they had gone out to the load balancer and come back in. pods is
// DetectLocal.Pods of the family: FromPod counts only when it recognises something.
func (c ProxyConfig) External(svc *Service, src Source, pods PodMatch) Route {
	if !svc.ExternalTrafficLocal {
		return Route{Set: ExternalSet, Masquerade: true}
	}
	switch {
	case src == FromNode:
		return Route{Set: ShortCircuitSet, Masquerade: true}
	case src == FromPod && pods.Enabled():
		return Route{Set: ShortCircuitSet}
	}
	return Route{Set: ExternalSet}
}

// NodePortAddrs are the addresses of one family that serve node ports.
type NodePortAddrs struct {
	// All is true when every local address of the family serves them (no prefix of
	// the family was given, or one of them is a /0); Prefixes is then nil.
	All      bool
	Prefixes []netip.Prefix
	// Loopback reports whether the addresses include IPv4 loopback addresses, which
	// only iptables mode serves (--iptables-localhost-nodeports).
	Loopback bool
}

// NodePorts is kube-proxy's NewNodePortAddresses for one family: the family's prefixes
// of --nodeport-addresses, or all of the family's addresses when none of the family is
// given, even when prefixes of the other family are.
func (c ProxyConfig) NodePorts(ipv6 bool) NodePortAddrs {
	var out NodePortAddrs
	for _, p := range c.NodePortAddresses {
		if p.Addr().Is6() != ipv6 {
			continue
		}
		p = p.Masked()
		if p.Bits() == 0 {
			return NodePortAddrs{All: true, Loopback: !ipv6}
		}
		out.Prefixes = append(out.Prefixes, p)
		if !ipv6 && p.Overlaps(netip.MustParsePrefix("127.0.0.0/8")) {
			out.Loopback = true
		}
	}
	if len(out.Prefixes) == 0 {
		return NodePortAddrs{All: true, Loopback: !ipv6}
	}
	return out
}
