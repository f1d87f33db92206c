package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

// Names of weir's fixed objects in each table.
const (
	tableName = "weir"

	chainServices        = "services"
	chainEndpointsCheck  = "endpoints-check"
	chainClusterIPsCheck = "cluster-ips-check"
	chainFirewallCheck   = "firewall-check"
	chainReject          = "reject-chain"
	chainMarkMasq        = "mark-for-masquerade"
	chainMasquerading    = "masquerading"

	mapServiceIPs        = "service-ips"
	mapServiceNodePorts  = "service-nodeports"
	mapNoEndpointIPs     = "no-endpoint-services"
	mapNoEndpointPorts   = "no-endpoint-nodeports"
	mapFirewallIPs       = "firewall-ips"
	setClusterIPs        = "cluster-ips"
	setHairpin           = "hairpin-ips"
	setNodePortAddresses = "nodeport-ips"
	mapEndpointSlots     = "endpoint-slots"
	mapNodePortSlots     = "nodeport-slots"

	// maxSlots bounds the slots one frontend takes in the slot maps; Services whose
	// weights need more use a per-Service chain.
	maxSlots = 256
)

// ipFamily holds what differs between the ip and ip6 tables.
type ipFamily struct {
	nft      knftables.Family
	kw       string // "ip" or "ip6" in rules
	addrType string // ipv4_addr or ipv6_addr
	loopback string
	is6      bool
	// proxy is the data plane's kube-proxy settings; pods its pod detector for this
	// family.
	proxy model.ProxyConfig
	pods  model.PodMatch
}

// podMatch is the nft expression that matches traffic from pods (or, with not, traffic
// that is not from pods); "" when pods are not recognised.
func (f ipFamily) podMatch(not bool) string { return PodMatch(f.kw, f.pods, not) }

// PodMatch is the nft expression that matches traffic from the pods pods describes
// (or, with not, traffic that is not from them), for the family whose address keyword
// kw is ("ip" or "ip6"); "" when pods are not recognised. kube-proxy's IfLocalNFT and
// IfNotLocalNFT. The ipvs mode's nftables tables use it too.
func PodMatch(kw string, pods model.PodMatch, not bool) string {
	op := ""
	if not {
		op = "!= "
	}
	switch {
	case pods.CIDR.IsValid():
		return kw + " saddr " + op + pods.CIDR.String()
	case pods.Interface != "":
		name := pods.Interface
		if pods.InterfacePrefix {
			name += "*"
		}
		return "iifname " + op + strconv.Quote(name)
	}
	return ""
}

var (
	familyV4 = ipFamily{nft: knftables.IPv4Family, kw: "ip", addrType: "ipv4_addr", loopback: "127.0.0.0/8"}
	familyV6 = ipFamily{nft: knftables.IPv6Family, kw: "ip6", addrType: "ipv6_addr", loopback: "::1", is6: true}
)

func (f ipFamily) has(a netip.Addr) bool { return a.IsValid() && a.Unmap().Is6() == f.is6 }

