package ipvs

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/dataplane/nftables"
	"weir.dev/weir/internal/model"
)

// tableName is the nftables table of ipvs mode in each family (ip, ip6).
const tableName = "weir-ipvs"

// markBase and markMask: weir's firewall marks for IPVS are markBase | n. IPVS matches
// a packet's whole mark, so the masquerade bit lives in the connection's ct mark.
const (
	markBase = 0x5e000000
	markMask = 0xff000000
)

// family is one IP family's names.
type family struct {
	ipv6     bool
	nft      knftables.Family
	kw       string // ip or ip6 in rules
	addrType string
	loopback string
	pods     model.PodMatch
	proxy    model.ProxyConfig
}

func newFamily(ipv6 bool, cfg model.ProxyConfig) family {
	f := family{nft: knftables.IPv4Family, kw: "ip", addrType: "ipv4_addr", loopback: "127.0.0.0/8", proxy: cfg}
	if ipv6 {
		f = family{ipv6: true, nft: knftables.IPv6Family, kw: "ip6", addrType: "ipv6_addr", loopback: "::1", proxy: cfg}
	}
	f.pods = cfg.DetectLocal.Pods(ipv6)
	return f
}

// podMatch matches traffic from pods (not: from elsewhere); "" when pods are not
// recognised (kube-proxy's IfLocalNFT / IfNotLocalNFT), as in the nftables mode.
func (f family) podMatch(not bool) string { return nftables.PodMatch(f.kw, f.pods, not) }

// nodePortMatch matches destinations that serve node ports: the family's node
// addresses in --nodeport-addresses (or every local one but loopback), never the
// Service addresses weir put on its dummy interface.
func (f family) nodePortMatch() string {
	np := f.proxy.NodePorts(f.ipv6)
	m := "fib daddr type local " + f.kw + " daddr != " + f.loopback
	if !np.All {
		m = "fib daddr type local " + f.kw + " daddr @nodeport-ips"
	}
	return m + " " + f.kw + " daddr != @service-addrs"
}

func (fe frontend) key() []string {
	return []string{fe.Addr.String(), strings.ToLower(string(fe.Proto)), strconv.Itoa(int(fe.Port))}
}

func markHex(m uint32) string { return fmt.Sprintf("0x%08x", m) }

