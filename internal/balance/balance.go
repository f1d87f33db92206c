// Package balance holds weir's schedulers: small, pure types that choose one backend
// among many, behind one Picker interface, and ClientIP session affinity. The userspace
// proxy, the L7 gateway and the eBPF Maglev table all use them. It does no network I/O.
package balance

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
