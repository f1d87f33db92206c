package balance

import "sync/atomic"

// Split divides requests among weighted choices (a route's backends) in proportion to
// their weights. It follows a Weyl sequence (k × the golden ratio, mod 1, scaled to the
// total weight) rather than a random draw: as evenly spread, and any run of requests
// splits within one or two of the weights (70/30 over 500 requests gives 350/150), as
// nginx's smooth weighted round robin does. The zero Split is ready; it is safe for
// concurrent use.
type Split struct{ seq atomic.Uint64 }

// Pick returns the index of the next request's choice among n, each weighing
// weight(i) (a weight of 0 or less is never chosen), or -1 when none weighs anything.
func (s *Split) Pick(n int, weight func(i int) int64) int {
	var total int64
	for i := range n {
		total += max(weight(i), 0)
	}
	if total <= 0 {
		return -1
	}
	x := s.seq.Add(0x9e3779b97f4a7c15)
	r := int64(float64(x>>11) / (1 << 53) * float64(total))
	for i := range n {
		if r -= max(weight(i), 0); r < 0 {
			return i
		}
	}
	return -1
}
