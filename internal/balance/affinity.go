package balance

import (
	"net/netip"
	"sync"
	"time"
)

// DefaultAffinityTimeout is kube-proxy's default sessionAffinityConfig.clientIP.timeoutSeconds.
const DefaultAffinityTimeout = 10800 * time.Second

const affinityShards = 32 // a power of two

// Affinity remembers which backend each client IP was sent to, as kube-proxy's
// sessionAffinity: ClientIP does: keyed on the source address alone, for a timeout
// after the client's last connection. Keep one Affinity per Service port.
//
// The caller's loop for a new connection from client:
//
//	id, ok := aff.Lookup(client, now)
//	i := -1
//	if ok {
//		i = balance.Find(backends, id) // -1 if the backend is gone
//	}
//	if i < 0 {
//		i = picker.Pick(key)
//	}
//	aff.Remember(client, backends[i].ID, now) // (re)starts the timeout, like iptables' recent --set
//
// When a backend is removed or starts terminating, Forget(its ID) drops its sticky
// clients at once, so that they are not kept on a backend that is going away (cilium
// #27096). Expired entries are dropped lazily by Lookup and in bulk by Sweep, which
// the owner calls now and then (every minute is plenty).
//
// Affinity is safe for concurrent use; it is sharded by client address.
type Affinity struct {
	timeout time.Duration
	shards  [affinityShards]affinityShard
}

type affinityShard struct {
	mu      sync.Mutex
	clients map[netip.Addr]sticky
	_       [48]byte // keep shards on separate cache lines
}

type sticky struct {
	backend uint64
	expires int64 // UnixNano
}

// NewAffinity makes an empty table. A timeout ≤ 0 means DefaultAffinityTimeout.
func NewAffinity(timeout time.Duration) *Affinity {
	if timeout <= 0 {
		timeout = DefaultAffinityTimeout
	}
	return &Affinity{timeout: timeout}
}

// Timeout is how long an entry lives after the client's last Remember.
func (a *Affinity) Timeout() time.Duration { return a.timeout }

func (a *Affinity) shard(client netip.Addr) *affinityShard {
	return &a.shards[HashAddr(client)&(affinityShards-1)]
}

// Lookup returns the backend the client is stuck to, if the entry has not expired at
// now. An expired entry is removed.
func (a *Affinity) Lookup(client netip.Addr, now time.Time) (backendID uint64, ok bool) {
	client = client.Unmap().WithZone("")
	s := a.shard(client)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, found := s.clients[client]
	if !found {
		return 0, false
	}
	if now.UnixNano() >= e.expires {
		delete(s.clients, client)
		return 0, false
	}
	return e.backend, true
}

// Remember sticks the client to a backend until now + timeout.
func (a *Affinity) Remember(client netip.Addr, backendID uint64, now time.Time) {
	client = client.Unmap().WithZone("")
	s := a.shard(client)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clients == nil {
		s.clients = make(map[netip.Addr]sticky)
	}
	s.clients[client] = sticky{backend: backendID, expires: now.Add(a.timeout).UnixNano()}
}

// Forget drops every client stuck to the backend and returns how many there were.
func (a *Affinity) Forget(backendID uint64) int {
	n := 0
	for i := range a.shards {
		s := &a.shards[i]
		s.mu.Lock()
		for c, e := range s.clients {
			if e.backend == backendID {
				delete(s.clients, c)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Sweep drops the entries expired at now and returns how many it dropped.
func (a *Affinity) Sweep(now time.Time) int {
	t := now.UnixNano()
	n := 0
	for i := range a.shards {
		s := &a.shards[i]
		s.mu.Lock()
		for c, e := range s.clients {
			if t >= e.expires {
				delete(s.clients, c)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Len is the number of entries, expired ones not yet swept included.
func (a *Affinity) Len() int {
	n := 0
	for i := range a.shards {
		s := &a.shards[i]
		s.mu.Lock()
		n += len(s.clients)
		s.mu.Unlock()
	}
	return n
}
