package ipvs

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

// vsKey names one IPVS virtual server: an address, protocol and port, or a firewall
// mark (Addr invalid) for node ports and short-circuited traffic.
type vsKey struct {
	IPv6  bool
	Addr  netip.Addr
	Proto model.Protocol
	Port  uint16
	Mark  uint32
}

func (k vsKey) String() string {
	if k.Mark != 0 {
		return fmt.Sprintf("fwmark %#x (%s)", k.Mark, map[bool]string{false: "IPv4", true: "IPv6"}[k.IPv6])
	}
	return fmt.Sprintf("%s %s", k.Proto, netip.AddrPortFrom(k.Addr, k.Port))
}

// virtualServer is what one virtual server should be.
type virtualServer struct {
	Scheduler string
	// Timeout is the persistence (ClientIP affinity) in seconds; 0 is none.
	Timeout uint32
	// Reals are the real servers and their weights.
	Reals map[netip.AddrPort]uint32
}

func (v virtualServer) sameService(o virtualServer) bool {
	return v.Scheduler == o.Scheduler && v.Timeout == o.Timeout
}

// markKind tells a Service port's two firewall-mark virtual servers apart.
type markKind uint8

const (
	nodePortMark     markKind = iota + 1 // node ports: the External set
	shortCircuitMark                     // the node and recognised pods to external frontends of a Local Service
)

// markKey names a firewall-mark virtual server.
type markKey struct {
	Port  string // model.ServicePort.ID
	Proto model.Protocol
	Kind  markKind
	IPv6  bool
}

// frontend is an address, protocol and port of a Service.
type frontend struct {
	Addr  netip.Addr
	Proto model.Protocol
	Port  uint16
}

// verdictElem is what the filter does with new connections to a frontend: "return"
// (IPVS takes them), "reject" or "drop".
type verdictElem struct {
	frontend
	Verdict string
}

// firewallElem restricts a LoadBalancer IP's sources.
type firewallElem struct {
	frontend
	Ranges []netip.Prefix
}

// shortCircuitElem sends the node's (and recognised pods') connections to an external
// frontend of a Local Service to the short-circuit virtual server Mark.
type shortCircuitElem struct {
	frontend
	Mark uint32
}

// nodePortElem is one node port of one family.
type nodePortElem struct {
	Proto model.Protocol
	Port  uint16
	// Mark is the node-port virtual server's mark (0: External does not forward);
	// SCMark the short-circuit's (0: the port is not Local, or ShortCircuit does not
	// forward). Masq: every connection is masqueraded (externalTrafficPolicy Cluster).
	Mark, SCMark uint32
	Masq         bool
	// Verdict for connections that get no mark: "" when Mark is set, else "reject" or
	// "drop".
	Verdict string
}

// servicePlan is everything one Service asks of one IP family.
type servicePlan struct {
	VS          map[vsKey]virtualServer
	Addrs       []netip.Addr // on the dummy interface
	ClusterIPs  []netip.Addr
	Verdicts    []verdictElem
	Firewall    []firewallElem
	ExtMasq     []frontend // external frontends whose connections are all masqueraded
	SC          []shortCircuitElem
	NodePorts   []nodePortElem
	Hairpin     []netip.Addr // local endpoints (masqueraded when they reach themselves)
	Unsupported []dataplane.UnsupportedScheduler
	Marks       []markKey // the firewall marks the plan uses
}

// marks hands out firewall marks; the Proxier keeps one across syncs so that a Service
// port keeps its marks.
type marks interface {
	mark(markKey) uint32
}

// protoNumber is the IP protocol number of p.
func protoNumber(p model.Protocol) uint8 {
	switch p {
	case model.UDP:
		return 17
	case model.SCTP:
		return 132
	}
	return 6
}

// scheduler maps the port's TrafficPolicy to an IPVS scheduler. Without one, kube-proxy's
// IPVS default: rr (wrr when the endpoints have different weights, which rr ignores).
// Schedulers IPVS has no equivalent for are reported and get rr likewise.
func scheduler(svc *model.Service, sp *model.ServicePort, eps []model.Endpoint) (string, *dataplane.UnsupportedScheduler) {
	rr := "rr"
	for _, e := range eps {
		if e.EffectiveWeight() != eps[0].EffectiveWeight() {
			rr = "wrr"
			break
		}
	}
	pol := kernel.PortPolicy(svc, sp)
	if pol == nil {
		return rr, nil
	}
	switch pol.Algorithm {
	case balance.RoundRobin:
		return rr, nil
	case balance.WeightedRoundRobin:
		return "wrr", nil
	case balance.LeastConnections:
		return "lc", nil
	case balance.WeightedLeastConnections:
		return "wlc", nil
	case balance.SourceHash:
		return "sh", nil
	case balance.DestinationHash:
		return "dh", nil
	case balance.Maglev:
		return "mh", nil
	}
	return rr, &dataplane.UnsupportedScheduler{Port: sp.ID(svc.Key), Algorithm: string(pol.Algorithm)}
}

// reals are a set's endpoints as real servers with their weights.
func reals(eps []model.Endpoint) map[netip.AddrPort]uint32 {
	out := make(map[netip.AddrPort]uint32, len(eps))
	for _, e := range eps {
		out[e.AddrPort()] = e.EffectiveWeight()
	}
	return out
}

