package balance

import (
	"math"
	"sync/atomic"
)

// leastConn picks the backend with the fewest active connections (IPVS lc), or with
// weights the fewest active connections per unit of weight (IPVS wlc). Among tied
// backends it takes the first at or after the one following the previous pick, so
// tied backends (for instance all idle) take turns in round-robin order, as in
// nginx's least_conn, rather than all going to the first.
//
// The scan is two passes: a branch-free minimum over four independent accumulators,
// then a search for the first backend at that minimum. That is about 2.5× faster than
// one pass that tracks the index (the compiler turns min into CMOV and the four
// chains run in parallel). A load that changes between the passes can leave no
// backend at the minimum; the pick then stays at the start.
type leastConn struct {
	last  atomic.Uint64 // index of the previous pick
	loads []*Load
	inv   []int64 // 2^32/weight, so active/weight compares as active·inv; nil: unweighted
}

func newLeastConn(backends []Backend, weighted bool, start uint64) *leastConn {
	p := &leastConn{loads: make([]*Load, len(backends))}
	p.last.Store(start % uint64(len(backends)))
	for i, b := range backends {
		p.loads[i] = b.Load
	}
	if weighted {
		w := make([]uint32, len(backends))
		for i, b := range backends {
			w[i] = weightOf(b)
		}
		if !uniformWeights(w) {
			p.inv = make([]int64, len(w))
			for i := range w {
				p.inv[i] = (1 << 32) / int64(w[i])
			}
		}
	}
	return p
}

func (p *leastConn) Pick(uint64) int {
	n := len(p.loads)
	s := int(p.last.Load()+1) % n
	var best int
	if p.inv == nil {
		best = leastActive(p.loads, s)
	} else {
		best = leastPerWeight(p.loads, p.inv, s)
	}
	p.last.Store(uint64(best))
	return best
}

func leastActive(loads []*Load, s int) int {
	const none = int64(1) << 62
	m0, m1, m2, m3 := none, none, none, none
	i := 0
	for ; i+4 <= len(loads); i += 4 {
		m0 = min(m0, loads[i].active.Load())
		m1 = min(m1, loads[i+1].active.Load())
		m2 = min(m2, loads[i+2].active.Load())
		m3 = min(m3, loads[i+3].active.Load())
	}
	for ; i < len(loads); i++ {
		m0 = min(m0, loads[i].active.Load())
	}
	m := min(m0, m1, m2, m3)
	for i := s; i < len(loads); i++ {
		if loads[i].active.Load() <= m {
			return i
		}
	}
	for i := 0; i < s; i++ {
		if loads[i].active.Load() <= m {
			return i
		}
	}
	return s
}

// leastPerWeight compares active/weight as active × ⌊2^32/weight⌋ in integers (exact
// to 2^-32; the product cannot overflow below 2^31 connections in flight).
func leastPerWeight(loads []*Load, inv []int64, s int) int {
	inv = inv[:len(loads)]
	cost := func(i int) int64 { return loads[i].active.Load() * inv[i] }
	const none = math.MaxInt64
	m0, m1, m2, m3 := int64(none), int64(none), int64(none), int64(none)
	i := 0
	for ; i+4 <= len(loads); i += 4 {
		m0 = min(m0, cost(i))
		m1 = min(m1, cost(i+1))
		m2 = min(m2, cost(i+2))
		m3 = min(m3, cost(i+3))
	}
	for ; i < len(loads); i++ {
		m0 = min(m0, cost(i))
	}
	m := min(m0, m1, m2, m3)
	for i := s; i < len(loads); i++ {
		if cost(i) <= m {
			return i
		}
	}
	for i := 0; i < s; i++ {
		if cost(i) <= m {
			return i
		}
	}
	return s
}
