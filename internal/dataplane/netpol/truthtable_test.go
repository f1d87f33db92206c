package netpol

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/netnstest"
)

// The truth-table suite, after the upstream tool cyclonus and the [sig-network] Netpol
// e2e tests: namespaces x, y and z with pods a, b and c each, on one bridge in a node
// namespace as a bridge CNI makes them, plus a host outside the pod network (ext) and
// the node itself. For each scenario every source probes every destination on every
// port it serves with a real TCP connect or UDP exchange, and the verdicts are compared
// with what an evaluator written here, from the API's text and independent of
// internal/model, expects.

// target is a probe destination: a pod or the external host.
type target struct {
	name string // "x/a", "ext", "node"
	ns   *netnstest.NS
	ip   netip.Addr
	ip6  netip.Addr
	pod  *corev1.Pod // nil for ext and node
	// serves are the protocol/port pairs it answers on.
	serves []servePort
}

type servePort struct {
	proto corev1.Protocol
	port  int32
	v6    bool // on the target's IPv6 address
}

func (s servePort) String() string {
	if s.v6 {
		return fmt.Sprintf("%s/%d/v6", s.proto, s.port)
	}
	return fmt.Sprintf("%s/%d", s.proto, s.port)
}

// podPorts are what every pod serves: both protocols on ports 80 and 81 over IPv4, a
// pair of them over IPv6.
var podPorts = []servePort{{corev1.ProtocolTCP, 80, false}, {corev1.ProtocolTCP, 81, false}, {corev1.ProtocolUDP, 80, false}, {corev1.ProtocolUDP, 81, false},
	{corev1.ProtocolTCP, 80, true}, {corev1.ProtocolUDP, 81, true}}

// world is the running topology.
type world struct {
	t          *testing.T
	node       *netnstest.NS
	pods       []*target // x/a … z/c
	ext        *target
	nodeT      *target
	namespaces []*corev1.Namespace
	enforcer   *Enforcer
	lastSet    *model.NetworkPolicySet // the set of the scenario in force
}

const (
	nodeBridgeIP  = "10.88.0.1"
	nodeBridgeIP6 = "fd88::1"
)

