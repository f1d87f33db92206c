// Package store holds the last valid object set that a source delivered, with a
// generation number and a change notification. It knows nothing of where objects come
// from: the file source and the Kubernetes source both feed it.
package store

import (
	"sync"

	"weir.dev/weir/internal/model"
)

// Store is the last valid object set. It is safe for concurrent use. Readers must treat
// the objects they get as read-only: a Store never copies them.
type Store struct {
	mu         sync.RWMutex
	objs       *model.Objects
	generation uint64
	changed    chan struct{}
}

// New returns an empty Store at generation 0.
func New() *Store {
	return &Store{changed: make(chan struct{}, 1)}
}

// Update replaces the object set, bumps the generation and notifies Changed.
func (s *Store) Update(objs *model.Objects) {
	s.mu.Lock()
	s.objs = objs
	s.generation++
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default: // a notification is already pending: changes coalesce
	}
}

// Current returns the object set and its generation; nil and 0 before the first Update.
func (s *Store) Current() (*model.Objects, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.objs, s.generation
}

// Changed receives after Update. It has a buffer of one, so any number of updates
// between two receives give one notification; read Current after receiving.
func (s *Store) Changed() <-chan struct{} { return s.changed }
