package model

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func npPod(ns, name, node, ip string, lbls map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func npPolicy(ns, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func protoPtr(p corev1.Protocol) *corev1.Protocol { return &p }
func i32(n int32) *int32                          { return &n }

func npPort(proto corev1.Protocol, port intstr.IntOrString, end *int32) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: protoPtr(proto), Port: &port, EndPort: end}
}

// npWorld is two namespaces: x (labelled team=a) with pods a (app=web, named port
// http=8080) and b (app=db), y with pod c (app=web) on another node.
func npWorld(policies ...*networkingv1.NetworkPolicy) *Objects {
	return &Objects{
		Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"team": "a"}}}},
		Pods: []*corev1.Pod{
			npPod("x", "a", "n1", "10.0.0.1", map[string]string{"app": "web"}, corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
			npPod("x", "b", "n1", "10.0.0.2", map[string]string{"app": "db"}),
			npPod("y", "c", "n2", "10.0.1.1", map[string]string{"app": "web"}, corev1.ContainerPort{Name: "http", ContainerPort: 9090},
				corev1.ContainerPort{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}),
		},
		NetworkPolicies: policies,
	}
}

var n1 = Node{Name: "n1"}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestNetworkPolicyNoneIsNil(t *testing.T) {
	if got := Translate(npWorld(), n1).NetworkPolicy; got != nil {
		t.Fatalf("no policy: got %+v, want nil", got)
	}
}

func TestNetworkPolicySelection(t *testing.T) {
	objs := npWorld(
		npPolicy("x", "deny-all", networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}),
		npPolicy("x", "web", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web")}),
		npPolicy("y", "all", networkingv1.NetworkPolicySpec{}),
	)
	set := Translate(objs, n1).NetworkPolicy
	if len(set.Policies) != 3 {
		t.Fatalf("policies: %d", len(set.Policies))
	}
	deny, web, all := set.Policies[0], set.Policies[1], set.Policies[2]
	if !deny.Ingress || !deny.Egress || len(deny.IngressRules)+len(deny.EgressRules) != 0 || !reflect.DeepEqual(deny.Selected, []string{"a", "b"}) {
		t.Errorf("deny-all: %+v", deny)
	}
	if !web.Ingress || web.Egress || !reflect.DeepEqual(web.Selected, []string{"a"}) {
		t.Errorf("web (no policyTypes: ingress only): %+v", web)
	}
	if len(all.Selected) != 0 {
		t.Errorf("y/all selects only a pod on another node: %+v", all.Selected)
	}
	want := []*PolicyPod{
		{Namespace: "x", Name: "a", IPs: []netip.Addr{ip("10.0.0.1")}, Ingress: []string{"deny-all", "web"}, Egress: []string{"deny-all"}},
		{Namespace: "x", Name: "b", IPs: []netip.Addr{ip("10.0.0.2")}, Ingress: []string{"deny-all"}, Egress: []string{"deny-all"}},
	}
	if !reflect.DeepEqual(set.Pods, want) {
		t.Errorf("pods:\n got %+v\nwant %+v", set.Pods, want)
	}
}

func TestNetworkPolicyPeers(t *testing.T) {
	spec := networkingv1.NetworkPolicySpec{
		Ingress: []networkingv1.NetworkPolicyIngressRule{
			{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "db")}}},                                                         // pods of x
			{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}},                                            // every pod
			{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel(corev1.LabelMetadataName, "y"), PodSelector: sel("app", "web")}}}, // both
			{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "a")}}},                                                   // x by its label
			{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{"192.168.1.0/24", "192.168.255.255/32"}}}}},
			{},
		},
	}
	set := Translate(npWorld(npPolicy("x", "p", spec)), n1).NetworkPolicy
	rules := set.Policies[0].IngressRules
	r := func(from, to string) AddrRange { return AddrRange{ip(from), ip(to)} }
	want := [][]AddrRange{
		{r("10.0.0.2", "10.0.0.2")},
		{r("10.0.0.1", "10.0.0.2"), r("10.0.1.1", "10.0.1.1")},
		{r("10.0.1.1", "10.0.1.1")},
		{r("10.0.0.1", "10.0.0.2")},
		{r("192.168.0.0", "192.168.0.255"), r("192.168.2.0", "192.168.255.254")},
		nil,
	}
	for i, w := range want {
		if !reflect.DeepEqual(rules[i].Peers, w) {
			t.Errorf("rule %d peers: got %v, want %v", i, rules[i].Peers, w)
		}
		if rules[i].AllPeers != (i == 5) || !rules[i].AllPorts {
			t.Errorf("rule %d: AllPeers %v AllPorts %v", i, rules[i].AllPeers, rules[i].AllPorts)
		}
	}
}