// baseObjects are the tables, base chains, dispatch maps and fixed chains, written once
// per table on the first sync.
func baseObjects(f ipFamily, mark uint32) []knftables.Object {
	dispatchType := f.addrType + " . inet_proto . inet_service : verdict"
	portType := "inet_proto . inet_service : verdict"
	maskHex := fmt.Sprintf("%#x", mark)
	objs := []knftables.Object{
		&knftables.Map{Name: mapServiceIPs, Type: dispatchType, Comment: ptr("ClusterIP, external IP and LoadBalancer IP dispatch")},
		&knftables.Map{Name: mapServiceNodePorts, Type: portType, Comment: ptr("NodePort dispatch")},
		&knftables.Map{Name: mapNoEndpointIPs, Type: dispatchType, Comment: ptr("Service IPs with nothing to forward to: reject or drop")},
		&knftables.Map{Name: mapNoEndpointPorts, Type: portType, Comment: ptr("node ports with nothing to forward to: reject or drop")},
		&knftables.Map{Name: mapFirewallIPs, Type: dispatchType, Comment: ptr("LoadBalancer IPs with loadBalancerSourceRanges")},
		&knftables.Set{Name: setClusterIPs, Type: f.addrType, Comment: ptr("every ClusterIP, to reject unserved ports")},
		&knftables.Set{Name: setHairpin, Type: f.addrType + " . " + f.addrType, Comment: ptr("endpoint . endpoint: hairpin traffic to masquerade")},
		&knftables.Map{Name: mapEndpointSlots, TypeOf: f.kw + " daddr . meta l4proto . tcp dport . numgen random mod 1 : " + f.kw + " daddr . tcp dport",
			Comment: ptr("frontend . slot → endpoint, for random choice")},
		&knftables.Map{Name: mapNodePortSlots, TypeOf: "meta l4proto . tcp dport . numgen random mod 1 : " + f.kw + " daddr . tcp dport",
			Comment: ptr("node port . slot → endpoint, for random choice")},
	}
	nodePortMatch := fmt.Sprintf("fib daddr type local %s daddr != %s", f.kw, f.loopback)
	nodePorts := f.proxy.NodePorts(f.is6)
	if !nodePorts.All {
		objs = append(objs, &knftables.Set{Name: setNodePortAddresses, Type: f.addrType, Flags: []knftables.SetFlag{knftables.IntervalFlag}, Comment: ptr("--nodeport-addresses")})
		nodePortMatch += fmt.Sprintf(" %s daddr @%s", f.kw, setNodePortAddresses)
	}
	base := func(name string, typ knftables.BaseChainType, hook knftables.BaseChainHook, prio knftables.BaseChainPriority) *knftables.Chain {
		return &knftables.Chain{Name: name, Type: ptr(typ), Hook: ptr(hook), Priority: ptr(prio)}
	}
	chain := func(name string) *knftables.Chain { return &knftables.Chain{Name: name} }
	rule := func(chain string, parts ...any) *knftables.Rule {
		return &knftables.Rule{Chain: chain, Rule: knftables.Concat(parts...)}
	}
	preDNAT := knftables.DNATPriority + "-10"
	objs = append(objs,
		chain(chainServices), chain(chainEndpointsCheck), chain(chainClusterIPsCheck),
		chain(chainFirewallCheck), chain(chainReject), chain(chainMarkMasq), chain(chainMasquerading),
		base("filter-prerouting", knftables.FilterType, knftables.PreroutingHook, preDNAT),
		base("filter-output-pre-dnat", knftables.FilterType, knftables.OutputHook, preDNAT),
		base("filter-input", knftables.FilterType, knftables.InputHook, knftables.FilterPriority),
		base("filter-forward", knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority),
		base("filter-output", knftables.FilterType, knftables.OutputHook, knftables.FilterPriority),
		base("nat-prerouting", knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority),
		base("nat-output", knftables.NATType, knftables.OutputHook, knftables.DNATPriority),
		base("nat-postrouting", knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority),

		rule("filter-prerouting", "ct state new jump", chainFirewallCheck),
		rule("filter-output-pre-dnat", "ct state new jump", chainFirewallCheck),
		rule("filter-input", "ct state new jump", chainEndpointsCheck),
		rule("filter-forward", "ct state new jump", chainEndpointsCheck),
		rule("filter-forward", "ct state new jump", chainClusterIPsCheck),
		rule("filter-output", "ct state new jump", chainEndpointsCheck),
		rule("filter-output", "ct state new jump", chainClusterIPsCheck),
		rule("nat-prerouting", "jump", chainServices),
		rule("nat-output", "jump", chainServices),
		rule("nat-postrouting", "jump", chainMasquerading),

		rule(chainFirewallCheck, f.kw, "daddr . meta l4proto . th dport vmap @"+mapFirewallIPs),
	)
	// ClusterIP traffic to masquerade (--masquerade-all, or whatever does not come from
	// a pod when --detect-local-mode recognises pods), before the dispatch sends it on.
	elsewhere := f.proxy.ClusterIP(model.FromElsewhere, f.pods).Masquerade
	fromPod := f.proxy.ClusterIP(model.FromPod, f.pods).Masquerade
	switch {
	case elsewhere && fromPod:
		objs = append(objs, rule(chainServices, f.kw, "daddr @"+setClusterIPs, "jump", chainMarkMasq))
	case elsewhere:
		objs = append(objs, rule(chainServices, f.kw, "daddr @"+setClusterIPs, f.podMatch(true), "jump", chainMarkMasq))
	}
	objs = append(objs,
		rule(chainServices, f.kw, "daddr . meta l4proto . th dport vmap @"+mapServiceIPs),
		rule(chainServices, nodePortMatch, "meta l4proto . th dport vmap @"+mapServiceNodePorts),
		rule(chainEndpointsCheck, f.kw, "daddr . meta l4proto . th dport vmap @"+mapNoEndpointIPs),
		rule(chainEndpointsCheck, nodePortMatch, "meta l4proto . th dport vmap @"+mapNoEndpointPorts),
		rule(chainClusterIPsCheck, f.kw, "daddr @"+setClusterIPs, "goto", chainReject),
		rule(chainReject, "meta l4proto tcp reject with tcp reset"),
		rule(chainReject, "reject"),
		rule(chainMarkMasq, "meta mark set meta mark or", maskHex),
		rule(chainMasquerading, "ct status dnat", f.kw, "saddr .", f.kw, "daddr @"+setHairpin, "masquerade fully-random"),
		rule(chainMasquerading, "meta mark and", maskHex, "== 0 return"),
		rule(chainMasquerading, "meta mark set meta mark xor", maskHex),
		rule(chainMasquerading, "masquerade fully-random"),
	)
	for _, p := range nodePorts.Prefixes {
		objs = append(objs, &knftables.Element{Set: setNodePortAddresses, Key: []string{p.String()}})
	}
	return objs
}

