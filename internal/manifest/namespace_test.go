package manifest

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"

	"weir.dev/weir/internal/model"
)

// TestNamespaceSelectorFromFolder loads a folder with Namespaces and a Gateway whose
// listeners select route namespaces by label, and translates it: the selectors see the
// Namespace objects' labels, and the name label of namespaces that have no object.
func TestNamespaceSelectorFromFolder(t *testing.T) {
	const gateway = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: weir
  listeners:
  - name: team-a
    port: 8080
    protocol: HTTP
    hostname: a.example.com
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {team: a}}
  - name: ops
    port: 8080
    protocol: HTTP
    hostname: ops.example.com
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchExpressions:
          - {key: kubernetes.io/metadata.name, operator: In, values: [ops]}
`
	const namespaces = `apiVersion: v1
kind: Namespace
metadata:
  name: apps
  labels: {team: a}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
`
	route := func(ns string) string {
		return `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: ` + ns + `}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`
	}
	inDir(t, map[string]string{
		"gateway.yaml":    gateway,
		"namespaces.yaml": namespaces,
		"routes.yaml":     route("apps") + route("shop") + route("ops"),
	})
	objs, rep, err := Load(".")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if rep.Loaded["Namespace"] != 2 || len(objs.Namespaces) != 2 {
		t.Fatalf("namespaces: loaded %d, objects %d", rep.Loaded["Namespace"], len(objs.Namespaces))
	}
	if ns := objs.Namespaces[0]; ns.Name != "apps" || ns.Namespace != "" || ns.Labels["kubernetes.io/metadata.name"] != "apps" || ns.Labels["team"] != "a" {
		t.Errorf("Namespace apps = %+v (want the API server's name label added)", ns.ObjectMeta)
	}

	snap := model.Translate(objs, model.Node{})
	tests := []struct {
		ns       string
		accepted bool
		reason   string
	}{
		{"apps", true, "Accepted"},               // team: a on its Namespace object
		{"shop", false, "NotAllowedByListeners"}, // a Namespace object without the label
		{"ops", true, "Accepted"},                // no object: selected by its name label
	}
	for _, tt := range tests {
		st := snap.Gateway.FindStatus("HTTPRoute", tt.ns, "web")
		if st == nil || len(st.Parents) != 1 {
			t.Fatalf("route %s/web: status %+v", tt.ns, st)
		}
		c := meta.FindStatusCondition(st.Parents[0].Conditions, "Accepted")
		if c == nil || (c.Status == "True") != tt.accepted || c.Reason != tt.reason {
			t.Errorf("route %s/web: Accepted %+v, want %v/%s", tt.ns, c, tt.accepted, tt.reason)
		}
	}
	gw := snap.Gateway.FindStatus("Gateway", "infra", "gw")
	for _, l := range gw.Listeners {
		if l.AttachedRoutes != 1 {
			t.Errorf("listener %s: %d attached routes, want 1", l.Name, l.AttachedRoutes)
		}
	}
}
