package balance

import (
	"math"
	"net/netip"
	"strings"
	"testing"
)

// backends builds one backend per weight, with IDs from 10.0.x.y:80 and fresh loads.
func backends(weights ...uint32) []Backend {
	bs := make([]Backend, len(weights))
	for i, w := range weights {
		bs[i] = Backend{ID: KeyOf(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 80)), Weight: w, Load: new(Load)}
	}
	return bs
}

func equalWeights(n int) []uint32 {
	w := make([]uint32, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

func mustNew(t testing.TB, alg Algorithm, bs []Backend, opts Options) Picker {
	t.Helper()
	p, err := New(alg, bs, opts)
	if err != nil {
		t.Fatalf("New(%s): %v", alg, err)
	}
	return p
}

// counts picks n times with keys 1..n and counts the choices.
func counts(t testing.TB, p Picker, nBackends, n int) []int {
	t.Helper()
	c := make([]int, nBackends)
	for k := 1; k <= n; k++ {
		i := p.Pick(uint64(k))
		if i < 0 || i >= nBackends {
			t.Fatalf("Pick = %d, want 0..%d", i, nBackends-1)
		}
		c[i]++
	}
	return c
}

// chiSquareOK tests observed counts against weights at significance 0.001. The
// critical value is the Wilson–Hilferty approximation of the chi-square quantile.
// The draws are seeded, so a pass is a pass for ever; the bound is only there to
// catch a biased scheduler.
func chiSquareOK(t *testing.T, observed []int, weights []uint32) {
	t.Helper()
	var total, wsum float64
	for i := range observed {
		total += float64(observed[i])
		wsum += float64(weights[i])
	}
	var chi float64
	for i, o := range observed {
		e := total * float64(weights[i]) / wsum
		chi += (float64(o) - e) * (float64(o) - e) / e
	}
	df := float64(len(observed) - 1)
	const z = 3.09 // p = 0.001
	crit := df * math.Pow(1-2/(9*df)+z*math.Sqrt(2/(9*df)), 3)
	if chi > crit {
		t.Errorf("chi-square %.1f > %.1f (df %v): counts %v for weights %v", chi, crit, df, observed, weights)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name    string
		alg     Algorithm
		bs      []Backend
		opts    Options
		wantErr string
	}{
		{"unknown algorithm", "Fastest", backends(1), Options{}, `unknown algorithm "Fastest"`},
		{"lowercase name", "roundrobin", backends(1), Options{}, `"roundrobin"`},
		{"maglev size not prime", Maglev, backends(1, 1), Options{MaglevTableSize: 16380}, "table size 16380 is not a prime"},
		{"maglev size one", Maglev, backends(1), Options{MaglevTableSize: 1}, "table size 1 "},
		{"maglev size too large", Maglev, backends(1), Options{MaglevTableSize: 1<<24 + 43}, "16777259"},
		{"maglev smaller than backends", Maglev, backends(equalWeights(300)...), Options{MaglevTableSize: 251}, "smaller than the 300 backends"},
		{"maglev bad size and no backends", Maglev, nil, Options{MaglevTableSize: 100}, "table size 100"},
		{"least conn nil load", LeastConnections, []Backend{{ID: 1, Load: new(Load)}, {ID: 2}}, Options{}, "backend 1 (id 0x2) has a nil Load"},
		{"p2c nil load", PowerOfTwoChoices, []Backend{{ID: 7}}, Options{}, "PowerOfTwoChoices reads each backend's load"},
		{"ewma nil load", PeakEWMA, []Backend{{ID: 7}}, Options{}, "nil Load"},
		{"wlc nil load", WeightedLeastConnections, []Backend{{ID: 7}}, Options{}, "nil Load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.alg, tt.bs, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewAccepts(t *testing.T) {
	for _, alg := range append(Algorithms(), "") {
		for _, n := range []int{0, 1, 2, 5} {
			p := mustNew(t, alg, backends(equalWeights(n)...), Options{})
			for k := uint64(0); k < 50; k++ {
				got := p.Pick(k)
				if n == 0 && got != -1 || n > 0 && (got < 0 || got >= n) {
					t.Fatalf("%q over %d backends: Pick(%d) = %d", alg, n, k, got)
				}
			}
		}
	}
	// Schedulers that read no load accept nil loads.
	for _, alg := range Algorithms() {
		if alg.NeedsLoad() {
			continue
		}
		if _, err := New(alg, []Backend{{ID: 1}, {ID: 2}}, Options{}); err != nil {
			t.Errorf("%s with nil loads: %v", alg, err)
		}
	}
}

func TestParseAlgorithm(t *testing.T) {
	tests := []struct {
		in      string
		want    Algorithm
		wantErr bool
	}{
		{"", RoundRobin, false},
		{"Maglev", Maglev, false},
		{"PeakEWMA", PeakEWMA, false},
		{"maglev", "", true},
		{"LeastRequest", "", true},
	}
	for _, tt := range tests {
		got, err := ParseAlgorithm(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseAlgorithm(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), tt.in) {
			t.Errorf("ParseAlgorithm(%q) error %q does not name the value", tt.in, err)
		}
	}
}

func TestFind(t *testing.T) {
	bs := backends(1, 1, 1)
	for i, b := range bs {
		if got := Find(bs, b.ID); got != i {
			t.Errorf("Find(%#x) = %d, want %d", b.ID, got, i)
		}
	}
	if got := Find(bs, 12345); got != -1 {
		t.Errorf("Find(missing) = %d, want -1", got)
	}
}

func TestRoundRobinExact(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 100} {
		p := mustNew(t, RoundRobin, backends(equalWeights(n)...), Options{})
		first := p.Pick(0)
		for k := 1; k < 3*n; k++ {
			if got, want := p.Pick(uint64(k*7919)), (first+k)%n; got != want {
				t.Fatalf("n=%d: pick %d = %d, want %d", n, k, got, want)
			}
		}
	}
}

// TestRoundRobinHonoursWeights: the default scheduler must not ignore a canary weight.
func TestRoundRobinHonoursWeights(t *testing.T) {
	got := counts(t, mustNew(t, RoundRobin, backends(99, 99, 1), Options{}), 3, 19900)
	if got[2] != 100 || got[0] != 9900 || got[1] != 9900 {
		t.Fatalf("RoundRobin over weights 99:99:1 gave %v, want [9900 9900 100]", got)
	}
}

func TestWeightedRoundRobinShares(t *testing.T) {
	hundred := make([]uint32, 100)
	for i := range hundred {
		hundred[i] = uint32(1 + i%4)
	}
	tests := []struct {
		name    string
		weights []uint32
	}{
		{"equal", []uint32{1, 1, 1}},
		{"zero is one", []uint32{0, 1, 2}},
		{"nginx 5 1 1", []uint32{5, 1, 1}},
		{"canary 99 1", []uint32{99, 1}},
		{"mixed", []uint32{3, 7, 11, 200}},
		{"common divisor", []uint32{1000, 3000, 6000}},
		{"huge weights are scaled", []uint32{1 << 31, 1 << 20, 3}},
		{"coprime large", []uint32{65521, 65519, 2}},
		{"100 backends", hundred},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(tt.weights...)
			got := counts(t, mustNew(t, WeightedRoundRobin, bs, Options{}), len(bs), 10000)
			var sum float64
			for _, b := range bs {
				sum += float64(weightOf(b))
			}
			for i, b := range bs {
				want := float64(weightOf(b)) / sum
				share := float64(got[i]) / 10000
				if math.Abs(share-want) > 0.01 {
					t.Errorf("backend %d (weight %d): share %.4f, want %.4f ± 0.01", i, b.Weight, share, want)
				}
			}
		})
	}
}

func TestWeightedRoundRobinCycle(t *testing.T) {
	// One cycle holds each backend exactly weight/gcd times in nginx's smooth order
	// (a a b a c a a for 5:1:1, from wherever the cycle starts).
	p := mustNew(t, WeightedRoundRobin, backends(10, 2, 2), Options{})
	var seq []int
	for k := 0; k < 7; k++ {
		seq = append(seq, p.Pick(0))
	}
	nginx := []int{0, 0, 1, 0, 2, 0, 0}
	rotation := -1
	for r := 0; r < 7 && rotation < 0; r++ {
		rotation = r
		for k := range seq {
			if seq[k] != nginx[(k+r)%7] {
				rotation = -1
				break
			}
		}
	}
	if rotation < 0 {
		t.Errorf("cycle %v is not a rotation of nginx's %v", seq, nginx)
	}
	// The next cycle repeats the first.
	for k := 0; k < 7; k++ {
		if got := p.Pick(0); got != seq[k] {
			t.Fatalf("second cycle differs at %d: %d, want %d", k, got, seq[k])
		}
	}
}

func TestLeastConnections(t *testing.T) {
	tests := []struct {
		name    string
		alg     Algorithm
		weights []uint32
		active  []int64
		want    int
	}{
		{"idle one wins", LeastConnections, []uint32{1, 1, 1}, []int64{3, 0, 5}, 1},
		{"fewest wins", LeastConnections, []uint32{1, 1, 1, 1}, []int64{4, 2, 3, 9}, 1},
		{"weights ignored by lc", LeastConnections, []uint32{100, 1}, []int64{2, 1}, 1},
		{"wlc per weight", WeightedLeastConnections, []uint32{4, 1}, []int64{4, 2}, 0},
		{"wlc idle heavy", WeightedLeastConnections, []uint32{1, 1, 5}, []int64{1, 1, 4}, 2},
		{"wlc equal weights", WeightedLeastConnections, []uint32{2, 2, 2}, []int64{5, 4, 6}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(tt.weights...)
			for i, a := range tt.active {
				for j := int64(0); j < a; j++ {
					bs[i].Load.Begin()
				}
			}
			p := mustNew(t, tt.alg, bs, Options{})
			for k := 0; k < 2*len(bs); k++ { // from every rotation offset
				if got := p.Pick(0); got != tt.want {
					t.Fatalf("Pick = %d, want %d", got, tt.want)
				}
			}
		})
	}
}

