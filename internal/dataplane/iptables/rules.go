package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

// weir's fixed chains.
const (
	chainServices         = "WEIR-SERVICES"          // nat: dispatch; filter: reject/drop
	chainExternalServices = "WEIR-EXTERNAL-SERVICES" // filter
	chainNodePorts        = "WEIR-NODEPORTS"         // nat
	chainMarkMasq         = "WEIR-MARK-MASQ"         // nat
	chainMarkDrop         = "WEIR-MARK-DROP"         // nat
	chainPostrouting      = "WEIR-POSTROUTING"       // nat
	chainFirewall         = "WEIR-FIREWALL"          // filter

	chainPrefix = "WEIR-"
)

// ipFamily holds what differs between iptables and ip6tables.
type ipFamily struct {
	name     kernel.Family
	hostMask string // "/32" or "/128"
	loopback string
	is6      bool
}

var (
	familyV4 = ipFamily{name: kernel.IPv4, hostMask: "/32", loopback: "127.0.0.0/8"}
	familyV6 = ipFamily{name: kernel.IPv6, hostMask: "/128", loopback: "::1/128", is6: true}
)

func (f ipFamily) has(a netip.Addr) bool { return a.IsValid() && a.Unmap().Is6() == f.is6 }

// serviceRules is everything one Service contributes to one family's tables: its own
// chains (nat) and its lines in the shared dispatch chains, which every sync rebuilds.
type serviceRules struct {
	chains         map[string][]string // nat chain → rules (arguments after "-A CHAIN")
	natServices    []string
	natNodePorts   []string
	filterServices []string // no-endpoint ClusterIPs
	filterExternal []string // no-endpoint external IPs, LB IPs and node ports
	clusterIPs     []string // reject anything else sent to these
	unsupported    []dataplane.UnsupportedScheduler
}

func chainName(prefix string, parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return chainPrefix + prefix + "-" + base32.StdEncoding.EncodeToString(sum[:10])[:16]
}

func protoName(p model.Protocol) string { return strings.ToLower(string(p)) }

func portID(svc *model.Service, sp *model.ServicePort) string {
	return sp.ID(svc.Key) + "/" + protoName(sp.Protocol)
}

func kernelAlgorithm(a balance.Algorithm) (balance.Algorithm, bool) {
	switch a {
	case "", balance.Random:
		return balance.Random, true
	case balance.RoundRobin, balance.WeightedRoundRobin:
		return balance.RoundRobin, true
	}
	return balance.Random, false
}

// missTarget is the target for a frontend with nothing to forward to. TCP clients get
// a reset, which fails their connect at once, others ICMP port unreachable.
func missTarget(v model.Verdict, proto string) string {
	switch {
	case v == model.Drop:
		return "DROP"
	case proto == "tcp":
		return "REJECT --reject-with tcp-reset"
	}
	return "REJECT"
}

