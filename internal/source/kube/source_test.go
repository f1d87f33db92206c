package kube

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/store"
)

// waitFor polls the store until cond holds or the deadline passes.
func waitFor(t *testing.T, st *store.Store, what string, cond func(*model.Objects) bool) *model.Objects {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if objs, _ := st.Current(); objs != nil && cond(objs) {
			return objs
		}
		select {
		case <-st.Changed():
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

var managed = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}

func objectMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, ManagedFields: managed,
		Annotations: map[string]string{lastAppliedAnnotation: `{"big":"json"}`, "keep": "me"}}
}

func discoveryResources(gateway, weir bool) []*metav1.APIResourceList {
	var out []*metav1.APIResourceList
	if gateway {
		var rs []metav1.APIResource
		for _, r := range []string{"gatewayclasses", "gateways", "httproutes", "grpcroutes", "tlsroutes", "referencegrants", "backendtlspolicies"} {
			rs = append(rs, metav1.APIResource{Name: r})
		}
		out = append(out, &metav1.APIResourceList{GroupVersion: gatewayGroupVersion, APIResources: rs})
	}
	if weir {
		out = append(out, &metav1.APIResourceList{GroupVersion: weirv1alpha1.GroupVersion.String(), APIResources: []metav1.APIResource{{Name: "trafficpolicies"}}})
	}
	return out
}

func fakeClients(t *testing.T, gateway, weir bool) (*Clients, *kubefake.Clientset, *gatewayfake.Clientset) {
	t.Helper()
	kube := kubefake.NewClientset(
		&corev1.Service{ObjectMeta: objectMeta("default", "web"), Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10"}},
		&discoveryv1.EndpointSlice{ObjectMeta: objectMeta("default", "web-abc"), AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.1"}}}},
		&corev1.Secret{ObjectMeta: objectMeta("default", "cert"), Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": []byte("c"), "tls.key": []byte("k"), "other": []byte("x")}},
		&networkingv1.Ingress{ObjectMeta: objectMeta("default", "ing")},
		&networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "weir"}, Spec: networkingv1.IngressClassSpec{Controller: DefaultIngressControllerName}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default", ManagedFields: managed,
			Labels: map[string]string{corev1.LabelMetadataName: "default", "team": "a"}, Annotations: map[string]string{"big": "x"}},
			Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{ZoneLabel: "zone-1"}},
			Status: corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"big"}}}, Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeHostName, Address: "node-a"}, {Type: corev1.NodeExternalIP, Address: "203.0.113.2"},
				{Type: corev1.NodeExternalIP, Address: "2001:db8::2"}, {Type: corev1.NodeInternalIP, Address: "192.168.0.2"}}}},
	)
	kube.Discovery().(*fakediscovery.FakeDiscovery).Resources = discoveryResources(gateway, weir)
	kube.PrependReactor("create", "selfsubjectaccessreviews", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, &authorizationv1.SelfSubjectAccessReview{Status: authorizationv1.SubjectAccessReviewStatus{Allowed: true}}, nil
	})
	// The gateway fake's tracker files a seeded Gateway under the wrong resource, so the
	// objects go in through the client.
	gw := gatewayfake.NewSimpleClientset()
	ctx := context.Background()
	for _, err := range []error{
		create(gw.GatewayV1().GatewayClasses().Create(ctx, &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "weir", ManagedFields: managed}, Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultGatewayControllerName}}, metav1.CreateOptions{})),
		create(gw.GatewayV1().Gateways("default").Create(ctx, &gatewayv1.Gateway{ObjectMeta: objectMeta("default", "gw"), Spec: gatewayv1.GatewaySpec{GatewayClassName: "weir"}}, metav1.CreateOptions{})),
		create(gw.GatewayV1().HTTPRoutes("default").Create(ctx, &gatewayv1.HTTPRoute{ObjectMeta: objectMeta("default", "route")}, metav1.CreateOptions{})),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// The dynamic fake serves unstructured objects; a scheme that knew the typed kind
	// would make it convert them.
	scheme := runtime.NewScheme()
	tp := &unstructured.Unstructured{}
	tp.SetAPIVersion(weirv1alpha1.GroupVersion.String())
	tp.SetKind("TrafficPolicy")
	tp.SetNamespace("default")
	tp.SetName("policy")
	tp.SetManagedFields(managed)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme,
		map[schema.GroupVersionResource]string{trafficPolicyResource: "TrafficPolicyList"}, tp)
	return &Clients{Kube: kube, Gateway: gw, Dynamic: dyn}, kube, gw
}

