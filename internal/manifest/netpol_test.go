package manifest

import (
	"testing"
)

func TestNetworkPolicyLoads(t *testing.T) {
	inDir(t, map[string]string{"np.yaml": `apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: web}}
spec:
  nodeName: n1
  containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]
status: {podIPs: [{ip: 10.0.0.1}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: In, values: [db]}]}}]
    ports: [{port: http}, {port: 1000, endPort: 2000, protocol: UDP}]
`})
	objs, _, err := Load(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Pods) != 1 || len(objs.NetworkPolicies) != 1 || objs.Pods[0].Status.PodIPs[0].IP != "10.0.0.1" {
		t.Fatalf("objects: %d pods, %d policies", len(objs.Pods), len(objs.NetworkPolicies))
	}
}

func TestNetworkPolicyErrors(t *testing.T) {
	const head = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n" // spec fields from line 5
	tests := []struct {
		name, spec string
		want       []string
	}{
		{"bad selector operator", "  podSelector: {matchExpressions: [{key: app, operator: Near, values: [a]}]}\n",
			[]string{`np.yaml:5: NetworkPolicy default/p: spec.podSelector.matchExpressions[0].operator: Invalid value: "Near": not a valid selector operator`}},
		{"bad label value", "  podSelector: {matchLabels: {app: \"a b\"}}\n",
			[]string{`np.yaml:5: NetworkPolicy default/p: spec.podSelector.matchLabels: Invalid value: "a b": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`}},
		{"bad cidr", "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]\n",
			[]string{`np.yaml:6: NetworkPolicy default/p: spec.ingress[0].from[0].ipBlock.cidr: "10.0.0.0/33" is not a valid CIDR`}},
		{"except outside", "  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24, 10.0.0.0/16]}}]}]\n",
			[]string{
				`np.yaml:6: NetworkPolicy default/p: spec.egress[0].to[0].ipBlock.except[0]: "10.1.0.0/24" must be a strict subset of cidr "10.0.0.0/16"`,
				`np.yaml:6: NetworkPolicy default/p: spec.egress[0].to[0].ipBlock.except[1]: "10.0.0.0/16" must be a strict subset of cidr "10.0.0.0/16"`,
			}},
		{"ipBlock with selector", "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n",
			[]string{`np.yaml:6: NetworkPolicy default/p: spec.ingress[0].from[0]: may not give ipBlock with podSelector or namespaceSelector`}},
		{"endPort below port", "  podSelector: {}\n  ingress: [{ports: [{port: 80, endPort: 79}]}]\n",
			[]string{`np.yaml:6: NetworkPolicy default/p: spec.ingress[0].ports[0].endPort: 79 must be at least port 80`}},
		{"endPort with a name", "  podSelector: {}\n  ingress: [{ports: [{port: http, endPort: 90}]}]\n",
			[]string{`np.yaml:6: NetworkPolicy default/p: spec.ingress[0].ports[0].endPort: may not be set when port is a name`}},
		{"policy type", "  podSelector: {}\n  policyTypes: [Ingress, Both]\n",
			[]string{`np.yaml:6: NetworkPolicy default/p: spec.policyTypes[1]: "Both" is not one of Ingress, Egress`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inDir(t, map[string]string{"np.yaml": head + tt.spec})
			_, _, err := Load(".")
			if got := errorLines(err); !equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", join(got), join(tt.want))
			}
		})
	}
}
