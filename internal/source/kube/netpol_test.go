package kube

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/store"
)

// TestSourceNetworkPolicyInputs: with NetworkPolicy set, Pods (slimmed to what network
// policy reads) and NetworkPolicies join the object set, and a label change is an update.
func TestSourceNetworkPolicyInputs(t *testing.T) {
	clients, kube, _ := fakeClients(t, false, false)
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a", Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{"big": "x"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "c", Image: "img", Command: []string{"x"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9090}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.1.0.1", PodIPs: []corev1.PodIP{{IP: "10.1.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady}}},
	}
	if _, err := kube.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "deny"}}
	if _, err := kube.NetworkingV1().NetworkPolicies("default").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st := store.New()
	startSource(t, Options{Clients: clients, Store: st, NetworkPolicy: true})
	objs := waitFor(t, st, "pods and policies", func(o *model.Objects) bool { return len(o.Pods) == 1 && len(o.NetworkPolicies) == 1 })
	got := objs.Pods[0]
	if got.Annotations != nil || got.ManagedFields != nil || got.Status.Conditions != nil || got.Spec.Containers[0].Image != "" ||
		len(got.Spec.Containers[0].Ports) != 1 || got.Status.PodIPs[0].IP != "10.1.0.1" || got.Spec.NodeName != "node-a" || got.Labels["app"] != "web" {
		t.Fatalf("pod not slimmed to what network policy reads: %+v", got)
	}
	if snap := model.Translate(objs, model.Node{Name: "node-a"}); len(snap.NetworkPolicy.Pods) != 1 {
		t.Fatalf("the policy selects the pod: %+v", snap.NetworkPolicy)
	}

	pod.Labels = map[string]string{"app": "db"}
	if _, err := kube.CoreV1().Pods("default").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, st, "label change", func(o *model.Objects) bool { return len(o.Pods) == 1 && o.Pods[0].Labels["app"] == "db" })
}

func TestSourceWithoutNetworkPolicySkipsPods(t *testing.T) {
	clients, kube, _ := fakeClients(t, false, false)
	if _, err := kube.CoreV1().Pods("default").Create(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st := store.New()
	startSource(t, Options{Clients: clients, Store: st})
	objs := waitFor(t, st, "initial set", func(*model.Objects) bool { return true })
	if len(objs.Pods) != 0 {
		t.Fatalf("pods watched without NetworkPolicy: %d", len(objs.Pods))
	}
}
