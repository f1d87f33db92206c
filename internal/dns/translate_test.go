package dns

import (
	"slices"
	"testing"

	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"weir.dev/weir/internal/model"
)

// TestFromObjects goes the whole way: Kubernetes objects → model.Translate → DNS
// answers, for a ClusterIP Service and a StatefulSet's headless Service with one pod not
// ready.
func TestFromObjects(t *testing.T) {
	objs := &model.Objects{
		Services: []*corev1.Service{
			{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
				Spec: corev1.ServiceSpec{
					Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.1.1", ClusterIPs: []string{"10.96.1.1"},
					Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
				},
			},
			{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
				Spec: corev1.ServiceSpec{
					Type: corev1.ServiceTypeClusterIP, ClusterIP: corev1.ClusterIPNone, ClusterIPs: []string{corev1.ClusterIPNone},
					Ports: []corev1.ServicePort{{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432}},
				},
			},
		},
		EndpointSlices: []*discoveryv1.EndpointSlice{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-abc",
				Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("pg"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](5432)}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.5.0.1"}, Hostname: ptr.To("db-0"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
				{Addresses: []string{"10.5.0.2"}, Hostname: ptr.To("db-1"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
				{Addresses: []string{"10.5.0.3"}, Hostname: ptr.To("db-2"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
			},
		}},
	}
	s := startServer(t, Options{})
	s.Update(model.Translate(objs, model.Node{Name: "node-a"}))

	for _, tt := range []struct {
		qname  string
		qtype  uint16
		rcode  int
		answer []string
	}{
		{"api.shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeSuccess,
			[]string{"api.shop.svc.cluster.local. 5 IN A 10.96.1.1"}},
		{"_http._tcp.api.shop.svc.cluster.local.", mdns.TypeSRV, mdns.RcodeSuccess,
			[]string{"_http._tcp.api.shop.svc.cluster.local. 5 IN SRV 0 100 80 api.shop.svc.cluster.local."}},
		{"db.shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeSuccess,
			[]string{"db.shop.svc.cluster.local. 5 IN A 10.5.0.1", "db.shop.svc.cluster.local. 5 IN A 10.5.0.2"}},
		{"db-1.db.shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeSuccess,
			[]string{"db-1.db.shop.svc.cluster.local. 5 IN A 10.5.0.2"}},
		{"db-2.db.shop.svc.cluster.local.", mdns.TypeA, mdns.RcodeNameError, nil},
		{"_pg._tcp.db.shop.svc.cluster.local.", mdns.TypeSRV, mdns.RcodeSuccess, []string{
			"_pg._tcp.db.shop.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.shop.svc.cluster.local.",
			"_pg._tcp.db.shop.svc.cluster.local. 5 IN SRV 0 50 5432 db-1.db.shop.svc.cluster.local.",
		}},
		{"2.0.5.10.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess,
			[]string{"2.0.5.10.in-addr.arpa. 5 IN PTR db-1.db.shop.svc.cluster.local."}},
	} {
		t.Run(tt.qname+"/"+mdns.TypeToString[tt.qtype], func(t *testing.T) {
			r := exchange(t, s.Addr(), "udp", question(tt.qname, tt.qtype))
			if r.Rcode != tt.rcode {
				t.Fatalf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tt.rcode])
			}
			if got := rrStrings(r.Answer); !slices.Equal(got, tt.answer) && len(got)+len(tt.answer) > 0 {
				t.Errorf("answer:\n got %q\nwant %q", got, tt.answer)
			}
		})
	}
}