func TestNetworkPolicyPorts(t *testing.T) {
	spec := networkingv1.NetworkPolicySpec{
		PodSelector: *sel("app", "web"),
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
			npPort(corev1.ProtocolTCP, intstr.FromInt32(80), nil),
			npPort(corev1.ProtocolUDP, intstr.FromInt32(1000), i32(2000)),
			{Protocol: protoPtr(corev1.ProtocolSCTP)},
			npPort(corev1.ProtocolTCP, intstr.FromString("http"), nil),
			npPort(corev1.ProtocolUDP, intstr.FromString("http"), nil), // no UDP port named http
		}}},
		Egress: []networkingv1.NetworkPolicyEgressRule{
			{Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolTCP, intstr.FromString("http"), nil)}},
			{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel(corev1.LabelMetadataName, "y")}},
				Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolUDP, intstr.FromString("dns"), nil)}},
			{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "db")}},
				Ports: []networkingv1.NetworkPolicyPort{npPort(corev1.ProtocolUDP, intstr.FromString("dns"), nil)}},
		},
	}
	p := Translate(npWorld(npPolicy("x", "p", spec)), n1).NetworkPolicy.Policies[0]
	in := p.IngressRules[0]
	wantPorts := []PortRange{{TCP, 80, 80}, {UDP, 1000, 2000}, {Protocol: SCTP}}
	if !reflect.DeepEqual(in.Ports, wantPorts) || in.AllPorts {
		t.Errorf("ingress ports: %+v", in.Ports)
	}
	if want := []PolicyDestination{{ip("10.0.0.1"), TCP, 8080}}; !reflect.DeepEqual(in.Destinations, want) {
		t.Errorf("ingress named port resolves on the selected pod: %+v", in.Destinations)
	}
	if want := []PolicyDestination{{ip("10.0.0.1"), TCP, 8080}, {ip("10.0.1.1"), TCP, 9090}}; !reflect.DeepEqual(p.EgressRules[0].Destinations, want) {
		t.Errorf("egress named port resolves per destination pod: %+v", p.EgressRules[0].Destinations)
	}
	if want := []PolicyDestination{{ip("10.0.1.1"), UDP, 53}}; !reflect.DeepEqual(p.EgressRules[1].Destinations, want) {
		t.Errorf("egress named port within the peers: %+v", p.EgressRules[1].Destinations)
	}
	if len(p.EgressRules[2].Destinations) != 0 {
		t.Errorf("peer without the named port: %+v", p.EgressRules[2].Destinations)
	}
	for _, tc := range []struct {
		rule      *PolicyRule
		peer, dst string
		proto     Protocol
		port      int32
		want      bool
	}{
		{in, "1.2.3.4", "10.0.0.1", TCP, 80, true},
		{in, "1.2.3.4", "10.0.0.1", TCP, 81, false},
		{in, "1.2.3.4", "10.0.0.1", UDP, 1500, true},
		{in, "1.2.3.4", "10.0.0.1", UDP, 2001, false},
		{in, "1.2.3.4", "10.0.0.1", SCTP, 7, true},
		{in, "1.2.3.4", "10.0.0.1", TCP, 8080, true},
		{in, "1.2.3.4", "10.0.0.2", TCP, 8080, false},
		{p.EgressRules[1], "10.0.1.1", "10.0.1.1", UDP, 53, true},
		{p.EgressRules[1], "10.0.0.2", "10.0.0.2", UDP, 53, false},
	} {
		if got := tc.rule.Allows(ip(tc.peer), ip(tc.dst), tc.proto, tc.port); got != tc.want {
			t.Errorf("Allows(%s, %s, %s, %d) = %v, want %v", tc.peer, tc.dst, tc.proto, tc.port, got, tc.want)
		}
	}
}

func TestNetworkPolicyIgnoredPods(t *testing.T) {
	objs := npWorld(npPolicy("x", "p", networkingv1.NetworkPolicySpec{}))
	host := npPod("x", "host", "n1", "192.0.2.1", nil)
	host.Spec.HostNetwork = true
	done := npPod("x", "done", "n1", "10.0.0.9", nil)
	done.Status.Phase = corev1.PodSucceeded
	pending := npPod("x", "pending", "n1", "", nil)
	pending.Status.PodIPs = nil
	objs.Pods = append(objs.Pods, host, done, pending)
	got := Translate(objs, n1).NetworkPolicy.Policies[0].Selected
	if !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("selected: %v", got)
	}
}

func TestNetworkPolicyTranslatorReuses(t *testing.T) {
	objs := npWorld(npPolicy("x", "p", networkingv1.NetworkPolicySpec{}))
	tr := NewTranslator()
	first := tr.Translate(objs, n1)
	first.Version = 1
	second := tr.Translate(objs, n1)
	if second.NetworkPolicy != first.NetworkPolicy || second.Delta.NetworkPolicy {
		t.Fatal("unchanged inputs: the set must be the same pointer")
	}
	second.Version = 2
	objs2 := *objs
	objs2.Pods = append([]*corev1.Pod(nil), objs.Pods...)
	objs2.Pods[1] = npPod("x", "b", "n1", "10.0.0.2", map[string]string{"app": "web"})
	third := tr.Translate(&objs2, n1)
	if !third.Delta.NetworkPolicy || third.NetworkPolicy == second.NetworkPolicy {
		t.Fatal("a changed pod must give a new set")
	}
	if !reflect.DeepEqual(third.NetworkPolicy, Translate(&objs2, n1).NetworkPolicy) {
		t.Fatal("Translator and Translate differ")
	}
}

