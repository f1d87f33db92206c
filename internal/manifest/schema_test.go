package manifest

import (
	"strings"
	"testing"
	"time"
)

// The invalid examples of the Gateway API's own CEL tests (tests/cel in
// sigs.k8s.io/gateway-api) that weir's manifests could hit, one or more per rule family,
// written as manifests. Each must be refused with the CRD's message, at the field's line.
func TestGatewayAPISchemaRules(t *testing.T) {
	const route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n" // rules from line 7
	const grpc = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n"
	const gw = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  gatewayClassName: weir\n"
	backend := "    backendRefs: [{name: web, port: 80}]\n"
	tests := []struct {
		family, name, yaml string
		want               []string // substrings of the error lines, in order
	}{
		// Paths.
		{"paths", "dot-dot segment in a PathPrefix", route + "  - matches: [{path: {type: PathPrefix, value: /public/../admin}}]\n" + backend,
			[]string{"r.yaml:7: HTTPRoute default/r: spec.rules[0].matches[0].path: must not contain '/../' when type one of ['Exact', 'PathPrefix']"}},
		{"paths", "fragment in a path", route + "  - matches: [{path: {type: Exact, value: /a#b}}]\n" + backend,
			[]string{"spec.rules[0].matches[0].path: must not contain '#'"}},
		{"paths", "encoded slash in a path", route + "  - matches: [{path: {type: PathPrefix, value: /a%2fb}}]\n" + backend,
			[]string{"spec.rules[0].matches[0].path: must not contain '%2f'"}},
		{"paths", "relative path", route + "  - matches: [{path: {value: foo}}]\n" + backend,
			[]string{"value must be an absolute path and start with '/'"}},
		{"paths", "path ending in /.", route + "  - matches: [{path: {type: PathPrefix, value: /foo/.}}]\n" + backend,
			[]string{"must not end with '/.'"}},
		{"paths", "invalid characters", route + "  - matches: [{path: {type: PathPrefix, value: \"/[]\"}}]\n" + backend,
			[]string{"must only contain valid characters"}},
		{"paths", "unknown match type", route + "  - matches: [{path: {type: Prefix, value: /}}]\n" + backend,
			[]string{`spec.rules[0].matches[0].path.type: "Prefix" is not supported: supported values: "Exact", "PathPrefix", "RegularExpression"`}},
		// Headers and query parameters.
		{"headers", "invalid header name", route + "  - matches: [{headers: [{name: \"bad header\", value: x}]}]\n" + backend,
			[]string{"spec.rules[0].matches[0].headers[0].name: \"bad header\": should match"}},
		{"headers", "header matched twice", route + "  - matches: [{headers: [{name: x-a, value: a}, {name: x-a, value: b}]}]\n" + backend,
			[]string{"spec.rules[0].matches[0].headers[1]: Duplicate value"}},
		{"headers", "header set twice by a modifier", route + "  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: a}, {name: x, value: b}]}}]\n" + backend,
			[]string{"requestHeaderModifier.set[1]: Duplicate value"}},
		// Filters, redirects and rewrites.
		{"filters", "filter type without its field", route + "  - filters: [{type: RequestHeaderModifier}]\n" + backend,
			[]string{"filter.requestHeaderModifier must be specified for RequestHeaderModifier filter.type"}},
		{"filters", "filter field of another type", route + "  - filters: [{type: RequestMirror, requestHeaderModifier: {set: [{name: x, value: a}]}}]\n" + backend,
			[]string{"filter.requestHeaderModifier must be nil if the filter.type is not RequestHeaderModifier", "filter.requestMirror must be specified for RequestMirror filter.type"}},
		{"filters", "URLRewrite repeated", route + "  - filters: [{type: URLRewrite, urlRewrite: {hostname: a}}, {type: URLRewrite, urlRewrite: {hostname: b}}]\n" + backend,
			[]string{"URLRewrite filter cannot be repeated"}},
		{"redirects", "redirect with backendRefs", route + "  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301}}]\n" + backend,
			[]string{"RequestRedirect filter must not be used together with backendRefs"}},
		{"redirects", "redirect and rewrite together", route + "  - filters: [{type: RequestRedirect, requestRedirect: {hostname: a}}, {type: URLRewrite, urlRewrite: {hostname: b}}]\n",
			[]string{"May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both"}},
		{"redirects", "replacePrefixMatch with an Exact match", route + "  - matches: [{path: {type: Exact, value: /foo}}]\n    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /bar}}}]\n",
			[]string{"When using RequestRedirect filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified"}},
		{"redirects", "redirect status not allowed", route + "  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 200}}]\n",
			[]string{`requestRedirect.statusCode: 200 is not supported: supported values: "301", "302", "303", "307", "308"`}},
		{"rewrites", "ReplaceFullPath without its value", route + "  - filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]\n" + backend,
			[]string{"replaceFullPath must be specified when type is set to 'ReplaceFullPath'"}},
		{"rewrites", "replacePrefixMatch under the wrong type", route + "  - matches: [{path: {type: PathPrefix, value: /foo}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replacePrefixMatch: /bar}}}]\n" + backend,
			[]string{"replaceFullPath must be specified when type is set to 'ReplaceFullPath'", "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set"}},
		// Backends and weights.
		{"backends", "Service backend without a port", route + "  - backendRefs: [{name: web}]\n",
			[]string{"spec.rules[0].backendRefs[0]: Must have port for Service reference"}},
		{"weights", "weight above the maximum", route + "  - backendRefs: [{name: web, port: 80, weight: 1000001}]\n",
			[]string{"spec.rules[0].backendRefs[0].weight: 1000001: should be less than or equal to 1000000"}},
		{"weights", "negative weight", route + "  - backendRefs: [{name: web, port: 80, weight: -1}]\n",
			[]string{"spec.rules[0].backendRefs[0].weight: -1: should be greater than or equal to 0"}},
		{"weights", "mirror fraction above one", route + "  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web, port: 80}, fraction: {numerator: 3, denominator: 2}}}]\n" + backend,
			[]string{"numerator must be less than or equal to denominator"}},
		// Parents, timeouts, CORS.
		{"parentRefs", "same parent twice without sectionName", "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}, {name: gw}]\n",
			[]string{"spec.parentRefs: sectionName must be unique when parentRefs includes 2 or more references to the same parent"}},
		{"timeouts", "backendRequest longer than request", route + "  - timeouts: {request: 1s, backendRequest: 2s}\n" + backend,
			[]string{"backendRequest timeout cannot be longer than request timeout"}},
		{"timeouts", "malformed duration", route + "  - timeouts: {request: 1 second}\n" + backend,
			[]string{`spec.rules[0].timeouts.request: "1 second": should match`}},
		{"cors", "wildcard origin among others", route + "  - filters: [{type: CORS, cors: {allowOrigins: [\"*\", \"https://a.example\"]}}]\n" + backend,
			[]string{"AllowOrigins cannot contain '*' alongside other origins"}},
		{"cors", "origin without a scheme", route + "  - filters: [{type: CORS, cors: {allowOrigins: [\"a.example\"]}}]\n" + backend,
			[]string{`cors.allowOrigins[0]: "a.example": should match`}},
		{"hostnames", "route hostname with an underscore", "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  hostnames: [\"a_b.example\"]\n",
			[]string{`spec.hostnames[0]: "a_b.example": should match`}},
		{"rules", "too many matches across rules", route + strings.Repeat("  - matches: ["+strings.Repeat("{path: {value: /a}}, ", 63)+"{path: {value: /a}}]\n", 3),
			[]string{"While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules in a route must be less than 128"}},
		// GRPCRoute.
		{"grpc", "method match without service or method", grpc + "  - matches: [{method: {type: Exact}}]\n" + backend,
			[]string{"One or both of 'service' or 'method' must be specified"}},
		{"grpc", "invalid service name", grpc + "  - matches: [{method: {service: \"foo/bar\"}}]\n" + backend,
			[]string{"service must only contain valid characters"}},
		// Gateway listeners and TLS.
		{"listeners", "listener name twice", gw + "  listeners:\n  - {name: a, port: 80, protocol: HTTP}\n  - {name: a, port: 81, protocol: HTTP}\n",
			[]string{`spec.listeners[1]: Duplicate value: {"name":"a"}`}}, // the list-map key, before the CEL rule
		{"listeners", "same port, protocol and hostname", gw + "  listeners:\n  - {name: a, port: 80, protocol: HTTP}\n  - {name: b, port: 80, protocol: HTTP}\n",
			[]string{"Combination of port, protocol and hostname must be unique for each listener"}},
		{"listeners", "hostname on a TCP listener", gw + "  listeners:\n  - {name: a, port: 80, protocol: TCP, hostname: a.example}\n",
			[]string{"hostname must not be specified for protocols ['TCP', 'UDP']"}},
		{"listeners", "port out of range", gw + "  listeners:\n  - {name: a, port: 0, protocol: HTTP}\n",
			[]string{"spec.listeners[0].port: 0: should be greater than or equal to 1"}},
		{"tls", "tls on an HTTP listener", gw + "  listeners:\n  - {name: a, port: 80, protocol: HTTP, tls: {certificateRefs: [{name: c}]}}\n",
			[]string{"tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"}},
		{"tls", "HTTPS without certificates", gw + "  listeners:\n  - {name: a, port: 443, protocol: HTTPS, tls: {mode: Terminate}}\n",
			[]string{"certificateRefs or options must be specified when mode is Terminate"}},
		{"tls", "HTTPS in passthrough mode", gw + "  listeners:\n  - {name: a, port: 443, protocol: HTTPS, tls: {mode: Passthrough}}\n",
			[]string{"tls mode must be Terminate for protocol HTTPS"}},
		{"addresses", "IP address twice", gw + "  listeners: [{name: a, port: 80, protocol: HTTP}]\n  addresses: [{type: IPAddress, value: 10.0.0.1}, {type: IPAddress, value: 10.0.0.1}]\n",
			[]string{"IPAddress values must be unique"}},
		// TLSRoute, BackendTLSPolicy, GatewayClass.
		{"hostnames", "TLSRoute hostname that is an IP", "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: t}\nspec:\n  hostnames: [\"10.0.0.1\"]\n  rules: [{backendRefs: [{name: web, port: 443}]}]\n",
			[]string{"Hostnames cannot contain an IP"}},
		{"tls", "BackendTLSPolicy with two CA sources", "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: p}\nspec:\n  targetRefs: [{group: \"\", kind: Service, name: web}]\n  validation: {hostname: web.example, wellKnownCACertificates: System, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: ca}]}\n",
			[]string{"must not contain both CACertificateRefs and WellKnownCACertificates"}},
		{"names", "GatewayClass controller name without a domain", "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: c}\nspec: {controllerName: weir}\n",
			[]string{`spec.controllerName: "weir": should match`}},
	}
	for _, tt := range tests {
		t.Run(tt.family+"/"+tt.name, func(t *testing.T) {
			file := "r.yaml"
			inDir(t, map[string]string{file: tt.yaml})
			_, _, err := Load(".")
			if err == nil {
				t.Fatalf("Load accepted it; want %q", tt.want)
			}
			lines := errorLines(err)
			i := 0
			for _, l := range lines {
				if i < len(tt.want) && strings.Contains(l, tt.want[i]) {
					if !strings.HasPrefix(l, file+":") {
						t.Errorf("error %q does not start with file:line", l)
					}
					i++
				}
			}
			if i < len(tt.want) {
				t.Errorf("errors:\n%s\nwant lines containing, in order:\n%s", join(lines), join(tt.want))
			}
		})
	}
}