func newWorld(t *testing.T) *world {
	h := netnstest.New(t)
	w := &world{t: t}
	w.node = h.NS("node")
	w.node.MustRun("sysctl", "-qw", "net.ipv4.ip_forward=1")
	w.node.MustRun("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	w.node.MustRun("ip", "link", "add", "br0", "type", "bridge")
	w.node.MustRun("ip", "addr", "add", nodeBridgeIP+"/24", "dev", "br0")
	w.node.MustRun("ip", "addr", "add", nodeBridgeIP6+"/64", "dev", "br0", "nodad")
	w.node.MustRun("ip", "link", "set", "br0", "up")
	// Bridged packets go through the inet hooks, as on a node with a bridge CNI.
	if _, err := w.node.Run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1"); err != nil {
		t.Skipf("br_netfilter is not available: %v", err)
	}
	w.nodeT = &target{name: "node", ns: w.node, ip: netip.MustParseAddr(nodeBridgeIP), ip6: netip.MustParseAddr(nodeBridgeIP6)}

	i := 0
	for _, ns := range []string{"x", "y", "z"} {
		w.namespaces = append(w.namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"ns": ns}}})
		for _, name := range []string{"a", "b", "c"} {
			i++
			ip := fmt.Sprintf("10.88.0.%d", 10+i)
			ip6 := fmt.Sprintf("fd88::%d", 10+i) // read as hex: fd88::11 … fd88::19
			pns := h.NS(ns + name)
			link := fmt.Sprintf("p%d", i)
			h.Veth(pns, "eth0", []string{ip + "/24", ip6 + "/64"}, w.node, link, nil)
			w.node.MustRun("ip", "link", "set", link, "master", "br0")
			pns.MustRun("ip", "route", "add", "default", "via", nodeBridgeIP)
			pns.MustRun("ip", "-6", "route", "add", "default", "via", nodeBridgeIP6)
			var ports []corev1.ContainerPort
			for _, sp := range podPorts {
				ports = append(ports, corev1.ContainerPort{Name: fmt.Sprintf("serve-%d-%s", sp.port, strings.ToLower(string(sp.proto))), ContainerPort: sp.port, Protocol: sp.proto})
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"pod": name}},
				Spec:       corev1.PodSpec{NodeName: "node", Containers: []corev1.Container{{Name: "c", Ports: ports}}},
				Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: ip}, {IP: ip6}}},
			}
			w.pods = append(w.pods, &target{name: ns + "/" + name, ns: pns, ip: netip.MustParseAddr(ip), ip6: netip.MustParseAddr(ip6), pod: pod, serves: podPorts})
		}
	}
	extNS := h.NS("ext")
	h.Veth(extNS, "eth0", []string{"192.168.50.2/24", "fd50::2/64"}, w.node, "ext0", []string{"192.168.50.1/24", "fd50::1/64"})
	extNS.MustRun("ip", "route", "add", "10.88.0.0/24", "via", "192.168.50.1")
	extNS.MustRun("ip", "-6", "route", "add", "fd88::/64", "via", "fd50::1")
	w.ext = &target{name: "ext", ns: extNS, ip: netip.MustParseAddr("192.168.50.2"), ip6: netip.MustParseAddr("fd50::2"),
		serves: []servePort{{corev1.ProtocolTCP, 80, false}, {corev1.ProtocolUDP, 53, false}, {corev1.ProtocolTCP, 80, true}}}

	for _, tg := range append(copyTargets(w.pods), w.ext) {
		w.serve(tg)
	}
	if err := w.node.Do(func() (err error) {
		w.enforcer, err = New(Options{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.node.Do(func() error { return w.enforcer.Cleanup(context.Background()) }) })
	return w
}

func copyTargets(in []*target) []*target { return append([]*target(nil), in...) }

// serve opens the target's listeners inside its namespace; they answer with its name.
func (w *world) serve(tg *target) {
	var lns []net.Listener
	var pcs []net.PacketConn
	if err := tg.ns.Do(func() error {
		for _, sp := range tg.serves {
			addr := netip.AddrPortFrom(tg.addr(sp.v6), uint16(sp.port)).String()
			if sp.proto == corev1.ProtocolTCP {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					return err
				}
				lns = append(lns, ln)
			} else {
				pc, err := net.ListenPacket("udp", addr)
				if err != nil {
					return err
				}
				pcs = append(pcs, pc)
			}
		}
		return nil
	}); err != nil {
		w.t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(tg.name))
				_ = c.Close()
			}
		}()
	}
	for _, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo([]byte(tg.name), from)
			}
		}()
	}
	w.t.Cleanup(func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
		for _, pc := range pcs {
			_ = pc.Close()
		}
		wg.Wait()
	})
}

// addr is the target's address of one family.
func (tg *target) addr(v6 bool) netip.Addr {
	if v6 {
		return tg.ip6
	}
	return tg.ip
}

