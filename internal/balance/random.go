package balance

// chooser draws backends at random: uniformly when all weights are equal, otherwise
// in proportion to weight through an alias table. One 64-bit draw per pick.
type chooser struct {
	rand    *source
	n       int
	alias   aliasTable // empty when uniform
	uniform bool
}

func newChooser(backends []Backend, opts Options) chooser {
	w := make([]uint32, len(backends))
	for i, b := range backends {
		w[i] = weightOf(b)
	}
	c := chooser{rand: newSource(opts.RandSeed), n: len(backends), uniform: uniformWeights(w)}
	if !c.uniform {
		c.alias = newAliasTable(w)
	}
	return c
}

func (c *chooser) one() int {
	r := c.rand.next()
	if c.uniform {
		i, _ := below(r, c.n)
		return i
	}
	return c.alias.draw(r)
}

// two draws two candidates. Uniform candidates are distinct; weighted ones are drawn
// independently (as Envoy's least-request does) and may coincide.
func (c *chooser) two() (int, int) {
	if c.n == 1 {
		return 0, 0
	}
	r := c.rand.next()
	if c.uniform {
		i, f := below(r, c.n)
		j, _ := below(f, c.n-1)
		if j >= i {
			j++
		}
		return i, j
	}
	return c.alias.draw(r), c.alias.draw(mix64(r))
}

// random picks a backend at random in proportion to its weight.
type random struct{ c chooser }

func newRandom(backends []Backend, opts Options) *random {
	return &random{c: newChooser(backends, opts)}
}

func (p *random) Pick(uint64) int { return p.c.one() }

// twoChoices is least-request over two random choices (Envoy's LEAST_REQUEST with
// choice_count 2). With unequal weights the candidates are drawn in proportion to
// weight and compared by active/weight, so an idle set is shared exactly by weight
// and a busy one keeps in-flight requests proportional to weight. A tie keeps the
// first candidate.
type twoChoices struct {
	c       chooser
	loads   []*Load
	weights []uint64
}

func newTwoChoices(backends []Backend, opts Options) *twoChoices {
	p := &twoChoices{c: newChooser(backends, opts), loads: make([]*Load, len(backends)), weights: make([]uint64, len(backends))}
	for i, b := range backends {
		p.loads[i] = b.Load
		p.weights[i] = uint64(weightOf(b))
	}
	return p
}

func (p *twoChoices) Pick(uint64) int {
	i, j := p.c.two()
	ai, aj := uint64(max(0, p.loads[i].Active())), uint64(max(0, p.loads[j].Active()))
	if aj*p.weights[i] < ai*p.weights[j] {
		return j
	}
	return i
}

// peakEWMA is Finagle's and Linkerd's peak-EWMA balancer: each backend costs its
// latency estimate, decayed toward zero since its last sample, × (in-flight + 1) /
// weight, and the cheaper of two random candidates wins. A backend never measured
// costs nothing while idle (so it gets measured) and a large penalty while busy.
//
// Pick reads no clock (a clock read costs over 100 ns on a VM's kvm-clock): comparing
// two estimates both decayed to the present is the same as decaying the older one to
// the newer one's sample time, since the common factor exp(-now/DecayWindow) cancels.
type peakEWMA struct {
	c     chooser
	loads []*Load
	inv   []float64 // 1/weight
}

func newPeakEWMA(backends []Backend, opts Options) *peakEWMA {
	p := &peakEWMA{c: newChooser(backends, opts), loads: make([]*Load, len(backends)), inv: make([]float64, len(backends))}
	for i, b := range backends {
		p.loads[i] = b.Load
		p.inv[i] = 1 / float64(weightOf(b))
	}
	return p
}

func (p *peakEWMA) Pick(uint64) int {
	i, j := p.c.two()
	if i == j {
		return i
	}
	if lessPeakCost(p.loads[j], p.inv[j], p.loads[i], p.inv[i]) {
		return j
	}
	return i
}
