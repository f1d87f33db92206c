package model

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// ownService is the Service weir's leader makes for Gateway default/gwName: ports maps
// listener port to targetPort.
func ownService(gwName, clusterIP string, ports map[int32]int32) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "weir-system", Name: "weir-gw-default-" + gwName,
		Labels:      map[string]string{GatewayServiceManagedByLabel: GatewayServiceManagedBy},
		Annotations: map[string]string{GatewayOwnerAnnotation: "default/" + gwName}},
		Spec: corev1.ServiceSpec{ClusterIP: clusterIP, ClusterIPs: []string{clusterIP}}}
	for p, tp := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Port: p, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(tp)})
	}
	return svc
}

func gwStatus(t *testing.T, cfg *GatewayConfig, name string) *ObjectStatus {
	t.Helper()
	s := cfg.FindStatus("Gateway", "default", name)
	if s == nil {
		t.Fatalf("no status for Gateway %s", name)
	}
	return s
}

func listenerAddrs(cfg *GatewayConfig) []string {
	var out []string
	for _, l := range cfg.Listeners {
		if l.Ingress == "" {
			out = append(out, l.Address)
		}
	}
	return out
}

// TestGatewayOwnServices checks the addresses of Gateways in a cluster: each Gateway
// binds the targetPorts of its own Service, so Gateways with the same listener port are
// all served, conflicts are found among one Gateway's listeners only, and a Gateway
// without its Service waits for it.
func TestGatewayOwnServices(t *testing.T) {
	three := []*gatewayv1.Gateway{
		gw("same-namespace", httpListener("http", 80, "")),
		gw("all-namespaces", httpListener("http", 80, "")),
		gw("backend-namespaces", httpListener("http", 80, "")),
	}
	svcs := []*corev1.Service{
		ownService("same-namespace", "10.96.0.10", map[int32]int32{80: 20000}),
		ownService("all-namespaces", "10.96.0.11", map[int32]int32{80: 20001}),
		ownService("backend-namespaces", "10.96.0.12", map[int32]int32{80: 20002}),
	}

	t.Run("three Gateways on port 80", func(t *testing.T) {
		cfg := translateForTest(&Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: three,
			GatewayServicesManaged: true, GatewayServices: svcs})
		if !cfg.ServiceAddresses {
			t.Fatal("ServiceAddresses not set")
		}
		if got, want := listenerAddrs(cfg), []string{":20000", ":20001", ":20002"}; !slices.Equal(got, want) {
			t.Fatalf("listeners %v, want %v", got, want)
		}
		for i, g := range three {
			s := gwStatus(t, cfg, g.Name)
			if !hasCond(s.Conditions, "Accepted", metav1.ConditionTrue, "Accepted") || !hasCond(s.Conditions, "Programmed", metav1.ConditionTrue, "Programmed") {
				t.Errorf("%s: conditions %+v", g.Name, s.Conditions)
			}
			if !hasCond(s.Listeners[0].Conditions, "Conflicted", metav1.ConditionFalse, "NoConflicts") {
				t.Errorf("%s: listener conditions %+v", g.Name, s.Listeners[0].Conditions)
			}
			if len(s.Addresses) != 1 || s.Addresses[0].Value != svcs[i].Spec.ClusterIP || *s.Addresses[0].Type != gatewayv1.IPAddressType {
				t.Errorf("%s: addresses %+v, want %s", g.Name, s.Addresses, svcs[i].Spec.ClusterIP)
			}
		}
	})

	t.Run("load balancer ingress wins over the ClusterIP", func(t *testing.T) {
		svc := ownService("same-namespace", "10.96.0.10", map[int32]int32{80: 20000})
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}, {Hostname: "lb.example.com"}}
		cfg := translateForTest(&Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: three[:1],
			GatewayServicesManaged: true, GatewayServices: []*corev1.Service{svc}})
		s := gwStatus(t, cfg, "same-namespace")
		if len(s.Addresses) != 2 || s.Addresses[0].Value != "203.0.113.7" || s.Addresses[1].Value != "lb.example.com" ||
			*s.Addresses[1].Type != gatewayv1.HostnameAddressType {
			t.Fatalf("addresses %+v", s.Addresses)
		}
	})

	t.Run("conflicts within one Gateway", func(t *testing.T) {
		g := gw("gw", httpListener("a", 80, ""), httpListener("b", 80, ""), httpListener("c", 80, "c.example.com"))
		tls := gatewayv1.Listener{Name: "d", Port: 80, Protocol: gatewayv1.TLSProtocolType,
			TLS: &gatewayv1.ListenerTLSConfig{Mode: gwPtr(gatewayv1.TLSModePassthrough)}}
		g.Spec.Listeners = append(g.Spec.Listeners, tls)
		other := gw("other", httpListener("a", 80, ""))
		objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{g, other},
			GatewayServicesManaged: true, GatewayServices: []*corev1.Service{
				ownService("gw", "10.96.0.20", map[int32]int32{80: 20005}), ownService("other", "10.96.0.21", map[int32]int32{80: 20006})}}
		cfg := translateForTest(objs)
		s := gwStatus(t, cfg, "gw")
		want := []struct{ typ, reason string }{
			{"Programmed", "Programmed"}, {"Conflicted", "HostnameConflict"}, {"Programmed", "Programmed"}, {"Conflicted", "ProtocolConflict"}}
		for i, w := range want {
			if !hasCond(s.Listeners[i].Conditions, w.typ, condStatus(w.typ != "Programmed" || w.reason == "Programmed"), w.reason) {
				t.Errorf("listener %s: want %s/%s, got %+v", s.Listeners[i].Name, w.typ, w.reason, s.Listeners[i].Conditions)
			}
		}
		if !hasCond(gwStatus(t, cfg, "other").Listeners[0].Conditions, "Programmed", metav1.ConditionTrue, "Programmed") {
			t.Errorf("other: %+v", gwStatus(t, cfg, "other").Listeners[0].Conditions)
		}
		if got, want := listenerAddrs(cfg), []string{":20005", ":20006"}; !slices.Equal(got, want) {
			t.Fatalf("listeners %v, want %v", got, want)
		}
	})

	t.Run("a Gateway waits for its Service", func(t *testing.T) {
		// The conflict is found before the Service exists.
		g := gw("gw", httpListener("a", 80, ""), httpListener("b", 80, ""))
		cfg := translateForTest(&Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{g},
			GatewayServicesManaged: true})
		s := gwStatus(t, cfg, "gw")
		if !hasCond(s.Conditions, "Accepted", metav1.ConditionTrue, "ListenersNotValid") ||
			!hasCond(s.Conditions, "Programmed", metav1.ConditionFalse, "AddressNotAssigned") {
			t.Errorf("conditions %+v", s.Conditions)
		}
		if !hasCond(s.Listeners[0].Conditions, "Programmed", metav1.ConditionFalse, "Pending") ||
			!hasCond(s.Listeners[0].Conditions, "Accepted", metav1.ConditionTrue, "Accepted") {
			t.Errorf("listener a: %+v", s.Listeners[0].Conditions)
		}
		if !hasCond(s.Listeners[1].Conditions, "Conflicted", metav1.ConditionTrue, "HostnameConflict") {
			t.Errorf("listener b: %+v", s.Listeners[1].Conditions)
		}
		if len(s.Addresses) != 0 || len(listenerAddrs(cfg)) != 0 {
			t.Errorf("addresses %+v, listeners %v", s.Addresses, listenerAddrs(cfg))
		}
	})

	t.Run("a listener whose port the Service lacks waits", func(t *testing.T) {
		g := gw("gw", httpListener("a", 80, ""), httpListener("b", 8080, ""))
		cfg := translateForTest(&Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{g},
			GatewayServicesManaged: true, GatewayServices: []*corev1.Service{ownService("gw", "10.96.0.20", map[int32]int32{80: 20005})}})
		s := gwStatus(t, cfg, "gw")
		if !hasCond(s.Listeners[0].Conditions, "Programmed", metav1.ConditionTrue, "Programmed") ||
			!hasCond(s.Listeners[1].Conditions, "Programmed", metav1.ConditionFalse, "Pending") {
			t.Errorf("listeners %+v", s.Listeners)
		}
	})

	t.Run("two Services with one targetPort serve only the older Gateway", func(t *testing.T) {
		a, b := gw("a", httpListener("http", 80, "")), gw("b", httpListener("http", 80, ""))
		b.CreationTimestamp = metav1.Unix(10, 0)
		cfg := translateForTest(&Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{a, b},
			GatewayServicesManaged: true, GatewayServices: []*corev1.Service{
				ownService("a", "10.96.0.20", map[int32]int32{80: 20005}), ownService("b", "10.96.0.21", map[int32]int32{80: 20005})}})
		if !hasCond(gwStatus(t, cfg, "a").Conditions, "Programmed", metav1.ConditionTrue, "Programmed") ||
			!hasCond(gwStatus(t, cfg, "b").Listeners[0].Conditions, "Programmed", metav1.ConditionFalse, "Invalid") {
			t.Errorf("a %+v, b %+v", gwStatus(t, cfg, "a").Conditions, gwStatus(t, cfg, "b").Listeners[0].Conditions)
		}
	})

	t.Run("a Service that does not name its Gateway is ignored", func(t *testing.T) {
		svc := ownService("gw", "10.96.0.20", map[int32]int32{80: 20005})
		delete(svc.Labels, GatewayServiceManagedByLabel)
		cfg := translateForTest(&Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{gw("gw", httpListener("a", 80, ""))},
			GatewayServicesManaged: true, GatewayServices: []*corev1.Service{svc}})
		if !hasCond(gwStatus(t, cfg, "gw").Conditions, "Programmed", metav1.ConditionFalse, "AddressNotAssigned") {
			t.Errorf("%+v", gwStatus(t, cfg, "gw").Conditions)
		}
	})

	t.Run("spec.addresses cannot be requested", func(t *testing.T) {
		g := gw("gw", httpListener("a", 80, ""))
		g.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: "10.0.0.9"}}
		objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{g}, GatewayServicesManaged: true}
		cfg := translateForTest(objs)
		if !hasCond(gwStatus(t, cfg, "gw").Conditions, "Programmed", metav1.ConditionFalse, "AddressNotUsable") {
			t.Errorf("%+v", gwStatus(t, cfg, "gw").Conditions)
		}
		if got := GatewaysNeedingServices(objs); len(got) != 0 {
			t.Errorf("GatewaysNeedingServices: %+v", got)
		}
	})

	t.Run("file mode binds the shared address", func(t *testing.T) {
		cfg := translateForTest(&Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: three, GatewayServices: svcs})
		if cfg.ServiceAddresses {
			t.Fatal("ServiceAddresses set in file mode")
		}
		if got, want := listenerAddrs(cfg), []string{":80"}; !slices.Equal(got, want) {
			t.Fatalf("listeners %v, want %v", got, want)
		}
		// The oldest (then first by name) keeps port 80.
		if !hasCond(gwStatus(t, cfg, "same-namespace").Listeners[0].Conditions, "Conflicted", metav1.ConditionTrue, "HostnameConflict") {
			t.Errorf("%+v", gwStatus(t, cfg, "same-namespace").Listeners[0].Conditions)
		}
	})
}

