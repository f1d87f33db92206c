package model

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// NetworkPolicySet is what the network-policy data plane enforces on this node: every
// NetworkPolicy, its rules resolved to addresses and ports, and the pods on this node
// that at least one policy isolates. Traffic between two pods is allowed when the
// source's egress and the destination's ingress both allow it; a pod that no policy
// selects for a direction is not isolated in that direction. Replies of allowed
// connections are always allowed, and so is traffic from and to the node itself (the
// NetworkPolicy API's rule).
type NetworkPolicySet struct {
	// Policies sorted by namespace and name.
	Policies []*NetworkPolicy
	// Pods are the pods on this node that some policy selects, sorted by namespace and
	// name.
	Pods []*PolicyPod
}

// NetworkPolicy is one networking.k8s.io/v1 NetworkPolicy, resolved.
type NetworkPolicy struct {
	Namespace string
	Name      string
	// Ingress and Egress say which directions the policy isolates the pods it selects
	// in (spec.policyTypes, defaulted as the API server does: Ingress always, Egress when
	// spec.egress has rules). A direction with no rules denies everything.
	Ingress bool
	Egress  bool
	// IngressRules allow traffic to the selected pods, EgressRules from them; each is
	// empty unless its direction is isolated.
	IngressRules []*PolicyRule
	EgressRules  []*PolicyRule
	// Selected names the pods on this node (in the policy's namespace) it selects, sorted.
	Selected []string
}

// Key is "namespace/name".
func (p *NetworkPolicy) Key() string { return p.Namespace + "/" + p.Name }

// PolicyRule is one ingress or egress rule: it allows traffic whose peer (the source
// of ingress, the destination of egress) is in Peers and whose protocol and
// destination port are in Ports or, with the destination address, in Destinations.
type PolicyRule struct {
	// AllPeers: the rule names no peer (an empty from/to), so every address is one.
	AllPeers bool
	// Peers are the peer addresses, normalized (sorted, disjoint, both families): the
	// IPs of the pods the selectors pick, and the ipBlocks without their excepts.
	Peers []AddrRange
	// AllPorts: the rule names no port, so every protocol and port is allowed.
	AllPorts bool
	// Ports by number: a protocol and a range of destination ports; From 0 means every
	// port of the protocol.
	Ports []PortRange
	// Destinations are the named ports, resolved per destination pod: ingress names the
	// selected pods' own container ports, egress the ports of the peer pods (a peer that
	// is not a pod has no named port). Sorted.
	Destinations []PolicyDestination
}

// PortRange is a protocol and an inclusive range of ports; From 0 means all ports.
type PortRange struct {
	Protocol Protocol
	From     int32 `json:",omitempty"`
	To       int32 `json:",omitempty"`
}

// PolicyDestination is one destination address, protocol and port a named port resolved to.
type PolicyDestination struct {
	Addr     netip.Addr
	Protocol Protocol
	Port     int32
}

// PolicyPod is a pod on this node that network policies select.
type PolicyPod struct {
	Namespace string
	Name      string
	IPs       []netip.Addr
	// Ingress and Egress name the policies (of the pod's namespace) that select the pod
	// for each direction, sorted; a direction with none is not isolated.
	Ingress []string `json:",omitempty"`
	Egress  []string `json:",omitempty"`
}

// Allows reports whether rule r allows traffic with the given peer, destination,
// protocol and destination port. Data planes compile the rules; this is their meaning.
func (r *PolicyRule) Allows(peer, dst netip.Addr, proto Protocol, port int32) bool {
	if !r.AllPeers && !rangesContain(r.Peers, peer) {
		return false
	}
	if r.AllPorts {
		return true
	}
	for _, p := range r.Ports {
		if p.Protocol == proto && (p.From == 0 || (p.From <= port && port <= p.To)) {
			return true
		}
	}
	_, found := slices.BinarySearchFunc(r.Destinations, PolicyDestination{dst.Unmap(), proto, port}, comparePolicyDestination)
	return found
}

func comparePolicyDestination(a, b PolicyDestination) int {
	return cmp.Or(a.Addr.Compare(b.Addr), strings.Compare(string(a.Protocol), string(b.Protocol)), cmp.Compare(a.Port, b.Port))
}

// policyPod is a pod that network policy sees: not host-networked, running, with IPs.
type policyPod struct {
	pod   *corev1.Pod
	ips   []netip.Addr
	local bool
}

