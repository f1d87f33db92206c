package balance

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// movedFraction is the share of keys whose backend ID differs between two pickers.
func movedFraction(a Picker, abs []Backend, b Picker, bbs []Backend, keys int) float64 {
	moved := 0
	for k := 0; k < keys; k++ {
		key := HashAddr(netip.AddrFrom4([4]byte{172, byte(k >> 16), byte(k >> 8), byte(k)}))
		if abs[a.Pick(key)].ID != bbs[b.Pick(key)].ID {
			moved++
		}
	}
	return float64(moved) / float64(keys)
}

func without(bs []Backend, i int) []Backend {
	out := append([]Backend(nil), bs[:i]...)
	return append(out, bs[i+1:]...)
}

// TestMaglevDisruption removes one of N backends. Only the removed backend's keys
// (1/N) must move; the paper's greedy fill moves a few more, because the survivors
// take their turns in a different order. Measured over every removal (the table
// fraction, mean / max): N=100 M=16381 2.32 % / 2.46 %; N=100 M=65521 1.54 % / 1.61 %;
// N=40 M=16381 3.46 % / 3.62 %; N=10 M=1021 12.7 % / 13.1 %; N=5 M=251 22.4 % / 23.1 %.
// So the extra is about 1 % (up to 1.5 % at 100 backends in 16381 slots), not always
// under the 1 % the issue hoped for: the bound asserted here is 1/N + 2 % when
// M ≥ 100·N and 1/N + 3.5 % below. SourceHash (a ring) moves exactly 1/N.
func TestMaglevDisruption(t *testing.T) {
	tests := []struct {
		n, size int
		extra   float64
	}{
		{2, 1021, 0.02},
		{5, 251, 0.035},
		{10, 1021, 0.02},
		{10, DefaultMaglevTableSize, 0.02},
		{40, DefaultMaglevTableSize, 0.02},
		{50, DefaultMaglevTableSize, 0.02},
		{100, DefaultMaglevTableSize, 0.02},
		{100, 65521, 0.01},
		// Unset size: the table grows with the backends, and the bound holds.
		{2, 0, 0.01},
		{10, 0, 0.01},
		{20, 0, 0.01},
		{40, 0, 0.01},
		{100, 0, 0.01},
		{160, 0, 0.01},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, tt := range tests {
		bs := backends(equalWeights(tt.n)...)
		gone := r.IntN(tt.n)
		opts := Options{MaglevTableSize: tt.size, Seed: 99}
		before, after := mustNew(t, Maglev, bs, opts), mustNew(t, Maglev, without(bs, gone), opts)
		moved := movedFraction(before, bs, after, without(bs, gone), 100000)
		limit := tt.extra + 1/float64(tt.n)
		if moved > limit {
			t.Errorf("n=%d M=%d: removing backend %d moved %.4f of keys, want ≤ %.4f", tt.n, tt.size, gone, moved, limit)
		}
		// The removed backend's own keys (about 1/n) must move; little else does.
		if moved < 0.5/float64(tt.n) {
			t.Errorf("n=%d: only %.4f of keys moved", tt.n, moved)
		}
	}
}

func TestMaglevBalance(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		size    int
	}{
		{"equal 100", equalWeights(100), 0},
		{"equal 7 small table", equalWeights(7), 251},
		{"weighted", []uint32{1, 2, 3, 4}, 0},
		{"canary", []uint32{99, 99, 99, 3}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(tt.weights...)
			table, err := MaglevTable(bs, Options{MaglevTableSize: tt.size})
			if err != nil {
				t.Fatal(err)
			}
			size := tt.size
			if size == 0 {
				size = AutoMaglevTableSize(len(bs))
			}
			if len(table) != size {
				t.Fatalf("table has %d slots, want %d", len(table), size)
			}
			slots := make([]int, len(bs))
			for _, i := range table {
				slots[i]++
			}
			var wsum float64
			for _, w := range tt.weights {
				wsum += float64(w)
			}
			for i, w := range tt.weights {
				want := float64(size) * float64(w) / wsum
				if got := float64(slots[i]); got < want*0.97-1 || got > want*1.03+1 {
					t.Errorf("backend %d (weight %d) owns %v slots, want %.1f ± 3%%", i, w, got, want)
				}
			}
		})
	}
}