func weight(ep model.Endpoint) int { return int(ep.EffectiveWeight()) }

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// buildService computes svc's rules for family f.
func buildService(f ipFamily, svc *model.Service, nodePortAddrs []netip.Prefix) *serviceRules {
	r := &serviceRules{chains: map[string][]string{}}
	if !svc.Proxied() {
		return r
	}
	pick := func(a netip.Addr) string { return a.Unmap().String() + f.hostMask }
	var clusterIPs, frontIPs, lbIPs []netip.Addr
	for _, a := range svc.ClusterIPs {
		if f.has(a) {
			clusterIPs = append(clusterIPs, a)
			r.clusterIPs = append(r.clusterIPs, "-d "+pick(a)+" -p tcp -j REJECT --reject-with tcp-reset", "-d "+pick(a)+" -j REJECT")
		}
	}
	for _, a := range svc.ExternalIPs {
		if f.has(a) {
			frontIPs = append(frontIPs, a)
		}
	}
	for _, a := range svc.LoadBalancerIPs {
		if f.has(a) {
			lbIPs = append(lbIPs, a)
		}
	}
	var ranges []string
	for _, p := range svc.LoadBalancerSourceRanges {
		if f.has(p.Addr()) {
			ranges = append(ranges, p.Masked().String())
		}
	}
	for _, sp := range svc.Ports {
		id := portID(svc, sp)
		proto := protoName(sp.Protocol)
		match := fmt.Sprintf("-p %s -m %s --dport %d", proto, proto, sp.Port)
		algo := balance.Random
		if pol := kernel.PortPolicy(svc, sp); pol != nil {
			var ok bool
			if algo, ok = kernelAlgorithm(pol.Algorithm); !ok {
				r.unsupported = append(r.unsupported, dataplane.UnsupportedScheduler{Port: sp.ID(svc.Key), Algorithm: string(pol.Algorithm)})
			}
		}
		cluster := sp.Cluster.ForFamily(f.is6).Endpoints
		external := sp.External.ForFamily(f.is6).Endpoints
		seps := map[netip.AddrPort]string{}
		sep := func(ep model.Endpoint) string {
			if name, ok := seps[ep.AddrPort()]; ok {
				return name
			}
			name := chainName("SEP", id, ep.AddrPort().String())
			seps[ep.AddrPort()] = name
			rules := []string{"-s " + pick(ep.Addr) + " -j " + chainMarkMasq}
			if svc.AffinityTimeout > 0 {
				rules = append(rules, fmt.Sprintf("-p %s -m recent --name %s --set --rsource", proto, name))
			}
			rules = append(rules, fmt.Sprintf("-p %s -m %s -j DNAT --to-destination %s", proto, proto, ep.AddrPort()))
			r.chains[name] = rules
			return name
		}
		picks := func(rules []string, eps []model.Endpoint) []string {
			if svc.AffinityTimeout > 0 {
				secs := int64(svc.AffinityTimeout / time.Second)
				for _, ep := range eps {
					name := sep(ep)
					rules = append(rules, fmt.Sprintf("-m recent --name %s --rcheck --seconds %d --reap --rsource -j %s", name, secs, name))
				}
			}
			return append(rules, pickRules(algo, eps, sep)...)
		}

		svcChain := ""
		if len(clusterIPs) > 0 && len(cluster) > 0 {
			svcChain = chainName("SVC", id)
			r.chains[svcChain] = picks(nil, cluster)
		}
		for _, ip := range clusterIPs {
			if svcChain != "" {
				r.natServices = append(r.natServices, "-d "+pick(ip)+" "+match+" -j "+svcChain)
			} else {
				r.filterServices = append(r.filterServices, "-d "+pick(ip)+" "+match+" -j "+missTarget(kernel.FamilyVerdict(sp.Cluster, f.is6), proto))
			}
		}
		if len(frontIPs) == 0 && len(lbIPs) == 0 && sp.NodePort == 0 {
			continue
		}
		extChain := ""
		if len(external) > 0 {
			extChain = chainName("EXT", id)
			var rules []string
			if svc.ExternalTrafficLocal {
				rules = append(rules, "-m addrtype --src-type LOCAL -j "+chainMarkMasq)
				if svcChain != "" {
					rules = append(rules, "-m addrtype --src-type LOCAL -j "+svcChain)
				}
				rules = picks(rules, external)
			} else {
				rules = append(rules, "-j "+chainMarkMasq)
				if svcChain != "" && model.SameEndpoints(cluster, external) {
					rules = append(rules, "-j "+svcChain)
				} else {
					rules = picks(rules, external)
				}
			}
			r.chains[extChain] = rules
		}
		externalMiss := missTarget(kernel.FamilyVerdict(sp.External, f.is6), proto)
		fwChain := ""
		if extChain != "" && len(svc.LoadBalancerSourceRanges) > 0 && len(lbIPs) > 0 {
			fwChain = chainName("FW", id)
			var rules []string
			for _, rg := range ranges {
				rules = append(rules, "-s "+rg+" -j "+extChain)
			}
			r.chains[fwChain] = append(rules, "-j "+chainMarkDrop)
		}
		for _, ip := range frontIPs {
			if extChain != "" {
				r.natServices = append(r.natServices, "-d "+pick(ip)+" "+match+" -j "+extChain)
			} else {
				r.filterExternal = append(r.filterExternal, "-d "+pick(ip)+" "+match+" -j "+externalMiss)
			}
		}
		for _, ip := range lbIPs {
			switch {
			case fwChain != "":
				r.natServices = append(r.natServices, "-d "+pick(ip)+" "+match+" -j "+fwChain)
			case extChain != "":
				r.natServices = append(r.natServices, "-d "+pick(ip)+" "+match+" -j "+extChain)
			default:
				r.filterExternal = append(r.filterExternal, "-d "+pick(ip)+" "+match+" -j "+externalMiss)
			}
		}
		if sp.NodePort != 0 {
			npMatch := fmt.Sprintf("-p %s -m %s --dport %d", proto, proto, sp.NodePort)
			if extChain != "" {
				r.natNodePorts = append(r.natNodePorts, npMatch+" -j "+extChain)
			} else {
				for _, dst := range nodePortDests(f, nodePortAddrs) {
					r.filterExternal = append(r.filterExternal, dst+"-m addrtype --dst-type LOCAL "+npMatch+" -j "+externalMiss)
				}
			}
		}
	}
	return r
}

// nodePortDests are the destination matches for node ports: the configured prefixes,
// or every local address but loopback.
func nodePortDests(f ipFamily, prefixes []netip.Prefix) []string {
	var out []string
	for _, p := range prefixes {
		if f.has(p.Addr()) {
			out = append(out, "-d "+p.Masked().String()+" ")
		}
	}
	if len(prefixes) == 0 {
		out = append(out, "! -d "+f.loopback+" ")
	}
	return out
}

// pickRules chooses an endpoint as kube-proxy does: rule i of n takes probability
// w_i / (weight left) with the statistic match (random), or every (slots left)-th
// packet (round robin, one rule per weight slot); the last rule takes the rest.
func pickRules(algo balance.Algorithm, eps []model.Endpoint, sep func(model.Endpoint) string) []string {
	g := 0
	for _, ep := range eps {
		g = gcd(g, weight(ep))
	}
	total := 0
	for _, ep := range eps {
		total += weight(ep) / g
	}
	var rules []string
	if algo == balance.RoundRobin {
		left := total
		for i, ep := range eps {
			for s := 0; s < weight(ep)/g; s++ {
				if i == len(eps)-1 && s == weight(ep)/g-1 {
					rules = append(rules, "-j "+sep(ep))
				} else {
					rules = append(rules, fmt.Sprintf("-m statistic --mode nth --every %d --packet 0 -j %s", left, sep(ep)))
				}
				left--
			}
		}
		return rules
	}
	left := total
	for i, ep := range eps {
		w := weight(ep) / g
		if i == len(eps)-1 {
			rules = append(rules, "-j "+sep(ep))
			break
		}
		rules = append(rules, fmt.Sprintf("-m statistic --mode random --probability %.10f -j %s", float64(w)/float64(left), sep(ep)))
		left -= w
	}
	return rules
}