// networkPolicyInputs are the object lists translateNetworkPolicies reads.
type networkPolicyInputs struct {
	pods       []*corev1.Pod
	namespaces []*corev1.Namespace
	policies   []*networkingv1.NetworkPolicy
}

func networkPolicyInputsOf(objs *Objects) networkPolicyInputs {
	return networkPolicyInputs{pods: objs.Pods, namespaces: objs.Namespaces, policies: objs.NetworkPolicies}
}

func (in networkPolicyInputs) equal(o networkPolicyInputs) bool {
	return slices.Equal(in.pods, o.pods) && slices.Equal(in.namespaces, o.namespaces) && slices.Equal(in.policies, o.policies)
}

// translateNetworkPolicies resolves the NetworkPolicies for the pods on node: nil when
// there is no policy. A pod is on node when its spec.nodeName is node.Name or empty (a
// pod written in a manifest without a node is the node's own; the API server's pods
// have an IP only once scheduled), or always when node.Name is empty. Host-network pods, pods that ended (Succeeded, Failed) and pods
// without an IP are neither selected nor peers.
func translateNetworkPolicies(objs *Objects, node Node) *NetworkPolicySet {
	if len(objs.NetworkPolicies) == 0 {
		return nil
	}
	nsLabels := map[string]labels.Set{}
	for _, ns := range objs.Namespaces {
		if ns == nil {
			continue
		}
		set := labels.Set{corev1.LabelMetadataName: ns.Name}
		for k, v := range ns.Labels {
			set[k] = v
		}
		nsLabels[ns.Name] = set
	}
	namespaceLabels := func(name string) labels.Set {
		if set, ok := nsLabels[name]; ok {
			return set
		}
		return labels.Set{corev1.LabelMetadataName: name}
	}

	byNS := map[string][]policyPod{}
	var namespaces []string
	for _, pod := range objs.Pods {
		pp, ok := policyPodOf(pod, node)
		if !ok {
			continue
		}
		if _, seen := byNS[pod.Namespace]; !seen {
			namespaces = append(namespaces, pod.Namespace)
		}
		byNS[pod.Namespace] = append(byNS[pod.Namespace], pp)
	}
	slices.Sort(namespaces)
	for _, list := range byNS {
		slices.SortFunc(list, func(a, b policyPod) int { return strings.Compare(a.pod.Name, b.pod.Name) })
	}
	r := &peerResolver{byNS: byNS, namespaces: namespaces, nsLabels: namespaceLabels, cache: map[string][]policyPod{}, byLabel: map[string]map[string][]int{}}

	set := &NetworkPolicySet{}
	selected := map[ServiceKey]*PolicyPod{}
	policies := slices.Clone(objs.NetworkPolicies)
	slices.SortStableFunc(policies, func(a, b *networkingv1.NetworkPolicy) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	policies = slices.CompactFunc(policies, func(a, b *networkingv1.NetworkPolicy) bool {
		return a.Namespace == b.Namespace && a.Name == b.Name
	})
	for _, np := range policies {
		if np == nil || np.Name == "" {
			continue
		}
		p, targets, ok := r.policy(np)
		if !ok {
			continue // an invalid selector: validation rejects it; never guess
		}
		set.Policies = append(set.Policies, p)
		for _, t := range targets {
			if !t.local {
				continue
			}
			key := ServiceKey{Namespace: t.pod.Namespace, Name: t.pod.Name}
			pp := selected[key]
			if pp == nil {
				pp = &PolicyPod{Namespace: t.pod.Namespace, Name: t.pod.Name, IPs: t.ips}
				selected[key] = pp
				set.Pods = append(set.Pods, pp)
			}
			if p.Ingress {
				pp.Ingress = append(pp.Ingress, p.Name)
			}
			if p.Egress {
				pp.Egress = append(pp.Egress, p.Name)
			}
			p.Selected = append(p.Selected, t.pod.Name)
		}
	}
	slices.SortFunc(set.Pods, func(a, b *PolicyPod) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return set
}

// policyPodOf is pod as network policy sees it; ok is false for a pod it ignores.
func policyPodOf(pod *corev1.Pod, node Node) (policyPod, bool) {
	if pod == nil || pod.Name == "" || pod.Spec.HostNetwork ||
		pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return policyPod{}, false
	}
	var ips []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(ips, a.Unmap()) {
			ips = append(ips, a.Unmap())
		}
	}
	for _, ip := range pod.Status.PodIPs {
		add(ip.IP)
	}
	if len(ips) == 0 {
		add(pod.Status.PodIP)
	}
	if len(ips) == 0 {
		return policyPod{}, false
	}
	return policyPod{pod: pod, ips: ips, local: node.Name == "" || pod.Spec.NodeName == "" || pod.Spec.NodeName == node.Name}, true
}

