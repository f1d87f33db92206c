package netpol

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/netnstest"
)

func pod(ns, name, ip string, lbls map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func policy(ns, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

// steps are object sets a sync goes through: policies come, pods change labels and
// addresses, policies go.
func steps() []*model.Objects {
	port := intstr.FromString("http")
	tcp := corev1.ProtocolTCP
	web := policy("x", "web", networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}, {IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/64", Except: []string{"fd00::/80"}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}, {Protocol: &tcp}},
		}},
		Egress: []networkingv1.NetworkPolicyEgressRule{{}},
	})
	deny := policy("x", "deny", networkingv1.NetworkPolicySpec{})
	a := pod("x", "a", "10.0.0.1", map[string]string{"app": "web"})
	b := pod("x", "b", "10.0.0.2", map[string]string{"app": "db"})
	b2 := pod("x", "b", "10.0.0.3", map[string]string{"app": "db"})
	a2 := pod("x", "a", "10.0.0.1", map[string]string{"app": "other"})
	return []*model.Objects{
		{Pods: []*corev1.Pod{a, b}},
		{Pods: []*corev1.Pod{a, b}, NetworkPolicies: []*networkingv1.NetworkPolicy{web}},
		{Pods: []*corev1.Pod{a, b2}, NetworkPolicies: []*networkingv1.NetworkPolicy{web}},
		{Pods: []*corev1.Pod{a, b2}, NetworkPolicies: []*networkingv1.NetworkPolicy{deny, web}},
		{Pods: []*corev1.Pod{a2, b2}, NetworkPolicies: []*networkingv1.NetworkPolicy{deny, web}},
		{Pods: []*corev1.Pod{a2, b2}, NetworkPolicies: []*networkingv1.NetworkPolicy{web}},
		{Pods: []*corev1.Pod{a, b}, NetworkPolicies: []*networkingv1.NetworkPolicy{web}},
		{Pods: []*corev1.Pod{a, b}},
	}
}

// TestDiffEqualsFull: after every step, the table the diffs built equals the table a
// fresh enforcer writes whole.
func TestDiffEqualsFull(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, TableName)
	e, err := New(Options{NFTables: fake})
	if err != nil {
		t.Fatal(err)
	}
	for i, objs := range steps() {
		snap := model.Translate(objs, model.Node{Name: "n1"})
		if err := e.Sync(ctx, snap); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		fresh := knftables.NewFake(knftables.InetFamily, TableName)
		f, _ := New(Options{NFTables: fresh})
		f.polIDs.of, f.groupIDs.of = maps.Clone(e.polIDs.of), maps.Clone(e.groupIDs.of)
		if err := f.Sync(ctx, snap); err != nil {
			t.Fatalf("step %d fresh: %v", i, err)
		}
		// Lines sorted: the fake dumps elements in the order they were added.
		if got, want := sortedLines(fake.Dump()), sortedLines(fresh.Dump()); got != want {
			t.Fatalf("step %d: diffed table differs from a full write:\n--- diffed\n%s\n--- full\n%s", i, got, want)
		}
		if i == 3 {
			dump := fake.Dump()
			for _, s := range []string{"jump pol-", "counter name pol-", "@pol-", "10.0.0.3", "fd00::1:0:0:0-fd00::ffff:ffff:ffff:ffff", "10.0.0.1 . tcp . 8080"} {
				if !strings.Contains(dump, s) {
					t.Errorf("step 3: %q missing from\n%s", s, dump)
				}
			}
		}
	}
}

func sortedLines(s string) string {
	lines := strings.Split(s, "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestStreamedFullWrite: in a network namespace, the full write streamed to nft (many
// elements per statement) gives the table knftables' one statement per element gives.
func TestStreamedFullWrite(t *testing.T) {
	ns := netnstest.New(t).NS("stream")
	ctx := context.Background()
	list := func() string { return ns.MustRun("nft", "list", "table", "inet", TableName) }
	for i, objs := range steps() {
		snap := model.Translate(objs, model.Node{Name: "n1"})
		var streamed, plain string
		if err := ns.Do(func() error {
			e, err := New(Options{})
			if err != nil {
				return err
			}
			if err := e.Sync(ctx, snap); err != nil {
				return fmt.Errorf("streamed: %w", err)
			}
			streamed = list()
			nft, err := knftables.New(knftables.InetFamily, TableName)
			if err != nil {
				return err
			}
			f, _ := New(Options{NFTables: nft})
			f.polIDs.of, f.groupIDs.of = maps.Clone(e.polIDs.of), maps.Clone(e.groupIDs.of)
			if err := f.Sync(ctx, snap); err != nil {
				return fmt.Errorf("per element: %w", err)
			}
			plain = list()
			return f.Cleanup(ctx)
		}); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if streamed != plain {
			t.Fatalf("step %d: the streamed table differs:\n%s\n--- per element:\n%s", i, streamed, plain)
		}
	}
}
