package userspace

import (
	"context"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"weir.dev/weir/internal/model"
)

// scaleSnapshot is n TCP Services of 10 endpoints each on 127.30.x.y:80; bump changes
// one endpoint of the Service with that index (-1: none).
func scaleSnapshot(n, bump int) *model.Snapshot {
	s := &model.Snapshot{}
	for i := range n {
		var eps []model.Endpoint
		for j := range 10 {
			port := int32(10000 + j)
			if i == bump && j == 0 {
				port = 20000
			}
			eps = append(eps, endpoint(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(j)}), uint16(port))))
		}
		ip := netip.AddrFrom4([4]byte{127, 30, byte(i >> 8), byte(i)})
		s.Services = append(s.Services, service(fmt.Sprintf("s%05d", i), model.TCP, ip.String(), 80, eps))
	}
	return s
}

// TestSyncScales checks that a sync with one changed endpoint or with no change costs
// far less than the first sync, which binds every listener (a regression test for an
// O(ports × listeners) retarget loop).
func TestSyncScales(t *testing.T) {
	if testing.Short() {
		t.Skip("binds up to 2,000 sockets")
	}
	n := 2000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(n)+500 {
		n = int(lim.Cur) - 500 // one listener per Service, plus room for the rest
		if n < 200 {
			t.Skipf("open file limit %d is too low", lim.Cur)
		}
	}
	p := newProxy(t, Options{Health: newHealth(t)})
	ctx := context.Background()
	first, changed, same := scaleSnapshot(n, -1), scaleSnapshot(n, 7), scaleSnapshot(n, 7)
	timed := func(s *model.Snapshot) time.Duration {
		start := time.Now()
		if err := p.Sync(ctx, s); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	full, one, none := timed(first), timed(changed), timed(same)
	t.Logf("%d Services × 10 endpoints: full sync %v, one change %v, no change %v", n, full, one, none)
	if one > time.Second || none > time.Second {
		t.Fatalf("incremental syncs too slow: one change %v, no change %v", one, none)
	}
}

// BenchmarkSyncNoChange measures a Sync of 2,000 Services that changes nothing, and
// BenchmarkSyncOneChange one that moves one endpoint.
func BenchmarkSyncNoChange(b *testing.B)  { benchmarkSync(b, false) }
func BenchmarkSyncOneChange(b *testing.B) { benchmarkSync(b, true) }

func benchmarkSync(b *testing.B, change bool) {
	const n = 2000
	p, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	snaps := []*model.Snapshot{scaleSnapshot(n, -1), scaleSnapshot(n, -1)}
	if change {
		snaps[1] = scaleSnapshot(n, 7)
	}
	if err := p.Sync(context.Background(), snaps[0]); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if err := p.Sync(context.Background(), snaps[(i+1)%2]); err != nil {
			b.Fatal(err)
		}
	}
}
