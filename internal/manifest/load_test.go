package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weir.dev/weir/internal/model"
)

// inDir writes files into a temporary folder and makes it the working directory, so
// errors name files as "web.yaml".
func inDir(t *testing.T, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
}

func errorLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

func TestLoadValidFolder(t *testing.T) {
	objs, rep, err := Load("testdata/valid")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	const wantSummary = "4 files: 2 Service, 1 BackendTLSPolicy, 1 EndpointSlice, 1 Endpoints, 1 GRPCRoute, 1 Gateway, 1 GatewayClass, 1 HTTPRoute, 1 Ingress, 1 IngressClass, 1 ReferenceGrant, 1 Secret, 1 TLSRoute, 1 TrafficPolicy (2 EndpointSlices mirrored from Endpoints); skipped 2 Deployment, 1 ConfigMap (kinds weir does not use)"
	if got := rep.Summary(); got != wantSummary {
		t.Errorf("Summary:\n got %s\nwant %s", got, wantSummary)
	}
	if rep.Skipped["Deployment"] != 2 || rep.Skipped["ConfigMap"] != 1 {
		t.Errorf("Skipped = %v", rep.Skipped)
	}
	// One of each kind weir reads, decoded into the v1 types (HTTPRoute and
	// ReferenceGrant are written as v1beta1 in the fixture).
	kinds := []struct {
		kind string
		n    int
	}{
		{"Services", len(objs.Services)},
		{"EndpointSlices", len(objs.EndpointSlices)},
		{"Secrets", len(objs.Secrets)},
		{"Ingresses", len(objs.Ingresses)},
		{"IngressClasses", len(objs.IngressClasses)},
		{"GatewayClasses", len(objs.GatewayClasses)},
		{"Gateways", len(objs.Gateways)},
		{"HTTPRoutes", len(objs.HTTPRoutes)},
		{"GRPCRoutes", len(objs.GRPCRoutes)},
		{"TLSRoutes", len(objs.TLSRoutes)},
		{"ReferenceGrants", len(objs.ReferenceGrants)},
		{"Policies", len(objs.Policies)},
		{"BackendTLSPolicies", len(objs.BackendTLSPolicies)},
	}
	want := map[string]int{"Services": 2, "EndpointSlices": 3}
	for _, k := range kinds {
		w := want[k.kind]
		if w == 0 {
			w = 1
		}
		if k.n != w {
			t.Errorf("%s: got %d, want %d", k.kind, k.n, w)
		}
	}
	if got := objs.BackendTLSPolicies[0].APIVersion; got != "gateway.networking.k8s.io/v1" {
		t.Errorf("BackendTLSPolicy apiVersion = %q, want the v1 it was converted to", got)
	}
	if got := objs.HTTPRoutes[0].APIVersion; got != "gateway.networking.k8s.io/v1" {
		t.Errorf("HTTPRoute apiVersion = %q, want the v1 it was converted to", got)
	}
	if objs.IngressClasses[0].Namespace != "" || objs.GatewayClasses[0].Namespace != "" {
		t.Errorf("cluster-scoped kinds got a namespace")
	}
	// Sorted by namespace then name.
	if objs.Services[0].Name != "web" || objs.Services[1].Namespace != "shop" {
		t.Errorf("Services not sorted: %s/%s, %s/%s", objs.Services[0].Namespace, objs.Services[0].Name,
			objs.Services[1].Namespace, objs.Services[1].Name)
	}
}

