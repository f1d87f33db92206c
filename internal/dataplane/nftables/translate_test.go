package nftables

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

// TestWithTranslate traces packets through rules built from model.Translate's output
// for real Kubernetes objects: a dual-stack LoadBalancer Service with
// externalTrafficPolicy Local, one local and one remote endpoint per family.
func TestWithTranslate(t *testing.T) {
	ptr := func(s string) *string { return &s }
	yes := true
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			ClusterIP:             "172.30.1.1",
			ClusterIPs:            []string{"172.30.1.1", "fd00:30::1:1"},
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
			Selector:              map[string]string{"app": "web"},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			HealthCheckNodePort:   32000,
			Ports:                 []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30090}},
		},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "203.0.113.50"}}}},
	}
	slice := func(name string, family discoveryv1.AddressType, local, remote string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: family,
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{local}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}, NodeName: ptr("node-a")},
				{Addresses: []string{remote}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}, NodeName: ptr("node-b")},
			},
			Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: func() *int32 { p := int32(8080); return &p }()}},
		}
	}
	objs := &model.Objects{
		Services: []*corev1.Service{svc},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			slice("web-v4", discoveryv1.AddressTypeIPv4, "10.1.0.1", "10.2.0.1"),
			slice("web-v6", discoveryv1.AddressTypeIPv6, "fd00:1::1", "fd00:2::1"),
		},
	}
	snap := model.Translate(objs, model.Node{Name: "node-a"})
	fx := newFixture(t, kernel.Options{})
	fx.sync(t, snap.Services...)
	nodeIPs := []string{"192.168.0.2", "fd00:192::2"}
	tests := []struct {
		name string
		fam  ipFamily
		pkt  flowtest.Packet
		want map[string]float64
		masq bool
	}{
		{"ClusterIP v4 uses both", familyV4, flowtest.Packet{Src: "10.9.0.1", Dst: "172.30.1.1", Proto: "tcp", Port: 80}, map[string]float64{"10.1.0.1:8080": 0.5, "10.2.0.1:8080": 0.5}, false},
		{"ClusterIP v6 uses both", familyV6, flowtest.Packet{Src: "fd00:9::1", Dst: "fd00:30::1:1", Proto: "tcp", Port: 80}, map[string]float64{"[fd00:1::1]:8080": 0.5, "[fd00:2::1]:8080": 0.5}, false},
		{"LB IP is Local", familyV4, flowtest.Packet{Src: "198.51.100.1", Dst: "203.0.113.50", Proto: "tcp", Port: 80}, map[string]float64{"10.1.0.1:8080": 1}, false},
		{"NodePort v6 is Local", familyV6, flowtest.Packet{Src: "fd00:9::1", Dst: "fd00:192::2", Proto: "tcp", Port: 30090}, map[string]float64{"[fd00:1::1]:8080": 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := fx.v4.Fake
			if tt.fam.is6 {
				fake = fx.v6.Fake
			}
			got := newTracer(t, fake, tt.fam, nodeIPs).trace(tt.pkt)
			if !got.Matches(flowtest.Outcome{Verdict: "DNAT", Endpoints: tt.want, Masq: tt.masq}) {
				t.Errorf("got %v, want %v masq=%v", got, tt.want, tt.masq)
			}
		})
	}
}
