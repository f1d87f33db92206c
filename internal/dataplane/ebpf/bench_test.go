package ebpf

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"weir.dev/weir/internal/model"
)

// benchSnapshot is n ClusterIP Services with 10 endpoints each; shift moves the
// endpoints of Service 0 only.
func benchSnapshot(n, shift int) *model.Snapshot {
	svcs := make([]*model.Service, n)
	for i := range n {
		ip := netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
		eps := make([]model.Endpoint, 10)
		for j := range eps {
			s := 0
			if i == 0 {
				s = shift
			}
			eps[j] = model.Endpoint{Addr: netip.AddrFrom4([4]byte{10, 1, byte(j), byte(s)}), Port: 8080, Ready: true, Serving: true, Weight: 1}
		}
		svcs[i] = service(fmt.Sprintf("s%05d", i), ip, model.TCP, 80, eps...)
	}
	return snapshot(svcs...)
}

// BenchmarkSync measures a full sync of n Services into empty maps and a sync that
// changes one Service's endpoints.
func BenchmarkSync(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	mount, err := CgroupMount()
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(mount, fmt.Sprintf("weir-ebpf-bench-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	defer os.Remove(dir)
	ctx := context.Background()
	for _, n := range []int{100, 1000, 10000} {
		full := benchSnapshot(n, 0)
		b.Run(fmt.Sprintf("full/services=%d", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				p, err := New(Options{Cgroup: dir})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := p.Sync(ctx, full); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				p.Close()
				b.StartTimer()
			}
		})
		b.Run(fmt.Sprintf("one-change/services=%d", n), func(b *testing.B) {
			p, err := New(Options{Cgroup: dir})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			if err := p.Sync(ctx, full); err != nil {
				b.Fatal(err)
			}
			snaps := []*model.Snapshot{benchSnapshot(n, 1), full}
			i := 0
			for b.Loop() {
				if err := p.Sync(ctx, snaps[i%2]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("one-change-delta/services=%d", n), func(b *testing.B) {
			p, err := New(Options{Cgroup: dir})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			first := benchSnapshot(n, 0)
			first.Version = 1
			if err := p.Sync(ctx, first); err != nil {
				b.Fatal(err)
			}
			// Alternate Service 0's endpoints with Snapshots that say so in a Delta.
			snaps := []*model.Snapshot{benchSnapshot(n, 1), benchSnapshot(n, 0)}
			changed := []model.ServiceKey{snaps[0].Services[0].Key}
			v := uint64(1)
			i := 0
			for b.Loop() {
				s := snaps[i%2]
				s.Version, s.Delta = v+1, &model.Delta{Base: v, Services: changed}
				if err := p.Sync(ctx, s); err != nil {
					b.Fatal(err)
				}
				v++
				i++
			}
		})
	}
}