// probe reports whether src reaches dst on sp: a TCP connect that reads the
// destination's name, or a UDP datagram answered with it.
func probe(src, dst *target, sp servePort, timeout time.Duration) bool {
	ok := false
	_ = src.ns.Do(func() error {
		network := "tcp"
		if sp.proto == corev1.ProtocolUDP {
			network = "udp"
		}
		c, err := net.DialTimeout(network, netip.AddrPortFrom(dst.addr(sp.v6), uint16(sp.port)).String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		if sp.proto == corev1.ProtocolUDP {
			if _, err := c.Write([]byte("ping")); err != nil {
				return err
			}
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		ok = err == nil && string(buf[:n]) == dst.name
		return nil
	})
	return ok
}

// result is one probe.
type result struct {
	src, dst *target
	sp       servePort
	want     bool
	got      bool
}

// scenario is one set of policies, optional pod label changes, and its name.
type scenario struct {
	name     string
	policies []*networkingv1.NetworkPolicy
	// relabel sets a pod's labels ("x/a" → labels) for this scenario.
	relabel map[string]map[string]string
}

func (w *world) objects(sc scenario) *model.Objects {
	objs := &model.Objects{Namespaces: w.namespaces, NetworkPolicies: sc.policies}
	for _, p := range w.pods {
		pod := p.pod
		if l, ok := sc.relabel[p.name]; ok {
			pod = pod.DeepCopy()
			pod.Labels = l
		}
		objs.Pods = append(objs.Pods, pod)
	}
	return objs
}

// run applies the scenario and compares every probe with the evaluator.
func (w *world) run(t *testing.T, sc scenario) {
	objs := w.objects(sc)
	snap := model.Translate(objs, model.Node{Name: "node"})
	if err := w.node.Do(func() error { return w.enforcer.Sync(context.Background(), snap) }); err != nil {
		t.Fatalf("sync: %v", err)
	}
	w.lastSet = snap.NetworkPolicy
	ev := newEvaluator(objs)
	var results []*result
	sources := append(append(copyTargets(w.pods), w.ext), w.nodeT)
	dests := append(copyTargets(w.pods), w.ext)
	for _, src := range sources {
		for _, dst := range dests {
			if src == dst {
				continue
			}
			for _, sp := range dst.serves {
				results = append(results, &result{src: src, dst: dst, sp: sp, want: ev.allowed(src, dst, sp)})
			}
		}
	}
	probeAll := func(rs []*result, timeout time.Duration) {
		sem := make(chan struct{}, 96)
		var wg sync.WaitGroup
		for _, r := range rs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				r.got = probe(r.src, r.dst, r.sp, timeout)
				<-sem
			}()
		}
		wg.Wait()
	}
	probeAll(results, 700*time.Millisecond)
	// A loaded machine can miss an allowed probe's deadline: probe mismatches again,
	// longer, before calling them wrong.
	var again []*result
	for _, r := range results {
		if r.got != r.want {
			again = append(again, r)
		}
	}
	probeAll(again, 2*time.Second)
	var wrong []string
	allowed := 0
	for _, r := range results {
		if r.got {
			allowed++
		}
		if r.got != r.want {
			wrong = append(wrong, fmt.Sprintf("%s -> %s %s: got %s, want %s", r.src.name, r.dst.name, r.sp, verdict(r.got), verdict(r.want)))
		}
	}
	sort.Strings(wrong)
	if len(wrong) > 0 {
		t.Errorf("%d of %d probes differ from the evaluator:\n%s", len(wrong), len(results), strings.Join(wrong, "\n"))
	}
	t.Logf("%d probes, %d allowed", len(results), allowed)
	w.checkDrops(t, results)
}

// checkDrops: each policy isolating a destination that refused a probe counted drops.
func (w *world) checkDrops(t *testing.T, results []*result) {
	ch := make(chan prometheus.Metric, 1024)
	if err := w.node.Do(func() error { dropCollector{w.enforcer}.Collect(ch); return nil }); err != nil {
		t.Fatal(err)
	}
	close(ch)
	dropped := map[string]float64{}
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(m.Desc().String(), "dropped_packets") {
			continue
		}
		l := map[string]string{}
		for _, lp := range pb.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		dropped[l["namespace"]+"/"+l["policy"]+" "+l["direction"]] += pb.GetCounter().GetValue()
	}
	snap := w.lastSet
	for _, r := range results {
		if r.want || r.dst.pod == nil || r.src.pod != nil && w.isolated(snap, r.src.pod, "egress") {
			continue
		}
		// Refused at the destination's ingress: every policy isolating it counted.
		for _, name := range w.isolating(snap, r.dst.pod, "ingress") {
			if dropped[r.dst.pod.Namespace+"/"+name+" ingress"] == 0 {
				t.Errorf("%s -> %s refused, but policy %s/%s counted no ingress drop (counters %v)", r.src.name, r.dst.name, r.dst.pod.Namespace, name, dropped)
				return
			}
		}
	}
}

func (w *world) isolating(set *model.NetworkPolicySet, pod *corev1.Pod, dir string) []string {
	if set == nil {
		return nil
	}
	for _, p := range set.Pods {
		if p.Namespace == pod.Namespace && p.Name == pod.Name {
			if dir == "ingress" {
				return p.Ingress
			}
			return p.Egress
		}
	}
	return nil
}

func (w *world) isolated(set *model.NetworkPolicySet, pod *corev1.Pod, dir string) bool {
	return len(w.isolating(set, pod, dir)) > 0
}

func verdict(ok bool) string {
	if ok {
		return "allow"
	}
	return "deny"
}

// evaluator decides probes from the objects as the NetworkPolicy API documents them.
type evaluator struct {
	pods     map[netip.Addr]*corev1.Pod
	nsLabels map[string]map[string]string
	policies []*networkingv1.NetworkPolicy
}

