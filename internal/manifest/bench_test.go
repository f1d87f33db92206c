package manifest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeScale writes services Services, each with an EndpointSlice of endpoints
// endpoints, 100 Services (and their slices) to a file.
func writeScale(tb testing.TB, dir string, services, endpoints int) {
	tb.Helper()
	var b strings.Builder
	flush := func(i int) {
		if b.Len() == 0 {
			return
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("svc-%05d.yaml", i)), []byte(b.String()), 0o644); err != nil {
			tb.Fatal(err)
		}
		b.Reset()
	}
	for i := range services {
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: svc-%d, namespace: ns-%d}\nspec:\n  clusterIP: 10.%d.%d.%d\n  ports:\n  - {name: http, port: 80, targetPort: http}\n---\n",
			i, i%50, i>>16&255, i>>8&255, i&255)
		fmt.Fprintf(&b, "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-%d-1\n  namespace: ns-%d\n  labels: {kubernetes.io/service-name: svc-%d}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n", i, i%50, i)
		for e := range endpoints {
			fmt.Fprintf(&b, "- addresses: [10.200.%d.%d]\n  nodeName: node-%d\n  zone: z%d\n", e, i&255, e%3, e%2)
		}
		b.WriteString("---\n")
		if i%100 == 99 {
			flush(i)
		}
	}
	flush(services)
}

// BenchmarkLoad1kServices: 1,000 Services × 10 endpoints in 10 files.
func BenchmarkLoad1kServices(b *testing.B) {
	dir := b.TempDir()
	writeScale(b, dir, 1000, 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Load(dir); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLoadScale loads 10,000 Services × 10 endpoints when WEIR_SCALE=1 (it takes a
// few seconds, so it is not part of the default run).
func TestLoadScale(t *testing.T) {
	if os.Getenv("WEIR_SCALE") == "" {
		t.Skip("set WEIR_SCALE=1 to load 10,000 Services × 10 endpoints")
	}
	dir := t.TempDir()
	writeScale(t, dir, 10000, 10)
	objs, rep, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Services) != 10000 || len(objs.EndpointSlices) != 10000 {
		t.Fatalf("got %s", rep.Summary())
	}
}

// BenchmarkLoad1kHTTPRoutes: 1,000 HTTPRoutes (two rules, matches, a filter, two
// backends each) with their Services, validated against the CRD schema and CEL rules.
func BenchmarkLoad1kHTTPRoutes(b *testing.B) {
	dir := b.TempDir()
	var sb strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&sb, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r-%d, namespace: ns-%d}
spec:
  parentRefs: [{name: gw, namespace: default}]
  hostnames: [r-%d.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-v, value: "2"}]}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-r, value: "%d"}]}}]
    backendRefs: [{name: svc-%d, port: 80, weight: 90}, {name: svc-%d, port: 80, weight: 10}]
  - backendRefs: [{name: svc-%d, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: svc-%d, namespace: ns-%d}
spec: {clusterIP: 10.1.%d.%d, ports: [{name: http, port: 80}]}
---
`, i, i%50, i, i, i, i, i, i, i%50, i>>8, i&255)
	}
	if err := os.WriteFile(filepath.Join(dir, "routes.yaml"), []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Load(dir); err != nil {
			b.Fatal(err)
		}
	}
}