func TestLeastConnectionsTiesShared(t *testing.T) {
	for _, alg := range []Algorithm{LeastConnections, WeightedLeastConnections} {
		t.Run(string(alg), func(t *testing.T) {
			bs := backends(1, 1, 1, 1, 1)
			bs[2].Load.Begin() // 2 is busy; the other four tie at 0
			got := counts(t, mustNew(t, alg, bs, Options{}), len(bs), 500)
			if got[2] != 0 {
				t.Errorf("busy backend got %d picks", got[2])
			}
			for i, c := range got {
				if i != 2 && (c < 100 || c > 150) {
					t.Errorf("tied backend %d got %d of 500 picks, want a fair share (%v)", i, c, got)
				}
			}
		})
	}
}

func TestLeastConnectionsBalancesLongConnections(t *testing.T) {
	// Connections that never end: least-connections spreads them evenly, weighted
	// least-connections in proportion to weight.
	tests := []struct {
		alg     Algorithm
		weights []uint32
		want    []int64
	}{
		{LeastConnections, []uint32{1, 5, 1}, []int64{30, 30, 30}},
		{WeightedLeastConnections, []uint32{1, 2, 3}, []int64{15, 30, 45}},
	}
	for _, tt := range tests {
		bs := backends(tt.weights...)
		p := mustNew(t, tt.alg, bs, Options{})
		for k := 0; k < 90; k++ {
			bs[p.Pick(0)].Load.Begin()
		}
		for i, b := range bs {
			if d := b.Load.Active() - tt.want[i]; d < -1 || d > 1 {
				t.Errorf("%s: backend %d has %d connections, want %d ± 1", tt.alg, i, b.Load.Active(), tt.want[i])
			}
		}
	}
}

