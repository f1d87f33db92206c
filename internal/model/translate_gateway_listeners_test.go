package model

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// routeIn is an HTTPRoute named name in namespace ns, parented to default/gw.
func routeIn(ns, name string) *gatewayv1.HTTPRoute {
	r := route(name, nil, gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1)}})
	r.Namespace = ns
	r.Spec.ParentRefs[0].Namespace = gwPtr(gatewayv1.Namespace("default"))
	return r
}

func namespace(name string, lbls map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
}

func selectorListener(sel *metav1.LabelSelector) gatewayv1.Listener {
	l := httpListener("http", 8080, "")
	l.AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{
		From: gwPtr(gatewayv1.NamespacesFromSelector), Selector: sel}}
	return l
}

// routeAccepted returns the Accepted condition of route ns/name's first parent.
func routeAccepted(t *testing.T, cfg *GatewayConfig, kind, ns, name string) metav1.Condition {
	t.Helper()
	s := cfg.FindStatus(kind, ns, name)
	if s == nil || len(s.Parents) == 0 {
		t.Fatalf("no parent status for %s %s/%s", kind, ns, name)
	}
	for _, c := range s.Parents[0].Conditions {
		if c.Type == "Accepted" {
			return c
		}
	}
	t.Fatalf("%s %s/%s has no Accepted condition: %+v", kind, ns, name, s.Parents[0].Conditions)
	return metav1.Condition{}
}

// TestGatewayNamespaceSelector checks allowedRoutes.namespaces.from: Selector against
// the routes' namespace labels, with and without Namespace objects.
func TestGatewayNamespaceSelector(t *testing.T) {
	teamA := &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}
	tests := []struct {
		name       string
		selector   *metav1.LabelSelector
		namespaces []*corev1.Namespace
		// admitted and refused are route namespaces (each has a route named "r").
		admitted, refused []string
		// invalid: the listener must be refused with this message part.
		invalid bool
	}{
		{name: "match labels", selector: teamA,
			namespaces: []*corev1.Namespace{namespace("apps", map[string]string{"team": "a"}), namespace("shop", map[string]string{"team": "b"})},
			admitted:   []string{"apps"}, refused: []string{"shop", "default"}},
		{name: "namespace without an object has only its name label", selector: teamA,
			refused: []string{"apps"}},
		{name: "metadata.name label without Namespace objects",
			selector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "apps"}},
			admitted: []string{"apps"}, refused: []string{"shop", "default"}},
		{name: "match expressions In",
			selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: []string{"apps", "shop"}}}},
			admitted: []string{"apps", "shop"}, refused: []string{"default", "other"}},
		{name: "match expressions NotIn and Exists",
			selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "team", Operator: metav1.LabelSelectorOpExists},
				{Key: "env", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"prod"}}}},
			namespaces: []*corev1.Namespace{namespace("apps", map[string]string{"team": "a"}),
				namespace("shop", map[string]string{"team": "b", "env": "prod"}), namespace("other", nil)},
			admitted: []string{"apps"}, refused: []string{"shop", "other"}},
		{name: "the API server's name label cannot be forged",
			selector:   &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "apps"}},
			namespaces: []*corev1.Namespace{namespace("shop", map[string]string{"kubernetes.io/metadata.name": "apps"})},
			admitted:   []string{"apps"}, refused: []string{"shop"}},
		{name: "empty selector admits every namespace", selector: &metav1.LabelSelector{},
			admitted: []string{"apps", "default"}},
		{name: "invalid operator", invalid: true,
			selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Bogus"}}},
			refused:  []string{"apps"}},
		{name: "invalid label value", invalid: true,
			selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "not valid!"}},
			refused:  []string{"apps"}},
		{name: "Selector without a selector", invalid: true, refused: []string{"apps"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()},
				Gateways:   []*gatewayv1.Gateway{gw("gw", selectorListener(tc.selector))},
				Namespaces: tc.namespaces}
			for _, ns := range append(append([]string{}, tc.admitted...), tc.refused...) {
				objs.HTTPRoutes = append(objs.HTTPRoutes, routeIn(ns, "r"))
			}
			cfg := translateForTest(objs, gwSvc("apps", "web", 80, ""), gwSvc("shop", "web", 80, ""), gwSvc("default", "web", 80, ""))
			ls := cfg.FindStatus("Gateway", "default", "gw").Listeners[0]
			if tc.invalid {
				if !hasCond(ls.Conditions, "Accepted", metav1.ConditionFalse, "UnsupportedValue") ||
					!hasCond(ls.Conditions, "Programmed", metav1.ConditionFalse, "Invalid") {
					t.Fatalf("invalid selector: listener conditions %+v", ls.Conditions)
				}
				if len(cfg.Listeners) != 0 {
					t.Fatalf("a listener with an invalid selector is served: %+v", cfg.Listeners)
				}
			} else if !hasCond(ls.Conditions, "Accepted", metav1.ConditionTrue, "Accepted") {
				t.Fatalf("listener conditions %+v", ls.Conditions)
			}
			for _, ns := range tc.admitted {
				if c := routeAccepted(t, cfg, "HTTPRoute", ns, "r"); c.Status != metav1.ConditionTrue {
					t.Errorf("route in %s: %+v, want admitted", ns, c)
				}
				if findMatch(cfg, ns+"/r/0") == nil {
					t.Errorf("route in %s admitted but not served", ns)
				}
			}
			for _, ns := range tc.refused {
				c := routeAccepted(t, cfg, "HTTPRoute", ns, "r")
				want := "NotAllowedByListeners"
				if tc.invalid {
					want = "NoMatchingParent"
				}
				if c.Status != metav1.ConditionFalse || c.Reason != want {
					t.Errorf("route in %s: %+v, want Accepted=False/%s", ns, c, want)
				}
				if findMatch(cfg, ns+"/r/0") != nil {
					t.Errorf("route in %s refused but served", ns)
				}
			}
			if got, want := ls.AttachedRoutes, int32(len(tc.admitted)); got != want {
				t.Errorf("attachedRoutes = %d, want %d", got, want)
			}
		})
	}
}