// element is one map or set element a Service owns.
type element struct {
	id    string // set + "|" + key: unique in a table
	set   string // set or map name
	key   string // the key parts joined with " . " (shares id's memory)
	value string // "" for set elements
}

// newElement builds an element with one allocation for its id and key.
func newElement(set, key, value string) element {
	id := set + "|" + key
	return element{id: id, set: set, key: id[len(set)+1:], value: value}
}

func (e element) object(withValue bool) *knftables.Element {
	el := &knftables.Element{Key: strings.Split(e.key, " . ")}
	if e.value == "" {
		el.Set = e.set
		return el
	}
	el.Map = e.set
	if withValue {
		el.Value = []string{e.value}
	}
	return el
}

// serviceObjects is everything one Service owns in one table. The maps are nil when
// empty.
type serviceObjects struct {
	chains   map[string][]string      // chain name → rules
	sets     map[string]time.Duration // affinity sets → timeout
	elements []element                // sorted by id, ids unique
	hairpin  []string                 // hairpin set keys (shared between Services)
	// shared names the shared chains (pick-M and friends) this Service uses; their
	// rules are sharedChainRules(name).
	shared []string
	// unsupported lists the ports whose scheduler the kernel cannot do.
	unsupported []dataplane.UnsupportedScheduler
}

// element returns the element with the given id.
func (o *serviceObjects) element(id string) (element, bool) {
	i, ok := slices.BinarySearchFunc(o.elements, id, func(e element, id string) int { return strings.Compare(e.id, id) })
	if !ok {
		return element{}, false
	}
	return o.elements[i], true
}

func (o *serviceObjects) addChain(name string, rules []string) {
	if o.chains == nil {
		o.chains = map[string][]string{}
	}
	o.chains[name] = rules
}

func (o *serviceObjects) addShared(name string) {
	if !slices.Contains(o.shared, name) {
		o.shared = append(o.shared, name)
	}
}