func create[T any](_ T, err error) error { return err }

func startSource(t *testing.T, opts Options) (*Source, context.CancelFunc) {
	t.Helper()
	src, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !src.Synced() {
		if time.Now().After(deadline) {
			t.Fatal("source never synced")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return src, cancel
}

func TestSourceBuildsObjects(t *testing.T) {
	tests := []struct {
		name          string
		gateway, weir bool
		wantGateways  int
		wantPolicies  int
	}{
		{name: "all groups served", gateway: true, weir: true, wantGateways: 1, wantPolicies: 1},
		{name: "no Gateway API CRDs", gateway: false, weir: true, wantGateways: 0, wantPolicies: 1},
		{name: "no CRDs at all", gateway: false, weir: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clients, _, _ := fakeClients(t, tt.gateway, tt.weir)
			st := store.New()
			reg := prometheus.NewRegistry()
			src, _ := startSource(t, Options{Clients: clients, Store: st, NodeName: "node-a", Registerer: reg})

			objs := waitFor(t, st, "initial set", func(*model.Objects) bool { return true })
			if len(objs.Services) != 1 || len(objs.EndpointSlices) != 1 || len(objs.Secrets) != 1 ||
				len(objs.Ingresses) != 1 || len(objs.IngressClasses) != 1 {
				t.Fatalf("core kinds: %d services, %d slices, %d secrets, %d ingresses, %d classes",
					len(objs.Services), len(objs.EndpointSlices), len(objs.Secrets), len(objs.Ingresses), len(objs.IngressClasses))
			}
			if got := len(objs.Gateways); got != tt.wantGateways {
				t.Errorf("gateways = %d, want %d", got, tt.wantGateways)
			}
			if got := len(objs.Policies); got != tt.wantPolicies {
				t.Errorf("policies = %d, want %d", got, tt.wantPolicies)
			}
			svc := objs.Services[0]
			if svc.ManagedFields != nil || svc.Annotations[lastAppliedAnnotation] != "" || svc.Annotations["keep"] != "me" {
				t.Errorf("service not stripped: managedFields %v, annotations %v", svc.ManagedFields, svc.Annotations)
			}
			if len(objs.Namespaces) != 1 {
				t.Fatalf("namespaces = %d, want 1", len(objs.Namespaces))
			}
			if ns := objs.Namespaces[0]; ns.Labels["team"] != "a" || ns.ManagedFields != nil || ns.Annotations != nil || len(ns.Spec.Finalizers) != 0 {
				t.Errorf("namespace not stripped to name and labels: %+v", ns)
			}
			if _, ok := objs.Secrets[0].Data["other"]; ok {
				t.Errorf("secret kept an unused key: %v", objs.Secrets[0].Data)
			}
			if tt.weir && objs.Policies[0].ManagedFields != nil {
				t.Errorf("policy not stripped")
			}
			// The node's IPs as kube-proxy reads them: InternalIP first, then ExternalIP.
			wantIPs := [2]netip.Addr{netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("2001:db8::2")}
			if n := src.Node(); n.Zone != "zone-1" || n.Name != "node-a" || n.IPs != wantIPs {
				t.Errorf("node = %+v", n)
			}
			if got := testutil.ToFloat64(src.m.synced); got != 1 {
				t.Errorf("weir_kube_synced = %v", got)
			}
		})
	}
}

func TestSourceFollowsChanges(t *testing.T) {
	clients, kube, _ := fakeClients(t, true, true)
	st := store.New()
	reg := prometheus.NewRegistry()
	src, _ := startSource(t, Options{Clients: clients, Store: st, Registerer: reg})
	ctx := context.Background()
	var nsEventsBefore float64

	steps := []struct {
		name  string
		do    func() error
		check func(*model.Objects) bool
	}{
		{"add slice", func() error {
			_, err := kube.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-def"}, AddressType: discoveryv1.AddressTypeIPv4}, metav1.CreateOptions{})
			return err
		}, func(o *model.Objects) bool {
			return len(o.EndpointSlices) == 2 && o.EndpointSlices[1].Name == "web-def"
		}},
		{"delete service", func() error {
			return kube.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{})
		}, func(o *model.Objects) bool { return len(o.Services) == 0 }},
		{"add service in another namespace", func() error {
			_, err := kube.CoreV1().Services("a").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "z"}}, metav1.CreateOptions{})
			return err
		}, func(o *model.Objects) bool { return len(o.Services) == 1 && o.Services[0].Namespace == "a" }},
		{"add namespace", func() error {
			_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, metav1.CreateOptions{})
			return err
		}, func(o *model.Objects) bool { return len(o.Namespaces) == 2 && o.Namespaces[0].Name == "a" }},
		{"annotate namespace (no rebuild), then label it", func() error {
			// Events of one informer arrive in order: once the label is in the store,
			// the annotation's update was seen and, carrying no label change, ignored.
			ns, err := kube.CoreV1().Namespaces().Get(ctx, "a", metav1.GetOptions{})
			if err != nil {
				return err
			}
			nsEventsBefore = testutil.ToFloat64(src.m.events.WithLabelValues(kindNamespace))
			ns.Annotations = map[string]string{"note": "x"}
			if ns, err = kube.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
				return err
			}
			ns.Labels = map[string]string{"team": "b"}
			_, err = kube.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
			return err
		}, func(o *model.Objects) bool { return len(o.Namespaces) == 2 && o.Namespaces[0].Labels["team"] == "b" }},
		{"delete namespace", func() error {
			return kube.CoreV1().Namespaces().Delete(ctx, "a", metav1.DeleteOptions{})
		}, func(o *model.Objects) bool { return len(o.Namespaces) == 1 }},
	}
	for _, step := range steps {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		waitFor(t, st, step.name, step.check)
	}
	// The label change and the delete; not the annotation.
	if got := testutil.ToFloat64(src.m.events.WithLabelValues(kindNamespace)) - nsEventsBefore; got != 2 {
		t.Errorf("Namespace events after the annotation = %v, want 2 (label change, delete)", got)
	}
	if got := testutil.ToFloat64(src.m.events.WithLabelValues(kindEndpointSlice)); got < 2 {
		t.Errorf("EndpointSlice events = %v, want >= 2", got)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"no store", Options{Kubeconfig: "x"}},
		{"bad selector", Options{Store: store.New(), LabelSelector: "a in (", Kubeconfig: "x"}},
		{"no config", Options{Store: store.New()}},
		{"missing kubeconfig file", Options{Store: store.New(), Kubeconfig: "/nonexistent/kubeconfig"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.opts); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestTransforms(t *testing.T) {
	node, _ := stripNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{ZoneLabel: "z"}, ManagedFields: managed},
		Status: corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"img"}}}}})
	n := node.(*corev1.Node)
	if len(n.Status.Images) != 0 || n.ManagedFields != nil || n.Labels[ZoneLabel] != "z" {
		t.Errorf("stripNode = %+v", n)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "weir.dev/v1alpha1", "kind": "TrafficPolicy",
		"metadata": map[string]any{"name": "p", "namespace": "n"},
		"spec":     map[string]any{"loadBalancer": map[string]any{"algorithm": "Maglev"}},
	}}
	tp, err := toTrafficPolicy(u)
	if err != nil {
		t.Fatal(err)
	}
	if p := tp.(*weirv1alpha1.TrafficPolicy); p.Name != "p" || p.Spec.LoadBalancer == nil || string(p.Spec.LoadBalancer.Algorithm) != "Maglev" {
		t.Errorf("toTrafficPolicy = %+v", p)
	}
}
