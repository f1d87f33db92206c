package model

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
)

func gwPtr[T any](v T) *T { return &v }

func testCertPEM(t *testing.T, host string) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func gwSvc(ns, name string, port int32, app string) *Service {
	ep := Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: 8080, Ready: true, Serving: true, Weight: 1}
	return &Service{Key: ServiceKey{ns, name}, Type: ClusterIP, Policy: DefaultPolicy(), Ports: []*ServicePort{{
		Name: "http", Protocol: TCP, Port: port, AppProtocol: app,
		Cluster: EndpointSet{Verdict: Forward, Endpoints: []Endpoint{ep}},
	}}}
}

func gwClass() *gatewayv1.GatewayClass {
	return &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "weir"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: GatewayControllerName}}
}

func gw(name string, listeners ...gatewayv1.Listener) *gatewayv1.Gateway {
	return &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "weir", Listeners: listeners}}
}

func httpListener(name string, port int32, host string) gatewayv1.Listener {
	l := gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: port, Protocol: gatewayv1.HTTPProtocolType}
	if host != "" {
		l.Hostname = gwPtr(gatewayv1.Hostname(host))
	}
	return l
}

func backendRef(name string, port int32, weight int32) gatewayv1.HTTPBackendRef {
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: gwPtr(port)},
		Weight:                 gwPtr(weight)}}
}

func route(name string, hosts []string, rules ...gatewayv1.HTTPRouteRule) *gatewayv1.HTTPRoute {
	r := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Generation: 3}}
	r.Spec.ParentRefs = []gatewayv1.ParentReference{{Name: "gw"}}
	for _, h := range hosts {
		r.Spec.Hostnames = append(r.Spec.Hostnames, gatewayv1.Hostname(h))
	}
	r.Spec.Rules = rules
	return r
}

func pathMatch(t gatewayv1.PathMatchType, v string) gatewayv1.HTTPRouteMatch {
	return gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: gwPtr(t), Value: gwPtr(v)}}
}

func rule(name string, matches ...gatewayv1.HTTPRouteMatch) gatewayv1.HTTPRouteRule {
	return gatewayv1.HTTPRouteRule{Name: gwPtr(gatewayv1.SectionName(name)), Matches: matches, BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1)}}
}

func translateForTest(objs *Objects, svcs ...*Service) *GatewayConfig {
	snap := &Snapshot{Services: svcs}
	translateGateways(objs, snap)
	return snap.Gateway
}

// TestGatewayPrecedence checks the order of matches in a virtual host: Exact, regex,
// longest prefix, method, headers, query params, oldest route, name, rule order.
func TestGatewayPrecedence(t *testing.T) {
	old := route("b-old", nil,
		rule("prefix-short", pathMatch(gatewayv1.PathMatchPathPrefix, "/a")),
		rule("prefix-dup", pathMatch(gatewayv1.PathMatchPathPrefix, "/a")),
	)
	old.CreationTimestamp = metav1.NewTime(time.Unix(100, 0))
	newer := route("a-new", nil,
		rule("exact", pathMatch(gatewayv1.PathMatchExact, "/a")),
		rule("prefix-long", pathMatch(gatewayv1.PathMatchPathPrefix, "/a/b")),
		rule("regex", pathMatch(gatewayv1.PathMatchRegularExpression, "/r.*")),
		rule("method", gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: gwPtr(gatewayv1.PathMatchPathPrefix), Value: gwPtr("/a")}, Method: gwPtr(gatewayv1.HTTPMethodPost)}),
		rule("headers2", gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: gwPtr(gatewayv1.PathMatchPathPrefix), Value: gwPtr("/a")},
			Headers: []gatewayv1.HTTPHeaderMatch{{Name: "x", Value: "1"}, {Name: "y", Value: "2"}}}),
		rule("headers1", gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: gwPtr(gatewayv1.PathMatchPathPrefix), Value: gwPtr("/a")},
			Headers: []gatewayv1.HTTPHeaderMatch{{Name: "x", Value: "1"}}}),
		rule("query", gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: gwPtr(gatewayv1.PathMatchPathPrefix), Value: gwPtr("/a")},
			QueryParams: []gatewayv1.HTTPQueryParamMatch{{Name: "q", Value: "1"}}}),
		rule("same-as-old", pathMatch(gatewayv1.PathMatchPathPrefix, "/a")),
		rule("default"),
	)
	newer.CreationTimestamp = metav1.NewTime(time.Unix(200, 0))
	same := route("c-same-age", nil, rule("tie", pathMatch(gatewayv1.PathMatchPathPrefix, "/a")))
	same.CreationTimestamp = metav1.NewTime(time.Unix(200, 0))
	objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{gw("gw", httpListener("http", 8080, ""))},
		HTTPRoutes: []*gatewayv1.HTTPRoute{same, newer, old}}
	cfg := translateForTest(objs, gwSvc("default", "web", 80, ""))
	if cfg == nil || len(cfg.Listeners) != 1 || len(cfg.Listeners[0].Sections) != 1 || len(cfg.Listeners[0].Sections[0].Hosts) != 1 {
		t.Fatalf("unexpected config shape: %+v", cfg)
	}
	var got []string
	for _, m := range cfg.Listeners[0].Sections[0].Hosts[0].Matches {
		got = append(got, m.Rule.Name)
	}
	want := []string{"exact", "regex", "prefix-long", "method", "headers2", "headers1", "query", "prefix-short", "prefix-dup", "same-as-old", "tie", "default"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order:\n got %v\nwant %v", got, want)
		}
	}
}

