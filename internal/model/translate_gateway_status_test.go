package model

import (
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The Gateway and listener statuses of the Gateway API conformance tests
// GatewayListenerUnsupportedProtocol, GatewayInvalidRouteKind,
// TLSRouteListenerPassthroughSupportedKinds, GatewayWithAttachedRoutes (unresolved
// refs), GatewayInvalidParametersRef and GatewayStaticAddresses, as model tables.
func TestGatewayStatusConformance(t *testing.T) {
	kinds := func(l gatewayv1.Listener, ks ...string) gatewayv1.Listener {
		l.AllowedRoutes = &gatewayv1.AllowedRoutes{}
		for _, k := range ks {
			l.AllowedRoutes.Kinds = append(l.AllowedRoutes.Kinds, gatewayv1.RouteGroupKind{Kind: gatewayv1.Kind(k)})
		}
		return l
	}
	udp := gatewayv1.Listener{Name: "invalid", Port: 8080, Protocol: gatewayv1.UDPProtocolType}
	passthrough := gatewayv1.Listener{Name: "tls-passthrough", Port: 443, Protocol: gatewayv1.TLSProtocolType,
		TLS: &gatewayv1.ListenerTLSConfig{Mode: gwPtr(gatewayv1.TLSModePassthrough)}}
	https := gatewayv1.Listener{Name: "tls", Port: 443, Protocol: gatewayv1.HTTPSProtocolType,
		TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "does-not-exist"}}}}
	withAddrs := func(g *gatewayv1.Gateway, addrs ...gatewayv1.GatewaySpecAddress) *gatewayv1.Gateway {
		g.Spec.Addresses = addrs
		return g
	}
	ip := func(v string) gatewayv1.GatewaySpecAddress { return gatewayv1.GatewaySpecAddress{Value: v} }
	type listenerWant struct {
		kinds    []string
		conds    [][3]string
		attached int32
	}
	tests := []struct {
		name      string
		gw        *gatewayv1.Gateway
		routes    []*gatewayv1.HTTPRoute
		gwConds   [][3]string
		listeners []listenerWant
		served    int // sections served
	}{
		{name: "only an unsupported protocol", gw: gw("gw", udp),
			gwConds:   [][3]string{{"Accepted", "False", "ListenersNotValid"}, {"Programmed", "False", "Invalid"}},
			listeners: []listenerWant{{kinds: []string{}, conds: [][3]string{{"Accepted", "False", "UnsupportedProtocol"}}}}},
		{name: "a supported and an unsupported protocol", gw: gw("gw", httpListener("http", 80, ""), udp),
			gwConds: [][3]string{{"Accepted", "True", "ListenersNotValid"}, {"Programmed", "True", "Programmed"}},
			listeners: []listenerWant{
				{kinds: []string{"HTTPRoute", "GRPCRoute"}, conds: [][3]string{{"Accepted", "True", "Accepted"}}},
				{kinds: []string{}, conds: [][3]string{{"Accepted", "False", "UnsupportedProtocol"}}}},
			served: 1},
		{name: "only an invalid route kind", gw: gw("gw", kinds(httpListener("http", 80, ""), "FooRoute")),
			gwConds:   [][3]string{{"Accepted", "True", "Accepted"}},
			listeners: []listenerWant{{kinds: []string{}, conds: [][3]string{{"ResolvedRefs", "False", "InvalidRouteKinds"}, {"Programmed", "False", "Invalid"}}}}},
		{name: "a valid and an invalid route kind", gw: gw("gw", kinds(httpListener("http", 80, ""), "HTTPRoute", "FooRoute")),
			routes:    []*gatewayv1.HTTPRoute{routeIn("default", "r")},
			gwConds:   [][3]string{{"Accepted", "True", "Accepted"}, {"Programmed", "True", "Programmed"}},
			listeners: []listenerWant{{kinds: []string{"HTTPRoute"}, conds: [][3]string{{"ResolvedRefs", "False", "InvalidRouteKinds"}, {"Programmed", "True", "Programmed"}}, attached: 1}},
			served:    1},
		{name: "TLS passthrough with TLSRoute and TCPRoute", gw: gw("gw", kinds(passthrough, "TLSRoute", "TCPRoute")),
			listeners: []listenerWant{{kinds: []string{"TLSRoute"}, conds: [][3]string{{"ResolvedRefs", "False", "InvalidRouteKinds"}}}},
			served:    1},
		{name: "missing certificate: routes still attach and count", gw: gw("gw", kinds(https, "HTTPRoute")),
			routes:    []*gatewayv1.HTTPRoute{routeIn("default", "r")},
			gwConds:   [][3]string{{"Accepted", "True", "Accepted"}, {"Programmed", "False", "Invalid"}},
			listeners: []listenerWant{{kinds: []string{"HTTPRoute"}, conds: [][3]string{{"Accepted", "True", "Accepted"}, {"ResolvedRefs", "False", "InvalidCertificateRef"}, {"Programmed", "False", "Invalid"}}, attached: 1}}},
		{name: "invalid infrastructure.parametersRef", gw: func() *gatewayv1.Gateway {
			g := gw("gw", httpListener("http", 80, ""))
			g.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{ParametersRef: &gatewayv1.LocalParametersReference{Group: "invalid.io", Kind: "InvalidParameters", Name: "invalid"}}
			return g
		}(),
			gwConds:   [][3]string{{"Accepted", "False", "InvalidParameters"}, {"Programmed", "False", "Invalid"}},
			listeners: []listenerWant{{kinds: []string{"HTTPRoute", "GRPCRoute"}, conds: [][3]string{{"Programmed", "False", "Invalid"}}}}},
		{name: "an address type weir does not support", gw: withAddrs(gw("gw", httpListener("http", 8080, "")),
			gatewayv1.GatewaySpecAddress{Type: gwPtr(gatewayv1.AddressType("test/fake-invalid-type")), Value: "fake address teehee!"}, ip("127.0.0.20")),
			gwConds: [][3]string{{"Accepted", "False", "UnsupportedAddress"}, {"Programmed", "False", "Invalid"}}},
		{name: "a Hostname address", gw: withAddrs(gw("gw", httpListener("http", 8080, "")),
			gatewayv1.GatewaySpecAddress{Type: gwPtr(gatewayv1.HostnameAddressType), Value: "gw.example.com"}),
			gwConds: [][3]string{{"Accepted", "False", "UnsupportedAddress"}}},
		{name: "an address weir cannot use (a second one)", gw: withAddrs(gw("gw", httpListener("http", 8080, "")), ip("127.0.0.20"), ip("127.0.0.21")),
			gwConds: [][3]string{{"Accepted", "True", "Accepted"}, {"Programmed", "False", "AddressNotUsable"}}},
		{name: "one usable address", gw: withAddrs(gw("gw", httpListener("http", 8080, "")), ip("127.0.0.20")),
			gwConds: [][3]string{{"Accepted", "True", "Accepted"}, {"Programmed", "True", "Programmed"}},
			served:  1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{tc.gw}, HTTPRoutes: tc.routes}
			cfg := translateForTest(objs, gwSvc("default", "web", 80, ""))
			st := cfg.FindStatus("Gateway", "default", "gw")
			for _, c := range tc.gwConds {
				if !hasCond(st.Conditions, c[0], metav1.ConditionStatus(c[1]), c[2]) {
					t.Errorf("Gateway: want %s=%s/%s, got %+v", c[0], c[1], c[2], st.Conditions)
				}
			}
			for i, want := range tc.listeners {
				ls := st.Listeners[i]
				var got []string
				for _, k := range ls.SupportedKinds {
					got = append(got, string(k.Kind))
					if k.Group == nil || *k.Group != gatewayv1.GroupName {
						t.Errorf("listener %s: supported kind %s without the Gateway API group", ls.Name, k.Kind)
					}
				}
				if ls.SupportedKinds == nil || len(got) != len(want.kinds) || (len(got) > 0 && !equalStrings(got, want.kinds)) {
					t.Errorf("listener %s: supportedKinds %v, want %v", ls.Name, got, want.kinds)
				}
				for _, c := range want.conds {
					if !hasCond(ls.Conditions, c[0], metav1.ConditionStatus(c[1]), c[2]) {
						t.Errorf("listener %s: want %s=%s/%s, got %+v", ls.Name, c[0], c[1], c[2], ls.Conditions)
					}
				}
				resolved := 0
				for _, c := range ls.Conditions {
					if c.Type == "ResolvedRefs" {
						resolved++
					}
				}
				if resolved > 1 {
					t.Errorf("listener %s: %d ResolvedRefs conditions", ls.Name, resolved)
				}
				if ls.AttachedRoutes != want.attached {
					t.Errorf("listener %s: attachedRoutes %d, want %d", ls.Name, ls.AttachedRoutes, want.attached)
				}
			}
			served := 0
			for _, l := range cfg.Listeners {
				served += len(l.Sections)
			}
			if served != tc.served {
				t.Errorf("%d sections served, want %d", served, tc.served)
			}
			for _, r := range tc.routes {
				if c := routeAccepted(t, cfg, "HTTPRoute", r.Namespace, r.Name); c.Status != metav1.ConditionTrue {
					t.Errorf("HTTPRoute %s: %+v, want Accepted (not NoMatchingParent)", r.Name, c)
				}
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A route to a headless Service goes to its endpoints (HTTPRouteServiceTypes).
func TestGatewayHeadlessBackend(t *testing.T) {
	svc := gwSvc("default", "web", 80, "")
	svc.Headless = true
	objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{gw("gw", httpListener("http", 80, ""))},
		HTTPRoutes: []*gatewayv1.HTTPRoute{routeIn("default", "r")}}
	cfg := translateForTest(objs, svc)
	wantParentCond(t, cfg, "r", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
	m := cfg.Listeners[0].Sections[0].Hosts[0].Matches[0]
	if b := m.Rule.Backends[0]; b.Invalid || len(b.Endpoints) != 1 || b.Endpoints[0].Port != 8080 {
		t.Errorf("backend %+v, want the Service's endpoint at 8080", b)
	}
}

// Ingress wildcard hosts cover one DNS label; Gateway API ones one or more.
func TestIngressWildcardOneLabel(t *testing.T) {
	for _, tc := range []struct {
		pattern, host  string
		oneLabel, want bool
	}{
		{"*.foo.com", "bar.foo.com", true, true},
		{"*.foo.com", "baz.bar.foo.com", true, false},
		{"*.foo.com", "foo.com", true, false},
		{"*.foo.com", "baz.bar.foo.com", false, true},
		{"*.foo.com", "xfoo.com", false, false},
		{"", "any.example", true, true},
		{"a.foo.com", "a.foo.com", true, true},
	} {
		if got := HostMatches(tc.pattern, tc.host, tc.oneLabel); got != tc.want {
			t.Errorf("HostMatches(%q, %q, %v) = %v", tc.pattern, tc.host, tc.oneLabel, got)
		}
	}
	pt := networkingv1.PathTypePrefix
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "wild"},
		Spec: networkingv1.IngressSpec{IngressClassName: gwPtr(IngressClassName), Rules: []networkingv1.IngressRule{{Host: "*.foo.com",
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
				Path: "/", PathType: &pt, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}}}}
	objs := &Objects{Ingresses: []*networkingv1.Ingress{ing}, IngressClasses: []*networkingv1.IngressClass{{ObjectMeta: metav1.ObjectMeta{Name: IngressClassName}, Spec: networkingv1.IngressClassSpec{Controller: IngressControllerName}}}}
	cfg := translateForTest(objs, gwSvc("default", "web", 80, ""))
	if cfg == nil || len(cfg.Listeners) == 0 {
		t.Fatal("no Ingress listener")
	}
	found := false
	for _, vh := range cfg.Listeners[0].Sections[0].Hosts {
		if vh.Hostname == "*.foo.com" {
			found = true
			if !vh.OneLabel {
				t.Errorf("Ingress virtual host %s covers more than one label", vh.Hostname)
			}
		}
	}
	if !found {
		t.Errorf("no virtual host *.foo.com in %+v", cfg.Listeners[0].Sections[0].Hosts)
	}
}
