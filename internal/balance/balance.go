// Package balance holds weir's schedulers: small, pure types that choose one backend
// among many, behind one Picker interface, and ClientIP session affinity. The userspace
// proxy, the L7 gateway and the eBPF Maglev table all use them. It does no network I/O.
package balance

import (
	"fmt"
	"strings"
)

// Algorithm names a scheduler. The names are those of weir's TrafficPolicy kind.
type Algorithm string

// The schedulers.
const (
	RoundRobin               Algorithm = "RoundRobin"
	WeightedRoundRobin       Algorithm = "WeightedRoundRobin"
	LeastConnections         Algorithm = "LeastConnections"
	WeightedLeastConnections Algorithm = "WeightedLeastConnections"
	Random                   Algorithm = "Random"
	PowerOfTwoChoices        Algorithm = "PowerOfTwoChoices"
	PeakEWMA                 Algorithm = "PeakEWMA"
	SourceHash               Algorithm = "SourceHash"
	DestinationHash          Algorithm = "DestinationHash"
	Maglev                   Algorithm = "Maglev"
)

// DefaultAlgorithm is the scheduler of a Service without a TrafficPolicy.
const DefaultAlgorithm = RoundRobin

// Algorithms lists every scheduler in a fixed order.
func Algorithms() []Algorithm {
	return []Algorithm{
		RoundRobin, WeightedRoundRobin, LeastConnections, WeightedLeastConnections,
		Random, PowerOfTwoChoices, PeakEWMA, SourceHash, DestinationHash, Maglev,
	}
}

// ParseAlgorithm checks a scheduler name. The empty name is DefaultAlgorithm.
func ParseAlgorithm(name string) (Algorithm, error) {
	if name == "" {
		return DefaultAlgorithm, nil
	}
	for _, a := range Algorithms() {
		if string(a) == name {
			return a, nil
		}
	}
	return "", unknownAlgorithm(name)
}

func unknownAlgorithm(name string) error {
	names := make([]string, 0, 10)
	for _, a := range Algorithms() {
		names = append(names, string(a))
	}
	return fmt.Errorf("balance: unknown algorithm %q (want one of %s)", name, strings.Join(names, ", "))
}

// NeedsLoad reports whether the scheduler reads Backend.Load.
func (a Algorithm) NeedsLoad() bool {
	switch a {
	case LeastConnections, WeightedLeastConnections, PowerOfTwoChoices, PeakEWMA:
		return true
	}
	return false
}

// Hashing reports whether the scheduler uses Pick's key.
func (a Algorithm) Hashing() bool {
	switch a {
	case SourceHash, DestinationHash, Maglev:
		return true
	}
	return false
}

// New builds the Picker of an algorithm over backends. The empty algorithm is
// DefaultAlgorithm. The Picker copies what it needs: the caller may reuse the slice,
// and Pick returns indexes into it. With no backends Pick always returns -1.
//
// Errors name the offending value: an unknown algorithm, a Maglev table size that is
// not prime or is smaller than the number of backends, or a missing Load for a
// scheduler that reads it.
func New(alg Algorithm, backends []Backend, opts Options) (Picker, error) {
	if alg == "" {
		alg = DefaultAlgorithm
	}
	if _, err := ParseAlgorithm(string(alg)); err != nil {
		return nil, err
	}
	if alg == Maglev {
		if _, err := maglevSize(opts.MaglevTableSize, len(backends)); err != nil {
			return nil, err
		}
	}
	if alg.NeedsLoad() {
		for i, b := range backends {
			if b.Load == nil {
				return nil, fmt.Errorf("balance: %s reads each backend's load, but backend %d (id %#x) has a nil Load", alg, i, b.ID)
			}
		}
	}
	if len(backends) == 0 {
		return none{}, nil
	}
	switch alg {
	case RoundRobin:
		if !equalBackendWeights(backends) {
			// Weights (the weir.dev/weight annotation, HTTPRoute weights) must hold under
			// the default scheduler too: a 1-weight canary beside a 99-weight stable
			// slice gets 1 %, not a third. With equal weights this is plain round robin.
			return newWeightedRoundRobin(backends, startOf(opts)), nil
		}
		return newRoundRobin(len(backends), startOf(opts)), nil
	case WeightedRoundRobin:
		return newWeightedRoundRobin(backends, startOf(opts)), nil
	case LeastConnections:
		return newLeastConn(backends, false, startOf(opts)), nil
	case WeightedLeastConnections:
		return newLeastConn(backends, true, startOf(opts)), nil
	case Random:
		return newRandom(backends, opts), nil
	case PowerOfTwoChoices:
		return newTwoChoices(backends, opts), nil
	case PeakEWMA:
		return newPeakEWMA(backends, opts), nil
	case SourceHash, DestinationHash:
		return newRing(backends, opts), nil
	case Maglev:
		return newMaglev(backends, opts)
	}
	return nil, unknownAlgorithm(string(alg))
}

// startOf is where a cycling scheduler starts: a random position, so that the weir
// instances on every node, which rebuild their Pickers at the same moment when an
// EndpointSlice changes, do not all send their next connection to the first backend.
// With Options.RandSeed it is reproducible.
func startOf(opts Options) uint64 { return newSource(opts.RandSeed).next() }

// equalBackendWeights reports whether every backend has the same effective weight.
func equalBackendWeights(backends []Backend) bool {
	for _, b := range backends[1:] {
		if weightOf(b) != weightOf(backends[0]) {
			return false
		}
	}
	return true
}

// none is the Picker over no backends.
type none struct{}

func (none) Pick(uint64) int { return -1 }