// sortElements sorts the elements by id; of elements with the same id, the last
// added stays.
func (o *serviceObjects) sortElements() {
	slices.SortStableFunc(o.elements, func(a, b element) int { return strings.Compare(a.id, b.id) })
	out := o.elements[:0]
	for i, e := range o.elements {
		if i+1 < len(o.elements) && o.elements[i+1].id == e.id {
			continue
		}
		out = append(out, e)
	}
	o.elements = out
}

// chainName builds a readable chain or set name with a hash that keeps it unique.
func chainName(prefix string, parts ...string) string {
	id := strings.Join(parts, "/")
	sum := sha256.Sum256([]byte(prefix + "\x00" + id))
	hash := base32.StdEncoding.EncodeToString(sum[:5])
	var b strings.Builder
	b.Grow(len(prefix) + len(hash) + len(id) + 2)
	b.WriteString(prefix)
	b.WriteByte('-')
	b.WriteString(hash)
	b.WriteByte('-')
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '/', r == '_', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('.')
		}
	}
	name := b.String()
	if len(name) > 200 {
		name = name[:200]
	}
	return name
}

func protoName(p model.Protocol) string {
	switch p {
	case model.TCP:
		return "tcp"
	case model.UDP:
		return "udp"
	case model.SCTP:
		return "sctp"
	}
	return strings.ToLower(string(p))
}

func portID(svc *model.Service, sp *model.ServicePort) string {
	name := sp.Name
	if name == "" {
		name = strconv.Itoa(int(sp.Port))
	}
	return svc.Key.Namespace + "/" + svc.Key.Name + "/" + protoName(sp.Protocol) + "/" + name
}

// kernelAlgorithm maps a Service's scheduler to one the rules can express.
func kernelAlgorithm(a balance.Algorithm) (balance.Algorithm, bool) {
	switch a {
	case "", balance.Random:
		return balance.Random, true
	case balance.RoundRobin, balance.WeightedRoundRobin:
		return balance.RoundRobin, true
	case balance.SourceHash, balance.Maglev:
		return balance.SourceHash, true
	}
	return balance.Random, false
}

// buildService computes the objects svc owns in the table of family f.
func buildService(f ipFamily, svc *model.Service) *serviceObjects {
	var b builder
	return b.build(f, svc)
}

// builder builds Services' objects, reusing its buffer from one to the next. A full
// sync builds every Service, so this avoids allocations where it easily can.
type builder struct {
	scratch []byte
}

