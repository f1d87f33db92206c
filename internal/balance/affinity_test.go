package balance

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestAffinityTimeout(t *testing.T) {
	c := netip.MustParseAddr("192.0.2.10")
	tests := []struct {
		name    string
		timeout time.Duration
		at      time.Duration // lookup time after Remember at t0
		wantOK  bool
	}{
		{"fresh", time.Minute, 0, true},
		{"just before timeout", time.Minute, time.Minute - time.Nanosecond, true},
		{"at timeout", time.Minute, time.Minute, false},
		{"default holds 3 h", 0, 10799 * time.Second, true},
		{"default expires after 3 h", 0, 10800 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAffinity(tt.timeout)
			a.Remember(c, 7, t0)
			id, ok := a.Lookup(c, t0.Add(tt.at))
			if ok != tt.wantOK || ok && id != 7 {
				t.Fatalf("Lookup = %d, %v; want 7, %v", id, ok, tt.wantOK)
			}
			if !ok && a.Len() != 0 {
				t.Errorf("expired entry not removed by Lookup (Len %d)", a.Len())
			}
		})
	}
	if got := NewAffinity(-1).Timeout(); got != DefaultAffinityTimeout {
		t.Errorf("NewAffinity(-1).Timeout() = %v", got)
	}
}

func TestAffinityRefreshForgetSweep(t *testing.T) {
	a := NewAffinity(time.Minute)
	c1, c2, c3 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("192.0.2.3")
	a.Remember(c1, 1, t0)
	a.Remember(c2, 2, t0)
	a.Remember(c3, 1, t0)
	// Remember again refreshes the timeout (iptables recent --set on each connection).
	a.Remember(c1, 1, t0.Add(50*time.Second))
	if _, ok := a.Lookup(c1, t0.Add(100*time.Second)); !ok {
		t.Error("refreshed entry expired")
	}
	// The IPv4-mapped form of a client is the same client.
	if id, ok := a.Lookup(netip.MustParseAddr("::ffff:192.0.2.1"), t0.Add(time.Second)); !ok || id != 1 {
		t.Errorf("IPv4-mapped lookup = %d, %v", id, ok)
	}
	// A terminating backend loses its sticky clients at once.
	if n := a.Forget(1); n != 2 {
		t.Errorf("Forget(1) dropped %d entries, want 2", n)
	}
	if _, ok := a.Lookup(c1, t0.Add(time.Second)); ok {
		t.Error("client still stuck to a forgotten backend")
	}
	if id, ok := a.Lookup(c2, t0.Add(time.Second)); !ok || id != 2 {
		t.Errorf("other backend's client lost: %d, %v", id, ok)
	}
	a.Remember(c3, 3, t0.Add(30*time.Second))
	if n := a.Sweep(t0.Add(70 * time.Second)); n != 1 {
		t.Errorf("Sweep dropped %d entries, want 1 (c2)", n)
	}
	if a.Len() != 1 {
		t.Errorf("Len = %d after sweep, want 1", a.Len())
	}
}

func TestAffinityConcurrent(t *testing.T) {
	a := NewAffinity(time.Second)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 2000; k++ {
				c := netip.AddrFrom4([4]byte{198, 51, byte(g), byte(k)})
				now := t0.Add(time.Duration(k) * time.Millisecond)
				if id, ok := a.Lookup(c, now); ok && id > 9 {
					t.Errorf("bad id %d", id)
					return
				}
				a.Remember(c, uint64(k%10), now)
				switch k % 500 {
				case 0:
					a.Forget(uint64(g))
				case 250:
					a.Sweep(now)
				}
			}
		}()
	}
	wg.Wait()
}