func condStatus(ok bool) metav1.ConditionStatus {
	if ok {
		return metav1.ConditionTrue
	}
	return metav1.ConditionFalse
}

// TestGatewaysNeedingServices checks which Gateways get a Service and with which ports.
func TestGatewaysNeedingServices(t *testing.T) {
	other := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/gw"}}
	multi := gw("multi", httpListener("a", 8080, ""), httpListener("b", 80, "a.example.com"), httpListener("c", 80, "b.example.com"),
		gatewayv1.Listener{Name: "tcp", Port: 9000, Protocol: gatewayv1.TCPProtocolType})
	foreign := gw("foreign", httpListener("a", 80, ""))
	foreign.Spec.GatewayClassName = "other"
	params := gw("params", httpListener("a", 80, ""))
	params.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{ParametersRef: &gatewayv1.LocalParametersReference{Kind: "ConfigMap", Name: "x"}}
	tcpOnly := gw("tcp-only", gatewayv1.Listener{Name: "tcp", Port: 9000, Protocol: gatewayv1.TCPProtocolType})
	got := GatewaysNeedingServices(&Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass(), other},
		Gateways: []*gatewayv1.Gateway{multi, foreign, params, tcpOnly, gw("plain", httpListener("a", 80, ""))}})
	want := []GatewayPorts{{Namespace: "default", Name: "multi", Ports: []int32{80, 8080}}, {Namespace: "default", Name: "plain", Ports: []int32{80}}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].Name != want[i].Name || !slices.Equal(got[i].Ports, want[i].Ports) {
			t.Errorf("got %+v, want %+v", got[i], want[i])
		}
	}
}
