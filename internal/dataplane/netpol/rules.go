package netpol

import (
	"fmt"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/model"
)

// direction is ingress (to a selected pod) or egress (from one).
type direction struct {
	name   string // "ingress" or "egress"
	suffix string // chain and set name suffix: "in" or "out"
	// peer and dest are the address fields of the peer and the destination.
	peer, dest string // "saddr"/"daddr"
}

var (
	ingress = direction{name: "ingress", suffix: "in", peer: "saddr", dest: "daddr"}
	egress  = direction{name: "egress", suffix: "out", peer: "daddr", dest: "daddr"}
)

// family is one IP family's nftables words.
type family struct {
	ip       string // "ip" or "ip6"
	addrType string // "ipv4_addr" or "ipv6_addr"
	suffix   string // "4" or "6"
	v6       bool
}

var families = []family{{"ip", "ipv4_addr", "4", false}, {"ip6", "ipv6_addr", "6", true}}

// The base chains and the maps they dispatch with.
const (
	chainIngress = "ingress"
	chainEgress  = "egress"
)

func podMap(d direction, f family) string { return d.name + "-pods-" + f.suffix }

// setDef is one set or verdict map with its elements (key → value; "" for sets).
type setDef struct {
	isMap bool
	typ   string
	flags []knftables.SetFlag
	elems map[string]string
}

// ruleset is the whole table weir wants, as names and texts the diff compares.
type ruleset struct {
	chains   map[string][]string // regular chains: name → rules
	sets     map[string]*setDef
	counters map[string]counterOwner
}

// counterOwner is what a drop counter counts for.
type counterOwner struct {
	namespace, name, direction string
}

// ids hands out stable numbers for chain and set names: a policy or pod keeps its
// number while it exists, so a sync rewrites only what changed.
type ids struct {
	next int
	of   map[string]int
}

func (n *ids) id(key string) int {
	if id, ok := n.of[key]; ok {
		return id
	}
	n.next++
	n.of[key] = n.next
	return n.next
}

// forget drops the numbers of the keys not in keep.
func (n *ids) forget(keep map[string]bool) {
	for k := range n.of {
		if !keep[k] {
			delete(n.of, k)
		}
	}
}

// build turns the resolved policies into the table's chains, sets and counters.
// Pods isolated in one direction by the same policies share one chain (a group): the
// pods of one app usually do, so the chains grow with the policies, not the pods, and
// a pod whose labels change moves from group to group by a map element.
func build(set *model.NetworkPolicySet, polIDs, groupIDs *ids) *ruleset {
	rs := &ruleset{chains: map[string][]string{}, sets: map[string]*setDef{}, counters: map[string]counterOwner{}}
	for _, d := range []direction{ingress, egress} {
		for _, f := range families {
			rs.sets[podMap(d, f)] = &setDef{isMap: true, typ: f.addrType + " : verdict", elems: map[string]string{}}
		}
	}
	if set == nil {
		polIDs.forget(nil)
		groupIDs.forget(nil)
		return rs
	}
	keepPol := map[string]bool{}
	policies := map[string]*model.NetworkPolicy{}
	for _, p := range set.Policies {
		policies[p.Key()] = p
	}
	// Only the policies that select a pod here get chains.
	keepGroup := map[string]bool{}
	for _, pod := range set.Pods {
		for _, d := range []direction{ingress, egress} {
			names := pod.Ingress
			if d == egress {
				names = pod.Egress
			}
			if len(names) == 0 {
				continue
			}
			groupKey := d.suffix + " " + pod.Namespace + " " + strings.Join(names, " ")
			chain := fmt.Sprintf("group-%d-%s", groupIDs.id(groupKey), d.suffix)
			if !keepGroup[groupKey] {
				keepGroup[groupKey] = true
				var rules, drops []string
				for _, name := range names {
					key := pod.Namespace + "/" + name
					p := policies[key]
					if p == nil {
						continue
					}
					polID := polIDs.id(key)
					polChain := fmt.Sprintf("pol-%d-%s", polID, d.suffix)
					counter := polChain + "-drop"
					if _, ok := rs.chains[polChain]; !ok {
						keepPol[key] = true
						rules := p.IngressRules
						if d == egress {
							rules = p.EgressRules
						}
						policyChain(rs, polChain, d, rules)
						rs.counters[counter] = counterOwner{p.Namespace, p.Name, d.name}
					}
					rules = append(rules, "jump "+polChain)
					drops = append(drops, "counter name "+counter)
				}
				rs.chains[chain] = append(append(rules, drops...), "drop")
			}
			for _, ip := range pod.IPs {
				f := families[0]
				if ip.Is6() {
					f = families[1]
				}
				rs.sets[podMap(d, f)].elems[ip.String()] = "jump " + chain
			}
		}
	}
	polIDs.forget(keepPol)
	groupIDs.forget(keepGroup)
	return rs
}

// policyChain writes one policy's rules of one direction: each rule accepts what it
// allows; falling off the end returns to the pod's chain, which tries the next policy.
func policyChain(rs *ruleset, chain string, d direction, rules []*model.PolicyRule) {
	var out []string
	for i, r := range rules {
		for _, f := range families {
			peer := ""
			if !r.AllPeers {
				elems := map[string]string{}
				for _, pr := range r.Peers {
					if pr.Is6() == f.v6 {
						elems[pr.String()] = ""
					}
				}
				if len(elems) == 0 {
					continue // no peer of this family
				}
				name := fmt.Sprintf("%s-%d-peers-%s", chain, i, f.suffix)
				rs.sets[name] = &setDef{typ: f.addrType, flags: []knftables.SetFlag{knftables.IntervalFlag}, elems: elems}
				peer = fmt.Sprintf("%s %s @%s ", f.ip, d.peer, name)
			}
			// Without a peer match the port rules hold for both families: write them once.
			ports := !r.AllPeers || !f.v6
			if r.AllPorts {
				if ports {
					out = append(out, peer+"accept")
				}
				continue
			}
			for _, p := range r.Ports {
				if !ports {
					break
				}
				m := "meta l4proto " + proto(p.Protocol)
				if p.From != 0 {
					m += " th dport " + strconv.Itoa(int(p.From))
					if p.To != p.From {
						m += "-" + strconv.Itoa(int(p.To))
					}
				}
				out = append(out, peer+m+" accept")
			}
			dests := map[string]string{}
			for _, dst := range r.Destinations {
				if dst.Addr.Is6() == f.v6 {
					dests[dst.Addr.String()+" . "+proto(dst.Protocol)+" . "+strconv.Itoa(int(dst.Port))] = ""
				}
			}
			if len(dests) > 0 {
				name := fmt.Sprintf("%s-%d-dst-%s", chain, i, f.suffix)
				rs.sets[name] = &setDef{typ: f.addrType + " . inet_proto . inet_service", elems: dests}
				out = append(out, fmt.Sprintf("%s%s %s . meta l4proto . th dport @%s accept", peer, f.ip, d.dest, name))
			}
		}
	}
	rs.chains[chain] = out
}

func proto(p model.Protocol) string { return strings.ToLower(string(p)) }