func (bd *builder) build(f ipFamily, svc *model.Service) *serviceObjects {
	o := &serviceObjects{}
	if !svc.Proxied() {
		return o
	}
	var clusterIPs, externalIPs, lbIPs []netip.Addr
	for _, a := range svc.ClusterIPs {
		if f.has(a) {
			clusterIPs = append(clusterIPs, a.Unmap())
		}
	}
	for _, a := range svc.ExternalIPs {
		if f.has(a) {
			externalIPs = append(externalIPs, a.Unmap())
		}
	}
	for _, a := range svc.LoadBalancerIPs {
		if f.has(a) {
			lbIPs = append(lbIPs, a.Unmap())
		}
	}
	// Elements: the ClusterIPs, and per port each frontend (and node port) with its
	// slots, and LoadBalancer IPs' firewall elements.
	frontends := len(clusterIPs) + len(externalIPs) + len(lbIPs)
	n := len(clusterIPs)
	for _, sp := range svc.Ports {
		fe := frontends
		if sp.NodePort != 0 && frontends > 0 {
			fe++
		}
		if fe > 0 {
			n += fe*(1+max(len(sp.Cluster.Endpoints), len(sp.External.Endpoints))) + len(lbIPs)
		}
	}
	o.elements = make([]element, 0, n)
	for _, a := range clusterIPs {
		o.elements = append(o.elements, newElement(setClusterIPs, a.String(), ""))
	}
	var ranges []string
	for _, p := range svc.SourceRanges(f.is6) {
		ranges = append(ranges, p.Masked().String())
	}
	scratch := bd.scratch
	defer func() { bd.scratch = scratch }()
	for _, sp := range svc.Ports {
		hasExternal := len(externalIPs) > 0 || len(lbIPs) > 0 || sp.NodePort != 0
		ch := choosePort(f, svc, sp, len(clusterIPs) > 0, hasExternal)
		if ch.unsupported {
			o.unsupported = append(o.unsupported, dataplane.UnsupportedScheduler{Port: sp.ID(svc.Key), Algorithm: string(kernel.PortPolicy(svc, sp).Algorithm)})
		}
		proto := protoName(sp.Protocol)
		port := strconv.Itoa(int(sp.Port))
		cluster, external, shortCircuit := ch.cluster, ch.external, ch.shortCircuit
		for _, eps := range [3][]model.Endpoint{cluster, external, shortCircuit} {
			for _, ep := range eps {
				if ep.Local || ep.NodeName == "" {
					k := ep.Addr.Unmap().String()
					o.hairpin = append(o.hairpin, k+" . "+k)
				}
			}
		}
		pick := picker{f: f, proto: proto, algo: ch.algo, seed: ch.seed, affinity: svc.AffinityTimeout, o: o}
		id := func() string {
			if pick.portID == "" {
				pick.portID = portID(svc, sp)
			}
			return pick.portID
		}
		frontend := func(ip netip.Addr) string {
			b := ip.AppendTo(scratch[:0])
			b = append(b, " . "...)
			b = append(b, proto...)
			b = append(b, " . "...)
			b = append(b, port...)
			scratch = b
			return string(b)
		}

		// Random choice without affinity needs no chain of its own: the frontend's
		// slots are elements of one map and a shared pick-M chain looks them up, so
		// an endpoint change is an element change.
		svcChain := ""
		clusterSlots := ch.clusterSlots
		if len(clusterIPs) > 0 && len(cluster) > 0 {
			if clusterSlots.ok {
				svcChain = pickChain(o, "pick", clusterSlots.total)
			} else {
				svcChain = chainName("svc", id())
				var rules []string
				pick.rules(&rules, cluster)
				o.addChain(svcChain, rules)
			}
		}
		clusterMiss := missVerdict(kernel.FamilyVerdict(sp.Cluster, f.is6))
		for _, ip := range clusterIPs {
			k := frontend(ip)
			if svcChain != "" {
				o.elements = append(o.elements, newElement(mapServiceIPs, k, "goto "+svcChain))
				scratch = addSlots(o, scratch, mapEndpointSlots, k, cluster, clusterSlots)
			} else {
				o.elements = append(o.elements, newElement(mapNoEndpointIPs, k, clusterMiss))
			}
		}

		if !hasExternal {
			continue
		}
		extChain, npChain := "", ""
		extSlots := ch.extSlots
		if extSlots.ok {
			extChain = pickChain(o, "ext-pick", extSlots.total)
			npChain = pickChain(o, "ext-np-pick", extSlots.total)
		} else if svc.ExternalTrafficLocal && len(shortCircuit) > 0 {
			// Local policy: traffic from the node, and from pods when they are
			// recognised, goes to every endpoint (model.ProxyConfig.External); the
			// rest to the local endpoints, or on to the no-endpoint drop when there
			// are none here.
			extChain = chainName("ext", id())
			npChain = extChain
			scChain := svcChain
			if scChain == "" || !model.SameEndpoints(cluster, shortCircuit) {
				scChain = chainName("sc", id())
				var rules []string
				pick.rules(&rules, shortCircuit)
				o.addChain(scChain, rules)
			}
			var rules []string
			for _, src := range []model.Source{model.FromPod, model.FromNode} {
				match := "fib saddr type local"
				if src == model.FromPod {
					if match = f.podMatch(false); match == "" {
						continue
					}
				}
				route := f.proxy.External(svc, src, f.pods)
				if route.Set != model.ShortCircuitSet {
					continue
				}
				if route.Masquerade {
					rules = append(rules, match+" jump "+chainMarkMasq)
				}
				rules = append(rules, match+" goto "+scChain)
			}
			if len(external) > 0 {
				if f.proxy.External(svc, model.FromElsewhere, f.pods).Masquerade {
					rules = append(rules, "jump "+chainMarkMasq)
				}
				pick.rules(&rules, external)
			}
			o.addChain(extChain, rules)
		} else if len(external) > 0 {
			// Cluster policy: masqueraded (model.ProxyConfig.External), as the shared
			// ext-pick chains are.
			extChain = chainName("ext", id())
			npChain = extChain
			rules := []string{"jump " + chainMarkMasq}
			if svcChain != "" && !clusterSlots.ok && model.SameEndpoints(cluster, external) {
				rules = append(rules, "goto "+svcChain)
			} else {
				pick.rules(&rules, external)
			}
			o.addChain(extChain, rules)
		}
		externalMiss := missVerdict(kernel.FamilyVerdict(sp.External, f.is6))
		for _, ips := range [2][]netip.Addr{externalIPs, lbIPs} {
			for _, ip := range ips {
				k := frontend(ip)
				if extChain != "" {
					o.elements = append(o.elements, newElement(mapServiceIPs, k, "goto "+extChain))
					scratch = addSlots(o, scratch, mapEndpointSlots, k, external, extSlots)
				}
				if len(external) == 0 {
					o.elements = append(o.elements, newElement(mapNoEndpointIPs, k, externalMiss))
				}
			}
		}
		if len(ranges) > 0 && len(lbIPs) > 0 {
			fw := chainName("fw", id())
			o.addChain(fw, []string{fmt.Sprintf("%s saddr != { %s } drop", f.kw, strings.Join(ranges, ", "))})
			for _, ip := range lbIPs {
				o.elements = append(o.elements, newElement(mapFirewallIPs, frontend(ip), "goto "+fw))
			}
		}
		if sp.NodePort != 0 {
			k := proto + " . " + strconv.Itoa(int(sp.NodePort))
			if npChain != "" {
				o.elements = append(o.elements, newElement(mapServiceNodePorts, k, "goto "+npChain))
				scratch = addSlots(o, scratch, mapNodePortSlots, k, external, extSlots)
			}
			if len(external) == 0 {
				o.elements = append(o.elements, newElement(mapNoEndpointPorts, k, externalMiss))
			}
		}
	}
	o.sortElements()
	return o
}