func verdictName(v model.Verdict) string {
	switch v {
	case model.Reject:
		return "reject"
	case model.Drop:
		return "drop"
	}
	return "return"
}

// planService is what svc asks of one family. It reads only the Snapshot's decisions
// (the endpoint sets and their verdicts) and cfg's routes.
func planService(svc *model.Service, ipv6 bool, cfg model.ProxyConfig, mk marks) servicePlan {
	pl := servicePlan{VS: map[vsKey]virtualServer{}}
	if !svc.Proxied() {
		return pl
	}
	fam := func(as []netip.Addr) []netip.Addr {
		var out []netip.Addr
		for _, a := range as {
			if a.Is6() == ipv6 {
				out = append(out, a)
			}
		}
		return out
	}
	clusterIPs, external := fam(svc.ClusterIPs), append(fam(svc.ExternalIPs), fam(svc.LoadBalancerIPs)...)
	if len(clusterIPs) == 0 {
		return pl
	}
	lbIPs := fam(svc.LoadBalancerIPs)
	ranges := svc.SourceRanges(ipv6)
	pl.ClusterIPs = clusterIPs
	pl.Addrs = append(slices.Clone(clusterIPs), external...)
	var timeout uint32
	if svc.AffinityTimeout > 0 {
		timeout = uint32(max(svc.AffinityTimeout.Seconds(), 1))
	}
	hairpin := map[netip.Addr]bool{}
	for _, sp := range svc.Ports {
		port := uint16(sp.Port)
		cluster := sp.Cluster.ForFamily(ipv6)
		ext := sp.External.ForFamily(ipv6)
		sc := sp.ShortCircuit.ForFamily(ipv6)
		sched, unsup := scheduler(svc, sp, append(slices.Clone(cluster.Endpoints), ext.Endpoints...))
		if unsup != nil {
			pl.Unsupported = append(pl.Unsupported, *unsup)
		}
		for _, set := range [][]model.Endpoint{cluster.Endpoints, ext.Endpoints, sc.Endpoints} {
			for _, e := range set {
				if e.Local {
					hairpin[e.Addr] = true
				}
			}
		}
		vs := func(set model.EndpointSet) virtualServer {
			return virtualServer{Scheduler: sched, Timeout: timeout, Reals: reals(set.Endpoints)}
		}
		for _, ip := range clusterIPs {
			fe := frontend{Addr: ip, Proto: sp.Protocol, Port: port}
			pl.Verdicts = append(pl.Verdicts, verdictElem{fe, verdictName(cluster.Verdict)})
			if cluster.Verdict == model.Forward {
				pl.VS[vsKey{IPv6: ipv6, Addr: ip, Proto: sp.Protocol, Port: port}] = vs(cluster)
			}
		}
		// The short-circuit: kube-proxy sends the node's connections (and pods' when
		// it recognises them) to external frontends of a Local Service to every
		// endpoint, as if they had gone out and come back in. One firewall-mark virtual
		// server per port holds that set.
		var scMark uint32
		if svc.ExternalTrafficLocal && sc.Verdict == model.Forward && (len(external) > 0 || sp.NodePort != 0) {
			mkey := markKey{Port: sp.ID(svc.Key), Proto: sp.Protocol, Kind: shortCircuitMark, IPv6: ipv6}
			scMark = mk.mark(mkey)
			pl.Marks = append(pl.Marks, mkey)
			pl.VS[vsKey{IPv6: ipv6, Mark: scMark}] = vs(sc)
		}
		for _, ip := range external {
			fe := frontend{Addr: ip, Proto: sp.Protocol, Port: port}
			pl.Verdicts = append(pl.Verdicts, verdictElem{fe, verdictName(ext.Verdict)})
			if ext.Verdict == model.Forward {
				pl.VS[vsKey{IPv6: ipv6, Addr: ip, Proto: sp.Protocol, Port: port}] = vs(ext)
			}
			if !svc.ExternalTrafficLocal {
				pl.ExtMasq = append(pl.ExtMasq, fe)
			} else if scMark != 0 {
				pl.SC = append(pl.SC, shortCircuitElem{fe, scMark})
			}
			if len(ranges) > 0 && slices.Contains(lbIPs, ip) {
				pl.Firewall = append(pl.Firewall, firewallElem{fe, ranges})
			}
		}
		if sp.NodePort != 0 {
			np := nodePortElem{Proto: sp.Protocol, Port: uint16(sp.NodePort), SCMark: scMark, Masq: !svc.ExternalTrafficLocal}
			if ext.Verdict == model.Forward {
				mkey := markKey{Port: sp.ID(svc.Key), Proto: sp.Protocol, Kind: nodePortMark, IPv6: ipv6}
				np.Mark = mk.mark(mkey)
				pl.Marks = append(pl.Marks, mkey)
				pl.VS[vsKey{IPv6: ipv6, Mark: np.Mark}] = vs(ext)
			} else {
				np.Verdict = verdictName(ext.Verdict)
			}
			pl.NodePorts = append(pl.NodePorts, np)
		}
	}
	for a := range hairpin {
		pl.Hairpin = append(pl.Hairpin, a)
	}
	slices.SortFunc(pl.Hairpin, netip.Addr.Compare)
	return pl
}

// compareFrontends orders frontends for stable output.
func compareFrontends(a, b frontend) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Proto, b.Proto); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}
