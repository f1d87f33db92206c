package main

import (
	"bytes"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"weir.dev/weir/internal/manifest"
)

func TestVersionFromBuildInfo(t *testing.T) {
	commit, date, modified := vcsOf([]debug.BuildSetting{
		{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123abcd"},
		{Key: "vcs.time", Value: "2026-12-07T02:53:44Z"}, {Key: "vcs.modified", Value: "true"},
	})
	got := formatVersion(commit, date, modified)
	if want := "weir " + version + " commit 0123abcd (modified) built from a commit of 2026-12-07T02:53:44Z"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := formatVersion("", "", false); got != "weir "+version {
		t.Errorf("without VCS information: %q", got)
	}
}

// TestRootFlags: --version works, run's help groups its flags by area, and --config
// with --kubeconfig is refused.
func TestRootFlags(t *testing.T) {
	exec := func(args ...string) (string, error) {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		err := root.Execute()
		return out.String(), err
	}
	if out, err := exec("--version"); err != nil || !strings.HasPrefix(out, "weir "+version) {
		t.Errorf("--version: %q %v", out, err)
	}
	out, err := exec("run", "--help")
	if err != nil {
		t.Fatal(err)
	}
	prev := -1
	for _, g := range []string{"Configuration source", "L4 data plane:", "L7 gateway", "Cluster DNS:", "Admin API and health:", "Logging:"} {
		i := strings.Index(out, g)
		if i < 0 || i < prev {
			t.Errorf("group %q missing or out of order in run --help:\n%s", g, out)
		}
		prev = i
	}
	if strings.Contains(out, "\nOther:\n") && !strings.Contains(out, "Other:\n  -h, --help   help for run\n") {
		t.Errorf("flags outside the groups:\n%s", out[strings.Index(out, "\nOther:"):])
	}
	// GRPCRoutes on HTTP listeners work out of the box: prior-knowledge h2c is on by default.
	if run, _, err := newRootCommand().Find([]string{"run"}); err != nil {
		t.Error(err)
	} else if f := run.Flags().Lookup("h2c"); f == nil || f.DefValue != "true" {
		t.Errorf("run --h2c default: %v", f)
	}
	if _, err := exec("run", "--config", "x", "--kubeconfig", "y"); err == nil || !strings.Contains(err.Error(), "two sources") {
		t.Errorf("--config with --kubeconfig: %v", err)
	}
}

// TestDemoOutsideCheckout: outside a checkout, demo runs the manifests built into weir.
func TestDemoOutsideCheckout(t *testing.T) {
	t.Chdir(t.TempDir())
	dir, err := quickstartDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if _, rep, err := manifest.Load(dir); err != nil || rep.Loaded["Service"] < 4 {
		t.Fatalf("embedded quickstart in %s: %v, %+v", dir, err, rep)
	}
}