func TestGatewayHostnames(t *testing.T) {
	tests := []struct {
		name      string
		listener  string
		route     []string
		wantHosts []string // nil: not attached
		reason    string
	}{
		{"both empty", "", nil, []string{""}, "Accepted"},
		{"listener only", "a.example.com", nil, []string{"a.example.com"}, "Accepted"},
		{"route wildcard narrows", "a.example.com", []string{"*.example.com"}, []string{"a.example.com"}, "Accepted"},
		{"listener wildcard", "*.example.com", []string{"a.example.com", "b.other.com"}, []string{"a.example.com"}, "Accepted"},
		{"no intersection", "a.example.com", []string{"b.example.com"}, nil, "NoMatchingListenerHostname"},
		{"wildcard excludes apex", "*.example.com", []string{"example.com"}, nil, "NoMatchingListenerHostname"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{gw("gw", httpListener("http", 8080, tc.listener))},
				HTTPRoutes: []*gatewayv1.HTTPRoute{route("r", tc.route, rule("x"))}}
			cfg := translateForTest(objs, gwSvc("default", "web", 80, ""))
			var hosts []string
			for _, vh := range cfg.Listeners[0].Sections[0].Hosts {
				hosts = append(hosts, vh.Hostname)
			}
			if len(hosts) != len(tc.wantHosts) || (len(hosts) > 0 && hosts[0] != tc.wantHosts[0]) {
				t.Errorf("hosts %q, want %q", hosts, tc.wantHosts)
			}
			st := cfg.FindStatus("HTTPRoute", "default", "r")
			if st == nil || len(st.Parents) != 1 || st.Parents[0].Conditions[0].Reason != tc.reason {
				t.Fatalf("status %+v, want reason %s", st, tc.reason)
			}
		})
	}
}