func TestRanges(t *testing.T) {
	r := func(from, to string) AddrRange { return AddrRange{ip(from), ip(to)} }
	got := normalizeRanges([]AddrRange{r("10.0.0.5", "10.0.0.9"), r("10.0.0.1", "10.0.0.4"), r("::1", "::1"), r("10.0.0.8", "10.0.0.20")})
	if want := []AddrRange{r("10.0.0.1", "10.0.0.20"), r("::1", "::1")}; !reflect.DeepEqual(got, want) {
		t.Errorf("normalize: %v", got)
	}
	if got := prefixRange(netip.MustParsePrefix("10.1.2.3/8")); got != r("10.0.0.0", "10.255.255.255") {
		t.Errorf("prefixRange: %v", got)
	}
	if got := prefixRange(netip.MustParsePrefix("0.0.0.0/0")); got != r("0.0.0.0", "255.255.255.255") {
		t.Errorf("prefixRange /0: %v", got)
	}
	if got := prefixRange(netip.MustParsePrefix("::ffff:10.0.0.0/104")); got != r("10.0.0.0", "10.255.255.255") {
		t.Errorf("prefixRange mapped: %v", got)
	}
	sub := subtractRanges([]AddrRange{r("10.0.0.0", "10.0.0.255")}, []AddrRange{r("10.0.0.0", "10.0.0.0"), r("10.0.0.128", "10.0.0.255")})
	if want := []AddrRange{r("10.0.0.1", "10.0.0.127")}; !reflect.DeepEqual(sub, want) {
		t.Errorf("subtract: %v", sub)
	}
	if !rangesContain(got, ip("10.0.0.20")) || rangesContain(got, ip("10.0.0.21")) || !rangesContain(got, ip("::1")) || rangesContain(got, ip("::2")) {
		t.Error("rangesContain")
	}
}

// TestPeerResolverIndex: the label index picks the pods a scan of every pod picks.
func TestPeerResolverIndex(t *testing.T) {
	objs := npWorld()
	for i := range 30 {
		l := map[string]string{"app": []string{"web", "db", "cache"}[i%3], "tier": []string{"a", "b"}[i%2]}
		if i%5 == 0 {
			l["canary"] = "yes"
		}
		objs.Pods = append(objs.Pods, npPod("x", "p"+string(rune('a'+i)), "n1", "10.0.2."+string(rune('0'+i%10)), l))
	}
	byNS := map[string][]policyPod{}
	for _, p := range objs.Pods {
		if pp, ok := policyPodOf(p, n1); ok {
			byNS[p.Namespace] = append(byNS[p.Namespace], pp)
		}
	}
	r := &peerResolver{byNS: byNS, namespaces: []string{"x", "y"}, nsLabels: func(n string) labels.Set { return labels.Set{"n": n} },
		cache: map[string][]policyPod{}, byLabel: map[string]map[string][]int{}}
	for _, s := range []*metav1.LabelSelector{
		sel("app", "web"), sel("app", "web", "tier", "a"), sel("canary", "yes", "tier", "b"), sel("app", "none"),
		{MatchLabels: map[string]string{"app": "db"}, MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "canary", Operator: metav1.LabelSelectorOpDoesNotExist}}},
	} {
		got, _ := r.pods("x", nil, s)
		ls, _ := metav1.LabelSelectorAsSelector(s)
		var want []policyPod
		for _, p := range byNS["x"] {
			if ls.Matches(labels.Set(p.pod.Labels)) {
				want = append(want, p)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("selector %v: got %d pods, want %d", s, len(got), len(want))
		}
	}
	if selectorKey(sel("a", "1", "b", "2")) != selectorKey(&metav1.LabelSelector{MatchLabels: map[string]string{"b": "2", "a": "1"}}) || selectorKey(nil) == selectorKey(&metav1.LabelSelector{}) {
		t.Error("selectorKey is not canonical")
	}
}

// TestNetworkPolicyJSON: /api/snapshot shows which policies select which pods.
func TestNetworkPolicyJSON(t *testing.T) {
	objs := npWorld(npPolicy("x", "p", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}}}}}))
	b, err := json.Marshal(Translate(objs, n1))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Selected":["a","b"]`, `"Ingress":["p"]`, `"Peers":["10.0.0.0-10.0.255.255","10.2.0.0-10.255.255.255"]`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s missing from %s", want, b)
		}
	}
}
