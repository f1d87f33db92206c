package balance

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func TestLoadLatency(t *testing.T) {
	type obs struct {
		at  time.Duration // after t0
		rtt time.Duration
	}
	tests := []struct {
		name string
		obs  []obs
		at   time.Duration
		want time.Duration
	}{
		{"none", nil, 0, 0},
		{"one sample", []obs{{0, 10 * time.Millisecond}}, 0, 10 * time.Millisecond},
		{"peak replaces at once", []obs{{0, 2 * time.Millisecond}, {time.Millisecond, 50 * time.Millisecond}}, time.Millisecond, 50 * time.Millisecond},
		// 10 ms then 1 ms one window later: 10·e⁻¹ + 1·(1-e⁻¹).
		{"lower sample blends", []obs{{0, 10 * time.Millisecond}, {DecayWindow, time.Millisecond}}, DecayWindow,
			time.Duration(float64(10*time.Millisecond)*math.Exp(-1) + float64(time.Millisecond)*(1-math.Exp(-1)))},
		{"lower sample at once barely moves", []obs{{0, 10 * time.Millisecond}, {0, time.Millisecond}}, 0, 10 * time.Millisecond},
		{"decays toward zero", []obs{{0, 8 * time.Millisecond}}, DecayWindow * 693147 / 1000000, 4 * time.Millisecond},
		{"old sample forgotten", []obs{{0, 8 * time.Millisecond}}, 30 * 24 * time.Hour, 0},
		{"clock stepped back", []obs{{time.Hour, 8 * time.Millisecond}}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l Load
			for _, o := range tt.obs {
				l.ObserveAt(o.rtt, t0.Add(o.at))
			}
			got := l.Latency(t0.Add(tt.at))
			if math.Abs(float64(got-tt.want)) > 0.01*float64(tt.want)+1000 {
				t.Errorf("Latency = %v, want %v ± 1%%", got, tt.want)
			}
		})
	}
}

func TestLoadCounts(t *testing.T) {
	var l Load
	l.Begin()
	l.Begin()
	l.End()
	if l.Active() != 1 {
		t.Fatalf("Active = %d, want 1", l.Active())
	}
	l.EndWithLatency(3 * time.Millisecond)
	if l.Active() != 0 || l.Latency(time.Now()) == 0 {
		t.Fatalf("after EndWithLatency: Active %d, latency %v", l.Active(), l.Latency(time.Now()))
	}
	l.Observe(time.Millisecond)
	if l.Latency(time.Now()) < 2*time.Millisecond {
		t.Errorf("a lower sample at once replaced the estimate: %v", l.Latency(time.Now()))
	}
}

// simulate runs picks through a peak-EWMA picker on a fake clock: one pick per
// step, each request taking its backend's latency, observed when it completes.
func simulate(t *testing.T, latencies []time.Duration, steps int, step time.Duration) []int {
	t.Helper()
	bs := backends(equalWeights(len(latencies))...)
	p := mustNew(t, PeakEWMA, bs, Options{RandSeed: 11})
	type inflight struct {
		i    int
		done time.Time
	}
	var pending []inflight
	got := make([]int, len(bs))
	now := t0
	for s := 0; s < steps; s++ {
		now = now.Add(step)
		kept := pending[:0]
		for _, r := range pending {
			if now.Before(r.done) {
				kept = append(kept, r)
				continue
			}
			bs[r.i].Load.End()
			bs[r.i].Load.ObserveAt(latencies[r.i], r.done)
		}
		pending = kept
		i := p.Pick(0)
		got[i]++
		bs[i].Load.Begin()
		pending = append(pending, inflight{i, now.Add(latencies[i])})
	}
	return got
}

func TestPeakEWMAAvoidsSlowBackend(t *testing.T) {
	tests := []struct {
		name      string
		latencies []time.Duration
		slow      int
		maxShare  float64
	}{
		{"one slow of four", []time.Duration{time.Millisecond, time.Millisecond, 50 * time.Millisecond, time.Millisecond}, 2, 0.02},
		{"one slow of two", []time.Duration{20 * time.Millisecond, 2 * time.Millisecond}, 0, 0.10},
		{"gradual", []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 40 * time.Millisecond}, 3, 0.05},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := simulate(t, tt.latencies, 5000, time.Millisecond)
			if share := float64(got[tt.slow]) / 5000; share > tt.maxShare {
				t.Errorf("slow backend %d got %.3f of picks, want ≤ %.2f (%v)", tt.slow, share, tt.maxShare, got)
			}
		})
	}
}

func TestPeakEWMAScores(t *testing.T) {
	// Two backends; which one wins every pick (candidates are distinct).
	tests := []struct {
		name  string
		setup func(a, b *Load)
		want  int
	}{
		{"lower latency wins", func(a, b *Load) { a.ObserveAt(5*time.Millisecond, t0); b.ObserveAt(time.Millisecond, t0) }, 1},
		{"in-flight multiplies", func(a, b *Load) {
			a.ObserveAt(time.Millisecond, t0)
			b.ObserveAt(2*time.Millisecond, t0)
			a.Begin()
			a.Begin() // 1 ms × 3 > 2 ms × 1
		}, 1},
		{"old slow sample has decayed", func(a, b *Load) {
			a.ObserveAt(100*time.Millisecond, t0)
			b.ObserveAt(time.Millisecond, t0.Add(time.Minute)) // a is now 100 ms·e⁻⁶ ≈ 0.25 ms
		}, 0},
		{"unmeasured idle is tried", func(a, b *Load) { a.ObserveAt(time.Microsecond, t0) }, 1},
		{"unmeasured busy is avoided", func(a, b *Load) { a.ObserveAt(time.Second, t0); b.Begin() }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(1, 1)
			tt.setup(bs[0].Load, bs[1].Load)
			p := mustNew(t, PeakEWMA, bs, Options{RandSeed: 5})
			for k := 0; k < 20; k++ {
				if got := p.Pick(0); got != tt.want {
					t.Fatalf("Pick = %d, want %d", got, tt.want)
				}
			}
		})
	}
}