// TestGatewayBadInput checks that each broken input gives its status condition and
// leaves the rest served.
func TestGatewayBadInput(t *testing.T) {
	crt, key := testCertPEM(t, "a.example.com")
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a-cert"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": crt, "tls.key": key}}
	https := func(name, host, secretName string) gatewayv1.Listener {
		return gatewayv1.Listener{Name: gatewayv1.SectionName(name), Port: 8443, Protocol: gatewayv1.HTTPSProtocolType, Hostname: gwPtr(gatewayv1.Hostname(host)),
			TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: gatewayv1.ObjectName(secretName)}}}}
	}
	tests := []struct {
		name  string
		objs  func(o *Objects)
		check func(t *testing.T, cfg *GatewayConfig)
	}{
		{"missing service", func(o *Objects) {
			o.HTTPRoutes = append(o.HTTPRoutes, route("missing", nil, gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("nope", 80, 1)}}))
		}, func(t *testing.T, cfg *GatewayConfig) {
			wantParentCond(t, cfg, "missing", "ResolvedRefs", metav1.ConditionFalse, "BackendNotFound")
			wantParentCond(t, cfg, "missing", "Accepted", metav1.ConditionTrue, "Accepted")
			wantParentCond(t, cfg, "good", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
			m := findMatch(cfg, "default/missing/0")
			if m == nil || !m.Rule.Backends[0].Invalid {
				t.Fatalf("rule with missing backend should be served with an invalid backend (500): %+v", m)
			}
		}},
		{"bad regex", func(o *Objects) {
			o.HTTPRoutes = append(o.HTTPRoutes, route("regex", nil, rule("bad", pathMatch(gatewayv1.PathMatchRegularExpression, "/(unclosed"))))
		}, func(t *testing.T, cfg *GatewayConfig) {
			wantParentCond(t, cfg, "regex", "Accepted", metav1.ConditionFalse, "UnsupportedValue")
			if n := cfg.FindStatus("Gateway", "default", "gw").Listeners[0].AttachedRoutes; n != 1 {
				t.Fatalf("attachedRoutes %d counts a route that was not accepted", n)
			}
			if findMatch(cfg, "default/regex/bad") != nil {
				t.Fatal("a rule with a bad regex must not be served")
			}
			if findMatch(cfg, "default/good/0") == nil {
				t.Fatal("good route lost")
			}
		}},
		{"partially invalid", func(o *Objects) {
			o.HTTPRoutes = append(o.HTTPRoutes, route("partial", nil, rule("bad", pathMatch(gatewayv1.PathMatchRegularExpression, "(")), rule("fine", pathMatch(gatewayv1.PathMatchExact, "/fine"))))
		}, func(t *testing.T, cfg *GatewayConfig) {
			wantParentCond(t, cfg, "partial", "PartiallyInvalid", metav1.ConditionTrue, "UnsupportedValue")
			if findMatch(cfg, "default/partial/fine") == nil {
				t.Fatal("valid rule of a partially invalid route lost")
			}
		}},
		{"conflicting listener", func(o *Objects) {
			o.Gateways = append(o.Gateways, gw("other", gatewayv1.Listener{Name: "tls", Port: 8080, Protocol: gatewayv1.HTTPSProtocolType}))
			o.Gateways[1].CreationTimestamp = metav1.NewTime(time.Now())
		}, func(t *testing.T, cfg *GatewayConfig) {
			st := cfg.FindStatus("Gateway", "default", "other")
			if st == nil || !hasCond(st.Listeners[0].Conditions, "Conflicted", metav1.ConditionTrue, "ProtocolConflict") {
				t.Fatalf("want ProtocolConflict, got %+v", st)
			}
			if c, _ := st.Condition("Accepted"); c.Status != metav1.ConditionFalse || c.Reason != "ListenersNotValid" {
				t.Fatalf("gateway with no valid listener: %+v", c)
			}
			if findMatch(cfg, "default/good/0") == nil {
				t.Fatal("good route lost")
			}
		}},
		{"missing certificate", func(o *Objects) {
			o.Gateways[0].Spec.Listeners = append(o.Gateways[0].Spec.Listeners, https("https-bad", "b.example.com", "nope"), https("https-good", "a.example.com", "a-cert"))
		}, func(t *testing.T, cfg *GatewayConfig) {
			st := cfg.FindStatus("Gateway", "default", "gw")
			if !hasCond(st.Listeners[1].Conditions, "ResolvedRefs", metav1.ConditionFalse, "InvalidCertificateRef") {
				t.Fatalf("want InvalidCertificateRef: %+v", st.Listeners[1])
			}
			if !hasCond(st.Listeners[2].Conditions, "Programmed", metav1.ConditionTrue, "Programmed") {
				t.Fatalf("good HTTPS listener: %+v", st.Listeners[2])
			}
			var tlsLn *Listener
			for _, l := range cfg.Listeners {
				if l.Protocol == ProtocolHTTPS {
					tlsLn = l
				}
			}
			if tlsLn == nil || len(tlsLn.Sections) != 1 || tlsLn.Sections[0].Certificates[0].Source != "default/a-cert" {
				t.Fatalf("HTTPS listener: %+v", tlsLn)
			}
			if st.Listeners[2].AttachedRoutes != 1 {
				t.Fatalf("attached routes = %d", st.Listeners[2].AttachedRoutes)
			}
		}},
		{"cross namespace without grant", func(o *Objects) {
			r := route("cross", nil, gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1)}})
			r.Spec.Rules[0].BackendRefs[0].Namespace = gwPtr(gatewayv1.Namespace("other"))
			o.HTTPRoutes = append(o.HTTPRoutes, r)
		}, func(t *testing.T, cfg *GatewayConfig) {
			wantParentCond(t, cfg, "cross", "ResolvedRefs", metav1.ConditionFalse, "RefNotPermitted")
		}},
		{"cross namespace with grant", func(o *Objects) {
			r := route("cross", nil, gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1)}})
			r.Spec.Rules[0].BackendRefs[0].Namespace = gwPtr(gatewayv1.Namespace("other"))
			o.HTTPRoutes = append(o.HTTPRoutes, r)
			o.ReferenceGrants = append(o.ReferenceGrants, &gatewayv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "g"},
				Spec: gatewayv1.ReferenceGrantSpec{From: []gatewayv1.ReferenceGrantFrom{{Group: gatewayGroup, Kind: "HTTPRoute", Namespace: "default"}},
					To: []gatewayv1.ReferenceGrantTo{{Group: "", Kind: "Service"}}}})
		}, func(t *testing.T, cfg *GatewayConfig) {
			wantParentCond(t, cfg, "cross", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
		}},
		{"redirect and rewrite", func(o *Objects) {
			r := rule("both")
			r.Filters = []gatewayv1.HTTPRouteFilter{
				{Type: gatewayv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{}},
				{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{}}}
			o.HTTPRoutes = append(o.HTTPRoutes, route("incompatible", nil, r))
		}, func(t *testing.T, cfg *GatewayConfig) {
			m := findMatch(cfg, "default/incompatible/both")
			if m == nil || !m.Rule.Invalid {
				t.Fatalf("incompatible filters must answer 500: %+v", m)
			}
		}},
		{"other controller", func(o *Objects) {
			o.GatewayClasses = append(o.GatewayClasses, &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "nginx"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "k8s.io/nginx"}})
			g := gw("foreign", httpListener("http", 9999, ""))
			g.Spec.GatewayClassName = "nginx"
			o.Gateways = append(o.Gateways, g)
		}, func(t *testing.T, cfg *GatewayConfig) {
			if cfg.FindStatus("GatewayClass", "", "nginx") != nil || cfg.FindStatus("Gateway", "default", "foreign") != nil {
				t.Fatal("weir must not write status of another controller's objects")
			}
			if len(cfg.Listeners) != 1 {
				t.Fatalf("listeners %d", len(cfg.Listeners))
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{gw("gw", httpListener("http", 8080, ""))},
				HTTPRoutes: []*gatewayv1.HTTPRoute{route("good", nil, gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 1)}})},
				Secrets:    []*corev1.Secret{secret}}
			tc.objs(objs)
			cfg := translateForTest(objs, gwSvc("default", "web", 80, ""), gwSvc("other", "web", 80, ""))
			if c, _ := cfg.FindStatus("GatewayClass", "", "weir").Condition("Accepted"); c.Status != metav1.ConditionTrue {
				t.Fatalf("class not accepted: %+v", c)
			}
			tc.check(t, cfg)
		})
	}
}