func newEvaluator(objs *model.Objects) *evaluator {
	ev := &evaluator{pods: map[netip.Addr]*corev1.Pod{}, nsLabels: map[string]map[string]string{}, policies: objs.NetworkPolicies}
	for _, p := range objs.Pods {
		for _, ip := range p.Status.PodIPs {
			ev.pods[netip.MustParseAddr(ip.IP)] = p
		}
	}
	for _, ns := range objs.Namespaces {
		l := map[string]string{corev1.LabelMetadataName: ns.Name}
		for k, v := range ns.Labels {
			l[k] = v
		}
		ev.nsLabels[ns.Name] = l
	}
	return ev
}

func (ev *evaluator) allowed(src, dst *target, sp servePort) bool {
	// The node may always reach its pods; hosts that are not pods have no policy.
	if src.name == "node" {
		return true
	}
	srcIP, dstIP := src.addr(sp.v6), dst.addr(sp.v6)
	srcPod, dstPod := ev.pods[srcIP], ev.pods[dstIP]
	return ev.direction(srcPod, networkingv1.PolicyTypeEgress, dstIP, dstPod, sp) &&
		ev.direction(dstPod, networkingv1.PolicyTypeIngress, srcIP, srcPod, sp)
}

// direction: is traffic of pod (nil: not a pod) in direction dir with the peer allowed?
// The port is the destination's: dst of egress is the peer, of ingress the pod itself.
func (ev *evaluator) direction(pod *corev1.Pod, dir networkingv1.PolicyType, peerIP netip.Addr, peer *corev1.Pod, sp servePort) bool {
	if pod == nil {
		return true
	}
	dstPod := pod
	if dir == networkingv1.PolicyTypeEgress {
		dstPod = peer
	}
	isolated := false
	for _, np := range ev.policies {
		if np.Namespace != pod.Namespace || !matches(&np.Spec.PodSelector, pod.Labels) || !hasType(np, dir) {
			continue
		}
		isolated = true
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				if ev.peersMatch(np.Namespace, r.From, peerIP, peer) && portsMatch(r.Ports, dstPod, sp) {
					return true
				}
			}
		} else {
			for _, r := range np.Spec.Egress {
				if ev.peersMatch(np.Namespace, r.To, peerIP, peer) && portsMatch(r.Ports, dstPod, sp) {
					return true
				}
			}
		}
	}
	return !isolated
}

func hasType(np *networkingv1.NetworkPolicy, dir networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return dir == networkingv1.PolicyTypeIngress || len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		if t == dir {
			return true
		}
	}
	return false
}

func matches(sel *metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		panic(err)
	}
	return s.Matches(labels.Set(l))
}

func (ev *evaluator) peersMatch(ns string, peers []networkingv1.NetworkPolicyPeer, ip netip.Addr, pod *corev1.Pod) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if p.IPBlock != nil {
			_, cidr, _ := net.ParseCIDR(p.IPBlock.CIDR)
			in := cidr.Contains(ip.AsSlice())
			for _, e := range p.IPBlock.Except {
				_, ex, _ := net.ParseCIDR(e)
				if ex.Contains(ip.AsSlice()) {
					in = false
				}
			}
			if in {
				return true
			}
			continue
		}
		if pod == nil {
			continue
		}
		nsOK := pod.Namespace == ns
		if p.NamespaceSelector != nil {
			nsOK = matches(p.NamespaceSelector, ev.nsLabels[pod.Namespace])
		}
		if nsOK && (p.PodSelector == nil || matches(p.PodSelector, pod.Labels)) {
			return true
		}
	}
	return false
}

func portsMatch(ports []networkingv1.NetworkPolicyPort, dst *corev1.Pod, sp servePort) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if proto != sp.proto {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.Type == intstr.String:
			if dst == nil {
				continue
			}
			for _, c := range dst.Spec.Containers {
				for _, cp := range c.Ports {
					if cp.Name == p.Port.StrVal && cp.Protocol == sp.proto && cp.ContainerPort == sp.port {
						return true
					}
				}
			}
		default:
			end := p.Port.IntVal
			if p.EndPort != nil {
				end = *p.EndPort
			}
			if p.Port.IntVal <= sp.port && sp.port <= end {
				return true
			}
		}
	}
	return false
}

// Helpers to write policies briefly.