// portChoice is how one port's frontends in one family choose an endpoint.
type portChoice struct {
	algo        balance.Algorithm // what the rules do
	seed        uint64
	unsupported bool // the policy asks for an algorithm the rules cannot do
	// cluster and external are the family's endpoints for ClusterIP and for external
	// traffic, shortCircuit for external traffic from the node and its pods.
	cluster, external, shortCircuit []model.Endpoint
	// clusterSlots and extSlots are ok when those frontends pick through the slot
	// maps and a shared pick chain (random choice, no affinity, external policy
	// Cluster, few enough slots), and not when a chain of the Service's own picks.
	clusterSlots, extSlots slotPlan
}

// choosePort decides how the port's frontends choose. clusterFrontends is whether the
// Service has a ClusterIP in the family, externalFrontends whether the port has an
// external IP, LoadBalancer IP or node port in it.
func choosePort(f ipFamily, svc *model.Service, sp *model.ServicePort, clusterFrontends, externalFrontends bool) portChoice {
	ch := portChoice{algo: balance.Random,
		cluster:      sp.Cluster.ForFamily(f.is6).Endpoints,
		external:     sp.External.ForFamily(f.is6).Endpoints,
		shortCircuit: sp.ShortCircuit.ForFamily(f.is6).Endpoints,
	}
	if pol := kernel.PortPolicy(svc, sp); pol != nil {
		var ok bool
		ch.algo, ok = kernelAlgorithm(pol.Algorithm)
		ch.unsupported = !ok
		ch.seed = pol.MaglevSeed
	}
	flat := ch.algo == balance.Random && svc.AffinityTimeout == 0 && !svc.ExternalTrafficLocal
	if flat && clusterFrontends {
		ch.clusterSlots = planSlots(ch.cluster)
	}
	if flat && externalFrontends {
		ch.extSlots = planSlots(ch.external)
	}
	return ch
}

