package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"weir.dev/weir/internal/netnstest"
)

// TestMain lets a test run weir's main in a child process: the child is this test
// binary with WEIR_TEST_MAIN_ARGS set to weir's arguments (separated by \x1f).
func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv("WEIR_TEST_MAIN_ARGS"); ok {
		os.Args = append([]string{"weir"}, strings.Split(args, "\x1f")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// weirProcess is weir running in a child process, its output collected.
type weirProcess struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
}

func (w *weirProcess) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(b)
}

func (w *weirProcess) output() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.String()
}

// startWeirProcess runs weir with args, inside network namespace ns when it is not "".
// In the host's namespace, run and demo leave the host's kernel rules alone
// (--cleanup-other-modes=false): they may be another weir's, such as a node proxy's.
func startWeirProcess(t *testing.T, ns string, args ...string) *weirProcess {
	t.Helper()
	if ns == "" && len(args) > 0 && (args[0] == "run" || args[0] == "demo") {
		args = append(slices.Clone(args), "--cleanup-other-modes=false")
	}
	var wrapper []string
	if ns != "" {
		wrapper = []string{"ip", "netns", "exec", ns}
	}
	return launchWeir(t, wrapper, args)
}

// launchWeir runs this test binary as weir with args, under wrapper (a command that
// enters a namespace, or none), and kills it when the test ends.
func launchWeir(t *testing.T, wrapper, args []string) *weirProcess {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w := &weirProcess{done: make(chan error, 1)}
	argv := append(slices.Clone(wrapper), self)
	w.cmd = exec.Command(argv[0], argv[1:]...)
	w.cmd.Env = append(os.Environ(), "WEIR_TEST_MAIN_ARGS="+strings.Join(args, "\x1f"))
	w.cmd.Stdout, w.cmd.Stderr = w, w
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.done <- w.cmd.Wait() }()
	t.Cleanup(func() {
		_ = w.cmd.Process.Kill()
		<-w.done
		if t.Failed() {
			t.Logf("weir's output:\n%s", w.output())
		}
	})
	return w
}

