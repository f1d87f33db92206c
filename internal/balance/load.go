package balance

import (
	"math"
	"sync/atomic"
	"time"
)

// DecayWindow is the time constant of the peak-EWMA latency estimate (Finagle's and
// Linkerd's default is 10 s): an observation weighs exp(-age/DecayWindow).
const DecayWindow = 10 * time.Second

// Load is a backend's live load, shared by every Picker built over the backend: the
// number of connections or requests in flight and, for peak-EWMA, a decaying estimate
// of its latency. The zero value is ready to use. Every method is lock-free and does
// not allocate.
//
// How callers use it:
//   - The userspace proxy (L4) calls Begin when it starts dialling the chosen backend,
//     and End when the proxied connection closes. It observes the connect time: after
//     a successful dial, Observe(time since dial start); after a failed dial, End
//     right away (the passive health check deals with failures).
//   - The gateway (L7) calls Begin before it sends a request upstream and
//     EndWithLatency(time to the response headers) when the response completes (or
//     End when it fails or is cancelled before headers; an upstream error response is
//     still a latency sample).
//
// Begin and End must pair; otherwise least-connections drifts.
type Load struct {
	active atomic.Int64
	// peak packs the latency estimate as a float32 count of nanoseconds (high 32 bits)
	// and the time of its last update (low 32 bits, wall clock in units of 2^20 ns,
	// about 1.05 ms, wrapping every 52 days). Zero means never observed.
	peak atomic.Uint64
}

// Active is the number of connections or requests in flight.
func (l *Load) Active() int64 { return l.active.Load() }

// Begin records a connection or request starting.
func (l *Load) Begin() { l.active.Add(1) }

// End records it finishing.
func (l *Load) End() { l.active.Add(-1) }

// EndWithLatency records a request finishing after rtt: End plus Observe.
func (l *Load) EndWithLatency(rtt time.Duration) {
	l.active.Add(-1)
	l.ObserveAt(rtt, time.Now())
}

// Observe feeds one latency sample, taken now, to the peak-EWMA estimate.
func (l *Load) Observe(rtt time.Duration) { l.ObserveAt(rtt, time.Now()) }

// ObserveAt feeds one latency sample taken at now, as Finagle's PeakEwma does: a
// sample above the stored estimate replaces it at once (the "peak"); a lower one is
// blended in, estimate = estimate×w + sample×(1-w) with w = exp(-Δt/DecayWindow), Δt
// being the time since the previous sample.
func (l *Load) ObserveAt(rtt time.Duration, now time.Time) {
	st := stampOf(now)
	sample := float64(rtt)
	if sample < 1 {
		sample = 1 // keep the packed value non-zero
	}
	for {
		old := l.peak.Load()
		est := sample
		if old != 0 {
			if prev := float64(math.Float32frombits(uint32(old >> 32))); sample < prev {
				w := math.Exp(-elapsedNanos(old, st) / float64(DecayWindow))
				est = prev*w + sample*(1-w)
			}
		}
		if l.peak.CompareAndSwap(old, pack(est, st)) {
			return
		}
	}
}

// Latency is the current peak-EWMA estimate at now, decayed toward zero since the
// last sample; zero when nothing was observed. For status pages and tests.
func (l *Load) Latency(now time.Time) time.Duration {
	p := l.peak.Load()
	if p == 0 {
		return 0
	}
	return time.Duration(decay(p, stampOf(now)))
}

// penalty is the cost per request of a backend that has requests in flight but no
// latency sample yet (Finagle's Penalty): it is tried only when nothing better is on
// offer. Small enough that penalty × active / weight stays finite.
const penalty = 1e200

// lessPeakCost reports whether backend a (load la, 1/weight ia) is cheaper than b under
// peak-EWMA at any common present time: latency × (active+1) / weight, with both
// estimates decayed to the later of their two sample times. A backend with no sample
// costs 0 while idle and penalty while busy.
func lessPeakCost(la *Load, ia float64, lb *Load, ib float64) bool {
	pa, pb := la.peak.Load(), lb.peak.Load()
	aa, ab := float64(max(0, la.active.Load())), float64(max(0, lb.active.Load()))
	if pa == 0 || pb == 0 {
		return unobservedCost(pa, aa)*ia < unobservedCost(pb, ab)*ib
	}
	ca := float64(math.Float32frombits(uint32(pa>>32))) * (aa + 1) * ia
	cb := float64(math.Float32frombits(uint32(pb>>32))) * (ab + 1) * ib
	switch d := int32(uint32(pb) - uint32(pa)); {
	case d > 0: // b is newer: decay a to b's time
		ca *= math.Exp(-float64(int64(d)<<20) / float64(DecayWindow))
	case d < 0:
		cb *= math.Exp(-float64((-int64(d))<<20) / float64(DecayWindow))
	}
	return ca < cb
}

// unobservedCost orders a backend without a sample against one with: 0 when idle (try
// it), penalty when busy; a sampled backend counts as 1 (any real cost is between).
func unobservedCost(p uint64, active float64) float64 {
	switch {
	case p != 0:
		return 1
	case active == 0:
		return 0
	}
	return penalty * (active + 1)
}

func stampOf(t time.Time) uint32 { return uint32(uint64(t.UnixNano()) >> 20) }

func pack(est float64, stamp uint32) uint64 {
	return uint64(math.Float32bits(float32(est)))<<32 | uint64(stamp)
}

// elapsedNanos is the time from the packed sample to stamp now. A negative span (the
// wall clock stepped back, or the sample is over 24 days old) counts as infinitely
// old, which resets the estimate: harmless for a load-balancing hint.
func elapsedNanos(p uint64, now uint32) float64 {
	d := int32(now - uint32(p))
	if d < 0 {
		return math.Inf(1)
	}
	return float64(int64(d) << 20)
}

// decay is the packed estimate decayed toward zero until now (Finagle reads its cost
// through observe(0), which is the same).
func decay(p uint64, now uint32) float64 {
	est := float64(math.Float32frombits(uint32(p >> 32)))
	d := int32(now - uint32(p))
	switch {
	case d == 0:
		return est
	case d < 0:
		return 0
	}
	return est * math.Exp(-float64(int64(d)<<20)/float64(DecayWindow))
}
