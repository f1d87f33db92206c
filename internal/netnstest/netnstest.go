// Package netnstest builds throw-away network namespaces for tests of the kernel data
// planes: namespaces named with a per-run prefix, veth pairs and bridges between them,
// and a way to run Go code inside one. Everything it makes is torn down by t.Cleanup,
// even when the test fails.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Harness creates namespaces for one test.
type Harness struct {
	t      testing.TB
	prefix string
	n      int
}

// New returns a Harness, or skips the test unless it runs as root where `ip netns`
// works.
func New(t testing.TB) *Harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespace tests need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network namespace tests need the ip command")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return &Harness{t: t, prefix: "wt" + hex.EncodeToString(b)}
}

// NS is one network namespace.
type NS struct {
	Name string
	h    *Harness
}

// NS creates a namespace with loopback up.
func (h *Harness) NS(role string) *NS {
	h.t.Helper()
	h.n++
	name := fmt.Sprintf("%s-%s", h.prefix, role)
	if err := run("ip", "netns", "add", name); err != nil {
		h.t.Skipf("cannot create network namespaces: %v", err)
	}
	h.t.Cleanup(func() {
		if err := run("ip", "netns", "del", name); err != nil {
			h.t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	ns := &NS{Name: name, h: h}
	ns.MustRun("ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside the namespace and returns its combined output.
func (ns *NS) Run(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", strings.Join(args, " "), ns.Name, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (ns *NS) MustRun(args ...string) string {
	ns.h.t.Helper()
	out, err := ns.Run(args...)
	if err != nil {
		ns.h.t.Fatal(err)
	}
	return out
}

// Do runs f on an OS thread that has entered the namespace: sockets f opens and
// commands it starts live there. The thread is discarded afterwards if it cannot be
// moved back.
func (ns *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns.Name)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", ns.Name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns.Name, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread() // the thread is clean again
		} // else: leave it locked; the runtime ends the thread with the goroutine
		errc <- ferr
	}()
	return <-errc
}

// Veth connects a and b with a veth pair, gives each end its addresses (CIDR
// notation) and brings both up. The ends are named after the peer's role.
func (h *Harness) Veth(a *NS, aName string, aAddrs []string, b *NS, bName string, bAddrs []string) {
	h.t.Helper()
	tmpA := fmt.Sprintf("%sa%d", h.prefix, h.n)
	tmpB := fmt.Sprintf("%sb%d", h.prefix, h.n)
	h.n++
	if err := run("ip", "link", "add", tmpA, "type", "veth", "peer", "name", tmpB); err != nil {
		h.t.Fatal(err)
	}
	// Once moved, the ends die with their namespaces; this only catches a half-way
	// failure that left an end in the test's own namespace.
	h.t.Cleanup(func() { _ = run("ip", "link", "del", tmpA) })
	for _, end := range []struct {
		tmp, name string
		ns        *NS
		addrs     []string
	}{{tmpA, aName, a, aAddrs}, {tmpB, bName, b, bAddrs}} {
		if err := run("ip", "link", "set", end.tmp, "netns", end.ns.Name); err != nil {
			h.t.Fatal(err)
		}
		end.ns.MustRun("ip", "link", "set", end.tmp, "name", end.name)
		for _, addr := range end.addrs {
			args := []string{"ip", "addr", "add", addr, "dev", end.name}
			if strings.Contains(addr, ":") {
				args = append(args, "nodad")
			}
			end.ns.MustRun(args...)
		}
		end.ns.MustRun("ip", "link", "set", end.name, "up")
	}
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