func TestGatewayFiltersAndBackends(t *testing.T) {
	r := gatewayv1.HTTPRouteRule{
		BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 70), backendRef("canary", 80, 30), backendRef("off", 80, 0)},
		Filters: []gatewayv1.HTTPRouteFilter{
			{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-A", Value: "1"}}, Remove: []string{"X-B"}}},
			{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: gatewayv1.BackendObjectReference{Name: "mirror", Port: gwPtr(int32(80))}, Percent: gwPtr(int32(25))}},
			{Type: gatewayv1.HTTPRouteFilterCORS, CORS: &gatewayv1.HTTPCORSFilter{AllowOrigins: []gatewayv1.CORSOrigin{"https://a.example"}}},
		},
		Timeouts:           &gatewayv1.HTTPRouteTimeouts{Request: gwPtr(gatewayv1.Duration("2s")), BackendRequest: gwPtr(gatewayv1.Duration("500ms"))},
		Retry:              &gatewayv1.HTTPRouteRetry{Attempts: gwPtr(3), Codes: []gatewayv1.HTTPRouteRetryStatusCode{500}, Backoff: gwPtr(gatewayv1.Duration("10ms"))},
		SessionPersistence: &gatewayv1.SessionPersistence{SessionName: gwPtr("sid")},
	}
	objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{gw("gw", httpListener("http", 8080, ""))},
		HTTPRoutes: []*gatewayv1.HTTPRoute{route("r", nil, r)}}
	cfg := translateForTest(objs, gwSvc("default", "web", 80, ""), gwSvc("default", "canary", 80, "kubernetes.io/h2c"), gwSvc("default", "off", 80, ""), gwSvc("default", "mirror", 80, ""))
	m := findMatch(cfg, "default/r/0")
	if m == nil {
		t.Fatal("rule missing")
	}
	rl := m.Rule
	if len(rl.Backends) != 3 || rl.Backends[0].Weight != 70 || rl.Backends[1].Weight != 30 || rl.Backends[2].Weight != 0 || !rl.Backends[1].H2C {
		t.Fatalf("backends: %+v %+v %+v", rl.Backends[0], rl.Backends[1], rl.Backends[2])
	}
	if len(rl.Backends[0].Endpoints) != 1 || rl.Backends[0].Policy == nil {
		t.Fatalf("backend endpoints/policy not resolved: %+v", rl.Backends[0])
	}
	if len(rl.Filters) != 3 || rl.Filters[1].Mirror.Percent != 25 || rl.Filters[1].Mirror.Backend.Service.Name != "mirror" || rl.Filters[2].CORS.MaxAge != 5 {
		t.Fatalf("filters: %+v", rl.Filters)
	}
	if rl.RequestTimeout != 2*time.Second || rl.BackendTimeout != 500*time.Millisecond {
		t.Fatalf("timeouts %v %v", rl.RequestTimeout, rl.BackendTimeout)
	}
	if rl.Retry.Attempts != 3 || rl.Retry.BackoffBase != 10*time.Millisecond || rl.Retry.RetryOn[len(rl.Retry.RetryOn)-1] != "500" || rl.Retry.BudgetPercent != 20 {
		t.Fatalf("retry %+v", rl.Retry)
	}
	if rl.Session == nil || rl.Session.CookieName != "sid" {
		t.Fatalf("session %+v", rl.Session)
	}
}

