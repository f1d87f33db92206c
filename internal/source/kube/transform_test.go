package kube

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"weir.dev/weir/internal/model"
)

// TestSlimObjectsTranslateAlike: the slimmed Service and EndpointSlice give the same
// Snapshot as the objects the API server sent, and what was dropped is gone.
func TestSlimObjectsTranslateAlike(t *testing.T) {
	full := func() (*corev1.Service, *discoveryv1.EndpointSlice) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Labels: map[string]string{"app": "web"},
				Annotations: map[string]string{corev1.AnnotationTopologyMode: "Auto", lastAppliedAnnotation: "{}",
					corev1.AnnotationLoadBalancerSourceRangesKey: "10.0.0.0/8"},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.1", ClusterIPs: []string{"10.96.0.1"},
				Selector: map[string]string{"app": "web"},
				Ports:    []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080}}},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "192.0.2.1"}}},
				Conditions: []metav1.Condition{{Type: "x"}}},
		}
		es := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-abc",
				Labels:      map[string]string{discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"},
				Annotations: map[string]string{model.WeightAnnotation: "3", "endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.1"}, Hostname: ptr.To("web-0"), NodeName: ptr.To("node-a"), Zone: ptr.To("z1"),
				Conditions:         discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				Hints:              &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z1"}}},
				TargetRef:          &corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: "web-0", UID: "u"},
				DeprecatedTopology: map[string]string{"a": "b"}}},
		}
		return svc, es
	}
	node := model.Node{Name: "node-a", Zone: "z1"}
	svc, es := full()
	want := model.Translate(&model.Objects{Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{es}}, node)
	svc, es = full()
	s, err := stripObject(svc)
	if err != nil {
		t.Fatal(err)
	}
	e, err := stripObject(es)
	if err != nil {
		t.Fatal(err)
	}
	slimSvc, slimES := s.(*corev1.Service), e.(*discoveryv1.EndpointSlice)
	got := model.Translate(&model.Objects{Services: []*corev1.Service{slimSvc}, EndpointSlices: []*discoveryv1.EndpointSlice{slimES}}, node)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("slim objects translate differently:\n got %+v\nwant %+v", got.Services[0], want.Services[0])
	}
	if slimES.Endpoints[0].TargetRef != nil || len(slimES.Labels) != 1 || len(slimES.Annotations) != 1 ||
		slimSvc.Spec.Selector != nil || slimSvc.ManagedFields != nil || slimSvc.Annotations[lastAppliedAnnotation] != "" {
		t.Fatalf("not slimmed: %+v %+v", slimSvc.ObjectMeta, slimES.ObjectMeta)
	}
}

// TestSlimServiceKeepsModelLabels: the labels Translate reads survive slimming, so a
// Service labelled for another proxy, or headless, stays unprogrammed in a cluster (e2e
// "should implement service.kubernetes.io/service-proxy-name" and ".../headless": weir
// programmed both when the source dropped every label).
func TestSlimServiceKeepsModelLabels(t *testing.T) {
	for _, label := range model.ServiceLabels {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Labels: map[string]string{"app": "web", label: "foo-bar"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.1", ClusterIPs: []string{"10.96.0.1"},
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
		}
		s, err := stripObject(svc)
		if err != nil {
			t.Fatal(err)
		}
		slim := s.(*corev1.Service)
		if len(slim.Labels) != 1 || slim.Labels[label] != "foo-bar" {
			t.Errorf("%s: labels after slimming %v", label, slim.Labels)
		}
		snap := model.Translate(&model.Objects{Services: []*corev1.Service{slim}}, model.Node{Name: "node-a"})
		if len(snap.Services) != 1 || snap.Services[0].Proxied() {
			t.Errorf("%s: the slim Service is proxied: %+v", label, snap.Services)
		}
	}
}

// TestCompactEndpoints: the slim slice is exactly as long as the decoded one, keeps
// every field Translate reads (conditions of each value and nil, hostname, node, zone,
// hints), and repeated node names share one string.
func TestCompactEndpoints(t *testing.T) {
	var eps []discoveryv1.Endpoint
	for i := range 10 {
		ep := discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.1.0.%d", i)}, NodeName: ptr.To(fmt.Sprintf("node-%d", i%3)),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(i%2 == 0), Serving: ptr.To(true)}}
		if i == 4 {
			ep.Zone, ep.Hostname = ptr.To("z1"), ptr.To("web-4")
			ep.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z1"}}}
			ep.Conditions.Terminating = ptr.To(false)
		}
		eps = append(eps, ep) // capacity 16 for 10
	}
	want := slices.Clone(eps)
	got := compactEndpoints(eps)
	if len(got) != 10 || cap(got) != 10 {
		t.Fatalf("len %d cap %d, want 10 and 10", len(got), cap(got))
	}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Fatalf("compacted endpoints differ:\n got %+v\nwant %+v", got, want)
	}
	if got[0].NodeName != got[3].NodeName || got[0].NodeName == got[1].NodeName {
		t.Fatal("repeated node names do not share one string, or distinct ones do")
	}
}

// TestSlimSliceKeepsModelLabels: a slice labelled for another proxy, or headless, keeps
// that label through slimming, so Translate still leaves it out.
func TestSlimSliceKeepsModelLabels(t *testing.T) {
	for _, label := range model.ServiceLabels {
		es := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-abc",
				Labels: map[string]string{discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "x", label: ""}},
			AddressType: discoveryv1.AddressTypeIPv4,
		}
		e, err := stripObject(es)
		if err != nil {
			t.Fatal(err)
		}
		got := e.(*discoveryv1.EndpointSlice).Labels
		if _, ok := got[label]; !ok || len(got) != 2 {
			t.Errorf("%s: labels after slimming %v", label, got)
		}
	}
}
