package balance

import "slices"

// ring is a consistent-hash ring (Ketama, as nginx's "hash … consistent" and Envoy's
// RING_HASH): each backend owns virtual nodes in proportion to its weight, and a key
// goes to the first virtual node at or after its hash. When a backend goes away only
// its own keys move. SourceHash and DestinationHash both use it; they differ only in
// the key the caller hashes (client address or destination).
//
// Lookup is O(1) expected: an index of 2^k buckets over the hash space (about one
// virtual node per bucket) gives where to start a short forward scan, instead of a
// binary search whose cache misses and mispredicted branches cost ~15 steps.
type ring struct {
	points []uint64
	owners []int32
	start  []int32 // start[b]: first point whose top bits are ≥ b
	shift  uint
	seed   uint64
}

// Ring sizes: vnodesPerBackend at equal weights, bounded by minRing and maxRing.
const (
	vnodesPerBackend = 160
	minRing          = 1024
	maxRing          = 1 << 17
)

func newRing(backends []Backend, opts Options) *ring {
	var total float64
	for _, b := range backends {
		total += float64(weightOf(b))
	}
	size := min(max(minRing, vnodesPerBackend*len(backends)), maxRing)
	type vnode struct {
		point uint64
		owner int32
	}
	vnodes := make([]vnode, 0, size+len(backends))
	for i, b := range backends {
		v := max(1, int(float64(size)*float64(weightOf(b))/total+0.5))
		base := seeded(b.ID, opts.Seed)
		for r := 0; r < v; r++ {
			vnodes = append(vnodes, vnode{point: mix64(base + uint64(r)*golden), owner: int32(i)})
		}
	}
	// Ties (two backends hashing to one point) are settled by backend ID, not by the
	// order of the slice, so that every instance agrees.
	slices.SortFunc(vnodes, func(a, b vnode) int {
		switch {
		case a.point < b.point:
			return -1
		case a.point > b.point:
			return 1
		}
		ia, ib := backends[a.owner].ID, backends[b.owner].ID
		switch {
		case ia < ib:
			return -1
		case ia > ib:
			return 1
		}
		return 0
	})
	p := &ring{points: make([]uint64, len(vnodes)), owners: make([]int32, len(vnodes)), seed: opts.Seed}
	for i, v := range vnodes {
		p.points[i], p.owners[i] = v.point, v.owner
	}
	bits := uint(1)
	for 1<<bits < len(vnodes) {
		bits++
	}
	p.shift = 64 - bits
	p.start = make([]int32, 1<<bits)
	i := 0
	for b := range p.start {
		for i < len(p.points) && p.points[i]>>p.shift < uint64(b) {
			i++
		}
		p.start[b] = int32(i)
	}
	return p
}

func (p *ring) Pick(key uint64) int {
	h := seeded(key, p.seed)
	i := int(p.start[h>>p.shift])
	for i < len(p.points) && p.points[i] < h {
		i++
	}
	if i == len(p.points) {
		i = 0
	}
	return int(p.owners[i])
}
