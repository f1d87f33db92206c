package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"weir.dev/weir/internal/netnstest"
)

const netpolYAML = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]
status: {podIPs: [{ip: 10.244.0.5}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-shop, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {}}], ports: [{port: http}]}]
`

// TestNetworkPolicyRun: weir run --network-policy writes the table inet weir_netpol
// from manifests in any mode; a later run without the flag removes it.
func TestNetworkPolicyRun(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	ns := netnstest.New(t).NS("netpol")
	dir := t.TempDir()
	writeAtomically(t, filepath.Join(dir, "netpol.yaml"), netpolYAML)
	w := startWeirProcess(t, ns.Name, "run", "--config", dir, "--mode", "none", "--network-policy", "--admin-addr", "")
	w.waitLog(t, `msg="configuration applied"`, 20*time.Second)
	out := ns.MustRun("nft", "list", "table", "inet", "weir_netpol")
	for _, want := range []string{"10.244.0.5 : jump group-1-in", "jump pol-1-in", `counter name "pol-1-in-drop"`, "10.244.0.5 . tcp . 8080"} {
		if !strings.Contains(out, want) {
			t.Errorf("%q missing from the table:\n%s", want, out)
		}
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	if _, err := w.waitExit(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	again := startWeirProcess(t, ns.Name, "run", "--config", dir, "--mode", "userspace", "--admin-addr", "")
	again.waitLog(t, "removed the network policy table an earlier run left", 20*time.Second)
	if _, err := ns.Run("nft", "list", "table", "inet", "weir_netpol"); err == nil {
		t.Error("the network policy table survived a run without --network-policy")
	}
	_ = again.cmd.Process.Signal(syscall.SIGTERM)
	_, _ = again.waitExit(t, 10*time.Second)
}
