package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/dataplane/ebpf"
	"weir.dev/weir/internal/netnstest"
)

// TestEBPFMode: in a network namespace, weir run --mode ebpf (its programs attached to
// a cgroup of the test's, its pins in a bpffs of the test's) balances a connect from
// that cgroup to the ClusterIP, shows the mode in /api/summary and /api/snapshot, says
// on exit that the programs stay, and they do (still balancing); weir cleanup --mode
// ebpf then detaches them and removes the pins.
func TestEBPFMode(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ns := netnstest.New(t).NS("ebpf")
	ns.MustRun("ip", "link", "set", "lo", "up")
	mount, err := ebpf.CgroupMount()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	cg := filepath.Join(mount, "weir-cmd-test-"+hex.EncodeToString(b))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) })
	bpffs := t.TempDir()
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(bpffs, 0) })
	pin := filepath.Join(bpffs, "weir")

	// The endpoint: 127.0.0.1:9000 in the namespace, answering "web".
	var l net.Listener
	if err := ns.Do(func() (err error) { l, err = net.Listen("tcp", "127.0.0.1:9000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { // ends when l is closed
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("web\n"))
			c.Close()
		}
	}()
	// connect runs a shell in the test cgroup, in the namespace, that connects to the
	// ClusterIP and prints what it reads. (Not through ns.Run's shell writing
	// cgroup.procs: ip netns exec mounts a sysfs of the namespace's over /sys, which
	// hides the cgroup2 mount.)
	connect := func() string {
		fd, err := os.Open(cg)
		if err != nil {
			t.Fatal(err)
		}
		defer fd.Close()
		cmd := exec.Command("ip", "netns", "exec", ns.Name, "timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/10.96.0.10/80 && head -1 <&3")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
		out, _ := cmd.CombinedOutput()
		return strings.TrimSpace(string(out))
	}

	dir := t.TempDir()
	writeAtomically(t, filepath.Join(dir, "service.yaml"), fmt.Sprintf(serviceYAML, "10.96.0.10", 80)+"---\n"+sliceYAML("127.0.0.1"))
	// weir runs in the namespace through nsenter, not ip netns exec, which would hide
	// the cgroup2 mount from it (see connect). Never in the test's own namespace: weir
	// run removes the other kernel modes' rules of the namespace it runs in.
	w := startWeirNsenter(t, ns.Name, "run", "--config", dir, "--mode", "ebpf", "--ebpf-cgroup", cg, "--ebpf-pin-path", pin,
		"--admin-addr", "127.0.0.1:9901", "--ingress-http-addr", "127.0.0.1:0", "--ingress-https-addr", "127.0.0.1:0")
	w.waitLog(t, `msg="configuration applied"`, 20*time.Second)
	admin := "http://127.0.0.1:9901"
	deadline := time.Now().Add(10 * time.Second)
	for connect() != "web" {
		if time.Now().After(deadline) {
			t.Fatalf("a connect from the cgroup to the ClusterIP got %q, want web", connect())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := ns.MustRun("curl", "-s", admin+"/api/summary"); !strings.Contains(out, `"mode":"ebpf"`) {
		t.Errorf("/api/summary: %s", out)
	}
	if out := ns.MustRun("curl", "-s", admin+"/api/snapshot"); !strings.Contains(out, `"programsAttached": 8`) || !strings.Contains(out, `"frontends": 3`) {
		t.Errorf("/api/snapshot has no ebpf section with 8 programs and 3 frontends (the port and the ClusterIP's other TCP and UDP ports): %.2000s", out)
	}

	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	if _, err := w.waitExit(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if out := w.output(); !strings.Contains(out, "weir cleanup --mode ebpf") {
		t.Errorf("no word of the programs left behind on exit:\n%s", out)
	}
	if got := connect(); got != "web" {
		t.Fatalf("after weir exited, the pinned programs did not balance: %q", got)
	}

	c := startWeirNsenter(t, ns.Name, "cleanup", "--mode", "ebpf", "--ebpf-pin-path", pin)
	if _, err := c.waitExit(t, 20*time.Second); err != nil {
		t.Fatalf("weir cleanup: %v\n%s", err, c.output())
	}
	if got := connect(); got == "web" {
		t.Fatal("after weir cleanup --mode ebpf, the connect was still balanced")
	}
	if _, err := os.Stat(pin); !os.IsNotExist(err) {
		t.Fatalf("pins after weir cleanup: %v", err)
	}
}

// startWeirNsenter is startWeirProcess in network namespace ns entered with nsenter,
// which leaves the mounts (the cgroup2 and bpffs ones) as they are.
func startWeirNsenter(t *testing.T, ns string, args ...string) *weirProcess {
	t.Helper()
	return launchWeir(t, []string{"nsenter", "--net=/run/netns/" + ns}, args)
}
