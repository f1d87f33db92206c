package balance

// Backend is one choice a Picker can make. Pickers are immutable over their backends:
// when the backend set or its health changes, the owner builds a new Picker (cheap for
// every scheduler; Maglev rebuilds its table). Live load survives the rebuild because
// Load is shared by pointer.
type Backend struct {
	// ID identifies the backend stably across rebuilds (a hash of its address and
	// port: see KeyOf). Maglev and the hashes place backends by it.
	ID uint64
	// Weight is the relative share; 0 is treated as 1. Callers leave out backends that
	// must get no traffic.
	Weight uint32
	// Load is the backend's live load. Least-connections, power-of-two-choices and
	// peak-EWMA read it (New returns an error when it is nil for them); it may be nil
	// for the other schedulers.
	Load *Load
}

// Picker chooses a backend for a new connection or request.
type Picker interface {
	// Pick returns the index of the chosen backend in the slice the Picker was built
	// from, or -1 when it has none. key is the hash input of the hashing schedulers
	// (source IP for SourceHash and Maglev at L4, destination for DestinationHash, a
	// header or cookie at L7); the others ignore it. Pick is safe for concurrent use,
	// does not allocate, and takes well under 100 ns with 100 backends.
	Pick(key uint64) int
}

// Options tune the schedulers that have settings. The zero value is ready to use.
type Options struct {
	// MaglevTableSize must be prime; zero means AutoMaglevTableSize (16381, grown for
	// large backend sets).
	MaglevTableSize int
	// Seed makes Maglev tables (and hash placement) agree across instances: two
	// Pickers built over the same backends with the same Seed map every key alike.
	Seed uint64
	// RandSeed seeds the random draws of Random, PowerOfTwoChoices and PeakEWMA, so a
	// test can replay them. Zero (the default) uses the runtime's per-thread random
	// source, which is faster under concurrency.
	RandSeed uint64
}

// Find returns the index of the backend with the given ID, or -1. Session affinity
// uses it to turn a remembered backend ID into an index of the current backends.
func Find(backends []Backend, id uint64) int {
	for i := range backends {
		if backends[i].ID == id {
			return i
		}
	}
	return -1
}

// weightOf is a backend's weight with 0 read as 1.
func weightOf(b Backend) uint32 {
	if b.Weight == 0 {
		return 1
	}
	return b.Weight
}