func TestIngressTranslation(t *testing.T) {
	crt, key := testCertPEM(t, "a.example.com")
	prefix, exact, impl := networkingv1.PathTypePrefix, networkingv1.PathTypeExact, networkingv1.PathTypeImplementationSpecific
	be := func(name string, port int32) networkingv1.IngressBackend {
		return networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: name, Port: networkingv1.ServiceBackendPort{Number: port}}}
	}
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ing"}, Spec: networkingv1.IngressSpec{
		IngressClassName: gwPtr("weir"),
		DefaultBackend:   gwPtr(be("web", 80)),
		TLS:              []networkingv1.IngressTLS{{Hosts: []string{"a.example.com"}, SecretName: "a-cert"}},
		Rules: []networkingv1.IngressRule{{Host: "a.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{
			{Path: "/", PathType: &prefix, Backend: be("web", 80)},
			{Path: "/api", PathType: &exact, Backend: be("web", 80)},
			{Path: "/api/v1", PathType: &impl, Backend: be("missing", 80)},
		}}}}},
	}}
	other := ing.DeepCopy()
	other.Name = "nginx-one"
	other.Spec.IngressClassName = gwPtr("nginx")
	objs := &Objects{Ingresses: []*networkingv1.Ingress{ing, other},
		Secrets: []*corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a-cert"}, Data: map[string][]byte{"tls.crt": crt, "tls.key": key}}}}
	cfg := translateForTest(objs, gwSvc("default", "web", 80, ""))
	if len(cfg.Listeners) != 2 || cfg.Listeners[0].Ingress != "http" || cfg.Listeners[1].Ingress != "https" {
		t.Fatalf("listeners: %+v", cfg.Listeners)
	}
	sec := cfg.Listeners[0].Sections[0]
	if len(sec.Hosts) != 2 || sec.Hosts[0].Hostname != "a.example.com" || sec.Hosts[1].Hostname != "" {
		t.Fatalf("hosts: %+v", sec.Hosts)
	}
	var order []string
	for _, m := range sec.Hosts[0].Matches {
		order = append(order, string(m.Path.Type)+" "+m.Path.Value)
	}
	if len(order) != 3 || order[0] != "Exact /api" || order[1] != "PathPrefix /api/v1" || order[2] != "PathPrefix /" {
		t.Fatalf("order %q", order)
	}
	if !sec.Hosts[0].Matches[1].Rule.Backends[0].Invalid {
		t.Fatal("missing Service should be invalid")
	}
	st := cfg.FindStatus("Ingress", "default", "ing")
	if c, _ := st.Condition("ResolvedRefs"); c.Reason != "BackendNotFound" {
		t.Fatalf("ingress status %+v", st)
	}
	if cfg.FindStatus("Ingress", "default", "nginx-one") != nil {
		t.Fatal("ingress of another class handled")
	}
	if len(cfg.Listeners[1].Sections[0].Certificates) != 1 || len(cfg.Listeners[1].Sections[0].Hosts) != 2 {
		t.Fatalf("https section: %+v", cfg.Listeners[1].Sections[0])
	}
}