func np(ns, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func lsel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func types(ts ...networkingv1.PolicyType) []networkingv1.PolicyType { return ts }

func port(proto corev1.Protocol, p intstr.IntOrString, end ...int32) networkingv1.NetworkPolicyPort {
	out := networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p}
	if len(end) > 0 {
		out.EndPort = &end[0]
	}
	return out
}

var (
	tcp     = corev1.ProtocolTCP
	udp     = corev1.ProtocolUDP
	in      = networkingv1.PolicyTypeIngress
	out     = networkingv1.PolicyTypeEgress
	fromAll = []networkingv1.NetworkPolicyIngressRule{{}}
)

func ingressFrom(peers ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyIngressRule {
	return []networkingv1.NetworkPolicyIngressRule{{From: peers}}
}

func scenarios() []scenario {
	all := metav1.LabelSelector{}
	return []scenario{
		{name: "no policy"},
		{name: "default deny ingress", policies: []*networkingv1.NetworkPolicy{np("x", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: types(in)})}},
		{name: "default deny egress", policies: []*networkingv1.NetworkPolicy{np("x", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: types(out)})}},
		{name: "default deny both", policies: []*networkingv1.NetworkPolicy{np("y", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: types(in, out)})}},
		{name: "allow all ingress beside deny all", policies: []*networkingv1.NetworkPolicy{
			np("x", "deny", networkingv1.NetworkPolicySpec{PolicyTypes: types(in)}),
			np("x", "allow", networkingv1.NetworkPolicySpec{Ingress: fromAll}),
		}},
		{name: "ingress from pods with a label in the namespace", policies: []*networkingv1.NetworkPolicy{
			np("x", "a-from-b", networkingv1.NetworkPolicySpec{PodSelector: *lsel("pod", "a"), Ingress: ingressFrom(networkingv1.NetworkPolicyPeer{PodSelector: lsel("pod", "b")})}),
		}},
		{name: "ingress from a namespace", policies: []*networkingv1.NetworkPolicy{
			np("x", "from-y", networkingv1.NetworkPolicySpec{Ingress: ingressFrom(networkingv1.NetworkPolicyPeer{NamespaceSelector: lsel("ns", "y")})}),
		}},
		{name: "ingress from pod and namespace selectors together", policies: []*networkingv1.NetworkPolicy{
			np("x", "from-y-b", networkingv1.NetworkPolicySpec{PodSelector: *lsel("pod", "a"),
				Ingress: ingressFrom(networkingv1.NetworkPolicyPeer{NamespaceSelector: lsel("ns", "y"), PodSelector: lsel("pod", "b")})}),
		}},
		{name: "ingress from pod or namespace selector (two peers)", policies: []*networkingv1.NetworkPolicy{
			np("x", "from-y-or-b", networkingv1.NetworkPolicySpec{PodSelector: *lsel("pod", "a"),
				Ingress: ingressFrom(networkingv1.NetworkPolicyPeer{NamespaceSelector: lsel("ns", "y")}, networkingv1.NetworkPolicyPeer{PodSelector: lsel("pod", "b")})}),
		}},
		{name: "namespace selector with matchExpressions NotIn", policies: []*networkingv1.NetworkPolicy{
			np("x", "not-y", networkingv1.NetworkPolicySpec{Ingress: ingressFrom(networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "ns", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"y"}}}}})}),
		}},
		{name: "ingress from any pod of every namespace", policies: []*networkingv1.NetworkPolicy{
			np("x", "pods-only", networkingv1.NetworkPolicySpec{Ingress: ingressFrom(networkingv1.NetworkPolicyPeer{NamespaceSelector: &all})}),
		}},
		{name: "ingress from an ipBlock with except", policies: []*networkingv1.NetworkPolicy{
			np("x", "cidr", networkingv1.NetworkPolicySpec{Ingress: ingressFrom(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{
				CIDR: "10.88.0.0/24", Except: []string{"10.88.0.16/30"}}})}), // except y/c, z/a, z/b, z/c (.16-.19)
			np("y", "ext", networkingv1.NetworkPolicySpec{Ingress: ingressFrom(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.50.0/24"}})}),
		}},
		{name: "IPv6: ingress from an ipBlock with except, egress to one", policies: []*networkingv1.NetworkPolicy{
			np("x", "cidr6", networkingv1.NetworkPolicySpec{Ingress: ingressFrom(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{
				CIDR: "fd88::/64", Except: []string{"fd88::14/126"}}})}), // except y/a, y/b, y/c, z/a (::14-::17)
			np("z", "to-ext6", networkingv1.NetworkPolicySpec{PolicyTypes: types(out), Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
				CIDR: "fd50::/64"}}}}}}),
		}},
		{name: "egress to an ipBlock with except", policies: []*networkingv1.NetworkPolicy{
			np("x", "cidr", networkingv1.NetworkPolicySpec{PolicyTypes: types(out), Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
				CIDR: "0.0.0.0/0", Except: []string{"10.88.0.0/28"}}}}}}}), // except x/*, y/a, y/b (.11-.15)
		}},
		{name: "ingress on a port by number", policies: []*networkingv1.NetworkPolicy{
			np("x", "port-81", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(81))}}}}),
		}},
		{name: "ingress on named ports", policies: []*networkingv1.NetworkPolicy{
			np("x", "named", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &all}},
				Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromString("serve-80-tcp")), port(udp, intstr.FromString("serve-81-udp")), port(tcp, intstr.FromString("serve-81-udp"))}}}}),
		}},
		{name: "egress on a named port resolves at the destination", policies: []*networkingv1.NetworkPolicy{
			np("x", "named-out", networkingv1.NetworkPolicySpec{PolicyTypes: types(out), Egress: []networkingv1.NetworkPolicyEgressRule{{
				Ports: []networkingv1.NetworkPolicyPort{port(udp, intstr.FromString("serve-80-udp"))}}}}),
		}},
		{name: "ingress on a port range (endPort)", policies: []*networkingv1.NetworkPolicy{
			np("x", "range", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(70), 80), port(udp, intstr.FromInt32(81), 90)}}}}),
		}},
		{name: "multiple policies are additive", policies: []*networkingv1.NetworkPolicy{
			np("x", "tcp-80-from-y", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: lsel("ns", "y")}}, Ports: []networkingv1.NetworkPolicyPort{port(tcp, intstr.FromInt32(80))}}}}),
			np("x", "udp-81-from-z", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: lsel("ns", "z")}}, Ports: []networkingv1.NetworkPolicyPort{port(udp, intstr.FromInt32(81))}}}}),
		}},
		{name: "egress only to DNS", policies: []*networkingv1.NetworkPolicy{
			np("z", "dns", networkingv1.NetworkPolicySpec{PolicyTypes: types(out), Egress: []networkingv1.NetworkPolicyEgressRule{{
				Ports: []networkingv1.NetworkPolicyPort{port(udp, intstr.FromInt32(53)), port(tcp, intstr.FromInt32(53))}}}}),
		}},
		{name: "ingress and egress in one policy", policies: []*networkingv1.NetworkPolicy{
			np("y", "both", networkingv1.NetworkPolicySpec{PodSelector: *lsel("pod", "b"), PolicyTypes: types(in, out),
				Ingress: ingressFrom(networkingv1.NetworkPolicyPeer{PodSelector: lsel("pod", "a")}),
				Egress:  []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: lsel("ns", "z"), PodSelector: lsel("pod", "c")}}}}}),
		}},
		{name: "egress to all protocols' ports of a protocol only", policies: []*networkingv1.NetworkPolicy{
			np("x", "udp-only", networkingv1.NetworkPolicySpec{PolicyTypes: types(out), Egress: []networkingv1.NetworkPolicyEgressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp}}}}}),
		}},
		{name: "a relabelled pod leaves and joins selections", relabel: map[string]map[string]string{"x/a": {"pod": "b"}, "x/b": {"pod": "a"}},
			policies: []*networkingv1.NetworkPolicy{
				np("x", "a-from-b", networkingv1.NetworkPolicySpec{PodSelector: *lsel("pod", "a"), Ingress: ingressFrom(networkingv1.NetworkPolicyPeer{PodSelector: lsel("pod", "b")})}),
			}},
		{name: "back to no policy"},
	}
}

// TestTruthTable runs every scenario in turn on one topology, so that each sync is a
// diff from the previous scenario's rules.
func TestTruthTable(t *testing.T) {
	w := newWorld(t)
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) { w.run(t, sc) })
	}
}