func TestDefaults(t *testing.T) {
	objs, _, err := Load("testdata/valid")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	web := findService(t, objs, "default", "web")
	slice := findSlice(t, objs, "default", "web-1")
	secret := objs.Secrets[0]
	route := objs.HTTPRoutes[0]
	gw := objs.Gateways[0]
	tests := []struct {
		name      string
		got, want any
	}{
		{"namespace", web.Namespace, "default"},
		{"type", web.Spec.Type, corev1.ServiceTypeClusterIP},
		{"port protocol", web.Spec.Ports[0].Protocol, corev1.ProtocolTCP},
		{"named targetPort kept", web.Spec.Ports[0].TargetPort, intstr.FromString("web")},
		{"targetPort = port", web.Spec.Ports[1].TargetPort, intstr.FromInt32(53)},
		{"affinity timeout", *web.Spec.SessionAffinityConfig.ClientIP.TimeoutSeconds, int32(10800)},
		{"clusterIPs from clusterIP", web.Spec.ClusterIPs, []string{"127.0.0.10"}},
		{"ipFamilies from clusterIPs", web.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv4Protocol}},
		{"ipFamilyPolicy", *web.Spec.IPFamilyPolicy, corev1.IPFamilyPolicySingleStack},
		{"internalTrafficPolicy", *web.Spec.InternalTrafficPolicy, corev1.ServiceInternalTrafficPolicyCluster},
		{"slice port protocol", *slice.Ports[0].Protocol, corev1.ProtocolTCP},
		{"unset ready is ready", *slice.Endpoints[0].Conditions.Ready, true},
		{"unset serving is serving", *slice.Endpoints[0].Conditions.Serving, true},
		{"unset terminating is not", *slice.Endpoints[0].Conditions.Terminating, false},
		{"explicit conditions kept", *slice.Endpoints[1].Conditions.Terminating, true},
		{"secret stringData merged", string(secret.Data["tls.key"]), "-----BEGIN PRIVATE KEY-----"},
		{"secret stringData cleared", len(secret.StringData), 0},
		{"route path type", *route.Spec.Rules[0].Matches[0].Path.Type, gatewayv1.PathMatchPathPrefix},
		{"route path value", *route.Spec.Rules[0].Matches[0].Path.Value, "/"},
		{"backend weight", *route.Spec.Rules[0].BackendRefs[0].Weight, int32(1)},
		{"backend kind", *route.Spec.Rules[0].BackendRefs[0].Kind, gatewayv1.Kind("Service")},
		{"parentRef kind", *route.Spec.ParentRefs[0].Kind, gatewayv1.Kind("Gateway")},
		{"listener allowedRoutes", *gw.Spec.Listeners[0].AllowedRoutes.Namespaces.From, gatewayv1.NamespacesFromSame},
		{"listener tls mode", *gw.Spec.Listeners[0].TLS.Mode, gatewayv1.TLSModeTerminate},
		{"grpc method type", *objs.GRPCRoutes[0].Spec.Rules[0].Matches[0].Method.Type, gatewayv1.GRPCMethodMatchExact},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !equal(tt.got, tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}
}