// Valid manifests that exercise the same rules pass, with the schema's defaults.
func TestGatewayAPISchemaAccepts(t *testing.T) {
	inDir(t, map[string]string{"r.yaml": `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw, sectionName: a}, {name: gw, sectionName: b}]
  hostnames: ["*.example.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: "/foo/bar-%20~baz"}}, {path: {type: RegularExpression, value: "/a/../b#"}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: a}]}}]
    backendRefs: [{name: web, port: 80, weight: 0}]
    timeouts: {request: 2s, backendRequest: 1s}
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 302}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 127.0.0.10, ports: [{port: 80}]}
`})
	if _, _, err := Load("."); err != nil {
		t.Fatalf("Load: %v", err)
	}
}

// The CRD schemas compile once per process: a second load of the same kinds does not
// compile the CEL programs again.
func TestSchemaCompiledOnce(t *testing.T) {
	inDir(t, map[string]string{"r.yaml": "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}\n"})
	if _, _, err := Load("."); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 10 {
		if _, _, err := Load("."); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start) / 10; d > 50*time.Millisecond {
		t.Errorf("a load of one HTTPRoute took %v after the first; the validators are rebuilt", d)
	}
}

func TestUnknownKind(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"core typo", "apiVersion: v1\nkind: Sevrice\nmetadata: {name: web}\n",
			`k.yaml:2: Sevrice web: kind: "Sevrice" is not a kind of the core API group (apiVersion v1) (did you mean Service?)`},
		{"Gateway API plural", "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoutes\nmetadata: {name: r}\n",
			`k.yaml:2: HTTPRoutes r: kind: "HTTPRoutes" is not a kind of API group gateway.networking.k8s.io (did you mean HTTPRoute?)`},
		{"apps typo", "apiVersion: apps/v1\nkind: Deploymnet\nmetadata: {name: d}\n",
			`did you mean Deployment?`},
		{"lower case", "apiVersion: discovery.k8s.io/v1\nkind: endpointslice\nmetadata: {name: s}\n",
			`did you mean EndpointSlice?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inDir(t, map[string]string{"k.yaml": tt.yaml})
			_, _, err := Load(".")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// Kinds of groups nobody here defines, and kinds Kubernetes has that weir does not
	// use, are skipped as before.
	inDir(t, map[string]string{"k.yaml": "apiVersion: example.com/v1\nkind: Sevrice\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: c}\n"})
	_, rep, err := Load(".")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if rep.Skipped["Sevrice"] != 1 || rep.Skipped["ConfigMap"] != 1 || rep.Skipped["TCPRoute"] != 1 {
		t.Errorf("Skipped = %v", rep.Skipped)
	}
}

func TestMissingBackendWarning(t *testing.T) {
	inDir(t, map[string]string{"r.yaml": `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  rules:
  - backendRefs:
    - {name: gone, port: 80}
    - {name: web, port: 81}
    - {name: web, port: 80}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 127.0.0.10, ports: [{port: 80}]}
`})
	_, rep, err := Load(".")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []string{
		"r.yaml:7: HTTPRoute default/r: spec.rules[0].backendRefs[0].name: Service default/gone does not exist: the route's ResolvedRefs condition is False (BackendNotFound) and requests sent to this backend get HTTP 500",
		"r.yaml:8: HTTPRoute default/r: spec.rules[0].backendRefs[1].port: Service default/web has no TCP port 81: the route's ResolvedRefs condition is False (BackendNotFound) and requests sent to this backend get HTTP 500",
	}
	if got := errorLines(rep.Warnings); !equal(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", join(got), join(want))
	}
}
