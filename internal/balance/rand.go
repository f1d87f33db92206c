package balance

import (
	"math/bits"
	"math/rand/v2"
	"sync/atomic"
)

// source is a lock-free random source. Seeded, it is SplitMix64 over an atomic
// counter, so a single goroutine replays the same draws; unseeded, it is the runtime's
// per-thread generator, which has no shared cache line.
type source struct {
	state  atomic.Uint64
	seeded bool
}

func newSource(seed uint64) *source {
	s := &source{seeded: seed != 0}
	s.state.Store(seed)
	return s
}

func (s *source) next() uint64 {
	if !s.seeded {
		return rand.Uint64()
	}
	return mix64(s.state.Add(golden))
}

// below maps a uniform r onto [0, n) (Lemire's multiply-shift) and returns the unused
// low half as a fresh uniform fraction of 2^64.
func below(r uint64, n int) (int, uint64) {
	hi, lo := bits.Mul64(r, uint64(n))
	return int(hi), lo
}

// aliasTable draws an index in proportion to weights in O(1) (Vose's alias method).
type aliasTable struct {
	threshold []uint64 // keep index i when the fraction is below threshold[i]
	alias     []int32
}

func newAliasTable(weights []uint32) aliasTable {
	n := len(weights)
	t := aliasTable{threshold: make([]uint64, n), alias: make([]int32, n)}
	var total float64
	for _, w := range weights {
		total += float64(w)
	}
	scaled := make([]float64, n)
	small := make([]int, 0, n)
	large := make([]int, 0, n)
	for i, w := range weights {
		scaled[i] = float64(w) * float64(n) / total
		if scaled[i] < 1 {
			small = append(small, i)
		} else {
			large = append(large, i)
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		t.threshold[s] = fraction(scaled[s])
		t.alias[s] = int32(l)
		scaled[l] -= 1 - scaled[s]
		if scaled[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	// What remains is 1 up to rounding.
	for _, i := range append(small, large...) {
		t.threshold[i] = ^uint64(0)
		t.alias[i] = int32(i)
	}
	return t
}

// fraction turns p in [0, 1) into a threshold out of 2^64.
func fraction(p float64) uint64 {
	if p <= 0 {
		return 0
	}
	v := p * (1 << 64)
	if v >= 1<<64 {
		return ^uint64(0)
	}
	return uint64(v)
}

func (t *aliasTable) draw(r uint64) int {
	i, f := below(r, len(t.threshold))
	if f < t.threshold[i] {
		return i
	}
	return int(t.alias[i])
}

// uniformWeights reports whether all weights are equal, so that a uniform draw does.
func uniformWeights(weights []uint32) bool {
	for _, w := range weights {
		if w != weights[0] {
			return false
		}
	}
	return true
}
