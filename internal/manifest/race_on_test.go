//go:build race

package manifest

// raceEnabled: the race detector's instrumentation changes what escapes to the heap, so
// allocation bounds are not checked under it.
const raceEnabled = true
