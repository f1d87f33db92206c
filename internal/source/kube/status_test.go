package kube

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/store"
)

func basicObjects() *model.Objects {
	ns := gatewayv1.Namespace("default")
	all := gatewayv1.NamespacesFromAll
	return &model.Objects{
		Services: []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}}},
		GatewayClasses: []*gatewayv1.GatewayClass{
			{ObjectMeta: metav1.ObjectMeta{Name: "weir", Generation: 3}, Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultGatewayControllerName}},
			{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/other"}},
		},
		Gateways: []*gatewayv1.Gateway{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "gw", Generation: 2}, Spec: gatewayv1.GatewaySpec{
				GatewayClassName: "weir",
				Listeners: []gatewayv1.Listener{
					{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 80},
					{Name: "tls", Protocol: gatewayv1.TLSProtocolType, Port: 443,
						AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}},
				}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "foreign"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: "other"}},
		},
		HTTPRoutes: []*gatewayv1.HTTPRoute{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ok"}, Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw"}, {Name: "foreign"}}},
				Rules:           []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web"}}}}}}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "missing-backend"}, Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw", SectionName: ptr.To(gatewayv1.SectionName("http"))}}},
				Rules:           []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "nope"}}}}}}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "cross-ns"}, Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw", Namespace: &ns}}}}},
		},
		IngressClasses: []*networkingv1.IngressClass{
			{ObjectMeta: metav1.ObjectMeta{Name: "weir", Annotations: map[string]string{networkingv1.AnnotationIsDefaultIngressClass: "true"}}, Spec: networkingv1.IngressClassSpec{Controller: DefaultIngressControllerName}},
			{ObjectMeta: metav1.ObjectMeta{Name: "nginx"}, Spec: networkingv1.IngressClassSpec{Controller: "k8s.io/ingress-nginx"}},
		},
		Ingresses: []*networkingv1.Ingress{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "named"}, Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("weir")}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "defaulted"}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "legacy", Annotations: map[string]string{legacyIngressClassAnnotation: "nginx"}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "nginx"}, Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("nginx")}},
		},
	}
}

func condition(conds []metav1.Condition, typ string) string {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return "missing"
	}
	return string(c.Status) + "/" + c.Reason
}

func TestBasicStatuses(t *testing.T) {
	opts := StatusOptions{Addresses: []string{"192.0.2.10", "lb.example.com"}}
	if err := opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	st := BasicStatuses(basicObjects(), opts)
	key := func(ns, name string) types.NamespacedName { return types.NamespacedName{Namespace: ns, Name: name} }

	if got := condition(st.GatewayClasses["weir"], "Accepted"); got != "True/Accepted" {
		t.Errorf("GatewayClass weir Accepted = %s", got)
	}
	if _, ok := st.GatewayClasses["other"]; ok {
		t.Error("another controller's GatewayClass got a status")
	}
	if _, ok := st.Gateways[key("default", "foreign")]; ok {
		t.Error("another controller's Gateway got a status")
	}
	gw := st.Gateways[key("default", "gw")]
	if len(gw.Addresses) != 2 || *gw.Addresses[0].Type != gatewayv1.IPAddressType || *gw.Addresses[1].Type != gatewayv1.HostnameAddressType {
		t.Errorf("gateway addresses = %+v", gw.Addresses)
	}
	wantAttached := map[gatewayv1.SectionName]int32{"http": 2, "tls": 0}
	for _, l := range gw.Listeners {
		if l.AttachedRoutes != wantAttached[l.Name] {
			t.Errorf("listener %s attachedRoutes = %d, want %d", l.Name, l.AttachedRoutes, wantAttached[l.Name])
		}
		if got := condition(l.Conditions, "Programmed"); got != "True/Programmed" {
			t.Errorf("listener %s Programmed = %s", l.Name, got)
		}
	}

	routes := []struct {
		name, ns, accepted, resolved string
		parents                      int
	}{
		{"ok", "default", "True/Accepted", "True/ResolvedRefs", 1},
		{"missing-backend", "default", "True/Accepted", "False/BackendNotFound", 1},
		{"cross-ns", "other", "False/NotAllowedByListeners", "True/ResolvedRefs", 1},
	}
	for _, r := range routes {
		ps := st.HTTPRoutes[key(r.ns, r.name)]
		if len(ps) != r.parents {
			t.Errorf("route %s: %d parents, want %d", r.name, len(ps), r.parents)
			continue
		}
		if got := condition(ps[0].Conditions, "Accepted"); got != r.accepted {
			t.Errorf("route %s Accepted = %s, want %s", r.name, got, r.accepted)
		}
		if got := condition(ps[0].Conditions, "ResolvedRefs"); got != r.resolved {
			t.Errorf("route %s ResolvedRefs = %s, want %s", r.name, got, r.resolved)
		}
	}

	ingresses := []struct {
		name string
		ours bool
	}{{"named", true}, {"defaulted", true}, {"legacy", false}, {"nginx", false}}
	for _, ing := range ingresses {
		lb, ok := st.Ingresses[key("default", ing.name)]
		if ok != ing.ours {
			t.Errorf("ingress %s: status %v, want ours=%v", ing.name, lb, ing.ours)
		}
		if ok && (len(lb) != 2 || lb[0].IP != "192.0.2.10" || lb[1].Hostname != "lb.example.com") {
			t.Errorf("ingress %s load balancer = %+v", ing.name, lb)
		}
	}
}