func TestRandomDistribution(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
	}{
		{"uniform 2", []uint32{1, 1}},
		{"uniform 10", equalWeights(10)},
		{"weighted", []uint32{1, 2, 3, 4}},
		{"skewed", []uint32{99, 1}},
		{"uniform 100", equalWeights(100)},
	}
	for _, alg := range []Algorithm{Random, PowerOfTwoChoices, PeakEWMA} {
		for _, tt := range tests {
			t.Run(string(alg)+"/"+tt.name, func(t *testing.T) {
				// Idle loads: p2c and peak-EWMA tie and keep their first, random, choice.
				bs := backends(tt.weights...)
				got := counts(t, mustNew(t, alg, bs, Options{RandSeed: 42}), len(bs), 100000)
				chiSquareOK(t, got, tt.weights)
			})
		}
	}
}

func TestRandomSeedReplays(t *testing.T) {
	bs := backends(1, 2, 3, 4, 5)
	a := mustNew(t, Random, bs, Options{RandSeed: 7})
	b := mustNew(t, Random, bs, Options{RandSeed: 7})
	c := mustNew(t, Random, bs, Options{RandSeed: 8})
	same := 0
	for k := 0; k < 1000; k++ {
		x, y, z := a.Pick(0), b.Pick(0), c.Pick(0)
		if x != y {
			t.Fatalf("pick %d: seed 7 gave %d and %d", k, x, y)
		}
		if x == z {
			same++
		}
	}
	if same > 500 {
		t.Errorf("seeds 7 and 8 agree on %d of 1000 picks", same)
	}
}

