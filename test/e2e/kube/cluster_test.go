package kube

import (
	"path/filepath"
	"testing"

	"weir.dev/weir/internal/controlplane"
)

// cluster is etcd and kube-apiserver on loopback, started from the binaries that
// hack/kube-binaries.sh builds (internal/controlplane, the same launcher bench/scale.sh
// uses): a static admin token, self-signed serving certificates and a ServiceAccount
// signing key, much as controller-runtime's envtest does.
type cluster = controlplane.Cluster

// serviceCIDR is the suite's Service ClusterIP range.
const serviceCIDR = "10.0.0.0/16"

// writeKubeconfig writes a kubeconfig for token into a temporary folder and returns its path.
func writeKubeconfig(t testing.TB, c *cluster, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := c.WriteKubeconfig(path, token); err != nil {
		t.Fatal(err)
	}
	return path
}
