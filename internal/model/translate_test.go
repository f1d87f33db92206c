package model

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Builders for the table tests: objects in, snapshot out.

const testNS = "ns"

// thisNode is the node the tests translate for.
var thisNode = Node{Name: "node-a", Zone: "zone-a"}

func service(name string, opts ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  "10.96.0.10",
			ClusterIPs: []string{"10.96.0.10"},
			Ports:      []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func withType(t corev1.ServiceType) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.Type = t
		if t == corev1.ServiceTypeNodePort || t == corev1.ServiceTypeLoadBalancer {
			for i := range s.Spec.Ports {
				s.Spec.Ports[i].NodePort = 30000 + int32(i)
			}
		}
	}
}

func internalLocal(s *corev1.Service) {
	s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
}

func externalLocal(s *corev1.Service) {
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
}

func distribution(d string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.TrafficDistribution = &d }
}

func annotate(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

func withClusterIPs(ips ...string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.ClusterIP = ips[0]
		s.Spec.ClusterIPs = ips
	}
}

func withPorts(ports ...corev1.ServicePort) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.Ports = ports }
}

// epOpt modifies an endpoint.
type epOpt func(*discoveryv1.Endpoint)

func ep(addr string, opts ...epOpt) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: ptr("node-b")}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// conds sets the three conditions explicitly.
func conds(ready, serving, terminating bool) epOpt {
	return func(e *discoveryv1.Endpoint) {
		e.Conditions = discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}
	}
}

var (
	local       epOpt = func(e *discoveryv1.Endpoint) { e.NodeName = ptr(thisNode.Name) }
	notReady          = conds(false, false, false)
	terminating       = conds(false, true, true) // serving and terminating
	// gone is terminating and no longer serving: never used.
	gone = conds(false, false, true)
)

func zoneHints(zones ...string) epOpt {
	return func(e *discoveryv1.Endpoint) {
		if e.Hints == nil {
			e.Hints = &discoveryv1.EndpointHints{}
		}
		for _, z := range zones {
			e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: z})
		}
	}
}

func nodeHints(nodes ...string) epOpt {
	return func(e *discoveryv1.Endpoint) {
		if e.Hints == nil {
			e.Hints = &discoveryv1.EndpointHints{}
		}
		for _, n := range nodes {
			e.Hints.ForNodes = append(e.Hints.ForNodes, discoveryv1.ForNode{Name: n})
		}
	}
}

func hostname(h string) epOpt { return func(e *discoveryv1.Endpoint) { e.Hostname = &h } }

func slicePort(name string, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: ptr(corev1.ProtocolTCP)}
}

// endpointSlice builds a slice for Service svc; its address type follows the first
// endpoint's address. ports nil means one port "http" 8080.
func endpointSlice(svc, name string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	if ports == nil {
		ports = []discoveryv1.EndpointPort{slicePort("http", 8080)}
	}
	at := discoveryv1.AddressTypeIPv4
	if len(eps) > 0 {
		if a, err := netip.ParseAddr(eps[0].Addresses[0]); err == nil && a.Is6() {
			at = discoveryv1.AddressTypeIPv6
		}
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: testNS, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: at,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func withWeight(s *discoveryv1.EndpointSlice, w string) *discoveryv1.EndpointSlice {
	s.Annotations = map[string]string{WeightAnnotation: w}
	return s
}

func addrPorts(eps []Endpoint) []string {
	out := []string{}
	for _, e := range eps {
		out = append(out, e.AddrPort().String())
	}
	return out
}

func mustService(t *testing.T, snap *Snapshot, name string) *Service {
	t.Helper()
	s := snap.Service(ServiceKey{Namespace: testNS, Name: name})
	if s == nil {
		t.Fatalf("service %s/%s missing from snapshot", testNS, name)
	}
	return s
}

func TestTranslateSortsAndIsDeterministic(t *testing.T) {
	var objs Objects
	for _, n := range []string{"web", "api", "db", "cache", "auth"} {
		objs.Services = append(objs.Services, service(n))
		objs.EndpointSlices = append(objs.EndpointSlices,
			endpointSlice(n, n+"-1", nil, ep("10.0.0.2"), ep("10.0.0.1")),
			endpointSlice(n, n+"-2", nil, ep("10.0.0.3", terminating), ep("10.0.0.1", notReady)))
	}
	other := service("web")
	other.Namespace = "a-first"
	objs.Services = append(objs.Services, other)

	want := Translate(&objs, thisNode)
	var keys []string
	for _, s := range want.Services {
		keys = append(keys, s.Key.String())
	}
	wantKeys := []string{"a-first/web", "ns/api", "ns/auth", "ns/cache", "ns/db", "ns/web"}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Fatalf("services = %v, want %v", keys, wantKeys)
	}
	if got := addrPorts(mustService(t, want, "web").Ports[0].Endpoints); !reflect.DeepEqual(got, []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"}) {
		t.Fatalf("endpoints = %v", got)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := objs
		shuffled.Services = append([]*corev1.Service(nil), objs.Services...)
		shuffled.EndpointSlices = append([]*discoveryv1.EndpointSlice(nil), objs.EndpointSlices...)
		rng.Shuffle(len(shuffled.Services), func(i, j int) {
			shuffled.Services[i], shuffled.Services[j] = shuffled.Services[j], shuffled.Services[i]
		})
		rng.Shuffle(len(shuffled.EndpointSlices), func(i, j int) {
			shuffled.EndpointSlices[i], shuffled.EndpointSlices[j] = shuffled.EndpointSlices[j], shuffled.EndpointSlices[i]
		})
		if got := Translate(&shuffled, thisNode); !reflect.DeepEqual(got, want) {
			t.Fatal("Translate of the same objects in another order gave another Snapshot")
		}
	}
}

func TestTranslateDuplicateServiceKeepsFirst(t *testing.T) {
	first := service("web")
	second := service("web", withClusterIPs("10.96.0.99"))
	snap := Translate(&Objects{Services: []*corev1.Service{first, second}}, thisNode)
	if len(snap.Services) != 1 {
		t.Fatalf("got %d services, want 1", len(snap.Services))
	}
	if got := snap.Services[0].ClusterIPs[0].String(); got != "10.96.0.10" {
		t.Fatalf("kept ClusterIP %s, want the first object's 10.96.0.10", got)
	}
}

func TestTranslateEmpty(t *testing.T) {
	for _, objs := range []*Objects{nil, {}} {
		snap := Translate(objs, Node{})
		if snap == nil || len(snap.Services) != 0 {
			t.Fatalf("Translate(%v) = %+v, want an empty Snapshot", objs, snap)
		}
	}
}

func TestSnapshotServiceLookup(t *testing.T) {
	var objs Objects
	for _, n := range []string{"a", "b", "c", "d"} {
		objs.Services = append(objs.Services, service(n))
	}
	snap := Translate(&objs, thisNode)
	tests := []struct {
		key  ServiceKey
		want bool
	}{
		{ServiceKey{testNS, "a"}, true},
		{ServiceKey{testNS, "d"}, true},
		{ServiceKey{testNS, "e"}, false},
		{ServiceKey{"other", "a"}, false},
		{ServiceKey{}, false},
	}
	for _, tc := range tests {
		got := snap.Service(tc.key)
		if (got != nil) != tc.want || (got != nil && got.Key != tc.key) {
			t.Errorf("Service(%v) = %v, want found=%v", tc.key, got, tc.want)
		}
	}
	var nilSnap *Snapshot
	if nilSnap.Service(ServiceKey{testNS, "a"}) != nil {
		t.Error("nil Snapshot found a Service")
	}
}