// sharedChains calls add with the name of every shared chain buildService(f, svc)
// uses, without building the rest.
func sharedChains(f ipFamily, svc *model.Service, add func(string)) {
	if !svc.Proxied() {
		return
	}
	has := func(as []netip.Addr) bool { return slices.ContainsFunc(as, f.has) }
	clusterFrontends := has(svc.ClusterIPs)
	ipFrontends := has(svc.ExternalIPs) || has(svc.LoadBalancerIPs)
	for _, sp := range svc.Ports {
		externalFrontends := ipFrontends || sp.NodePort != 0
		ch := choosePort(f, svc, sp, clusterFrontends, externalFrontends)
		if ch.clusterSlots.ok {
			add("pick-" + strconv.Itoa(ch.clusterSlots.total))
		}
		if ch.extSlots.ok {
			for _, kind := range []string{"ext-pick-", "pick-", "ext-np-pick-", "np-pick-"} {
				add(kind + strconv.Itoa(ch.extSlots.total))
			}
		}
	}
}

// slotPlan is how a frontend's endpoints fill its slots: endpoint i takes
// weight(i)/g slots, total in all; ok is false when that would take more than
// maxSlots (or there is no endpoint).
type slotPlan struct {
	g, total int
	ok       bool
}

func planSlots(eps []model.Endpoint) slotPlan {
	g := uint64(0)
	for _, ep := range eps {
		g = gcd(g, weight(ep))
	}
	var total uint64
	for _, ep := range eps {
		total += weight(ep) / g
	}
	if len(eps) == 0 || total > maxSlots {
		return slotPlan{}
	}
	return slotPlan{g: int(g), total: int(total), ok: true}
}

// addSlots adds the slot elements of one frontend (none unless plan.ok). Their texts
// share one string; scratch is a buffer to reuse, returned grown.
func addSlots(o *serviceObjects, scratch []byte, set, key string, eps []model.Endpoint, plan slotPlan) []byte {
	if !plan.ok {
		return scratch
	}
	var ends [2 * 32]int
	spans := ends[:0]
	b := scratch[:0]
	slot := 0
	for _, ep := range eps {
		addr := ep.Addr.Unmap()
		for range int(weight(ep)) / plan.g {
			b = append(b, set...)
			b = append(b, '|')
			b = append(b, key...)
			b = append(b, " . "...)
			b = strconv.AppendInt(b, int64(slot), 10)
			keyEnd := len(b)
			b = addr.AppendTo(b)
			b = append(b, " . "...)
			b = strconv.AppendUint(b, uint64(ep.Port), 10)
			spans = append(spans, keyEnd, len(b))
			slot++
		}
	}
	s := string(b)
	start := 0
	for i := 0; i < len(spans); i += 2 {
		id := s[start:spans[i]]
		o.elements = append(o.elements, element{id: id, set: set, key: id[len(set)+1:], value: s[spans[i]:spans[i+1]]})
		start = spans[i+1]
	}
	return b
}

// pickChain names a shared chain that picks one of m slots, and records it (and the
// chains it goes to) as used by o. kind is pick, ext-pick (masquerade, then pick),
// np-pick (node port slots) or ext-np-pick. Its rules are sharedChainRules(name).
func pickChain(o *serviceObjects, kind string, m int) string {
	name := kind + "-" + strconv.Itoa(m)
	o.addShared(name)
	if target, ok := strings.CutPrefix(kind, "ext-"); ok {
		pickChain(o, target, m)
	}
	return name
}

