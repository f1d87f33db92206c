package balance

import "sync/atomic"

// Load is a backend's live load, shared by every Picker built over the backend.
// The balance helper owns the full implementation (EWMA of latency for peak-EWMA).
type Load struct {
	active atomic.Int64
}

// Active is the number of connections or requests in flight.
func (l *Load) Active() int64 { return l.active.Load() }

// Begin records a connection or request starting.
func (l *Load) Begin() { l.active.Add(1) }

// End records it finishing.
func (l *Load) End() { l.active.Add(-1) }