func TestRouteTrafficPolicy(t *testing.T) {
	objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{gw("gw", httpListener("http", 8080, ""))},
		HTTPRoutes: []*gatewayv1.HTTPRoute{route("r", nil, rule("a"), rule("b"))}}
	objs.Policies = append(objs.Policies, policyFor("route-wide", nil, 7), policyFor("rule-b", gwPtr(gatewayv1.SectionName("b")), 9))
	cfg := translateForTest(objs, gwSvc("default", "web", 80, ""))
	if a := findMatch(cfg, "default/r/a"); a.Rule.Policy.Retry.Attempts != 7 {
		t.Fatalf("rule a: %+v", a.Rule.Policy.Retry)
	}
	if b := findMatch(cfg, "default/r/b"); b.Rule.Policy.Retry.Attempts != 9 || b.Rule.Retry.Attempts != 9 {
		t.Fatalf("rule b: %+v", b.Rule.Policy.Retry)
	}
}

func findMatch(cfg *GatewayConfig, ruleID string) *RouteMatch {
	for _, l := range cfg.Listeners {
		for _, s := range l.Sections {
			for _, h := range s.Hosts {
				for _, m := range h.Matches {
					if m.Rule.ID == ruleID {
						return m
					}
				}
			}
		}
	}
	return nil
}

func hasCond(cs []metav1.Condition, typ string, st metav1.ConditionStatus, reason string) bool {
	for _, c := range cs {
		if c.Type == typ && c.Status == st && c.Reason == reason {
			return true
		}
	}
	return false
}

