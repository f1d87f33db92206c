package balance

import (
	"strings"
	"testing"
)

// FuzzPick builds any scheduler over any backends and checks that New either fails
// cleanly or gives a Picker whose picks are in range, and that Pick never panics.
func FuzzPick(f *testing.F) {
	f.Add(uint8(0), []byte{1, 1, 1}, uint64(0), uint64(0), uint16(0))
	f.Add(uint8(9), []byte{0, 5, 255, 3}, uint64(7), uint64(1), uint16(251))
	f.Add(uint8(1), []byte{200, 1}, uint64(1<<63), uint64(3), uint16(4))
	f.Add(uint8(6), []byte{}, uint64(5), uint64(0), uint16(0))
	f.Add(uint8(12), []byte{1}, uint64(5), uint64(0), uint16(0))
	f.Fuzz(func(t *testing.T, algIndex uint8, weights []byte, key, seed uint64, size uint16) {
		algs := Algorithms()
		alg := Algorithm("Unknown")
		if int(algIndex) < len(algs) {
			alg = algs[algIndex]
		}
		bs := make([]Backend, len(weights))
		for i, w := range weights {
			bs[i] = Backend{ID: uint64(w) * seed, Weight: uint32(w) << (i % 24), Load: new(Load)}
			for range int(w % 3) {
				bs[i].Load.Begin()
			}
		}
		opts := Options{MaglevTableSize: int(size), Seed: seed, RandSeed: seed}
		p, err := New(alg, bs, opts)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "balance: ") {
				t.Fatalf("unexpected error form: %v", err)
			}
			return
		}
		var again Picker
		if alg.Hashing() {
			// A second instance with the same inputs maps every key alike.
			if again, err = New(alg, bs, opts); err != nil {
				t.Fatalf("second New: %v", err)
			}
		}
		for k := uint64(0); k < 64; k++ {
			i := p.Pick(key + k)
			if len(bs) == 0 && i != -1 || len(bs) > 0 && (i < 0 || i >= len(bs)) {
				t.Fatalf("%s over %d backends: Pick = %d", alg, len(bs), i)
			}
			if again != nil && again.Pick(key+k) != i {
				t.Fatalf("%s: two instances disagree on key %d", alg, key+k)
			}
		}
	})
}