// TestGatewayTLSTerminate checks TLS listeners in mode Terminate: certificates,
// conditions, and their mix with Passthrough on one port.
func TestGatewayTLSTerminate(t *testing.T) {
	crt, key := testCertPEM(t, "db.example.com")
	secrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db-cert"}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": crt, "tls.key": key}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "certs", Name: "db-cert"}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": crt, "tls.key": key}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "broken"}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": crt, "tls.key": []byte("nope")}},
	}
	tlsListener := func(name, host string, mode *gatewayv1.TLSModeType, refs ...gatewayv1.SecretObjectReference) gatewayv1.Listener {
		l := gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: 8443, Protocol: gatewayv1.TLSProtocolType,
			TLS: &gatewayv1.ListenerTLSConfig{Mode: mode, CertificateRefs: refs}}
		if host != "" {
			l.Hostname = gwPtr(gatewayv1.Hostname(host))
		}
		return l
	}
	ref := func(ns, name string) gatewayv1.SecretObjectReference {
		r := gatewayv1.SecretObjectReference{Name: gatewayv1.ObjectName(name)}
		if ns != "" {
			r.Namespace = gwPtr(gatewayv1.Namespace(ns))
		}
		return r
	}
	terminate, passthrough := gwPtr(gatewayv1.TLSModeTerminate), gwPtr(gatewayv1.TLSModePassthrough)
	tlsRoute := func(name, section string, hosts ...gatewayv1.Hostname) *gatewayv1.TLSRoute {
		return &gatewayv1.TLSRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: gatewayv1.TLSRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw", SectionName: gwPtr(gatewayv1.SectionName(section))}}},
			Hostnames:       hosts,
			Rules:           []gatewayv1.TLSRouteRule{{BackendRefs: []gatewayv1.BackendRef{{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: gwPtr(int32(80))}}}}}}}
	}
	type sectionWant struct {
		terminate bool
		certs     int
		routes    int
	}
	tests := []struct {
		name      string
		listeners []gatewayv1.Listener
		grants    []*gatewayv1.ReferenceGrant
		routes    []*gatewayv1.TLSRoute
		// conds are wanted listener conditions (type/status/reason), by listener index.
		conds map[int][][3]string
		// sections are the served sections by name suffix (listener name).
		sections map[string]sectionWant
		// accepted and refused are TLSRoute names.
		accepted, refused []string
	}{
		{name: "terminate with a certificate",
			listeners: []gatewayv1.Listener{tlsListener("tls", "", terminate, ref("", "db-cert"))},
			routes:    []*gatewayv1.TLSRoute{tlsRoute("db", "tls", "db.example.com")},
			conds:     map[int][][3]string{0: {{"Accepted", "True", "Accepted"}, {"ResolvedRefs", "True", "ResolvedRefs"}, {"Programmed", "True", "Programmed"}}},
			sections:  map[string]sectionWant{"tls": {terminate: true, certs: 1, routes: 1}},
			accepted:  []string{"db"}},
		{name: "mode defaults to Terminate",
			listeners: []gatewayv1.Listener{tlsListener("tls", "", nil, ref("", "db-cert"))},
			routes:    []*gatewayv1.TLSRoute{tlsRoute("db", "tls")},
			conds:     map[int][][3]string{0: {{"Programmed", "True", "Programmed"}}},
			sections:  map[string]sectionWant{"tls": {terminate: true, certs: 1, routes: 1}},
			accepted:  []string{"db"}},
		{name: "terminate without certificateRefs",
			listeners: []gatewayv1.Listener{tlsListener("tls", "", terminate)},
			routes:    []*gatewayv1.TLSRoute{tlsRoute("db", "tls")},
			conds:     map[int][][3]string{0: {{"Accepted", "True", "Accepted"}, {"ResolvedRefs", "False", "InvalidCertificateRef"}, {"Programmed", "False", "Invalid"}}},
			// The route attaches (and counts) though the listener is not served, as
			// GatewayWithAttachedRoutes requires.
			accepted: []string{"db"}},
		{name: "terminate with a missing Secret",
			listeners: []gatewayv1.Listener{tlsListener("tls", "", terminate, ref("", "nope"))},
			conds:     map[int][][3]string{0: {{"ResolvedRefs", "False", "InvalidCertificateRef"}, {"Programmed", "False", "Invalid"}}}},
		{name: "terminate with a broken key",
			listeners: []gatewayv1.Listener{tlsListener("tls", "", terminate, ref("", "broken"))},
			conds:     map[int][][3]string{0: {{"ResolvedRefs", "False", "InvalidCertificateRef"}}}},
		{name: "certificate in another namespace without a grant",
			listeners: []gatewayv1.Listener{tlsListener("tls", "", terminate, ref("certs", "db-cert"))},
			conds:     map[int][][3]string{0: {{"ResolvedRefs", "False", "RefNotPermitted"}, {"Programmed", "False", "Invalid"}}}},
		{name: "certificate in another namespace with a grant",
			listeners: []gatewayv1.Listener{tlsListener("tls", "", terminate, ref("certs", "db-cert"))},
			grants: []*gatewayv1.ReferenceGrant{{ObjectMeta: metav1.ObjectMeta{Namespace: "certs", Name: "g"},
				Spec: gatewayv1.ReferenceGrantSpec{From: []gatewayv1.ReferenceGrantFrom{{Group: gatewayGroup, Kind: "Gateway", Namespace: "default"}},
					To: []gatewayv1.ReferenceGrantTo{{Group: "", Kind: "Secret"}}}}},
			conds:    map[int][][3]string{0: {{"ResolvedRefs", "True", "ResolvedRefs"}}},
			sections: map[string]sectionWant{"tls": {terminate: true, certs: 1}}},
		{name: "passthrough ignores certificateRefs",
			listeners: []gatewayv1.Listener{tlsListener("tls", "", passthrough, ref("", "nope"))},
			routes:    []*gatewayv1.TLSRoute{tlsRoute("db", "tls")},
			conds:     map[int][][3]string{0: {{"ResolvedRefs", "True", "ResolvedRefs"}, {"Programmed", "True", "Programmed"}}},
			sections:  map[string]sectionWant{"tls": {routes: 1}},
			accepted:  []string{"db"}},
		{name: "terminate and passthrough share a port by hostname",
			listeners: []gatewayv1.Listener{
				tlsListener("pass", "*.example.com", passthrough),
				tlsListener("term", "db.example.com", terminate, ref("", "db-cert"))},
			routes: []*gatewayv1.TLSRoute{tlsRoute("db", "term", "db.example.com"), tlsRoute("other", "pass", "x.example.com")},
			conds: map[int][][3]string{0: {{"Conflicted", "False", "NoConflicts"}, {"Programmed", "True", "Programmed"}},
				1: {{"Conflicted", "False", "NoConflicts"}, {"Programmed", "True", "Programmed"}}},
			sections: map[string]sectionWant{"term": {terminate: true, certs: 1, routes: 1}, "pass": {routes: 1}},
			accepted: []string{"db", "other"}},
		{name: "terminate refuses HTTPRoute kinds",
			listeners: []gatewayv1.Listener{func() gatewayv1.Listener {
				l := tlsListener("tls", "", terminate, ref("", "db-cert"))
				l.AllowedRoutes = &gatewayv1.AllowedRoutes{Kinds: []gatewayv1.RouteGroupKind{{Kind: "HTTPRoute"}}}
				return l
			}()},
			conds: map[int][][3]string{0: {{"ResolvedRefs", "False", "InvalidRouteKinds"}}}},
		{name: "route hostname outside the listener's",
			listeners: []gatewayv1.Listener{tlsListener("tls", "db.example.com", terminate, ref("", "db-cert"))},
			routes:    []*gatewayv1.TLSRoute{tlsRoute("elsewhere", "tls", "web.other.org")},
			sections:  map[string]sectionWant{"tls": {terminate: true, certs: 1}},
			refused:   []string{"elsewhere"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{gw("gw", tc.listeners...)},
				Secrets: secrets, ReferenceGrants: tc.grants, TLSRoutes: tc.routes,
				// An HTTPRoute never attaches to a TLS listener.
				HTTPRoutes: []*gatewayv1.HTTPRoute{routeIn("default", "http")}}
			cfg := translateForTest(objs, gwSvc("default", "web", 80, ""))
			st := cfg.FindStatus("Gateway", "default", "gw")
			for i, want := range tc.conds {
				for _, c := range want {
					if !hasCond(st.Listeners[i].Conditions, c[0], metav1.ConditionStatus(c[1]), c[2]) {
						t.Errorf("listener %s: want %s=%s/%s, got %+v", st.Listeners[i].Name, c[0], c[1], c[2], st.Listeners[i].Conditions)
					}
				}
			}
			got := map[string]*Section{}
			for _, l := range cfg.Listeners {
				if l.Protocol != ProtocolTLS {
					t.Errorf("listener %s has protocol %s", l.Address, l.Protocol)
				}
				for _, s := range l.Sections {
					got[s.Name[len("default/gw/"):]] = s
				}
			}
			if len(got) != len(tc.sections) {
				t.Errorf("served sections %v, want %v", got, tc.sections)
			}
			for name, want := range tc.sections {
				s := got[name]
				if s == nil {
					t.Errorf("section %s not served", name)
					continue
				}
				if s.Terminate != want.terminate || len(s.Certificates) != want.certs || len(s.Passthrough) != want.routes {
					t.Errorf("section %s: terminate %v, %d certificates, %d routes; want %+v", name, s.Terminate, len(s.Certificates), len(s.Passthrough), want)
				}
			}
			if len(cfg.Listeners) > 1 {
				t.Errorf("%d listeners; the sections share one port", len(cfg.Listeners))
			}
			for _, name := range tc.accepted {
				if c := routeAccepted(t, cfg, "TLSRoute", "default", name); c.Status != metav1.ConditionTrue {
					t.Errorf("TLSRoute %s: %+v", name, c)
				}
			}
			for _, name := range tc.refused {
				if c := routeAccepted(t, cfg, "TLSRoute", "default", name); c.Status != metav1.ConditionFalse {
					t.Errorf("TLSRoute %s accepted: %+v", name, c)
				}
			}
			if len(tc.sections) > 0 {
				if c := routeAccepted(t, cfg, "HTTPRoute", "default", "http"); c.Status != metav1.ConditionFalse || c.Reason != "NotAllowedByListeners" {
					t.Errorf("HTTPRoute on a TLS listener: %+v", c)
				}
			}
		})
	}
}