func TestWriteStatusWritesOnlyChanges(t *testing.T) {
	clients, kube, gw := fakeClients(t, true, true)
	ctx := context.Background()
	if _, err := kube.NetworkingV1().Ingresses("default").Update(ctx, &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ing"},
		Spec:       networkingv1.IngressSpec{IngressClassName: ptr.To("weir")}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weir-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err) // the Lease's namespace
	}
	st := store.New()
	computed := make(chan struct{}, 100)
	so := &StatusOptions{Addresses: []string{"192.0.2.1"}}
	if err := so.setDefaults(); err != nil {
		t.Fatal(err)
	}
	basic := so.Compute
	so.Compute = func(o *model.Objects) *Statuses { computed <- struct{}{}; return basic(o) }
	src, _ := startSource(t, Options{Clients: clients, Store: st, Status: so})

	patches := func() int {
		n := 0
		for _, a := range append(gw.Actions(), kube.Actions()...) {
			if p, ok := a.(clienttesting.PatchAction); ok && p.GetSubresource() == "status" {
				n++
			}
		}
		return n
	}
	// The leader writes; wait until its caches have every written status.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, _, _ := src.informerFor(kindGatewayClass).GetStore().GetByKey("weir")
		i, _, _ := src.informerFor(kindIngress).GetStore().GetByKey("default/ing")
		g, _, _ := src.informerFor(kindGateway).GetStore().GetByKey("default/gw")
		if c != nil && len(c.(*gatewayv1.GatewayClass).Status.Conditions) > 0 &&
			i != nil && len(i.(*networkingv1.Ingress).Status.LoadBalancer.Ingress) > 0 &&
			g != nil && len(g.(*gatewayv1.Gateway).Status.Conditions) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("status never written")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ing, err := kube.NetworkingV1().Ingresses("default").Get(ctx, "ing", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lb := ing.Status.LoadBalancer.Ingress; len(lb) != 1 || lb[0].IP != "192.0.2.1" {
		t.Errorf("ingress status = %+v", lb)
	}
	gc, err := gw.GatewayV1().GatewayClasses().Get(ctx, "weir", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := condition(gc.Status.Conditions, "Accepted"); got != "True/Accepted" {
		t.Errorf("GatewayClass Accepted = %s", got)
	}

	// Drain, then force two more status rounds with unrelated changes: the second
	// Compute means the first round's writes are done. Nothing differs, so no patch.
	drain := func() {
		for {
			select {
			case <-computed:
			case <-time.After(300 * time.Millisecond):
				return
			}
		}
	}
	drain()
	before := patches()
	for i, name := range []string{"x1", "x2"} {
		if _, err := kube.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-computed:
		case <-time.After(10 * time.Second):
			t.Fatalf("no status round after change %d", i)
		}
	}
	if n := patches(); n != before {
		t.Errorf("unchanged statuses sent %d more patches, want 0", n-before)
	}
	if before < 3 { // GatewayClass, Gateway, Ingress
		t.Errorf("%d status patches in all, want at least 3", before)
	}
}

func TestMergeParentsKeepsOtherControllers(t *testing.T) {
	ours := gatewayv1.GatewayController(DefaultGatewayControllerName)
	other := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "x"}, ControllerName: "example.com/other"}
	stale := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "old"}, ControllerName: ours}
	fresh := gatewayv1.RouteParentStatus{ParentRef: gatewayv1.ParentReference{Name: "gw"},
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"}}}
	got := mergeParents([]gatewayv1.RouteParentStatus{other, stale}, []gatewayv1.RouteParentStatus{fresh}, ours)
	if len(got) != 2 || got[0].ControllerName != "example.com/other" || got[1].ParentRef.Name != "gw" || got[1].ControllerName != ours {
		t.Errorf("mergeParents = %+v", got)
	}
	if got[1].Conditions[0].LastTransitionTime.IsZero() {
		t.Error("new condition has no lastTransitionTime")
	}
}