// peerResolver answers which pods a selector picks, caching by selector, since many
// policies and rules repeat the same selectors.
type peerResolver struct {
	byNS       map[string][]policyPod
	byLabel    map[string]map[string][]int // labelIndex's, by namespace
	namespaces []string
	nsLabels   func(string) labels.Set
	cache      map[string][]policyPod
}

// pods returns the pods in the namespaces nsSel selects (only ns when nsSel is nil)
// whose labels podSel selects (every pod when nil). ok is false for an invalid selector.
func (r *peerResolver) pods(ns string, nsSel, podSel *metav1.LabelSelector) ([]policyPod, bool) {
	key := ns + "\x00" + selectorKey(nsSel) + "\x00" + selectorKey(podSel)
	if nsSel != nil {
		key = "\x00" + selectorKey(nsSel) + "\x00" + selectorKey(podSel)
	}
	if out, ok := r.cache[key]; ok {
		return out, true
	}
	var ps labels.Selector = labels.Everything()
	if podSel != nil {
		s, err := metav1.LabelSelectorAsSelector(podSel)
		if err != nil {
			return nil, false
		}
		ps = s
	}
	var names []string
	if nsSel == nil {
		names = []string{ns}
	} else {
		s, err := metav1.LabelSelectorAsSelector(nsSel)
		if err != nil {
			return nil, false
		}
		for _, n := range r.namespaces {
			if s.Matches(r.nsLabels(n)) {
				names = append(names, n)
			}
		}
	}
	var out []policyPod
	for _, n := range names {
		all := r.byNS[n]
		if podSel != nil && len(podSel.MatchLabels) > 0 {
			// Only the pods with the rarest of the selector's labels can match.
			index := r.labelIndex(n)
			var best []int
			first := true
			for k, v := range podSel.MatchLabels {
				if list := index[k+"="+v]; first || len(list) < len(best) {
					best, first = list, false
				}
			}
			for _, i := range best {
				if ps.Matches(labels.Set(all[i].pod.Labels)) {
					out = append(out, all[i])
				}
			}
			continue
		}
		for _, p := range all {
			if ps.Empty() || ps.Matches(labels.Set(p.pod.Labels)) {
				out = append(out, p)
			}
		}
	}
	r.cache[key] = out
	return out, true
}

// labelIndex maps each "key=value" label of a namespace's pods to their positions in
// byNS, in order; built on first use.
func (r *peerResolver) labelIndex(ns string) map[string][]int {
	if index, ok := r.byLabel[ns]; ok {
		return index
	}
	index := map[string][]int{}
	for i, p := range r.byNS[ns] {
		for k, v := range p.pod.Labels {
			index[k+"="+v] = append(index[k+"="+v], i)
		}
	}
	r.byLabel[ns] = index
	return index
}

// selectorKey writes a selector canonically (labels sorted), for the cache: "-" is no
// selector, "" the empty one that selects everything.
func selectorKey(s *metav1.LabelSelector) string {
	if s == nil {
		return "-"
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(s.MatchLabels[k])
		b.WriteByte(',')
	}
	for _, e := range s.MatchExpressions {
		b.WriteByte(';')
		b.WriteString(e.Key)
		b.WriteByte(' ')
		b.WriteString(string(e.Operator))
		for _, v := range e.Values {
			b.WriteByte(' ')
			b.WriteString(v)
		}
	}
	return b.String()
}

