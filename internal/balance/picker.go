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
	// peak-EWMA read it; it may be nil for the other schedulers.
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

// Options tune the schedulers that have settings.
type Options struct {
	// MaglevTableSize must be prime; zero means 16381.
	MaglevTableSize int
	// Seed makes Maglev tables (and hash placement) agree across instances.
	Seed uint64
}