// waitLog waits until weir's output has want.
func (w *weirProcess) waitLog(t *testing.T, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(w.output(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, no %q in weir's output:\n%s", d, want, w.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExit waits for weir to exit and returns how long that took.
func (w *weirProcess) waitExit(t *testing.T, d time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	select {
	case err := <-w.done:
		w.done <- err // for the cleanup
		return time.Since(start), err
	case <-time.After(d):
		t.Fatalf("weir still running after %v:\n%s", d, w.output())
	}
	return 0, nil
}

// TestSecondSignalExitsAtOnce: SIGTERM starts a drain that reports progress and waits
// for a busy connection; a second SIGTERM exits at once.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	startEchos(t, map[string]string{"a": "127.0.3.1"})
	dir := t.TempDir()
	writeAtomically(t, filepath.Join(dir, "service.yaml"), fmt.Sprintf(serviceYAML, "127.0.3.10", 8080))
	writeAtomically(t, filepath.Join(dir, "slice.yaml"), sliceYAML("127.0.3.1"))
	w := startWeirProcess(t, "", "run", "--config", dir, "--admin-addr", "", "--drain-timeout", "30s")
	w.waitLog(t, "frontend=127.0.3.10:8080/TCP", 20*time.Second)

	// A busy connection: a request every 100 ms on one keep-alive connection.
	c, err := net.Dial("tcp", "127.0.3.10:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		buf := make([]byte, 4096)
		for ctx.Err() == nil {
			if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n"); err != nil {
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := c.Read(buf); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	w.waitLog(t, "a second SIGINT or SIGTERM exits at once", 5*time.Second)
	w.waitLog(t, `msg=draining dataplane=userspace open=1`, 5*time.Second) // progress, after a second
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	took, err := w.waitExit(t, 2*time.Second)
	if !strings.Contains(w.output(), "second terminated: exiting without waiting for the drain") {
		t.Errorf("no word of the second signal in weir's output:\n%s", w.output())
	}
	if err == nil {
		t.Error("exit status 0 after a drain cut short")
	}
	t.Logf("weir exited %v after the second SIGTERM", took.Round(time.Millisecond))
}

// TestKernelModeSwitch: in a network namespace, weir run --mode nftables removes the
// chains an earlier iptables run left and says so; on exit it says its rules stay and
// names weir cleanup; --mode iptables then removes the nftables tables.
func TestKernelModeSwitch(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	ns := netnstest.New(t).NS("modes")
	for _, bin := range []string{"nft", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("no %s", bin)
		}
	}
	dir := t.TempDir()
	writeAtomically(t, filepath.Join(dir, "service.yaml"), fmt.Sprintf(serviceYAML, "10.96.0.10", 80))
	ns.MustRun("iptables", "-t", "nat", "-N", "WEIR-SERVICES")

	nft := startWeirProcess(t, ns.Name, "run", "--config", dir, "--mode", "nftables", "--admin-addr", "")
	nft.waitLog(t, `msg="removed the rules an earlier run left in another kernel mode" mode=iptables running_mode=nftables`, 20*time.Second)
	nft.waitLog(t, `msg="configuration applied"`, 20*time.Second)
	if out, err := ns.Run("iptables", "-t", "nat", "-S"); err != nil || strings.Contains(out, "WEIR-") {
		t.Fatalf("iptables chains left: %v\n%s", err, out)
	}
	ns.MustRun("nft", "list", "table", "ip", "weir")
	_ = nft.cmd.Process.Signal(syscall.SIGTERM)
	if _, err := nft.waitExit(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if out := nft.output(); !strings.Contains(out, "the nftables rules stay in the kernel") || !strings.Contains(out, "weir cleanup --mode nftables") {
		t.Errorf("no word of the rules left behind on exit:\n%s", out)
	}
	ns.MustRun("nft", "list", "table", "ip", "weir") // they do stay

	// --cleanup-other-modes=false: a userspace run beside them leaves them alone.
	ns.MustRun("ip", "addr", "add", "10.96.0.10/32", "dev", "lo")
	usr := startWeirProcess(t, ns.Name, "run", "--config", dir, "--admin-addr", "", "--cleanup-other-modes=false")
	usr.waitLog(t, `msg="configuration applied"`, 20*time.Second)
	if out := usr.output(); strings.Contains(out, "removed the rules an earlier run left") {
		t.Errorf("--cleanup-other-modes=false removed rules:\n%s", out)
	}
	ns.MustRun("nft", "list", "table", "ip", "weir")
	_ = usr.cmd.Process.Signal(syscall.SIGTERM)
	_, _ = usr.waitExit(t, 10*time.Second)

	ipt := startWeirProcess(t, ns.Name, "run", "--config", dir, "--mode", "iptables", "--admin-addr", "")
	ipt.waitLog(t, `msg="removed the rules an earlier run left in another kernel mode" mode=nftables running_mode=iptables`, 20*time.Second)
	if _, err := ns.Run("nft", "list", "table", "ip", "weir"); err == nil {
		t.Error("the nftables table survived the switch to iptables")
	}
	_ = ipt.cmd.Process.Signal(syscall.SIGTERM)
	_, _ = ipt.waitExit(t, 10*time.Second)
	cleanup := startWeirProcess(t, ns.Name, "cleanup")
	if _, err := cleanup.waitExit(t, 20*time.Second); err != nil {
		t.Fatalf("weir cleanup: %v\n%s", err, cleanup.output())
	}
}

// TestNoGateway: with --gateway=false (a node proxy beside a gateway Deployment) weir
// serves no Gateway listener and /api/snapshot has no gateway section.
func TestNoGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	writeAtomically(t, filepath.Join(dir, "service.yaml"), fmt.Sprintf(serviceYAML, "127.0.3.30", 8080))
	writeAtomically(t, filepath.Join(dir, "slice.yaml"), sliceYAML("127.0.3.31"))
	writeAtomically(t, filepath.Join(dir, "gateway.yaml"), `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weir}
spec: {controllerName: weir.dev/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: weir
  addresses: [{type: IPAddress, value: 127.0.3.32}]
  listeners: [{name: http, protocol: HTTP, port: 8000}]
`)
	w := startWeirProcess(t, "", "run", "--config", dir, "--mode", "none", "--gateway=false", "--admin-addr", "127.0.0.1:0")
	w.waitLog(t, "configuration applied", 20*time.Second)
	admin := regexp.MustCompile(`admin API listening" addr=http://([0-9.:]+)`).FindStringSubmatch(w.output())
	if admin == nil {
		t.Fatalf("no admin address in weir's output:\n%s", w.output())
	}
	if c, err := net.DialTimeout("tcp", "127.0.3.32:8000", time.Second); err == nil {
		c.Close()
		t.Error("the Gateway's listener is served with --gateway=false")
	}
	resp, err := http.Get("http://" + admin[1] + "/api/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var view map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		t.Fatal(err)
	}
	if _, ok := view["gateway"]; ok {
		t.Errorf("/api/snapshot has a gateway section with --gateway=false")
	}
	if _, ok := view["snapshot"]; !ok {
		t.Errorf("/api/snapshot lacks the snapshot: %v", view)
	}
}
