package balance

import (
	"container/heap"
	"sync/atomic"
)

// roundRobin cycles through the backends exactly (IPVS rr).
type roundRobin struct {
	next atomic.Uint64
	n    uint64
}

func newRoundRobin(n int) *roundRobin { return &roundRobin{n: uint64(n)} }

func (p *roundRobin) Pick(uint64) int { return int((p.next.Add(1) - 1) % p.n) }

// maxSchedule bounds a weighted round-robin cycle. Weights whose sum, after dividing
// by their greatest common divisor, exceeds it are scaled down to fit (each stays at
// least 1), which moves shares by at most about n/maxSchedule.
const maxSchedule = 1 << 16

// weightedRoundRobin walks a precomputed cycle in which backend i appears exactly
// weight[i] times (after the GCD reduction), spread out as an earliest-deadline-first
// scheduler spreads them (Envoy's EDF; like nginx's smooth weighted round robin, a
// heavy backend's turns are interleaved with the others rather than bunched).
type weightedRoundRobin struct {
	next     atomic.Uint64
	schedule []int32
}

func newWeightedRoundRobin(backends []Backend) *weightedRoundRobin {
	return &weightedRoundRobin{schedule: edfSchedule(reducedWeights(backends))}
}

func (p *weightedRoundRobin) Pick(uint64) int {
	return int(p.schedule[(p.next.Add(1)-1)%uint64(len(p.schedule))])
}

// reducedWeights divides the weights by their GCD and scales them to fit maxSchedule.
func reducedWeights(backends []Backend) []uint64 {
	w := make([]uint64, len(backends))
	var g, total uint64
	for i, b := range backends {
		w[i] = uint64(weightOf(b))
		g = gcd(g, w[i])
	}
	for i := range w {
		w[i] /= g
		total += w[i]
	}
	if total <= maxSchedule {
		return w
	}
	for i := range w {
		w[i] = max(1, (w[i]*maxSchedule+total/2)/total)
	}
	return w
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// edfSchedule lays out one cycle: backend i's k-th turn (k = 1..w[i]) has deadline
// (2k-1)/(2·w[i]), and turns are taken in deadline order, ties to the lower index.
// Exactly sum(w) deadlines fall below 1, so each backend gets exactly w[i] turns.
func edfSchedule(w []uint64) []int32 {
	var total uint64
	for _, x := range w {
		total += x
	}
	h := make(deadlines, len(w))
	for i := range w {
		h[i] = deadline{num: 1, den: 2 * w[i], idx: int32(i)}
	}
	heap.Init(&h)
	out := make([]int32, 0, total)
	for uint64(len(out)) < total {
		d := &h[0]
		out = append(out, d.idx)
		d.num += 2
		heap.Fix(&h, 0)
	}
	return out
}

type deadline struct {
	num, den uint64
	idx      int32
}

type deadlines []deadline

func (h deadlines) Len() int { return len(h) }
func (h deadlines) Less(i, j int) bool {
	a, b := h[i].num*h[j].den, h[j].num*h[i].den
	if a != b {
		return a < b
	}
	return h[i].idx < h[j].idx
}
func (h deadlines) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *deadlines) Push(x any)   { *h = append(*h, x.(deadline)) }
func (h *deadlines) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
