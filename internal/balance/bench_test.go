package balance

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// benchBackends are n backends with weights 1..4 (or all 1), each with 1 to 7
// connections in flight (so least-connections scans them all: its worst case) and a
// latency sample.
func benchBackends(n int, weighted bool) []Backend {
	bs := make([]Backend, n)
	now := time.Now()
	for i := range bs {
		bs[i] = Backend{ID: KeyOf(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 8080)), Weight: 1, Load: new(Load)}
		if weighted {
			bs[i].Weight = uint32(1 + i%4)
		}
		for j := 0; j <= i%7; j++ {
			bs[i].Load.Begin()
		}
		bs[i].Load.ObserveAt(time.Duration(1+i%5)*time.Millisecond, now)
	}
	return bs
}

func BenchmarkPick(b *testing.B) {
	for _, alg := range Algorithms() {
		for _, weighted := range []bool{false, true} {
			name := fmt.Sprintf("%s/n=100", alg)
			if weighted {
				name += "/weighted"
			}
			b.Run(name, func(b *testing.B) {
				p, err := New(alg, benchBackends(100, weighted), Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				key := uint64(0)
				sink := 0
				for i := 0; i < b.N; i++ {
					key += golden
					sink += p.Pick(key)
				}
				if sink < 0 {
					b.Fatal("negative index")
				}
			})
		}
	}
}

func BenchmarkPickParallel(b *testing.B) {
	for _, alg := range Algorithms() {
		b.Run(string(alg), func(b *testing.B) {
			p, err := New(alg, benchBackends(100, false), Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				key := uint64(0)
				for pb.Next() {
					key += golden
					if p.Pick(key) < 0 {
						b.Error("negative index")
						return
					}
				}
			})
		})
	}
}

func BenchmarkMaglevBuild(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("n=%d/M=16381", n), func(b *testing.B) {
			bs := benchBackends(n, false)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := MaglevTable(bs, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkNew(b *testing.B) {
	bs := benchBackends(100, true)
	for _, alg := range Algorithms() {
		b.Run(string(alg)+"/n=100/weighted", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := New(alg, bs, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkHash(b *testing.B) {
	a4 := netip.MustParseAddr("10.1.2.3")
	a6 := netip.MustParseAddr("2001:db8::1")
	ap := netip.MustParseAddrPort("10.1.2.3:8080")
	var sink uint64
	b.Run("HashAddr/v4", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sink += HashAddr(a4)
		}
	})
	b.Run("HashAddr/v6", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sink += HashAddr(a6)
		}
	})
	b.Run("KeyOf", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sink += KeyOf(ap)
		}
	})
	b.Run("HashString/32B", func(b *testing.B) {
		s := "session=0123456789abcdef01234567"
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sink += HashString(s)
		}
	})
	if sink == 1 {
		b.Log(sink)
	}
}

func BenchmarkAffinity(b *testing.B) {
	a := NewAffinity(0)
	now := time.Now()
	clients := make([]netip.Addr, 1024)
	for i := range clients {
		clients[i] = netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)})
		a.Remember(clients[i], uint64(i), now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := clients[i&1023]
		if id, ok := a.Lookup(c, now); ok {
			a.Remember(c, id, now)
		}
	}
}

func BenchmarkLoad(b *testing.B) {
	var l Load
	now := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.Begin()
		l.End()
		l.ObserveAt(time.Millisecond, now.Add(time.Duration(i)*time.Microsecond))
	}
}
