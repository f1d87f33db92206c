package balance

import (
	"container/heap"
	"math/bits"
	"sync/atomic"
)

// roundRobin cycles through the backends exactly (IPVS rr), from a random start.
type roundRobin struct {
	next atomic.Uint64
	n    uint64
}

func newRoundRobin(n int, start uint64) *roundRobin {
	p := &roundRobin{n: uint64(n)}
	p.next.Store(start % p.n)
	return p
}

func (p *roundRobin) Pick(uint64) int { return int((p.next.Add(1) - 1) % p.n) }

// maxSchedule bounds a weighted round-robin cycle. Weights whose sum, after dividing
// by their greatest common divisor, exceeds it are scaled down to fit (each stays at
// least 1), which moves shares by at most about n/maxSchedule.
const maxSchedule = 1 << 16

// weightedRoundRobin walks a precomputed cycle in which backend i appears exactly
// weight[i] times (after the GCD reduction), in the order of nginx's smooth weighted
// round robin: a heavy backend's turns are interleaved with the others rather than
// bunched (5:1:1 gives a a b a c a a). When the cycle is long and the backends many
// (cycle × backends > maxSmoothWork) the order comes from WF²Q+ instead, O(log n) a
// turn rather than O(n), and as smooth (see fairSchedule).
type weightedRoundRobin struct {
	next     atomic.Uint64
	schedule []int32
}

func newWeightedRoundRobin(backends []Backend, start uint64) *weightedRoundRobin {
	w := reducedWeights(backends)
	var total uint64
	for _, x := range w {
		total += x
	}
	var schedule []int32
	if total*uint64(len(w)) <= maxSmoothWork {
		schedule = smoothSchedule(w, total)
	} else {
		schedule = fairSchedule(w, total)
	}
	p := &weightedRoundRobin{schedule: schedule}
	p.next.Store(start % uint64(len(p.schedule)))
	return p
}

func (p *weightedRoundRobin) Pick(uint64) int {
	return int(p.schedule[(p.next.Add(1)-1)%uint64(len(p.schedule))])
}

// maxSmoothWork bounds the work of building a smooth schedule (a few ms).
const maxSmoothWork = 1 << 22

// smoothSchedule runs nginx's smooth weighted round robin for one cycle: every turn
// each backend's current value grows by its weight, the largest (first on ties) is
// chosen and loses the total.
func smoothSchedule(w []uint64, total uint64) []int32 {
	current := make([]int64, len(w))
	out := make([]int32, total)
	for t := range out {
		best := 0
		for i := range w {
			current[i] += int64(w[i])
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= int64(total)
		out[t] = int32(best)
	}
	return out
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

// fairSchedule lays out one cycle by WF²Q+ (worst-case fair weighted fair queueing):
// at turn t, a backend is eligible when its served turns c satisfy c/w ≤ t/total
// (it is not ahead of its share), and the eligible backend whose next turn finishes
// first, (c+1)/w, is chosen (ties to the lower index). Every backend then stays
// within one turn of its exact share at every point of the cycle, so a cycle holds
// exactly w[i] turns of backend i and runs are as short as the weights allow. Two
// heaps make it O(log n) a turn. An eligible backend always exists: if every c/w
// exceeded t/total, the turns served would add up to more than t.
func fairSchedule(w []uint64, total uint64) []int32 {
	served := make([]uint64, len(w))
	// waiting is ordered by start time c/w, eligible by finish time (c+1)/w.
	waiting := &turnHeap{w: w, served: served, finish: false}
	eligible := &turnHeap{w: w, served: served, finish: true}
	for i := range w {
		waiting.idx = append(waiting.idx, int32(i))
	}
	heap.Init(waiting)
	out := make([]int32, total)
	for t := range out {
		// Move every backend with served/w ≤ t/total to eligible.
		for waiting.Len() > 0 {
			i := waiting.idx[0]
			if !lessEq(served[i], total, uint64(t), w[i]) {
				break
			}
			heap.Pop(waiting)
			heap.Push(eligible, i)
		}
		i := heap.Pop(eligible).(int32)
		out[t] = i
		served[i]++
		heap.Push(waiting, i)
	}
	return out
}

// lessEq reports a·b ≤ c·d in 128 bits.
func lessEq(a, b, c, d uint64) bool {
	hi1, lo1 := bits.Mul64(a, b)
	hi2, lo2 := bits.Mul64(c, d)
	return hi1 < hi2 || hi1 == hi2 && lo1 <= lo2
}

// turnHeap orders backends by start time served/w, or by finish time (served+1)/w.
type turnHeap struct {
	idx    []int32
	w      []uint64
	served []uint64
	finish bool
}

func (h *turnHeap) Len() int { return len(h.idx) }
func (h *turnHeap) Less(a, b int) bool {
	i, j := h.idx[a], h.idx[b]
	ci, cj := h.served[i], h.served[j]
	if h.finish {
		ci, cj = ci+1, cj+1
	}
	// ci/wi < cj/wj, ties to the lower index.
	if lessEq(ci, h.w[j], cj, h.w[i]) {
		return !lessEq(cj, h.w[i], ci, h.w[j]) || i < j
	}
	return false
}
func (h *turnHeap) Swap(a, b int) { h.idx[a], h.idx[b] = h.idx[b], h.idx[a] }
func (h *turnHeap) Push(x any)    { h.idx = append(h.idx, x.(int32)) }
func (h *turnHeap) Pop() any {
	x := h.idx[len(h.idx)-1]
	h.idx = h.idx[:len(h.idx)-1]
	return x
}