// sharedChainRules are the rules of a shared chain named by pickChain.
func sharedChainRules(f ipFamily, name string) []string {
	i := strings.LastIndexByte(name, '-')
	kind, m := name[:i], name[i+1:]
	switch kind {
	case "pick", "np-pick":
		// The slot maps are typeof ... tcp dport and each rule names its protocol's
		// dport: nft 1.0.6 cannot add a rule with th dport that binds such a map once
		// the map exists in the kernel ("conflicting protocols specified: tcp vs. th"),
		// so a partial sync could never add a pick chain.
		key, set := f.kw+" daddr . meta l4proto . ", mapEndpointSlots
		if kind == "np-pick" {
			key, set = "meta l4proto . ", mapNodePortSlots
		}
		rules := make([]string, 0, 3)
		for _, proto := range []string{"tcp", "udp", "sctp"} {
			rules = append(rules, "meta l4proto "+proto+" dnat to "+key+proto+" dport . numgen random mod "+m+" map @"+set)
		}
		return rules
	case "ext-pick", "ext-np-pick":
		return []string{"jump " + chainMarkMasq, "goto " + strings.TrimPrefix(name, "ext-")}
	}
	return nil
}

// missVerdict is the verdict-map value for a frontend with no endpoint in this family.
func missVerdict(v model.Verdict) string {
	if v == model.Drop {
		return "drop"
	}
	return "goto " + chainReject
}

func weight(ep model.Endpoint) uint64 { return uint64(ep.EffectiveWeight()) }

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// picker writes the rules that choose one endpoint and DNAT to it.
type picker struct {
	f        ipFamily
	proto    string
	algo     balance.Algorithm
	seed     uint64
	affinity time.Duration
	portID   string
	o        *serviceObjects
}

// rules appends the endpoint choice: affinity checks first, then a cascade in which
// rule i takes its share of what the rules before it left (as iptables' statistic
// match does): numgen random mod R < w for random, numgen inc for round robin (each
// rule's counter only sees the packets that reach it, so the cascade cycles), and one
// jhash of the source compared against cumulative bounds for source hashing.
func (p picker) rules(rules *[]string, eps []model.Endpoint) {
	g := uint64(0)
	for _, ep := range eps {
		g = gcd(g, weight(ep))
	}
	var total uint64
	for _, ep := range eps {
		total += weight(ep) / g
	}
	dnat := func(ep model.Endpoint) string {
		return "dnat to " + ep.AddrPort().String()
	}
	affSet := func(ep model.Endpoint) string {
		name := chainName("aff", p.portID, ep.AddrPort().String(), fmt.Sprint(int64(p.affinity/time.Second)))
		if p.o.sets == nil {
			p.o.sets = map[string]time.Duration{}
		}
		p.o.sets[name] = p.affinity
		return name
	}
	l4 := "meta l4proto " + p.proto
	if p.affinity > 0 {
		for _, ep := range eps {
			set := affSet(ep)
			*rules = append(*rules, fmt.Sprintf("%s %s saddr @%s update @%s { %s saddr } %s", l4, p.f.kw, set, set, p.f.kw, dnat(ep)))
		}
	}
	remaining, cum := total, uint64(0)
	for i, ep := range eps {
		w := weight(ep) / g
		cum += w
		cond := ""
		if i < len(eps)-1 {
			switch p.algo {
			case balance.RoundRobin:
				cond = fmt.Sprintf(" numgen inc mod %d < %d", remaining, w)
			case balance.SourceHash:
				cond = fmt.Sprintf(" jhash %s saddr mod %d seed %#x < %d", p.f.kw, total, uint32(p.seed), cum)
			default:
				cond = fmt.Sprintf(" numgen random mod %d < %d", remaining, w)
			}
		}
		update := ""
		if p.affinity > 0 {
			set := affSet(ep)
			update = fmt.Sprintf(" update @%s { %s saddr }", set, p.f.kw)
		}
		*rules = append(*rules, l4+cond+update+" "+dnat(ep))
		remaining -= w
	}
}

func ptr[T any](v T) *T { return &v }
