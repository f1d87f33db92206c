package kube

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRestConfigAPIServer: --api-server replaces the kubeconfig's (or the in-cluster)
// address and keeps its credentials; a value that is not an http(s) URL is refused.
func TestRestConfigAPIServer(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	const cfg = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://10.96.0.1:443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: secret-token}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
`
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := restConfig(Options{Kubeconfig: kubeconfig})
	if err != nil || got.Host != "https://10.96.0.1:443" {
		t.Fatalf("without override: host %q, err %v", got.Host, err)
	}
	got, err = restConfig(Options{Kubeconfig: kubeconfig, APIServer: "https://192.0.2.2:6443"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Host != "https://192.0.2.2:6443" || got.BearerToken != "secret-token" {
		t.Fatalf("override: host %q token %q", got.Host, got.BearerToken)
	}
	for _, bad := range []string{"192.0.2.2:6443", "ftp://x:1", "https://", "::"} {
		if _, err := restConfig(Options{Kubeconfig: kubeconfig, APIServer: bad}); err == nil {
			t.Errorf("APIServer %q accepted", bad)
		}
	}
}
