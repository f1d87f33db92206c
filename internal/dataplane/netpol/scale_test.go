package netpol

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/netnstest"
)

// scaleObjects is 5,000 pods in 50 namespaces (20 apps of 5 pods each per namespace,
// namespaces in 5 tiers) and 1,000 policies (20 per namespace): each selects one app,
// admits two other apps of its namespace and one app of its tier's namespaces on TCP
// 80 and 443, and allows egress to UDP/TCP 53 and to one app. The first `local` pods
// of each namespace run on this node.
func scaleObjects(local int) *model.Objects {
	objs := &model.Objects{}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	p := func(proto corev1.Protocol, n int32) networkingv1.NetworkPolicyPort {
		v := intstr.FromInt32(n)
		return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &v}
	}
	app := func(i int) map[string]string { return map[string]string{"app": fmt.Sprintf("app-%d", i%20)} }
	for n := range 50 {
		ns := fmt.Sprintf("ns-%d", n)
		objs.Namespaces = append(objs.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"tier": fmt.Sprintf("t%d", n%5)}}})
		for i := range 100 {
			node := "other"
			if i < local {
				node = "node"
			}
			objs.Pods = append(objs.Pods, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("pod-%d", i), Labels: app(i)},
				Spec:       corev1.PodSpec{NodeName: node},
				Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: fmt.Sprintf("10.%d.%d.%d", 100+n/50, n%50, 10+i)}}},
			})
		}
		for k := range 20 {
			objs.NetworkPolicies = append(objs.NetworkPolicies, &networkingv1.NetworkPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("pol-%d", k)},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: app(k)},
					PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
					Ingress: []networkingv1.NetworkPolicyIngressRule{
						{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: app(k + 1)}}, {PodSelector: &metav1.LabelSelector{MatchLabels: app(k + 2)}}},
							Ports: []networkingv1.NetworkPolicyPort{p(tcp, 80), p(tcp, 443)}},
						{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": fmt.Sprintf("t%d", n%5)}},
							PodSelector: &metav1.LabelSelector{MatchLabels: app(k + 3)}}},
							Ports: []networkingv1.NetworkPolicyPort{p(tcp, 80)}},
					},
					Egress: []networkingv1.NetworkPolicyEgressRule{
						{Ports: []networkingv1.NetworkPolicyPort{p(udp, 53), p(tcp, 53)}},
						{To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: app(k + 4)}}}},
					},
				},
			})
		}
	}
	return objs
}

// cpuTime is the CPU time this process and its waited-for children (nft) used: on a
// shared machine, wall times measure the neighbours too.
func cpuTime() time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	d := func(tv syscall.Timeval) time.Duration { return time.Duration(tv.Nano()) }
	return d(self.Utime) + d(self.Stime) + d(children.Utime) + d(children.Stime)
}

// TestScale measures, in a network namespace, the full sync of 1,000 policies over
// 5,000 pods and the latency from one pod's label change to its rules applied. It
// runs only with WEIR_NETPOL_SCALE=1 (it takes a core for seconds); the figures are in
// docs/networkpolicy.md.
func TestScale(t *testing.T) {
	if os.Getenv("WEIR_NETPOL_SCALE") == "" {
		t.Skip("set WEIR_NETPOL_SCALE=1 to measure")
	}
	for _, local := range []int{2, 100} {
		t.Run(fmt.Sprintf("%d local pods", local*50), func(t *testing.T) {
			ns := netnstest.New(t).NS("scale")
			objs := scaleObjects(local)
			node := model.Node{Name: "node"}
			var e *Enforcer
			if err := ns.Do(func() (err error) { e, err = New(Options{}); return err }); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			tr := model.NewTranslator()
			start, cpu := time.Now(), cpuTime()
			snap := tr.Translate(objs, node)
			translated := time.Since(start)
			snap.Version = 1
			if err := ns.Do(func() error { return e.Sync(ctx, snap) }); err != nil {
				t.Fatal(err)
			}
			full := time.Since(start)
			elems := 0
			for _, s := range e.applied.sets {
				elems += len(s.elems)
			}
			t.Logf("full: translate %v, total %v, CPU %v with nft's (%d chains, %d sets, %d elements)", translated.Round(time.Millisecond), full.Round(time.Millisecond),
				(cpuTime() - cpu).Round(time.Millisecond), len(e.applied.chains), len(e.applied.sets), elems)

			// One pod's label change: app-0 → app-1 on a local pod.
			changed := *objs
			changed.Pods = append([]*corev1.Pod(nil), objs.Pods...)
			pod := changed.Pods[0].DeepCopy()
			pod.Labels = map[string]string{"app": "app-1"}
			changed.Pods[0] = pod
			start, cpu = time.Now(), cpuTime()
			snap2 := tr.Translate(&changed, node)
			translated = time.Since(start)
			snap2.Version = 2
			if err := ns.Do(func() error { return e.Sync(ctx, snap2) }); err != nil {
				t.Fatal(err)
			}
			t.Logf("one label change: translate %v, total %v, CPU %v with nft's", translated.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), (cpuTime() - cpu).Round(time.Millisecond))
		})
	}
}