// policy resolves one NetworkPolicy and returns it with the pods it selects.
func (r *peerResolver) policy(np *networkingv1.NetworkPolicy) (*NetworkPolicy, []policyPod, bool) {
	targets, ok := r.pods(np.Namespace, nil, &np.Spec.PodSelector)
	if !ok {
		return nil, nil, false
	}
	p := &NetworkPolicy{Namespace: np.Namespace, Name: np.Name}
	if len(np.Spec.PolicyTypes) == 0 {
		p.Ingress, p.Egress = true, len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			p.Ingress = true
		case networkingv1.PolicyTypeEgress:
			p.Egress = true
		}
	}
	if p.Ingress {
		for _, in := range np.Spec.Ingress {
			rule, ok := r.rule(np.Namespace, in.From, in.Ports, targets, false)
			if !ok {
				return nil, nil, false
			}
			p.IngressRules = append(p.IngressRules, rule)
		}
	}
	if p.Egress {
		for _, out := range np.Spec.Egress {
			rule, ok := r.rule(np.Namespace, out.To, out.Ports, nil, true)
			if !ok {
				return nil, nil, false
			}
			p.EgressRules = append(p.EgressRules, rule)
		}
	}
	return p, targets, true
}

// rule resolves one rule. targets are the pods the policy selects (the destinations of
// ingress); egress resolves named ports against the peer pods.
func (r *peerResolver) rule(ns string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, targets []policyPod, egress bool) (*PolicyRule, bool) {
	rule := &PolicyRule{AllPeers: len(peers) == 0, AllPorts: len(ports) == 0}
	for _, peer := range peers {
		if peer.IPBlock != nil {
			cidr, err := netip.ParsePrefix(peer.IPBlock.CIDR)
			if err != nil {
				return nil, false
			}
			block := []AddrRange{prefixRange(cidr)}
			var except []AddrRange
			for _, e := range peer.IPBlock.Except {
				ep, err := netip.ParsePrefix(e)
				if err != nil {
					return nil, false
				}
				except = append(except, prefixRange(ep))
			}
			rule.Peers = append(rule.Peers, subtractRanges(block, except)...)
			continue
		}
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			continue // an empty peer: the API server rejects it; it picks nothing
		}
		pods, ok := r.pods(ns, peer.NamespaceSelector, peer.PodSelector)
		if !ok {
			return nil, false
		}
		for _, p := range pods {
			for _, ip := range p.ips {
				rule.Peers = append(rule.Peers, addrRange(ip))
			}
		}
	}
	rule.Peers = normalizeRanges(rule.Peers)

	for _, port := range ports {
		proto := TCP
		if port.Protocol != nil {
			proto = Protocol(*port.Protocol)
		}
		switch {
		case port.Port == nil:
			rule.Ports = append(rule.Ports, PortRange{Protocol: proto})
		case port.Port.Type == 0: // a number
			from, to := port.Port.IntVal, port.Port.IntVal
			if port.EndPort != nil {
				to = *port.EndPort
			}
			if from < 1 || to < from || to > 65535 {
				continue // validation rejects it; it allows nothing
			}
			rule.Ports = append(rule.Ports, PortRange{Protocol: proto, From: from, To: to})
		default:
			dests := targets
			if egress {
				dests = r.everyPod() // a named port is the destination pod's; the peers filter below
			}
			for _, d := range dests {
				if egress && !rule.AllPeers && !anyIn(rule.Peers, d.ips) {
					continue
				}
				if n, ok := containerPort(d.pod, port.Port.StrVal, proto); ok {
					for _, ip := range d.ips {
						if egress && !rule.AllPeers && !rangesContain(rule.Peers, ip) {
							continue
						}
						rule.Destinations = append(rule.Destinations, PolicyDestination{Addr: ip, Protocol: proto, Port: n})
					}
				}
			}
		}
	}
	slices.SortFunc(rule.Destinations, comparePolicyDestination)
	rule.Destinations = slices.Compact(rule.Destinations)
	return rule, true
}

// everyPod is every pod network policy sees.
func (r *peerResolver) everyPod() []policyPod {
	if out, ok := r.cache["\x00all"]; ok {
		return out
	}
	var out []policyPod
	for _, n := range r.namespaces {
		out = append(out, r.byNS[n]...)
	}
	r.cache["\x00all"] = out
	return out
}

func anyIn(rs []AddrRange, ips []netip.Addr) bool {
	for _, ip := range ips {
		if rangesContain(rs, ip) {
			return true
		}
	}
	return false
}

// containerPort is the number of the pod's container port with that name and protocol.
func containerPort(pod *corev1.Pod, name string, proto Protocol) (int32, bool) {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			pp := p.Protocol
			if pp == "" {
				pp = corev1.ProtocolTCP
			}
			if p.Name == name && Protocol(pp) == proto {
				return p.ContainerPort, true
			}
		}
	}
	return 0, false
}
