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
	// proxy is the data plane's kube-proxy settings; pods its pod detector for this
	// family; localhost whether node ports are served on 127.0.0.0/8 (IPv4 only,
	// --iptables-localhost-nodeports).
	proxy     model.ProxyConfig
	pods      model.PodMatch
	localhost bool
}

// podMatch is the iptables match of traffic from pods (or, with not, of traffic that is
// not from pods), with a trailing space; "" when pods are not recognised. kube-proxy's
// IfLocal and IfNotLocal.
func (f ipFamily) podMatch(not bool) string {
	neg := ""
	if not {
		neg = "! "
	}
	switch {
	case f.pods.CIDR.IsValid():
		return neg + "-s " + f.pods.CIDR.String() + " "
	case f.pods.Interface != "":
		name := f.pods.Interface
		if f.pods.InterfacePrefix {
			name += "+"
		}
		return neg + "-i " + name + " "
	}
	return ""
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
func buildService(f ipFamily, svc *model.Service) *serviceRules {
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
	for _, p := range svc.SourceRanges(f.is6) {
		ranges = append(ranges, p.Masked().String())
	}
	// ClusterIP traffic to masquerade (model.ProxyConfig.ClusterIP): all of it with
	// --masquerade-all, else what does not come from a pod when pods are recognised.
	clusterMasq := ""
	switch elsewhere := f.proxy.ClusterIP(model.FromElsewhere, f.pods).Masquerade; {
	case elsewhere && f.proxy.ClusterIP(model.FromPod, f.pods).Masquerade:
		clusterMasq = " "
	case elsewhere:
		clusterMasq = " " + f.podMatch(true)
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
		shortCircuit := sp.ShortCircuit.ForFamily(f.is6).Endpoints
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
			var rules []string
			if clusterMasq != "" {
				for _, ip := range clusterIPs {
					rules = append(rules, "-d "+pick(ip)+" "+match+clusterMasq+"-j "+chainMarkMasq)
				}
			}
			r.chains[svcChain] = picks(rules, cluster)
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
		switch {
		case svc.ExternalTrafficLocal && len(shortCircuit) > 0:
			// Local policy: traffic from the node, and from pods when they are
			// recognised, goes to every endpoint (model.ProxyConfig.External); the
			// rest to the local endpoints, or on to the no-endpoint drop when there
			// are none here.
			extChain = chainName("EXT", id)
			scChain := svcChain
			if scChain == "" || !model.SameEndpoints(cluster, shortCircuit) {
				scChain = chainName("SC", id)
				r.chains[scChain] = picks(nil, shortCircuit)
			}
			var rules []string
			for _, src := range []model.Source{model.FromPod, model.FromNode} {
				m := "-m addrtype --src-type LOCAL "
				if src == model.FromPod {
					if m = f.podMatch(false); m == "" {
						continue
					}
				}
				route := f.proxy.External(svc, src, f.pods)
				if route.Set != model.ShortCircuitSet {
					continue
				}
				if route.Masquerade {
					rules = append(rules, m+"-j "+chainMarkMasq)
				}
				rules = append(rules, m+"-j "+scChain)
			}
			if len(external) > 0 {
				if f.proxy.External(svc, model.FromElsewhere, f.pods).Masquerade {
					rules = append(rules, "-j "+chainMarkMasq)
				}
				rules = picks(rules, external)
			}
			r.chains[extChain] = rules
		case len(external) > 0:
			// Cluster policy: masqueraded (model.ProxyConfig.External).
			extChain = chainName("EXT", id)
			rules := []string{"-j " + chainMarkMasq}
			if svcChain != "" && model.SameEndpoints(cluster, external) {
				rules = append(rules, "-j "+svcChain)
			} else {
				rules = picks(rules, external)
			}
			r.chains[extChain] = rules
		}
		externalMiss := missTarget(kernel.FamilyVerdict(sp.External, f.is6), proto)
		fwChain := ""
		if extChain != "" && len(ranges) > 0 && len(lbIPs) > 0 {
			fwChain = chainName("FW", id)
			var rules []string
			for _, rg := range ranges {
				rules = append(rules, "-s "+rg+" -j "+extChain)
			}
			r.chains[fwChain] = append(rules, "-j "+chainMarkDrop)
		}
		// A frontend with no endpoint for outside traffic goes to the filter's reject
		// or drop, whatever the EXT chain did not short-circuit.
		for _, ip := range frontIPs {
			if extChain != "" {
				r.natServices = append(r.natServices, "-d "+pick(ip)+" "+match+" -j "+extChain)
			}
			if len(external) == 0 {
				r.filterExternal = append(r.filterExternal, "-d "+pick(ip)+" "+match+" -j "+externalMiss)
			}
		}
		for _, ip := range lbIPs {
			switch {
			case fwChain != "":
				r.natServices = append(r.natServices, "-d "+pick(ip)+" "+match+" -j "+fwChain)
			case extChain != "":
				r.natServices = append(r.natServices, "-d "+pick(ip)+" "+match+" -j "+extChain)
			}
			if len(external) == 0 {
				r.filterExternal = append(r.filterExternal, "-d "+pick(ip)+" "+match+" -j "+externalMiss)
			}
		}
		if sp.NodePort != 0 {
			npMatch := fmt.Sprintf("-p %s -m %s --dport %d", proto, proto, sp.NodePort)
			if extChain != "" {
				r.natNodePorts = append(r.natNodePorts, npMatch+" -j "+extChain)
			}
			if len(external) == 0 {
				for _, dst := range nodePortDests(f) {
					r.filterExternal = append(r.filterExternal, dst+"-m addrtype --dst-type LOCAL "+npMatch+" -j "+externalMiss)
				}
			}
		}
	}
	return r
}

// nodePortDests are the destination matches for node ports in family f, each with a
// trailing space (the rules add -m addrtype --dst-type LOCAL): the family's prefixes of
// --nodeport-addresses, or every local address of the family when it has none
// (model.ProxyConfig.NodePorts). Loopback addresses are left out, but for IPv4 with
// --iptables-localhost-nodeports.
func nodePortDests(f ipFamily) []string {
	np := f.proxy.NodePorts(f.is6)
	if np.All {
		if f.localhost {
			return []string{""}
		}
		return []string{"! -d " + f.loopback + " "}
	}
	loop := netip.MustParsePrefix(f.loopback)
	var out []string
	for _, p := range np.Prefixes {
		if f.localhost {
			out = append(out, "-d "+p.String()+" ")
			continue
		}
		for _, q := range without(p, loop) {
			out = append(out, "-d "+q.String()+" ")
		}
	}
	return out
}

// without returns the prefixes that cover p but not hole.
func without(p, hole netip.Prefix) []netip.Prefix {
	switch {
	case !p.Overlaps(hole):
		return []netip.Prefix{p}
	case p.Bits() >= hole.Bits():
		return nil // p lies inside hole
	}
	// Split p in halves and keep what lies outside hole.
	lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	b := p.Addr().AsSlice()
	b[p.Bits()/8] |= 0x80 >> (p.Bits() % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	hi := netip.PrefixFrom(hiAddr, p.Bits()+1)
	return append(without(lo, hole), without(hi, hole)...)
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
