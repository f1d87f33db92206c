// Package kube tests weir against a real kube-apiserver and etcd built by
// hack/kube-binaries.sh: deploy/ manifests are applied and must be accepted, the
// Kubernetes source feeds the store and the userspace data plane, status is written
// back, an API server outage keeps the last state, and weir's RBAC is enough and no
// more.
//
// Without the binaries the API server tests skip, unless WEIR_E2E_KUBE is set, in which
// case they fail: CI sets it after running the build script.
package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"weir.dev/weir/internal/controlplane"
)

// testCluster is the one control plane every test of this package shares; TestMain
// starts it before the tests and stops it after them. nil when the binaries are absent.
var testCluster *cluster

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	if kubeconfig := os.Getenv(childEnv); kubeconfig != "" {
		return runChild(kubeconfig)
	}
	bin := controlplane.BinDir()
	if !controlplane.HaveBinaries(bin) {
		if os.Getenv("WEIR_E2E_KUBE") != "" {
			fmt.Fprintf(os.Stderr, "WEIR_E2E_KUBE is set but %s has no kube-apiserver and etcd: run hack/kube-binaries.sh\n", bin)
			return 1
		}
		return m.Run() // the API server tests skip themselves
	}
	dir, err := os.MkdirTemp("", "weir-e2e-kube-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start := time.Now()
	c, err := controlplane.Start(dir, bin, serviceCIDR)
	if err != nil {
		fmt.Fprintf(os.Stderr, "start control plane: %v (logs in %s)\n", err, dir)
		return 1
	}
	fmt.Fprintf(os.Stderr, "control plane up in %v at %s (logs in %s)\n", time.Since(start).Round(time.Millisecond), c.Host(), dir)
	// Both overlays are applied once for every test; TestDeployManifests checks them.
	a, err := newApplier(c.AdminConfig())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		for _, overlay := range []string{"node-proxy", "gateway"} {
			objs, rerr := render(filepath.Join(repoRoot(), "deploy", "overlays", overlay))
			if rerr != nil {
				err = rerr
				break
			}
			if err = a.apply(ctx, objs); err != nil {
				break
			}
		}
		cancel()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "apply deploy/: %v\n", err)
		c.Stop()
		return 1
	}
	testCluster = c
	code := m.Run()
	c.Stop()
	if code == 0 {
		_ = os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "control plane logs kept in %s\n", dir)
	}
	return code
}

// requireCluster skips the test when there is no control plane.
func requireCluster(t *testing.T) *cluster {
	t.Helper()
	if testCluster == nil {
		t.Skipf("no kube-apiserver and etcd in %s: run hack/kube-binaries.sh (about 8 min the first time)", controlplane.BinDir())
	}
	return testCluster
}

// repoRoot is the module root, two levels above this package.
func repoRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Join(wd, "..", "..", "..")
}
