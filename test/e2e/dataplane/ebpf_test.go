package dataplane_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	ciliumebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/dataplane/ebpf"
	"weir.dev/weir/internal/netnstest"
)

// ebpfMode is the ebpf Proxier as the suite's mode.
type ebpfMode struct{ *ebpf.Proxier }

func (m ebpfMode) Close() { _ = m.Proxier.Close() }

// socketLevel reports whether dp balances at connect() (ebpf): a dropped frontend
// fails the connect with EPERM instead of timing out, and a connected UDP socket keeps
// the endpoint it was given.
func socketLevel(dp mode) bool {
	_, ok := dp.(ebpfMode)
	return ok
}

// TestEBPF runs the suite with socket load balancing. The programs are attached to a
// cgroup made for the test, and the test process moves into it for the run (the
// suite's clients are goroutines of this process in the client namespace), back out
// at the end; the maps and links are pinned in a bpffs of the test's, so the suite's
// restart keeps balancing.
func TestEBPF(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	mount, err := ebpf.CgroupMount()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	cg := filepath.Join(mount, "weir-e2e-"+hex.EncodeToString(b))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var orig string
	for _, line := range strings.Split(string(self), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			orig = filepath.Join(mount, rest)
		}
	}
	if orig == "" {
		t.Fatal("no cgroup v2 line in /proc/self/cgroup")
	}
	pid := []byte(fmt.Sprint(os.Getpid()))
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), pid, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(orig, "cgroup.procs"), pid, 0); err != nil {
			t.Errorf("move back to %s: %v", orig, err)
		}
		if err := os.Remove(cg); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	bpffs := t.TempDir()
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(bpffs, 0) })
	pin := filepath.Join(bpffs, "weir")

	runSuite(t, func() (mode, error) {
		p, err := ebpf.New(ebpf.Options{Cgroup: cg, PinPath: pin})
		return ebpfMode{p}, err
	}, func(*netnstest.NS) string { return attached(t, cg) + pinned(t, pin) })
}

// attached lists the programs attached to cgroup, by attach type.
func attached(t *testing.T, cgroup string) string {
	var out []string
	for _, typ := range []ciliumebpf.AttachType{ciliumebpf.AttachCGroupInet4Connect, ciliumebpf.AttachCGroupInet6Connect,
		ciliumebpf.AttachCgroupInet4GetPeername, ciliumebpf.AttachCgroupInet6GetPeername,
		ciliumebpf.AttachCGroupUDP4Sendmsg, ciliumebpf.AttachCGroupUDP6Sendmsg,
		ciliumebpf.AttachCGroupUDP4Recvmsg, ciliumebpf.AttachCGroupUDP6Recvmsg} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: cgroupFD(t, cgroup), Attach: typ})
		if err != nil {
			t.Fatalf("query %s: %v", typ, err)
		}
		out = append(out, fmt.Sprintf("%s: %d programs\n", typ, len(res.Programs)))
	}
	return strings.Join(out, "")
}

func cgroupFD(t *testing.T, path string) int {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// pinned lists the files under the pin directory.
func pinned(t *testing.T, dir string) string {
	var out []string
	_ = filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if err == nil {
			out = append(out, path)
		}
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, "\n")
}