func TestMaglevInstancesAgree(t *testing.T) {
	bs := backends(equalWeights(40)...)
	shuffled := append([]Backend(nil), bs...)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	a := mustNew(t, Maglev, bs, Options{Seed: 5})
	b := mustNew(t, Maglev, shuffled, Options{Seed: 5})
	c := mustNew(t, Maglev, bs, Options{Seed: 6})
	if moved := movedFraction(a, bs, b, shuffled, 50000); moved != 0 {
		t.Errorf("two instances with seed 5 (backends in another order) disagree on %.4f of keys", moved)
	}
	if moved := movedFraction(a, bs, c, bs, 50000); moved < 0.5 {
		t.Errorf("seeds 5 and 6 agree on too many keys (%.4f moved)", 1-moved)
	}
	for _, seed := range []uint64{5, 6} {
		ta, _ := MaglevTable(bs, Options{Seed: seed})
		tb, _ := MaglevTable(bs, Options{Seed: seed})
		for i := range ta {
			if ta[i] != tb[i] {
				t.Fatalf("seed %d: tables differ at slot %d", seed, i)
			}
		}
		// MaglevSlot is the picker's own lookup.
		p := mustNew(t, Maglev, bs, Options{Seed: seed})
		for k := uint64(0); k < 1000; k++ {
			if got, want := int(ta[MaglevSlot(k, len(ta), seed)]), p.Pick(k); got != want {
				t.Fatalf("seed %d key %d: table[MaglevSlot] = %d, Pick = %d", seed, k, got, want)
			}
		}
	}
}

func TestMaglevSizes(t *testing.T) {
	for _, size := range []int{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071, MaxMaglevTableSize} {
		if !prime(size) {
			t.Errorf("%d is not prime", size)
		}
	}
	for _, size := range []int{0, 1, 4, 100, 16383, 65536, 131073} {
		if prime(size) {
			t.Errorf("%d reported prime", size)
		}
	}
	if _, err := MaglevTable(nil, Options{}); err == nil {
		t.Error("MaglevTable over no backends: no error")
	}
}

func TestRingHashConsistent(t *testing.T) {
	for _, alg := range []Algorithm{SourceHash, DestinationHash} {
		t.Run(string(alg), func(t *testing.T) {
			bs := backends(equalWeights(20)...)
			a := mustNew(t, alg, bs, Options{Seed: 1})
			// Stable per key, and across instances whatever the order of backends.
			rev := append([]Backend(nil), bs...)
			for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
				rev[i], rev[j] = rev[j], rev[i]
			}
			b := mustNew(t, alg, rev, Options{Seed: 1})
			if moved := movedFraction(a, bs, b, rev, 50000); moved != 0 {
				t.Errorf("two instances disagree on %.4f of keys", moved)
			}
			// Removing a backend moves only its own keys.
			for _, gone := range []int{0, 7, 19} {
				c := mustNew(t, alg, without(bs, gone), Options{Seed: 1})
				moved, own := 0, 0
				for k := 0; k < 50000; k++ {
					key := HashString(string(rune(k)) + "/key")
					before := bs[a.Pick(key)].ID
					if before == bs[gone].ID {
						own++
						continue
					}
					if without(bs, gone)[c.Pick(key)].ID != before {
						moved++
					}
				}
				if moved != 0 {
					t.Errorf("removing backend %d moved %d keys of other backends", gone, moved)
				}
				if own == 0 {
					t.Errorf("backend %d owned no keys", gone)
				}
			}
		})
	}
}

func TestRingHashShares(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
	}{
		{"equal 10", equalWeights(10)},
		{"equal 100", equalWeights(100)},
		{"weighted", []uint32{1, 2, 4}},
		{"single", []uint32{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(tt.weights...)
			p := mustNew(t, SourceHash, bs, Options{})
			got := make([]int, len(bs))
			const keys = 200000
			for k := 0; k < keys; k++ {
				got[p.Pick(uint64(k))]++
			}
			var wsum float64
			for _, w := range tt.weights {
				wsum += float64(w)
			}
			// Ketama with 160 virtual nodes per backend is within ~±25 % of its share.
			for i, w := range tt.weights {
				want := keys * float64(w) / wsum
				if g := float64(got[i]); g < 0.7*want || g > 1.3*want {
					t.Errorf("backend %d (weight %d) got %v keys, want %.0f ± 30%%", i, w, g, want)
				}
			}
		})
	}
}
