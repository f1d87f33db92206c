package manifest

import (
	"errors"
	"strings"
	"testing"
)

// Each case is one web.yaml (and sometimes more files) and the exact errors Load gives.
func TestValidationErrors(t *testing.T) {
	const head = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n"                                                                                     // spec fields start on line 6
	const slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  labels: {kubernetes.io/service-name: web}\n"                     // line 6 on
	const webSvc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: 127.0.0.10\n  ports: [{name: http, port: 80, targetPort: 8080}]\n---\n" // 7 lines
	const namedSvc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: 127.0.0.10\n  ports: [{name: web, port: 80, targetPort: http}]\n---\n"
	const policy = webSvc + "apiVersion: weir.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p}\nspec:\n  targetRefs: [{group: \"\", kind: Service, name: web}]\n" // spec fields from line 13
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{
			name:  "port out of range",
			files: map[string]string{"web.yaml": head + "  clusterIP: 127.0.0.10\n  ports:\n  - name: http\n    port: 80\n  - name: big\n    port: 70000\n"},
			want:  []string{"web.yaml:11: Service default/web: spec.ports[1].port: 70000 is not in 1..65535"},
		},
		{
			name:  "unknown protocol",
			files: map[string]string{"web.yaml": head + "  ports:\n  - port: 80\n    protocol: ICMP\n"},
			want:  []string{`web.yaml:8: Service default/web: spec.ports[0].protocol: "ICMP" is not one of TCP, UDP, SCTP`},
		},
		{
			name:  "duplicate port",
			files: map[string]string{"web.yaml": head + "  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 80}\n"},
			want:  []string{"web.yaml:8: Service default/web: spec.ports[1].port: 80/TCP is already used by spec.ports[0]"},
		},
		{
			name:  "unnamed port among several",
			files: map[string]string{"web.yaml": head + "  ports:\n  - {name: a, port: 80}\n  - {port: 81}\n"},
			want:  []string{"web.yaml:8: Service default/web: spec.ports[1].name: is required when the Service has more than one port"},
		},
		{
			name:  "duplicate port name",
			files: map[string]string{"web.yaml": head + "  ports:\n  - {name: a, port: 80}\n  - {name: a, port: 81}\n"},
			want:  []string{`web.yaml:8: Service default/web: spec.ports[1].name: "a" is already used by spec.ports[0]`},
		},
		{
			name:  "no ports",
			files: map[string]string{"web.yaml": head + "  clusterIP: 127.0.0.10\n"},
			want:  []string{"web.yaml:5: Service default/web: spec.ports: at least one port is required"},
		},
		{
			name:  "bad type",
			files: map[string]string{"web.yaml": head + "  type: Internal\n  ports: [{port: 80}]\n"},
			want:  []string{`web.yaml:6: Service default/web: spec.type: "Internal" is not one of ClusterIP, NodePort, LoadBalancer, ExternalName`},
		},
		{
			name:  "node port out of range",
			files: map[string]string{"web.yaml": head + "  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 8080\n"},
			want:  []string{"web.yaml:9: Service default/web: spec.ports[0].nodePort: 8080 is not in 30000..32767 (the node port range)"},
		},
		{
			name:  "node port on ClusterIP",
			files: map[string]string{"web.yaml": head + "  ports:\n  - port: 80\n    nodePort: 30080\n"},
			want:  []string{"web.yaml:8: Service default/web: spec.ports[0].nodePort: may only be set when type is NodePort or LoadBalancer"},
		},
		{
			name:  "target port name",
			files: map[string]string{"web.yaml": head + "  ports:\n  - port: 80\n    targetPort: Web_Port\n"},
			want:  []string{`web.yaml:8: Service default/web: spec.ports[0].targetPort: "Web_Port" is not valid: must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)`},
		},
		{
			name:  "invalid clusterIP",
			files: map[string]string{"web.yaml": head + "  clusterIP: 10.0.0.300\n  ports: [{port: 80}]\n"},
			want:  []string{`web.yaml:6: Service default/web: spec.clusterIP: "10.0.0.300" is not a valid IP address`},
		},
		{
			name:  "clusterIPs disagree with clusterIP",
			files: map[string]string{"web.yaml": head + "  clusterIP: 10.0.0.1\n  clusterIPs: [10.0.0.2]\n  ports: [{port: 80}]\n"},
			want:  []string{`web.yaml:7: Service default/web: spec.clusterIPs[0]: "10.0.0.2" must equal spec.clusterIP "10.0.0.1"`},
		},
		{
			name:  "two clusterIPs of one family",
			files: map[string]string{"web.yaml": head + "  clusterIPs: [10.0.0.1, 10.0.0.2]\n  ports: [{port: 80}]\n"},
			want:  []string{`web.yaml:6: Service default/web: spec.clusterIPs[1]: "10.0.0.2" is IPv4 like spec.clusterIPs[0]; a dual-stack Service has one address of each family`},
		},
		{
			name:  "ipFamilies disagree with clusterIPs",
			files: map[string]string{"web.yaml": head + "  clusterIP: 10.0.0.1\n  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n"},
			want:  []string{`web.yaml:7: Service default/web: spec.ipFamilies[0]: IPv6 does not match spec.clusterIPs[0] "10.0.0.1" (IPv4)`},
		},
		{
			name:  "SingleStack with two families",
			files: map[string]string{"web.yaml": head + "  clusterIPs: [10.0.0.1, \"fd00::1\"]\n  ipFamilyPolicy: SingleStack\n  ports: [{port: 80}]\n"},
			want:  []string{"web.yaml:7: Service default/web: spec.ipFamilyPolicy: SingleStack allows one IP family, the Service has 2"},
		},
		{
			name:  "unknown IP family",
			files: map[string]string{"web.yaml": head + "  ipFamilies: [IPv5]\n  ports: [{port: 80}]\n"},
			want:  []string{`web.yaml:6: Service default/web: spec.ipFamilies[0]: "IPv5" is not one of IPv4, IPv6`},
		},
		{
			name:  "headless NodePort",
			files: map[string]string{"web.yaml": head + "  type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]\n"},
			want:  []string{`web.yaml:7: Service default/web: spec.clusterIP: "None" (headless) is only allowed for type ClusterIP`},
		},
		{
			// The API server accepts it (only the v1 API's old warning remains); the
			// Gateway API's HTTPRouteServiceTypes conformance test relies on it.
			name:  "headless targetPort differs is accepted",
			files: map[string]string{"web.yaml": head + "  clusterIP: None\n  ports:\n  - port: 80\n    targetPort: 8080\n"},
		},
		{
			name:  "headless without ports is fine",
			files: map[string]string{"web.yaml": head + "  clusterIP: None\n"},
		},
		{
			name:  "ExternalName without a name",
			files: map[string]string{"web.yaml": head + "  type: ExternalName\n"},
			want:  []string{"web.yaml:5: Service default/web: spec.externalName: is required when type is ExternalName"},
		},
		{
			name:  "ExternalName with a clusterIP",
			files: map[string]string{"web.yaml": head + "  type: ExternalName\n  externalName: example.com.\n  clusterIP: 10.0.0.1\n"},
			want:  []string{"web.yaml:8: Service default/web: spec.clusterIP: must be empty when type is ExternalName"},
		},
		{
			name:  "ExternalName not a DNS name",
			files: map[string]string{"web.yaml": head + "  type: ExternalName\n  externalName: not_a_host\n"},
			want:  []string{`web.yaml:7: Service default/web: spec.externalName: "not_a_host" is not valid: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		},
		{
			name:  "affinity timeout",
			files: map[string]string{"web.yaml": head + "  ports: [{port: 80}]\n  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP: {timeoutSeconds: 0}\n"},
			want:  []string{"web.yaml:9: Service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is not in 1..86400"},
		},
		{
			name:  "externalTrafficPolicy on ClusterIP",
			files: map[string]string{"web.yaml": head + "  ports: [{port: 80}]\n  externalTrafficPolicy: Local\n"},
			want:  []string{"web.yaml:7: Service default/web: spec.externalTrafficPolicy: may only be set for NodePort and LoadBalancer Services or with externalIPs"},
		},
		{
			name:  "bad external IP",
			files: map[string]string{"web.yaml": head + "  ports: [{port: 80}]\n  externalIPs: [127.0.0.20, nope]\n"},
			want:  []string{`web.yaml:7: Service default/web: spec.externalIPs[1]: "nope" is not a valid IP address`},
		},
		{
			name:  "bad trafficDistribution",
			files: map[string]string{"web.yaml": head + "  ports: [{port: 80}]\n  trafficDistribution: Nearby\n"},
			want:  []string{`web.yaml:7: Service default/web: spec.trafficDistribution: "Nearby" is not one of PreferClose, PreferSameZone, PreferSameNode`},
		},
		{
			name:  "Service name not a DNS-1035 label",
			files: map[string]string{"web.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: 1web\nspec:\n  ports: [{port: 80}]\n"},
			want:  []string{`web.yaml:4: Service default/1web: metadata.name: "1web" is not valid: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')`},
		},
		{
			name:  "label value",
			files: map[string]string{"web.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels:\n    app: \"web app\"\nspec:\n  ports: [{port: 80}]\n"},
			want:  []string{`web.yaml:6: Service default/web: metadata.labels.app: "web app" is not valid: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`},
		},
		{
			name:  "appProtocol",
			files: map[string]string{"web.yaml": head + "  ports:\n  - port: 80\n    appProtocol: \"h2 c\"\n"},
			want:  []string{`web.yaml:8: Service default/web: spec.ports[0].appProtocol: "h2 c" is not valid: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`},
		},
		{
			name:  "missing name",
			files: map[string]string{"web.yaml": "apiVersion: v1\nkind: Service\nmetadata: {}\nspec:\n  ports: [{port: 80}]\n"},
			want:  []string{"web.yaml:3: Service default/: metadata.name: is required"},
		},
		{
			name:  "unknown field",
			files: map[string]string{"web.yaml": head + "  ports:\n  - port: 80\n    prot: TCP\n"},
			want:  []string{"web.yaml:8: Service default/web: spec.ports[0].prot: unknown field"},
		},
		{
			name:  "misspelled top-level field",
			files: map[string]string{"web.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspecs:\n  ports: [{port: 80}]\n"},
			want:  []string{"web.yaml:4: Service default/web: specs: unknown field"},
		},
		{
			name:  "wrong value type",
			files: map[string]string{"web.yaml": head + "  ports:\n  - port: 80\n  - port: eighty\n    name: b\n"},
			want:  []string{"web.yaml:8: Service default/web: spec.ports[1].port: string is not a valid value: want an integer"},
		},
		{
			name:  "duplicate key",
			files: map[string]string{"web.yaml": head + "  ports: [{port: 80}]\n  ports: [{port: 81}]\n"},
			want:  []string{"web.yaml:7: Service default/web: spec.ports: duplicate field"},
		},
		{
			name:  "YAML alias cycle",
			files: map[string]string{"web.yaml": "# x\na: &a [*a]\n"},
			want:  []string{"web.yaml:2: anchor 'a' value contains itself"},
		},
		{
			name:  "YAML syntax error",
			files: map[string]string{"web.yaml": head + "  ports: [{port: 80}\n"},
			want:  []string{"web.yaml:6: did not find expected ',' or ']'"},
		},
		{
			name:  "missing kind",
			files: map[string]string{"web.yaml": "apiVersion: v1\nmetadata: {name: web}\n"},
			want:  []string{"web.yaml:1: kind: apiVersion and kind are required"},
		},
		{
			name:  "unsupported version of a used kind",
			files: map[string]string{"web.yaml": "apiVersion: networking.k8s.io/v1beta1\nkind: Ingress\nmetadata: {name: web}\n"},
			want:  []string{"web.yaml:1: Ingress default/web: apiVersion: networking.k8s.io/v1beta1 Ingress is not supported; use networking.k8s.io/v1"},
		},
		{
			name: "duplicate objects in two files",
			files: map[string]string{
				"a.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
				"b.yaml": "# again\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {ports: [{port: 81}]}\n",
			},
			want: []string{"b.yaml:4: Service default/web: metadata.name: duplicate of the object at a.yaml:1"},
		},
		{
			name: "ClusterIP given to two Services",
			files: map[string]string{
				"a.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 127.0.0.10, ports: [{port: 80}]}\n",
				"b.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec: {clusterIP: 127.0.0.10, ports: [{port: 81}]}\n",
			},
			want: []string{"b.yaml:4: Service default/api: spec.clusterIPs[0]: 127.0.0.10 is already the ClusterIP of Service default/web (a.yaml)"},
		},
		{
			name:  "slice address of the wrong family",
			files: map[string]string{"web.yaml": webSvc + slice + "addressType: IPv4\nendpoints:\n- addresses: [\"::1\"]\n"},
			want:  []string{`web.yaml:15: EndpointSlice default/web-1: endpoints[0].addresses[0]: "::1" is not a valid IPv4 address`},
		},
		{
			name:  "slice address type",
			files: map[string]string{"web.yaml": webSvc + slice + "addressType: IP\n"},
			want:  []string{`web.yaml:13: EndpointSlice default/web-1: addressType: "IP" is not one of IPv4, IPv6, FQDN`},
		},
		{
			name:  "slice port range and duplicate names",
			files: map[string]string{"web.yaml": webSvc + slice + "addressType: IPv4\nports:\n- {name: http, port: 0}\n- {name: http, port: 81}\n"},
			want: []string{
				"web.yaml:15: EndpointSlice default/web-1: ports[0].port: 0 is not in 1..65535",
				`web.yaml:16: EndpointSlice default/web-1: ports[1].name: "http" is already used by ports[0]`,
			},
		},
		{
			name:  "slice weight annotation",
			files: map[string]string{"web.yaml": webSvc + slice + "  annotations: {weir.dev/weight: heavy}\naddressType: IPv4\n"},
			want:  []string{`web.yaml:13: EndpointSlice default/web-1: metadata.annotations.weir.dev/weight: "heavy" is not an integer in 1..1000000`},
		},
		{
			name:  "slice for a missing Service",
			files: map[string]string{"web.yaml": slice + "addressType: IPv4\n"},
			want:  []string{"web.yaml:5: EndpointSlice default/web-1: metadata.labels.kubernetes.io/service-name: Service default/web does not exist"},
		},
		{
			name:  "named targetPort matching no slice port",
			files: map[string]string{"web.yaml": namedSvc + slice + "addressType: IPv4\nports: [{name: metrics, port: 9090}]\n"},
			want:  []string{`web.yaml:6: Service default/web: spec.ports[0].targetPort: "http" matches no port of the EndpointSlices of Service default/web (a slice port carries the Service port's name, "web"; theirs: ["metrics"])`},
		},
		{
			name:  "slice port named after the targetPort",
			files: map[string]string{"web.yaml": namedSvc + slice + "addressType: IPv4\nports: [{name: http, port: 8080}]\n"},
			want:  []string{`web.yaml:6: Service default/web: spec.ports[0].targetPort: "http": the EndpointSlices of Service default/web have a port named "http", but a slice port must carry the Service port's name ("web")`},
		},
		{
			name:  "named targetPort, slice port named after the Service port",
			files: map[string]string{"web.yaml": namedSvc + slice + "addressType: IPv4\nports: [{name: web, port: 8080}]\n"},
		},
		{
			name:  "Endpoints without a Service",
			files: map[string]string{"web.yaml": "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: web\nsubsets: [{addresses: [{ip: 127.0.0.1}], ports: [{port: 80}]}]\n"},
			want:  []string{"web.yaml:4: Endpoints default/web: metadata.name: Service default/web does not exist (Endpoints are mirrored for the Service of the same name)"},
		},
		{
			name:  "Endpoints with a bad address",
			files: map[string]string{"web.yaml": webSvc + "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets:\n- addresses:\n  - ip: 127.0.0.256\n"},
			want:  []string{`web.yaml:13: Endpoints default/web: subsets[0].addresses[0].ip: "127.0.0.256" is not a valid IP address`},
		},
		{
			name:  "TLS Secret without a key",
			files: map[string]string{"web.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: cert}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: x\n"},
			want:  []string{"web.yaml:5: Secret default/cert: stringData[tls.key]: is required in a kubernetes.io/tls Secret"},
		},
		{
			name:  "policy algorithm",
			files: map[string]string{"web.yaml": policy + "  loadBalancer: {algorithm: Fastest}\n"},
			want:  []string{`web.yaml:13: TrafficPolicy default/p: spec.loadBalancer.algorithm: "Fastest" is not one of RoundRobin, WeightedRoundRobin, LeastConnections, WeightedLeastConnections, Random, PowerOfTwoChoices, PeakEWMA, SourceHash, DestinationHash, Maglev`},
		},
		{
			name:  "policy Maglev table not prime",
			files: map[string]string{"web.yaml": policy + "  loadBalancer:\n    algorithm: Maglev\n    maglev: {tableSize: 16384}\n"},
			want:  []string{"web.yaml:15: TrafficPolicy default/p: spec.loadBalancer.maglev.tableSize: 16384 is not prime (try 16381, 32749 or 65521)"},
		},
		{
			name:  "policy Maglev table too small",
			files: map[string]string{"web.yaml": policy + "  loadBalancer:\n    maglev: {tableSize: 13}\n"},
			want:  []string{"web.yaml:14: TrafficPolicy default/p: spec.loadBalancer.maglev.tableSize: 13 is not in 251..131071"},
		},
		{
			name:  "policy durations",
			files: map[string]string{"web.yaml": policy + "  healthCheck:\n    interval: -1s\n  timeouts:\n    connect: 0s\n"},
			want: []string{
				"web.yaml:14: TrafficPolicy default/p: spec.healthCheck.interval: -1s must be positive",
				"web.yaml:16: TrafficPolicy default/p: spec.timeouts.connect: 0s must be positive",
			},
		},
		{
			name:  "policy bad duration text",
			files: map[string]string{"web.yaml": policy + "  healthCheck:\n    interval: often\n"},
			want:  []string{`web.yaml:14: TrafficPolicy default/p: spec.healthCheck.interval: time: invalid duration "often"`},
		},
		{
			name:  "policy target kind",
			files: map[string]string{"web.yaml": webSvc + "apiVersion: weir.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p}\nspec:\n  targetRefs:\n  - {group: apps, kind: Deployment, name: web}\n"},
			want:  []string{`web.yaml:13: TrafficPolicy default/p: spec.targetRefs[0].kind: "Deployment" is not a kind a TrafficPolicy can target (Service, HTTPRoute, GRPCRoute)`},
		},
		{
			name:  "policy without targets",
			files: map[string]string{"web.yaml": "apiVersion: weir.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p}\nspec:\n  targetRefs: []\n"},
			want:  []string{"web.yaml:5: TrafficPolicy default/p: spec.targetRefs: at least one target is required"},
		},
		{
			name:  "policy for a missing Service",
			files: map[string]string{"web.yaml": "apiVersion: weir.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p}\nspec:\n  targetRefs:\n  - group: \"\"\n    kind: Service\n    name: nope\n"},
			want:  []string{"web.yaml:8: TrafficPolicy default/p: spec.targetRefs[0].name: Service default/nope does not exist"},
		},
		{
			name:  "policy section not a port",
			files: map[string]string{"web.yaml": webSvc + "apiVersion: weir.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p}\nspec:\n  targetRefs:\n  - {group: \"\", kind: Service, name: web, sectionName: grpc}\n"},
			want:  []string{`web.yaml:13: TrafficPolicy default/p: spec.targetRefs[0].sectionName: Service default/web has no port named "grpc"`},
		},
		{
			name: "policy percents, retries, rate limit, slow start, canary",
			files: map[string]string{"web.yaml": policy +
				"  outlierDetection: {maxEjectionPercent: 150}\n" +
				"  retry: {retryOn: [connect-failure, teapot]}\n" +
				"  rateLimit: {requests: 0, key: \"cookie:x\"}\n" +
				"  slowStart: {window: 0s, aggression: fast}\n" +
				"  canaryAnalysis: {backend: \"\"}\n" +
				"  circuitBreaker: {maxRequests: 0}\n"},
			want: []string{
				"web.yaml:13: TrafficPolicy default/p: spec.outlierDetection.maxEjectionPercent: 150 is not in 0..100",
				`web.yaml:14: TrafficPolicy default/p: spec.retry.retryOn[1]: "teapot" is not one of connect-failure, refused-stream, reset, 5xx, 502, 503, 504`,
				"web.yaml:15: TrafficPolicy default/p: spec.rateLimit.requests: 0 must be at least 1",
				`web.yaml:15: TrafficPolicy default/p: spec.rateLimit.key: "cookie:x" is not one of "route", "sourceIP", "header:<Name>"`,
				"web.yaml:16: TrafficPolicy default/p: spec.slowStart.window: 0s must be positive",
				`web.yaml:16: TrafficPolicy default/p: spec.slowStart.aggression: "fast" is not a positive number`,
				"web.yaml:17: TrafficPolicy default/p: spec.canaryAnalysis.backend: is required",
				"web.yaml:18: TrafficPolicy default/p: spec.circuitBreaker.maxRequests: 0 must be at least 1",
			},
		},
		{
			name:  "Namespace with an unknown field",
			files: map[string]string{"ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\nspec:\n  finalizers: [kubernetes]\n  bogus: 1\n"},
			want:  []string{"ns.yaml:7: Namespace apps: spec.bogus: unknown field"},
		},
		{
			name:  "Namespace name is a DNS label",
			files: map[string]string{"ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps.example\n  labels: {team: a}\n"},
			want:  []string{`ns.yaml:4: Namespace apps.example: metadata.name: "apps.example" is not valid: must not contain dots`},
		},
		{
			name:  "Ingress path with a dot-dot segment",
			files: map[string]string{"i.yaml": "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules:\n  - host: a.example.com\n    http:\n      paths:\n      - path: /public/../admin\n        pathType: Prefix\n        backend: {service: {name: web, port: {number: 80}}}\n"},
			want:  []string{`i.yaml:9: Ingress default/i: spec.rules[0].http.paths[0].path: "/public/../admin" must not contain '/../'`},
		},
		{
			name:  "Ingress path with an encoded slash",
			files: map[string]string{"i.yaml": "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules:\n  - host: a.example.com\n    http:\n      paths:\n      - path: /a%2fb\n        pathType: Exact\n        backend: {service: {name: web, port: {number: 80}}}\n"},
			want:  []string{`i.yaml:9: Ingress default/i: spec.rules[0].http.paths[0].path: "/a%2fb" must not contain '%2f'`},
		},
		{
			name:  "Ingress relative path",
			files: map[string]string{"i.yaml": "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules:\n  - host: a.example.com\n    http:\n      paths:\n      - path: a\n        pathType: Prefix\n        backend: {service: {name: web, port: {number: 80}}}\n"},
			want:  []string{`i.yaml:9: Ingress default/i: spec.rules[0].http.paths[0].path: "a" must be an absolute path`},
		},
		{
			name:  "Ingress host that is an IP",
			files: map[string]string{"i.yaml": "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules:\n  - host: 10.0.0.1\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend: {service: {name: web, port: {number: 80}}}\n"},
			want:  []string{`i.yaml:6: Ingress default/i: spec.rules[0].host: "10.0.0.1" must be a DNS name, not an IP address`},
		},
		{
			name:  "Ingress unknown pathType",
			files: map[string]string{"i.yaml": "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules:\n  - host: a.example.com\n    http:\n      paths:\n      - path: /\n        pathType: Regex\n        backend: {service: {name: web, port: {number: 80}}}\n"},
			want:  []string{`i.yaml:10: Ingress default/i: spec.rules[0].http.paths[0].pathType: "Regex" is not one of Exact, ImplementationSpecific, Prefix`},
		},
		{
			name:  "Ingress bad wildcard host",
			files: map[string]string{"i.yaml": "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules:\n  - host: \"*.*.foo.com\"\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend: {service: {name: web, port: {number: 80}}}\n"},
			want:  []string{`i.yaml:6: Ingress default/i: spec.rules[0].host: "*.*.foo.com" is not valid: a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		},
		{
			name:  "Namespace twice",
			files: map[string]string{"ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: apps, namespace: ignored}\n"},
			want:  []string{"ns.yaml:7: Namespace apps: metadata.name: duplicate of the object at ns.yaml:1"},
		},
		{
			name: "several errors in several files, sorted",
			files: map[string]string{
				"b.yaml": head + "  ports: [{port: 0}]\n",
				"a.yaml": head + "  ports: [{port: 80, protocol: tcp}]\n",
			},
			want: []string{
				`a.yaml:6: Service default/web: spec.ports[0].protocol: "tcp" is not one of TCP, UDP, SCTP`,
				"b.yaml:4: Service default/web: metadata.name: duplicate of the object at a.yaml:1",
				"b.yaml:6: Service default/web: spec.ports[0].port: 0 is not in 1..65535",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inDir(t, tt.files)
			objs, _, err := Load(".")
			got := errorLines(err)
			if !equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", join(got), join(tt.want))
			}
			if err != nil {
				var errs Errors
				if !errors.As(err, &errs) || len(errs) != len(tt.want) {
					t.Errorf("err is %T with %d entries, want Errors with %d", err, len(errs), len(tt.want))
				}
				if objs != nil {
					t.Errorf("Load returned objects along with errors")
				}
			}
		})
	}
}

func join(lines []string) string {
	out := ""
	for _, l := range lines {
		out += "  " + l + "\n"
	}
	return out
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{
			name:  "Service without a clusterIP",
			files: map[string]string{"web.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n"},
			want:  []string{"web.yaml:4: Service default/web: spec.clusterIP: is not set: weir serves this Service only on its node ports and external IPs; set it to a local address (e.g. 127.0.0.10) to serve it standalone"},
		},
		{
			name:  "slice without the service-name label",
			files: map[string]string{"web.yaml": "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  labels: {app: web}\naddressType: IPv4\n"},
			want:  []string{"web.yaml:5: EndpointSlice default/web-1: metadata.labels: has no kubernetes.io/service-name label, so it belongs to no Service (kube-proxy ignores such slices, and so does weir)"},
		},
		{
			name:  "headless and ExternalName Services need no clusterIP",
			files: map[string]string{"web.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: None}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {type: ExternalName, externalName: example.com}\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inDir(t, tt.files)
			_, rep, err := Load(".")
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			got := errorLines(rep.Warnings)
			if len(rep.Warnings) == 0 {
				got = nil
			}
			if !equal(got, tt.want) {
				t.Errorf("warnings:\n%s\nwant:\n%s", join(got), join(tt.want))
			}
			if len(tt.want) > 0 && !strings.Contains(rep.Summary(), "warning") {
				t.Errorf("Summary %q does not mention the warnings", rep.Summary())
			}
		})
	}
}