func TestPowerOfTwoChoicesAvoidsBusy(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
		active  []int64
		// maxShare bounds the busy backend 0's share of picks.
		maxShare float64
	}{
		// Unweighted candidates are distinct, so the busiest never wins.
		{"unweighted", []uint32{1, 1, 1, 1}, []int64{10, 0, 1, 0}, 0},
		// Weighted: backend 0 wins only when drawn twice (1/16 of picks) or against
		// an even busier one per weight.
		{"weighted", []uint32{2, 1, 1}, []int64{20, 1, 1}, 0.30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := backends(tt.weights...)
			for i, a := range tt.active {
				for j := int64(0); j < a; j++ {
					bs[i].Load.Begin()
				}
			}
			got := counts(t, mustNew(t, PowerOfTwoChoices, bs, Options{RandSeed: 3}), len(bs), 10000)
			if share := float64(got[0]) / 10000; share > tt.maxShare {
				t.Errorf("busy backend got %.3f of picks, want ≤ %.2f (%v)", share, tt.maxShare, got)
			}
		})
	}
}

func TestPowerOfTwoChoicesKeepsInFlightByWeight(t *testing.T) {
	// Requests that never finish: in-flight counts end up proportional to weight.
	bs := backends(1, 2, 4)
	p := mustNew(t, PowerOfTwoChoices, bs, Options{RandSeed: 9})
	for k := 0; k < 700; k++ {
		bs[p.Pick(0)].Load.Begin()
	}
	for i, want := range []float64{100, 200, 400} {
		if got := float64(bs[i].Load.Active()); math.Abs(got-want) > 0.1*want {
			t.Errorf("backend %d: %v in flight, want %v ± 10%%", i, got, want)
		}
	}
}

func TestCyclesStartAtRandom(t *testing.T) {
	// Pickers rebuilt at the same moment on many nodes must not all start at backend 0.
	for _, alg := range []Algorithm{RoundRobin, WeightedRoundRobin, LeastConnections, WeightedLeastConnections} {
		firsts := make([]int, 10)
		for r := 0; r < 200; r++ {
			firsts[mustNew(t, alg, backends(equalWeights(10)...), Options{}).Pick(0)]++
		}
		for i, c := range firsts {
			if c == 0 || c > 60 { // expected 20 each
				t.Errorf("%s: first pick was backend %d %d times of 200 (%v)", alg, i, c, firsts)
			}
		}
		// With RandSeed the start is reproducible.
		a := mustNew(t, alg, backends(equalWeights(10)...), Options{RandSeed: 4}).Pick(0)
		b := mustNew(t, alg, backends(equalWeights(10)...), Options{RandSeed: 4}).Pick(0)
		if a != b {
			t.Errorf("%s: RandSeed 4 started at %d and %d", alg, a, b)
		}
	}
}

func TestWeightedRoundRobinFairSchedule(t *testing.T) {
	// Long cycles over many backends use WF²Q+: still exact per cycle, and the
	// heavy backend's turns are spread: with share p, at most ⌈p/(1-p)⌉+1 in a row.
	w := make([]uint64, 300)
	for i := range w {
		w[i] = uint64(1 + i%97)
	}
	w[0] = 20000
	var total uint64
	for _, x := range w {
		total += x
	}
	if total*uint64(len(w)) <= maxSmoothWork {
		t.Fatalf("test weights do not reach the WF²Q+ path")
	}
	s := fairSchedule(w, total)
	got := make([]uint64, len(w))
	run, longest := 0, 0
	for k, i := range s {
		if k%97 == 0 { // WF²Q+: every backend within one turn of its share
			for j := range w {
				if lag := float64(got[j]) - float64(w[j])*float64(k)/float64(total); lag <= -1 || lag >= 1 {
					t.Fatalf("turn %d: backend %d has %d turns, %.2f from its share", k, j, got[j], lag)
				}
			}
		}
		got[i]++
		if k > 0 && s[k-1] == i {
			run++
		} else {
			run = 1
		}
		longest = max(longest, run)
	}
	for i := range w {
		if got[i] != w[i] {
			t.Fatalf("backend %d appears %d times, want %d", i, got[i], w[i])
		}
	}
	p := float64(w[0]) / float64(total)
	if limit := int(math.Ceil(p/(1-p))) + 1; longest > limit {
		t.Errorf("longest run %d > %d", longest, limit)
	}
}
