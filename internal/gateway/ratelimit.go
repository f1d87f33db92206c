package gateway

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"weir.dev/weir/internal/model"
)

// limiter is a local rate limit: one token bucket per key.
type limiter struct {
	rl  model.RateLimit
	key string // "route", "sourceIP" or "header:<Name>"

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

const maxLimiterKeys = 65536

func newLimiter(rl model.RateLimit) *limiter {
	if rl.Period <= 0 {
		rl.Period = time.Second
	}
	if rl.Burst <= 0 {
		rl.Burst = rl.Requests
	}
	key := rl.Key
	if key == "" {
		key = "route"
	}
	return &limiter{rl: rl, key: key, buckets: map[string]*rate.Limiter{}}
}

func (l *limiter) same(rl model.RateLimit) bool {
	n := newLimiter(rl)
	return n.rl == l.rl
}

// allow takes a token for key; when there is none it returns how long until one.
func (l *limiter) allow(key string) (bool, time.Duration) {
	l.mu.Lock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxLimiterKeys {
			clear(l.buckets) // bounded memory; a reset only gives clients fresh buckets
		}
		every := rate.Every(l.rl.Period / time.Duration(l.rl.Requests))
		b = rate.NewLimiter(every, l.rl.Burst)
		l.buckets[key] = b
	}
	l.mu.Unlock()
	now := time.Now()
	r := b.ReserveN(now, 1)
	if !r.OK() {
		return false, l.rl.Period
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
