package balance

import (
	"net/netip"
	"testing"
)

func TestHashesArePinned(t *testing.T) {
	// These values are part of weir's behaviour: Maglev and ring placement across
	// instances and versions depend on them. Change them only on purpose.
	tests := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"HashAddr v4", HashAddr(netip.MustParseAddr("10.0.0.1")), 0x81587458aeb0c91a},
		{"HashAddr v4-mapped", HashAddr(netip.MustParseAddr("::ffff:10.0.0.1")), 0x81587458aeb0c91a},
		{"HashAddr zone ignored", HashAddr(netip.MustParseAddr("2001:db8::1%eth0")), 0x504b8dce1c938e43},
		{"HashAddr v6", HashAddr(netip.MustParseAddr("2001:db8::1")), 0x504b8dce1c938e43},
		{"KeyOf", KeyOf(netip.MustParseAddrPort("10.0.0.1:8080")), 0x41c2ed57e7a264e0},
		{"KeyOf v4-mapped", KeyOf(netip.MustParseAddrPort("[::ffff:10.0.0.1]:8080")), 0x41c2ed57e7a264e0},
		{"HashString", HashString("user-42"), 0x7a1596f0e94b5793},
		{"HashString empty", HashString(""), 0xf52a15e9a9b5e89b},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.name, tt.got, tt.want)
		}
	}
}

func TestHashesSpread(t *testing.T) {
	// Distinct inputs give distinct hashes, and the low bits (used by shards) spread.
	seen := map[uint64]string{}
	add := func(h uint64, what string) {
		if prev, ok := seen[h]; ok {
			t.Fatalf("%s and %s collide at %#x", prev, what, h)
		}
		seen[h] = what
	}
	var shards [32]int
	for i := 0; i < 4096; i++ {
		a := netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})
		add(HashAddr(a), a.String())
		shards[HashAddr(a)&31]++
		add(KeyOf(netip.AddrPortFrom(a, 80)), a.String()+":80")
		add(KeyOf(netip.AddrPortFrom(a, 81)), a.String()+":81")
		add(HashString(a.String()), `"`+a.String()+`"`)
	}
	for s, c := range shards {
		if c < 64 || c > 192 { // expected 128
			t.Errorf("shard %d holds %d of 4096 addresses", s, c)
		}
	}
}

func TestHashesDoNotAllocate(t *testing.T) {
	a := netip.MustParseAddr("2001:db8::7")
	ap := netip.MustParseAddrPort("10.1.1.1:443")
	s := "a-cookie-value"
	if n := testing.AllocsPerRun(100, func() { _, _, _ = HashAddr(a), KeyOf(ap), HashString(s) }); n != 0 {
		t.Errorf("hashes allocate %v times", n)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, alg := range Algorithms() {
		for _, opts := range []Options{{}, {RandSeed: 1}} {
			p := mustNew(t, alg, backends(1, 2, 3, 4, 5), opts)
			if n := testing.AllocsPerRun(100, func() { p.Pick(12345) }); n != 0 {
				t.Errorf("%s: Pick allocates %v times", alg, n)
			}
		}
	}
}