func wantParentCond(t *testing.T, cfg *GatewayConfig, name, typ string, st metav1.ConditionStatus, reason string) {
	t.Helper()
	s := cfg.FindStatus("HTTPRoute", "default", name)
	if s == nil || len(s.Parents) == 0 {
		t.Fatalf("no status for route %s", name)
	}
	if !hasCond(s.Parents[0].Conditions, typ, st, reason) {
		t.Fatalf("route %s: want %s=%s/%s, got %+v", name, typ, st, reason, s.Parents[0].Conditions)
	}
}

func policyFor(name string, section *gatewayv1.SectionName, attempts int32) *weirv1alpha1.TrafficPolicy {
	return &weirv1alpha1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: weirv1alpha1.TrafficPolicySpec{
			TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{
				Group: gatewayGroup, Kind: "HTTPRoute", Name: "r"}, SectionName: section}},
			Retry: &weirv1alpha1.Retry{Attempts: &attempts}}}
}

func TestGRPCAndTLSRoutes(t *testing.T) {
	svc, meth := "grpc.health.v1.Health", "Check"
	exactT := gatewayv1.GRPCMethodMatchExact
	gr := &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "g"}, Spec: gatewayv1.GRPCRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw", SectionName: gwPtr(gatewayv1.SectionName("http"))}}},
		Rules: []gatewayv1.GRPCRouteRule{
			{Matches: []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Type: &exactT, Service: &svc, Method: &meth}}},
				BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: gwPtr(int32(80))}}}}},
			{Matches: []gatewayv1.GRPCRouteMatch{{Method: &gatewayv1.GRPCMethodMatch{Type: &exactT, Service: &svc}}},
				BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: gwPtr(int32(80))}}}}},
		}}}
	tr := &gatewayv1.TLSRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "t"}, Spec: gatewayv1.TLSRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw", SectionName: gwPtr(gatewayv1.SectionName("tls"))}}},
		Hostnames:       []gatewayv1.Hostname{"db.example.com"},
		Rules:           []gatewayv1.TLSRouteRule{{BackendRefs: []gatewayv1.BackendRef{{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: gwPtr(int32(80))}}}}}}}
	passthrough := gatewayv1.TLSModePassthrough
	tlsL := gatewayv1.Listener{Name: "tls", Port: 8443, Protocol: gatewayv1.TLSProtocolType, TLS: &gatewayv1.ListenerTLSConfig{Mode: &passthrough}}
	objs := &Objects{GatewayClasses: []*gatewayv1.GatewayClass{gwClass()}, Gateways: []*gatewayv1.Gateway{gw("gw", httpListener("http", 8080, ""), tlsL)},
		GRPCRoutes: []*gatewayv1.GRPCRoute{gr}, TLSRoutes: []*gatewayv1.TLSRoute{tr}}
	cfg := translateForTest(objs, gwSvc("default", "web", 80, ""))
	var httpLn, tlsLn *Listener
	for _, l := range cfg.Listeners {
		switch l.Protocol {
		case ProtocolHTTP:
			httpLn = l
		case ProtocolTLS:
			tlsLn = l
		}
	}
	ms := httpLn.Sections[0].Hosts[0].Matches
	if len(ms) != 2 || ms[0].Path != (PathMatch{PathExact, "/grpc.health.v1.Health/Check"}) || ms[1].Path != (PathMatch{PathPrefix, "/grpc.health.v1.Health"}) {
		t.Fatalf("grpc matches %+v %+v", ms[0].Path, ms[1].Path)
	}
	if !ms[0].Rule.Backends[0].H2C {
		t.Fatal("gRPC backends speak h2c")
	}
	pt := tlsLn.Sections[0].Passthrough
	if len(pt) != 1 || pt[0].Hostnames[0] != "db.example.com" || pt[0].Backends[0].Invalid {
		t.Fatalf("passthrough %+v", pt)
	}
	st := cfg.FindStatus("Gateway", "default", "gw")
	if st.Listeners[1].AttachedRoutes != 1 || st.Listeners[0].AttachedRoutes != 1 {
		t.Fatalf("attached %+v", st.Listeners)
	}
}
