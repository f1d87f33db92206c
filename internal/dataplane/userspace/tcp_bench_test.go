package userspace

import (
	"net/netip"
	"sync/atomic"
	"testing"
)

// BenchmarkTCPShortConnection measures one short proxied connection end to end on
// loopback: the client connects, reads the backend's greeting, gets an echo back and
// closes; the proxy accepts, dials, copies both ways and closes. Profile it with
//
//	go test -run '^$' -bench TCPShortConnection -cpuprofile cpu.out ./internal/dataplane/userspace/
//
// Clients connect from 127.0.95.1–127.0.95.64 so that their TIME_WAIT sockets do not
// exhaust 127.0.0.1's ephemeral ports.
func BenchmarkTCPShortConnection(b *testing.B) {
	be := startTCPBackend(b, "a")
	p := newProxy(b, Options{})
	front := "127.0.96.1"
	if err := p.Sync(b.Context(), snap(service("bench", "TCP", front, 18080, endpoints(be.addr)))); err != nil {
		b.Fatal(err)
	}
	addr := front + ":18080"
	var next atomic.Uint32
	b.SetParallelism(8) // 16 client goroutines on 2 cores: the proxy, not the round trip, is the limit
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			src := netip.AddrFrom4([4]byte{127, 0, 95, byte(1 + next.Add(1)%64)})
			if _, err := greet(addr, src); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
