package kube

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	kubesource "weir.dev/weir/internal/source/kube"
	"weir.dev/weir/internal/store"
)

// TestRenderOverlays needs no API server: each overlay renders, and the node-proxy
// DaemonSet has what node-proxy mode needs.
func TestRenderOverlays(t *testing.T) {
	tests := []struct {
		overlay string
		want    []string // kind/name that must be present
	}{
		{"node-proxy", []string{"CustomResourceDefinition/trafficpolicies.weir.dev", "CustomResourceDefinition/httproutes.gateway.networking.k8s.io",
			"Namespace/weir-system", "ClusterRole/weir-read", "ServiceAccount/weir-node-proxy", "ClusterRoleBinding/weir-node-proxy", "DaemonSet/weir-node-proxy"}},
		{"gateway", []string{"ServiceAccount/weir-gateway", "ClusterRole/weir-gateway", "Role/weir-leader-election",
			"RoleBinding/weir-leader-election", "Role/weir-gateway-services", "RoleBinding/weir-gateway-services",
			"Deployment/weir-gateway", "Service/weir-gateway", "GatewayClass/weir", "IngressClass/weir"}},
	}
	for _, tt := range tests {
		t.Run(tt.overlay, func(t *testing.T) {
			objs, err := render(filepath.Join(repoRoot(), "deploy", "overlays", tt.overlay))
			if err != nil {
				t.Fatal(err)
			}
			var have []string
			for _, o := range objs {
				have = append(have, o.GetKind()+"/"+o.GetName())
				if o.GetKind() != "DaemonSet" {
					continue
				}
				var ds appsv1.DaemonSet
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &ds); err != nil {
					t.Fatal(err)
				}
				checkNodeProxy(t, &ds)
			}
			for _, w := range tt.want {
				if !slices.Contains(have, w) {
					t.Errorf("%s missing from the rendered overlay", w)
				}
			}
		})
	}
}

func checkNodeProxy(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("DaemonSet is not hostNetwork")
	}
	c := spec.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.Capabilities == nil || !slices.Contains(c.SecurityContext.Capabilities.Add, corev1.Capability("NET_ADMIN")) {
		t.Error("DaemonSet lacks NET_ADMIN")
	}
	if !slices.Contains(c.Args, "--node-name=$(NODE_NAME)") {
		t.Errorf("args %v lack --node-name", c.Args)
	}
	var fromDownward bool
	for _, e := range c.Env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			fromDownward = true
		}
	}
	if !fromDownward {
		t.Error("NODE_NAME does not come from the downward API")
	}
	// Probes on the public health port; the admin API stays on loopback (hostNetwork
	// would otherwise open it on every node address).
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port.IntValue() != 10256 {
		t.Errorf("liveness probe = %+v", c.LivenessProbe)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port.IntValue() != 10256 {
		t.Errorf("readiness probe = %+v", c.ReadinessProbe)
	}
	if !slices.Contains(c.Args, "--health-addr=0.0.0.0:10256") || !slices.Contains(c.Args, "--admin-addr=127.0.0.1:9901") {
		t.Errorf("args %v: want --health-addr=0.0.0.0:10256 and --admin-addr=127.0.0.1:9901", c.Args)
	}
}

// TestDeployManifests checks that everything TestMain applied from deploy/ exists in the
// API server (server-side apply refused nothing, the CRDs are established).
func TestDeployManifests(t *testing.T) {
	c := requireCluster(t)
	a, err := newApplier(c.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, overlay := range []string{"node-proxy", "gateway"} {
		objs, err := render(filepath.Join(repoRoot(), "deploy", "overlays", overlay))
		if err != nil {
			t.Fatal(err)
		}
		// Applying again is a no-op that must also succeed.
		if err := a.apply(ctx, objs); err != nil {
			t.Fatalf("%s: %v", overlay, err)
		}
		for _, o := range objs {
			gvk := o.GroupVersionKind()
			m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatal(err)
			}
			ri := a.dyn.Resource(m.Resource)
			if o.GetNamespace() != "" {
				_, err = ri.Namespace(o.GetNamespace()).Get(ctx, o.GetName(), metav1.GetOptions{})
			} else {
				_, err = ri.Get(ctx, o.GetName(), metav1.GetOptions{})
			}
			if err != nil {
				t.Errorf("%s: %s %s not found after apply: %v", overlay, gvk.Kind, o.GetName(), err)
			}
		}
	}
}