func TestModelStatuses(t *testing.T) {
	opts := StatusOptions{Addresses: []string{"192.0.2.10"}}
	if err := opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	st := ModelStatuses(basicObjects(), opts)
	key := func(ns, name string) types.NamespacedName { return types.NamespacedName{Namespace: ns, Name: name} }
	if got := condition(st.GatewayClasses["weir"], "Accepted"); got != "True/Accepted" {
		t.Errorf("GatewayClass Accepted = %s", got)
	}
	gw, ok := st.Gateways[key("default", "gw")]
	if !ok || len(gw.Addresses) != 1 || gw.Addresses[0].Value != "192.0.2.10" || len(gw.Listeners) != 2 {
		t.Fatalf("gateway status = %+v", gw)
	}
	for _, l := range gw.Listeners {
		if len(l.SupportedKinds) == 0 {
			t.Errorf("listener %s has no supportedKinds", l.Name)
		}
	}
	ps := st.HTTPRoutes[key("default", "ok")]
	if len(ps) != 1 || ps[0].ControllerName != DefaultGatewayControllerName || condition(ps[0].Conditions, "Accepted") != "True/Accepted" {
		t.Errorf("route ok parents = %+v", ps)
	}
	if ps := st.HTTPRoutes[key("default", "missing-backend")]; len(ps) != 1 || condition(ps[0].Conditions, "ResolvedRefs") != "False/BackendNotFound" {
		t.Errorf("route missing-backend parents = %+v", ps)
	}
	if lb := st.Ingresses[key("default", "named")]; len(lb) != 1 || lb[0].IP != "192.0.2.10" {
		t.Errorf("ingress named = %+v", lb)
	}
	if _, ok := st.Ingresses[key("default", "nginx")]; ok {
		t.Error("another controller's Ingress got a status")
	}
}

// TestModelStatusesServed: the data plane's correction (StatusOptions.Served: a
// listener it could not bind) reaches the statuses written back.
func TestModelStatusesServed(t *testing.T) {
	opts := StatusOptions{Served: func(s *model.Snapshot) *model.Snapshot {
		c := *s
		gc := *s.Gateway
		gc.Status = slices.Clone(gc.Status)
		for i := range gc.Status {
			if st := &gc.Status[i]; st.Kind == "Gateway" && st.Name == "gw" {
				st.Listeners = slices.Clone(st.Listeners)
				st.Listeners[0].Conditions = []metav1.Condition{{Type: "Programmed", Status: metav1.ConditionFalse, Reason: "Invalid", Message: "address already in use"}}
			}
		}
		c.Gateway = &gc
		return &c
	}}
	if err := opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	gw := ModelStatuses(basicObjects(), opts).Gateways[types.NamespacedName{Namespace: "default", Name: "gw"}]
	if len(gw.Listeners) == 0 || condition(gw.Listeners[0].Conditions, "Programmed") != "False/Invalid" {
		t.Fatalf("listener status = %+v", gw.Listeners)
	}
}

// TestLeaseNamespaceMissing: without the Lease's namespace, status write-back is off
// and said so once (not on every retry), and it starts when the namespace appears.
func TestLeaseNamespaceMissing(t *testing.T) {
	clients, kube, _ := fakeClients(t, false, false)
	logs := &countingHandler{}
	so := &StatusOptions{RetryPeriod: 5 * time.Millisecond}
	if err := so.setDefaults(); err != nil {
		t.Fatal(err)
	}
	src, err := New(Options{Clients: clients, Store: store.New(), Status: so, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan bool, 1)
	go func() { done <- src.waitLeaseNamespace(ctx) }()
	time.Sleep(200 * time.Millisecond) // ≥ 5 tries at 5, 10, 20, 40, 80 ms
	if n := logs.count(slog.LevelWarn); n != 1 {
		t.Fatalf("%d warnings while the namespace is missing, want 1", n)
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weir-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("waitLeaseNamespace gave up")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the namespace appeared but write-back did not start")
	}
}

type countingHandler struct {
	mu     sync.Mutex
	levels []slog.Level
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.levels = append(h.levels, r.Level)
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, v := range h.levels {
		if v == l {
			n++
		}
	}
	return n
}