// fullTable is the transaction that replaces f's table with what plans ask.
func fullTable(nft knftables.Interface, f family, masqMark uint32, plans []servicePlan) *knftables.Transaction {
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weir ipvs mode: masquerade and filtering")})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("weir ipvs mode: masquerade and filtering")})
	base := func(name string, typ knftables.BaseChainType, hook knftables.BaseChainHook, prio string) {
		tx.Add(&knftables.Chain{Name: name, Type: knftables.PtrTo(typ), Hook: knftables.PtrTo(hook), Priority: knftables.PtrTo(knftables.BaseChainPriority(prio))})
	}
	// Marks are set before IPVS sees the packet (LOCAL_IN, LOCAL_OUT), and the filter
	// runs before it too: input at 0 (IPVS at 98), output at -110 (IPVS at -98).
	base("mangle-prerouting", knftables.FilterType, knftables.PreroutingHook, "-150")
	base("mangle-output", knftables.RouteType, knftables.OutputHook, "-150")
	base("filter-input", knftables.FilterType, knftables.InputHook, "0")
	base("filter-output", knftables.FilterType, knftables.OutputHook, "-110")
	base("nat-postrouting", knftables.NATType, knftables.PostroutingHook, "100")
	for _, c := range []string{"classify", "services-check", "reject-chain"} {
		tx.Add(&knftables.Chain{Name: c})
	}
	fe := f.addrType + " . inet_proto . inet_service"
	tx.Add(&knftables.Set{Name: "cluster-ips", Type: f.addrType, Comment: knftables.PtrTo("ClusterIPs")})
	tx.Add(&knftables.Set{Name: "service-addrs", Type: f.addrType, Comment: knftables.PtrTo("addresses on the dummy interface")})
	tx.Add(&knftables.Set{Name: "hairpin-ips", Type: f.addrType + " . " + f.addrType})
	tx.Add(&knftables.Set{Name: "external-masq", Type: fe, Comment: knftables.PtrTo("external frontends of Cluster policy")})
	tx.Add(&knftables.Map{Name: "service-verdicts", Type: fe + " : verdict"})
	tx.Add(&knftables.Map{Name: "firewall-ips", Type: fe + " : verdict"})
	tx.Add(&knftables.Map{Name: "short-circuit", Type: fe + " : verdict"})
	tx.Add(&knftables.Map{Name: "nodeports", Type: "inet_proto . inet_service : verdict"})
	tx.Add(&knftables.Map{Name: "nodeport-verdicts", Type: "inet_proto . inet_service : verdict"})
	np := f.proxy.NodePorts(f.ipv6)
	if !np.All {
		tx.Add(&knftables.Set{Name: "nodeport-ips", Type: f.addrType, Flags: []knftables.SetFlag{knftables.IntervalFlag}})
		for _, p := range np.Prefixes {
			tx.Add(&knftables.Element{Set: "nodeport-ips", Key: []string{p.String()}})
		}
	}
	masq := fmt.Sprintf("ct mark set ct mark or %#x", masqMark)
	rule := func(chain string, parts ...string) {
		tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat(parts)})
	}
	rule("mangle-prerouting", "ct state new jump classify")
	rule("mangle-output", "ct state new jump classify")
	rule("filter-input", "ct state new jump services-check")
	rule("filter-output", "ct state new jump services-check")

	// classify: which connections are masqueraded (ct mark), which go to a
	// firewall-mark virtual server (meta mark).
	route := f.proxy.ClusterIP(model.FromElsewhere, f.pods)
	switch {
	case f.proxy.MasqueradeAll:
		rule("classify", f.kw, "daddr @cluster-ips", masq)
	case route.Masquerade:
		rule("classify", f.kw, "daddr @cluster-ips", f.podMatch(true), masq)
	}
	rule("classify", f.kw, "daddr . meta l4proto . th dport @external-masq", masq)
	rule("classify", f.kw, "daddr . meta l4proto . th dport vmap @short-circuit")
	rule("classify", f.nodePortMatch(), "meta l4proto . th dport vmap @nodeports")

	rule("services-check", f.kw, "daddr . meta l4proto . th dport vmap @firewall-ips")
	rule("services-check", fmt.Sprintf("meta mark and %#x == %#x return", markMask, markBase))
	rule("services-check", f.kw, "daddr . meta l4proto . th dport vmap @service-verdicts")
	rule("services-check", f.kw, "daddr @cluster-ips goto reject-chain")
	rule("services-check", f.nodePortMatch(), "meta l4proto . th dport vmap @nodeport-verdicts")
	rule("reject-chain", "meta l4proto tcp reject with tcp reset")
	rule("reject-chain", "reject")

	rule("nat-postrouting", fmt.Sprintf("ct mark and %#x == %#x", masqMark, masqMark), "masquerade fully-random")
	rule("nat-postrouting", f.kw, "saddr .", f.kw, "daddr @hairpin-ips masquerade fully-random")

	// Two Services claiming one key: the first keeps it (as in nftables mode).
	seen := map[string]bool{}
	elem := func(e *knftables.Element) {
		k := e.Set + e.Map + "|" + strings.Join(e.Key, " . ")
		if !seen[k] {
			seen[k] = true
			tx.Add(e)
		}
	}
	chain := func(name string) bool {
		if seen["chain|"+name] {
			return false
		}
		seen["chain|"+name] = true
		tx.Add(&knftables.Chain{Name: name})
		return true
	}
	verdict := func(v string) string {
		if v == "reject" {
			return "goto reject-chain"
		}
		return v
	}
	seenAddr := map[netip.Addr]bool{}
	seenHairpin := map[netip.Addr]bool{}
	for _, pl := range plans {
		for _, a := range pl.ClusterIPs {
			elem(&knftables.Element{Set: "cluster-ips", Key: []string{a.String()}})
		}
		for _, a := range pl.Addrs {
			if !seenAddr[a] {
				seenAddr[a] = true
				elem(&knftables.Element{Set: "service-addrs", Key: []string{a.String()}})
			}
		}
		for _, a := range pl.Hairpin {
			if !seenHairpin[a] {
				seenHairpin[a] = true
				elem(&knftables.Element{Set: "hairpin-ips", Key: []string{a.String(), a.String()}})
			}
		}
		for _, e := range pl.ExtMasq {
			elem(&knftables.Element{Set: "external-masq", Key: e.key()})
		}
		for _, v := range pl.Verdicts {
			elem(&knftables.Element{Map: "service-verdicts", Key: v.key(), Value: []string{verdict(v.Verdict)}})
		}
		for _, fw := range pl.Firewall {
			name := fmt.Sprintf("fw-%s-%s-%d", fw.Addr, strings.ToLower(string(fw.Proto)), fw.Port)
			if !chain(name) {
				continue
			}
			var rs []string
			for _, r := range fw.Ranges {
				rs = append(rs, r.String())
			}
			rule(name, f.kw, "saddr != {", strings.Join(rs, ", "), "} drop")
			elem(&knftables.Element{Map: "firewall-ips", Key: fw.key(), Value: []string{"goto " + name}})
		}
		for _, sc := range pl.SC {
			name := "sc-" + markHex(sc.Mark)
			if chain(name) {
				shortCircuitRules(rule, f, name, sc.Mark, masq)
			}
			elem(&knftables.Element{Map: "short-circuit", Key: sc.key(), Value: []string{"goto " + name}})
		}
		for _, n := range pl.NodePorts {
			key := []string{strings.ToLower(string(n.Proto)), strconv.Itoa(int(n.Port))}
			if n.Verdict != "" {
				elem(&knftables.Element{Map: "nodeport-verdicts", Key: key, Value: []string{verdict(n.Verdict)}})
			}
			if n.Mark == 0 && n.SCMark == 0 {
				continue
			}
			name := fmt.Sprintf("np-%s-%d", strings.ToLower(string(n.Proto)), n.Port)
			if !chain(name) {
				continue
			}
			if n.SCMark != 0 {
				shortCircuitRules(rule, f, name, n.SCMark, masq)
			}
			if n.Mark != 0 {
				if n.Masq {
					rule(name, masq)
				}
				rule(name, "meta mark set", markHex(n.Mark))
			}
			elem(&knftables.Element{Map: "nodeports", Key: key, Value: []string{"goto " + name}})
		}
	}
	return tx
}

// shortCircuitRules send the node's connections (masqueraded) and recognised pods'
// (not) to the short-circuit virtual server mark, as model.ProxyConfig.External routes
// them.
func shortCircuitRules(rule func(string, ...string), f family, chain string, mark uint32, masq string) {
	rule(chain, "fib saddr type local", masq, "meta mark set", markHex(mark), "return")
	if pm := f.podMatch(false); pm != "" {
		rule(chain, pm, "meta mark set", markHex(mark), "return")
	}
}
