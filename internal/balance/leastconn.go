package balance

import "sync/atomic"

// leastConn picks the backend with the fewest active connections (IPVS lc), or with
// weights the fewest active connections per unit of weight (IPVS wlc, compared by
// cross-multiplication as IPVS does). The scan starts just after the previous pick
// and keeps the first best, so tied backends (for instance all idle) take turns in
// round-robin order, as in nginx's least_conn, rather than all going to the first.
type leastConn struct {
	last    atomic.Uint64 // index of the previous pick
	loads   []*Load
	weights []uint64 // nil: unweighted
}

func newLeastConn(backends []Backend, weighted bool) *leastConn {
	p := &leastConn{loads: make([]*Load, len(backends))}
	for i, b := range backends {
		p.loads[i] = b.Load
	}
	if weighted {
		w := make([]uint32, len(backends))
		for i, b := range backends {
			w[i] = weightOf(b)
		}
		if !uniformWeights(w) {
			p.weights = make([]uint64, len(w))
			for i := range w {
				p.weights[i] = uint64(w[i])
			}
		}
	}
	return p
}

func (p *leastConn) Pick(uint64) int {
	n := len(p.loads)
	s := int(p.last.Load()+1) % n
	best := p.scan(s, n)
	p.last.Store(uint64(best))
	return best
}

func (p *leastConn) scan(s, n int) int {
	if p.weights == nil {
		best, bestActive := s, p.loads[s].Active()
		for i := s + 1; i < n && bestActive > 0; i++ {
			if a := p.loads[i].Active(); a < bestActive {
				best, bestActive = i, a
			}
		}
		for i := 0; i < s && bestActive > 0; i++ {
			if a := p.loads[i].Active(); a < bestActive {
				best, bestActive = i, a
			}
		}
		return best
	}
	best := s
	bestActive, bestWeight := uint64(max(0, p.loads[s].Active())), p.weights[s]
	for i := s + 1; i < n && bestActive > 0; i++ {
		if a := uint64(max(0, p.loads[i].Active())); a*bestWeight < bestActive*p.weights[i] {
			best, bestActive, bestWeight = i, a, p.weights[i]
		}
	}
	for i := 0; i < s && bestActive > 0; i++ {
		if a := uint64(max(0, p.loads[i].Active())); a*bestWeight < bestActive*p.weights[i] {
			best, bestActive, bestWeight = i, a, p.weights[i]
		}
	}
	return best
}
