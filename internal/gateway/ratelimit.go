package gateway

import (
	"hash/maphash"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"weir.dev/weir/internal/model"
)

// limiter is a local rate limit: one token bucket per key, in a table of bounded size.
//
// Keys are hashed (a per-process random seed, so clients cannot aim collisions) and
// nothing a client sends is stored: an entry is a fixed 40 bytes plus its map slot,
// whatever the key's length. The table is split into limiterShards shards, each a
// least-recently-used list of at most limiterKeys/limiterShards entries. A full shard
// makes room only by dropping its least recently used bucket when that bucket has
// refilled to its burst — a bucket indistinguishable from a new one, so nothing is
// forgotten. When it has not (every bucket of the shard was used within one refill
// time: a flood of distinct keys), the new key is not tracked and its request takes a
// token from the limit's one overflow bucket, shared by every untracked key. So a flood
// of keys never resets an established client's bucket, and at worst shares one
// client's rate among the keys that came in excess.
type limiter struct {
	rl  model.RateLimit
	key string // "route", "sourceIP" or "header:<Name>"

	perNano float64 // tokens per nanosecond
	burst   float64
	now     func() time.Time

	shards   [limiterShards]limiterShard
	overflow struct {
		mu sync.Mutex
		b  bucket
	}
}

const limiterShards = 16

// limiterKeys bounds the buckets one rate limit tracks (about 4.5 MB at most). A
// variable so that tests can fill the table with fewer requests.
var limiterKeys = 65536

// limiterSeed hashes every limiter's keys.
var limiterSeed = maphash.MakeSeed()

type limiterShard struct {
	mu      sync.Mutex
	cap     int
	index   map[uint64]int32
	entries []limiterEntry
	head    int32 // most recently used; -1 when empty
	tail    int32 // least recently used
}

type limiterEntry struct {
	key        uint64
	b          bucket
	prev, next int32
}

// bucket is a token bucket: tokens at time last (UnixNano).
type bucket struct {
	tokens float64
	last   int64
}

func newLimiter(rl model.RateLimit) *limiter {
	return newLimiterSized(rl, limiterKeys, time.Now)
}

func newLimiterSized(rl model.RateLimit, keys int, now func() time.Time) *limiter {
	l := &limiter{rl: rl, key: rl.Key, now: now,
		perNano: float64(rl.Requests) / float64(rl.Period), burst: float64(rl.Burst)}
	per := max(keys/limiterShards, 1)
	for i := range l.shards {
		l.shards[i] = limiterShard{cap: per, index: map[uint64]int32{}, head: -1, tail: -1}
	}
	l.overflow.b = bucket{tokens: l.burst, last: now().UnixNano()}
	return l
}

func (l *limiter) same(rl model.RateLimit) bool {
	return rl == l.rl
}

// allow takes a token for the key hash h; when there is none it returns how long until
// one.
func (l *limiter) allow(h uint64) (bool, time.Duration) {
	now := l.now().UnixNano()
	s := &l.shards[h%limiterShards]
	s.mu.Lock()
	if b := s.get(h, now, l); b != nil {
		ok, wait := l.take(b, now)
		s.mu.Unlock()
		return ok, wait
	}
	s.mu.Unlock()
	l.overflow.mu.Lock()
	defer l.overflow.mu.Unlock()
	return l.take(&l.overflow.b, now)
}

// take refills b to now and takes one token from it.
func (l *limiter) take(b *bucket, now int64) (bool, time.Duration) {
	if now > b.last {
		b.tokens = math.Min(l.burst, b.tokens+float64(now-b.last)*l.perNano)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	if l.perNano <= 0 {
		return false, l.rl.Period
	}
	return false, time.Duration(math.Ceil((1 - b.tokens) / l.perNano))
}

// full reports whether b has refilled to its burst by now.
func (l *limiter) full(b *bucket, now int64) bool {
	return b.tokens+float64(now-b.last)*l.perNano >= l.burst
}

// get returns h's bucket, made (full) when new, and marks it most recently used; nil
// when the shard is full of buckets that have not refilled.
func (s *limiterShard) get(h uint64, now int64, l *limiter) *bucket {
	if i, ok := s.index[h]; ok {
		s.touch(i)
		return &s.entries[i].b
	}
	fresh := bucket{tokens: l.burst, last: now}
	if len(s.entries) < s.cap {
		i := int32(len(s.entries))
		s.entries = append(s.entries, limiterEntry{key: h, b: fresh, prev: -1, next: -1})
		s.index[h] = i
		s.pushFront(i)
		return &s.entries[i].b
	}
	i := s.tail
	if !l.full(&s.entries[i].b, now) {
		return nil
	}
	delete(s.index, s.entries[i].key)
	s.entries[i].key, s.entries[i].b = h, fresh
	s.index[h] = i
	s.touch(i)
	return &s.entries[i].b
}

func (s *limiterShard) touch(i int32) {
	if s.head == i {
		return
	}
	e := &s.entries[i]
	if e.prev >= 0 {
		s.entries[e.prev].next = e.next
	}
	if e.next >= 0 {
		s.entries[e.next].prev = e.prev
	}
	if s.tail == i {
		s.tail = e.prev
	}
	s.pushFront(i)
}

func (s *limiterShard) pushFront(i int32) {
	e := &s.entries[i]
	e.prev, e.next = -1, s.head
	if s.head >= 0 {
		s.entries[s.head].prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
}

// limiterKey hashes the key of a request under l: 0 for the route's one bucket; the
// client's address for sourceIP (behind trusted proxies, the nearest address in
// X-Forwarded-For that is not one of them); the named header's value (all of its
// lines) for header:<Name>.
func (g *Gateway) limiterKey(l *limiter, r *http.Request, st *reqState) uint64 {
	switch {
	case l.key == "sourceIP":
		return maphash.Comparable(limiterSeed, g.limitedClient(r, st.client))
	case strings.HasPrefix(l.key, "header:"):
		var h maphash.Hash
		h.SetSeed(limiterSeed)
		for _, v := range r.Header[http.CanonicalHeaderKey(l.key[len("header:"):])] {
			_, _ = h.WriteString(v)
			_ = h.WriteByte(0)
		}
		return h.Sum64()
	}
	return 0
}

// limitedClient is the address a sourceIP limit counts: the peer, unless it is a
// trusted proxy, in which case the rightmost X-Forwarded-For address that is not.
func (g *Gateway) limitedClient(r *http.Request, peer netip.Addr) netip.Addr {
	if len(g.opts.TrustedProxies) == 0 || !g.trusted(peer) {
		return peer
	}
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		line := xff[i]
		for line != "" {
			j := strings.LastIndexByte(line, ',')
			part := strings.TrimSpace(line[j+1:])
			line = line[:max(j, 0)]
			a, err := netip.ParseAddr(part)
			if err != nil {
				return peer // unparsable: the proxy's own address is the one known
			}
			if a = a.Unmap(); !g.trusted(a) {
				return a
			}
		}
	}
	return peer
}
