package ebpf

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/model"
)

// testPinPath mounts a bpffs of the test's own on a temporary directory (unmounted
// when the test ends) and returns a pin path in it.
func testPinPath(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount test bpffs: %v", err)
		}
	})
	if err := ensureBPFFS(dir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "weir")
}

// TestPinnedRestart checks that pinned programs keep balancing after the Proxier is
// closed (weir exited), that the next Proxier adopts the maps (an unchanged Snapshot
// writes nothing; a Service gone meanwhile is deleted), and that Pins.Cleanup detaches
// everything and removes the pins.
func TestPinnedRestart(t *testing.T) {
	cg := testCgroup(t)
	pin := testPinPath(t)
	ctx := context.Background()
	a, b := backend(t, "tcp", "127.0.0.1", "a"), backend(t, "tcp", "127.0.0.1", "b")
	webIP, dbIP := netip.MustParseAddr("203.0.113.40"), netip.MustParseAddr("203.0.113.41")
	web, db := service("web", webIP, model.TCP, 80, a), service("db", dbIP, model.TCP, 5432, b)

	p, err := New(Options{Cgroup: cg, PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx, snapshot(db, web)); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// weir is gone: the pinned programs and maps still balance.
	if got := clients(t, cg, "tcp", "203.0.113.40:80", 1)[0]; got != "a" {
		t.Fatalf("after Close of a pinned Proxier, web reached %q, want a", got)
	}
	if found, err := (Pins{pin}).Leftovers(ctx); err != nil || !found {
		t.Fatalf("Leftovers after a pinned run: %v, %v", found, err)
	}

	// Restart: the maps are adopted; the same Snapshot writes nothing.
	p2, err := New(Options{Cgroup: cg, PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if got := clients(t, cg, "tcp", "203.0.113.41:5432", 1)[0]; got != "b" {
		t.Fatalf("after a restart, before its first Sync, db reached %q, want b", got)
	}
	if err := p2.Sync(ctx, snapshot(db, web)); err != nil {
		t.Fatal(err)
	}
	if p2.writes != 0 {
		t.Fatalf("the first Sync after a restart with the same Snapshot wrote %d elements", p2.writes)
	}
	// db went away while weir was down; web changed.
	web2 := service("web", webIP, model.TCP, 80, b)
	if err := p2.Sync(ctx, snapshot(web2)); err != nil {
		t.Fatal(err)
	}
	if got := clients(t, cg, "tcp", "203.0.113.40:80", 1)[0]; got != "b" {
		t.Fatalf("web after the change reached %q, want b", got)
	}
	if got := clients(t, cg, "tcp", "203.0.113.41:5432", 1)[0]; got == "a" || got == "b" {
		t.Fatalf("db, removed, still reached %q", got)
	}
	if p2.slots.used != 1 {
		t.Fatalf("backend slots in use: %d, want 1", p2.slots.used)
	}

	if err := p2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := (Pins{pin}).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := clients(t, cg, "tcp", "203.0.113.40:80", 1)[0]; got == "a" || got == "b" {
		t.Fatalf("after Cleanup a connect was still rewritten to %q", got)
	}
	if _, err := os.Stat(pin); !os.IsNotExist(err) {
		t.Fatalf("pin directory after Cleanup: %v", err)
	}
	if found, err := (Pins{pin}).Leftovers(ctx); err != nil || found {
		t.Fatalf("Leftovers after Cleanup: %v, %v", found, err)
	}
}

// TestAdoptOrphans checks that frontends of pinned maps that the first full Sync does
// not want are deleted and their slots given back.
func TestAdoptOrphans(t *testing.T) {
	cg := testCgroup(t)
	pin := testPinPath(t)
	ctx := context.Background()
	a := backend(t, "tcp", "127.0.0.1", "a")
	old := service("old", netip.MustParseAddr("203.0.113.42"), model.TCP, 80, a, a, a)
	p, err := New(Options{Cgroup: cg, PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx, snapshot(old)); err != nil {
		t.Fatal(err)
	}
	p.Close()
	p2, err := New(Options{Cgroup: cg, PinPath: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		p2.Close()
		if err := (Pins{pin}).Cleanup(ctx); err != nil {
			t.Error(err)
		}
	}()
	if p2.slots.used != 3 || len(p2.orphans) != 3 { // the frontend, its ClusterIP's other ports
		t.Fatalf("adopted %d slots, %d orphans; want 3, 3", p2.slots.used, len(p2.orphans))
	}
	if err := p2.Sync(ctx, snapshot()); err != nil {
		t.Fatal(err)
	}
	if p2.slots.used != 0 || len(p2.orphans) != 0 || len(p2.applied) != 0 {
		t.Fatalf("after a full Sync without it: %d slots, %d orphans, %d applied", p2.slots.used, len(p2.orphans), len(p2.applied))
	}
	if got := clients(t, cg, "tcp", "203.0.113.42:80", 1)[0]; got == "a" {
		t.Fatal("an orphan frontend still reached a")
	}
}