func TestEndpointsMirroring(t *testing.T) {
	objs, _, err := Load("testdata/valid/legacy.json")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(objs.EndpointSlices) != 2 {
		t.Fatalf("got %d slices, want one per address family (2)", len(objs.EndpointSlices))
	}
	v4 := findSlice(t, objs, "shop", "legacy-mirror-0-ipv4")
	v6 := findSlice(t, objs, "shop", "legacy-mirror-0-ipv6")
	type ep struct {
		addr           string
		ready, serving bool
		hostname, node string
	}
	flat := func(s *discoveryv1.EndpointSlice) []ep {
		var out []ep
		for _, e := range s.Endpoints {
			x := ep{addr: e.Addresses[0], ready: *e.Conditions.Ready, serving: *e.Conditions.Serving}
			if e.Hostname != nil {
				x.hostname = *e.Hostname
			}
			if e.NodeName != nil {
				x.node = *e.NodeName
			}
			out = append(out, x)
		}
		return out
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"v4 endpoints", flat(v4), []ep{{"127.0.0.3", true, true, "a", "node-a"}, {"127.0.0.4", false, false, "", ""}}},
		{"v6 endpoints", flat(v6), []ep{{"::1", true, true, "", ""}}},
		{"address types", []discoveryv1.AddressType{v4.AddressType, v6.AddressType}, []discoveryv1.AddressType{"IPv4", "IPv6"}},
		{"service label", v4.Labels[discoveryv1.LabelServiceName], "legacy"},
		{"ports", []int32{*v4.Ports[0].Port, *v6.Ports[0].Port}, []int32{9001, 9001}},
		{"port protocol", *v4.Ports[0].Protocol, corev1.ProtocolTCP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !equal(tt.got, tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}
}

func TestMultiDocumentAndLists(t *testing.T) {
	tests := []struct {
		name     string
		content  string
		services int
		skipped  map[string]int
	}{
		{"multi-document", svc("a", "127.0.0.1") + "---\n" + svc("b", "127.0.0.2") + "---\n---\n# only a comment\n", 2, map[string]int{}},
		{"kind List", "apiVersion: v1\nkind: List\nitems:\n- " + indent(svc("a", "127.0.0.1")) + "- apiVersion: apps/v1\n  kind: DaemonSet\n  metadata: {name: x}\n", 1, map[string]int{"DaemonSet": 1}},
		{"typed ServiceList", "apiVersion: v1\nkind: ServiceList\nitems:\n- metadata: {name: a}\n  spec: {clusterIP: 127.0.0.1, ports: [{port: 80}]}\n- metadata: {name: b}\n  spec: {clusterIP: 127.0.0.2, ports: [{port: 80}]}\n", 2, map[string]int{}},
		{"a Service of another group", "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {template: {}}\n", 0, map[string]int{"Service.serving.knative.dev": 1}},
		{"JSON", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"clusterIP":"127.0.0.1","ports":[{"port":80}]}}`, 1, map[string]int{}},
		{"YAML anchors and merge keys", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports:\n  - &p {name: a, port: 80}\n  - <<: *p\n    name: b\n    port: 81\n", 1, map[string]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inDir(t, map[string]string{"m.yaml": tt.content})
			objs, rep, err := Load(".")
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(objs.Services) != tt.services {
				t.Errorf("got %d Services, want %d", len(objs.Services), tt.services)
			}
			if !equal(rep.Skipped, tt.skipped) {
				t.Errorf("Skipped = %v, want %v", rep.Skipped, tt.skipped)
			}
		})
	}
}

func TestSkipsHiddenAndTempFiles(t *testing.T) {
	bad := "this: [is not yaml\n"
	inDir(t, map[string]string{
		"a.yaml":           svc("a", "127.0.0.1"),
		"sub/b.yml":        svc("b", "127.0.0.2"),
		"sub/c.JSON":       `{"apiVersion":"v1","kind":"Service","metadata":{"name":"c"},"spec":{"clusterIP":"127.0.0.3","ports":[{"port":80}]}}`,
		".hidden.yaml":     bad,
		".git/config.yaml": bad,
		"a.yaml~":          bad,
		"#a.yaml#":         bad,
		".a.yaml.swp":      bad,
		"README.md":        bad,
		"..data/x.yaml":    bad,
	})
	objs, rep, err := Load(".")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(objs.Services) != 3 || rep.Files != 3 {
		t.Errorf("got %d Services from %d files, want 3 from 3", len(objs.Services), rep.Files)
	}
}

func TestConfigMapVolumeLayout(t *testing.T) {
	// A ConfigMap volume: files are symlinks to ..data/, itself a symlink to a hidden
	// timestamped folder.
	dir := t.TempDir()
	ts := filepath.Join(dir, "..2026_11_23_10_00_00.1")
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "web.yaml"), []byte(svc("web", "127.0.0.1")), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, link := range [][2]string{{filepath.Base(ts), "..data"}, {"..data/web.yaml", "web.yaml"}} {
		if err := os.Symlink(link[0], filepath.Join(dir, link[1])); err != nil {
			t.Fatal(err)
		}
	}
	objs, rep, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(objs.Services) != 1 || rep.Files != 1 {
		t.Errorf("got %d Services from %d files, want 1 from 1", len(objs.Services), rep.Files)
	}
}

func TestLoadMissingPath(t *testing.T) {
	inDir(t, nil)
	_, _, err := Load("nope.yaml")
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("err = %v, want Errors", err)
	}
	if got, want := err.Error(), "nope.yaml: cannot read: no such file or directory"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{"web.yaml", 14, "Service default/web", "spec.ports[0].port", "70000 is not in 1..65535"}, "web.yaml:14: Service default/web: spec.ports[0].port: 70000 is not in 1..65535"},
		{Error{"web.yaml", 3, "", "kind", "apiVersion and kind are required"}, "web.yaml:3: kind: apiVersion and kind are required"},
		{Error{"web.yaml", 0, "", "", "cannot read: permission denied"}, "web.yaml: cannot read: permission denied"},
		{Error{"b.yaml", 1, "Service default/web", "metadata.name", "duplicate"}, "b.yaml:1: Service default/web: metadata.name: duplicate"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
	joined := Errors{tests[0].err, tests[1].err}.Error()
	if joined != tests[0].want+"\n"+tests[1].want {
		t.Errorf("Errors.Error() = %q", joined)
	}
}

func svc(name, ip string) string {
	return "apiVersion: v1\nkind: Service\nmetadata:\n  name: " + name + "\nspec:\n  clusterIP: " + ip + "\n  ports:\n  - port: 80\n"
}

// indent makes a block the body of a YAML list item.
func indent(s string) string {
	return strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
}

func findService(t *testing.T, objs *model.Objects, ns, name string) *corev1.Service {
	t.Helper()
	for _, s := range objs.Services {
		if s.Namespace == ns && s.Name == name {
			return s
		}
	}
	t.Fatalf("no Service %s/%s", ns, name)
	return nil
}

func findSlice(t *testing.T, objs *model.Objects, ns, name string) *discoveryv1.EndpointSlice {
	t.Helper()
	for _, s := range objs.EndpointSlices {
		if s.Namespace == ns && s.Name == name {
			return s
		}
	}
	t.Fatalf("no EndpointSlice %s/%s", ns, name)
	return nil
}

// TestEndpointsMirroringRules: Endpoints are mirrored as Kubernetes' mirroring
// controller does, except that a Service with a selector but no EndpointSlice in the
// files keeps its Endpoints (they stand in for the EndpointSlice controller).
func TestEndpointsMirroringRules(t *testing.T) {
	service := func(selector string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 127.0.0.10, " + selector + "ports: [{port: 80, targetPort: 8080}]}\n"
	}
	endpoints := func(meta string) string {
		return "---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: web" + meta + "}\nsubsets: [{addresses: [{ip: 127.0.0.1}], ports: [{port: 8080}]}]\n"
	}
	const slice = "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-abcde, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints: [{addresses: [127.0.0.2]}]\n"
	tests := []struct {
		name                  string
		content               string
		mirrored, notMirrored int
		slices                int
	}{
		{"no selector: mirrored", service("") + endpoints(""), 1, 0, 1},
		{"no selector, with a slice too: both (the mirroring controller would write it)", service("") + endpoints("") + slice, 1, 0, 2},
		{"selector, no slice: the Endpoints stand in", service("selector: {app: web}, ") + endpoints(""), 1, 0, 1},
		{"selector and a slice (a kubectl dump): the slice wins", service("selector: {app: web}, ") + endpoints("") + slice, 0, 1, 1},
		{"skip-mirror label", service("") + endpoints(", labels: {endpointslice.kubernetes.io/skip-mirror: \"true\"}"), 0, 0, 0},
		{"leader-election lock", service("") + endpoints(", annotations: {control-plane.alpha.kubernetes.io/leader: x}"), 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inDir(t, map[string]string{"m.yaml": tt.content})
			objs, rep, err := Load(".")
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if rep.Mirrored != tt.mirrored || rep.NotMirrored != tt.notMirrored || len(objs.EndpointSlices) != tt.slices {
				t.Errorf("mirrored %d, not mirrored %d, slices %d; want %d, %d, %d (%s)",
					rep.Mirrored, rep.NotMirrored, len(objs.EndpointSlices), tt.mirrored, tt.notMirrored, tt.slices, rep.Summary())
			}
		})
	}
}