// TestRBAC asks the API server what weir's ServiceAccounts may do: what they need, and
// nothing more.
func TestRBAC(t *testing.T) {
	c := requireCluster(t)
	admin := kubernetes.NewForConfigOrDie(c.AdminConfig())
	type access struct {
		verb, group, resource, sub, ns string
		allowed                        bool
	}
	read := []access{
		{"watch", "", "services", "", "", true},
		{"list", "discovery.k8s.io", "endpointslices", "", "", true},
		{"watch", "networking.k8s.io", "ingresses", "", "", true},
		{"list", "networking.k8s.io", "ingressclasses", "", "", true},
		{"get", "", "nodes", "", "", true},
		{"list", "", "namespaces", "", "", true},
		{"watch", "", "namespaces", "", "", true},
		{"update", "", "namespaces", "", "", false},
		{"delete", "", "namespaces", "", "", false},
		{"watch", "gateway.networking.k8s.io", "httproutes", "", "", true},
		{"list", "gateway.networking.k8s.io", "backendtlspolicies", "", "", true},
		{"watch", "weir.dev", "trafficpolicies", "", "", true},
		{"create", "", "services", "", "default", false},
		{"delete", "discovery.k8s.io", "endpointslices", "", "default", false},
		{"list", "", "configmaps", "", "", false},
		{"update", "", "nodes", "", "", false},
		{"create", "", "serviceaccounts", "token", "weir-system", false},
		{"update", "gateway.networking.k8s.io", "gateways", "", "default", false},
		{"update", "weir.dev", "trafficpolicies", "", "default", false},
	}
	tests := []struct {
		sa     string
		checks []access
	}{
		{"weir-node-proxy", append(slices.Clone(read),
			access{"watch", "", "pods", "", "", true}, // --network-policy
			access{"list", "networking.k8s.io", "networkpolicies", "", "", true},
			access{"list", "", "secrets", "", "", false},
			access{"patch", "networking.k8s.io", "ingresses", "status", "default", false},
			access{"update", "coordination.k8s.io", "leases", "", "weir-system", false},
			access{"create", "", "services", "", "weir-system", false},
		)},
		{"weir-gateway", append(slices.Clone(read),
			access{"list", "", "pods", "", "", false},
			access{"list", "networking.k8s.io", "networkpolicies", "", "", false},
			access{"watch", "", "secrets", "", "", true},
			access{"create", "", "secrets", "", "default", false},
			access{"patch", "networking.k8s.io", "ingresses", "status", "default", true},
			access{"patch", "gateway.networking.k8s.io", "gateways", "status", "default", true},
			access{"patch", "gateway.networking.k8s.io", "httproutes", "status", "default", true},
			access{"patch", "gateway.networking.k8s.io", "gatewayclasses", "status", "", true},
			access{"update", "networking.k8s.io", "ingresses", "", "default", false},
			access{"update", "coordination.k8s.io", "leases", "", "weir-system", true},
			access{"update", "coordination.k8s.io", "leases", "", "kube-system", false},
			access{"create", "", "services", "", "weir-system", true},
			access{"update", "", "services", "", "weir-system", true},
			access{"delete", "", "services", "", "weir-system", true},
			access{"delete", "", "services", "", "kube-system", false},
		)},
	}
	for _, tt := range tests {
		t.Run(tt.sa, func(t *testing.T) {
			user := "system:serviceaccount:weir-system:" + tt.sa
			for _, a := range tt.checks {
				sar, err := admin.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
					Spec: authorizationv1.SubjectAccessReviewSpec{User: user,
						Groups: []string{"system:serviceaccounts", "system:serviceaccounts:weir-system", "system:authenticated"},
						ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: a.verb, Group: a.group, Resource: a.resource,
							Subresource: a.sub, Namespace: a.ns}},
				}, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if sar.Status.Allowed != a.allowed {
					t.Errorf("%s %s %s/%s in %q: allowed=%v, want %v", tt.sa, a.verb, a.group, a.resource+"/"+a.sub, a.ns, sar.Status.Allowed, a.allowed)
				}
			}
		})
	}

	// And with the token itself: a forbidden call fails.
	token := serviceAccountToken(t, admin, "weir-node-proxy")
	sa := kubernetes.NewForConfigOrDie(c.TokenConfig(token))
	if _, err := sa.CoreV1().Secrets("weir-system").List(context.Background(), metav1.ListOptions{}); err == nil {
		t.Error("weir-node-proxy listed Secrets")
	}
	if _, err := sa.CoreV1().Services("").List(context.Background(), metav1.ListOptions{Limit: 1}); err != nil {
		t.Errorf("weir-node-proxy cannot list Services: %v", err)
	}
	// The token alone is enough for the source in node-proxy mode: it syncs (skipping
	// Secrets, which it may not read).
	st := store.New()
	runSource(t, c, token, kubesource.Options{Store: st, NodeName: "node-a"})
	if objs, _ := st.Current(); objs == nil {
		t.Error("no object set after sync")
	}
}
