package dns

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// Forwarding limits.
const (
	defaultUpstreamTimeout = 2 * time.Second
	defaultCacheSize       = 10000
	// maxCacheTTL caps how long an upstream answer is reused.
	maxCacheTTL = 30 * time.Second
)

// forwarder resolves names outside the cluster zone with upstream resolvers, tried in
// turn (UDP, then TCP when the answer is truncated), and keeps their answers briefly.
// Concurrent misses for one question share one upstream exchange.
type forwarder struct {
	upstreams []string
	udp, tcp  *mdns.Client
	cache     *cache // nil: no cache
	metrics   *metrics
	flight    singleflight.Group
}

func newForwarder(upstreams []string, timeout time.Duration, cacheSize int, m *metrics) *forwarder {
	if timeout <= 0 {
		timeout = defaultUpstreamTimeout
	}
	if cacheSize == 0 {
		cacheSize = defaultCacheSize
	}
	f := &forwarder{
		upstreams: upstreams,
		udp:       &mdns.Client{Net: "udp", Timeout: timeout, UDPSize: advertisedUDPSize},
		tcp:       &mdns.Client{Net: "tcp", Timeout: timeout},
		metrics:   m,
	}
	if cacheSize > 0 {
		f.cache = newCache(cacheSize)
	}
	return f
}

// forward answers qr from upstream (or the cache).
func (s *Server) forward(w mdns.ResponseWriter, qr *query) int {
	r := qr.req
	do := qr.opt != nil && qr.opt.Do()
	resp, err := s.fwd.resolve(s.runCtx, qr.q, r.RecursionDesired, r.CheckingDisabled, do)
	if err != nil {
		s.log.Debug("dns: forwarding failed", "name", qr.q.Name, "type", mdns.TypeToString[qr.q.Qtype], "err", err)
		return s.writeRcode(w, r, qr.opt, mdns.RcodeServerFailure)
	}
	resp.Id = r.Id
	resp.Question = []mdns.Question{qr.q}
	resp.RecursionDesired = r.RecursionDesired
	resp.RecursionAvailable = true
	resp.Authoritative = false
	resp.Compress = true
	if qr.opt != nil {
		resp.SetEdns0(advertisedUDPSize, do)
	}
	resp.Truncate(qr.limit)
	_ = w.WriteMsg(resp)
	return resp.Rcode
}

// resolve returns a private copy of the answer to q, without OPT record.
func (f *forwarder) resolve(ctx context.Context, q mdns.Question, rd, cd, do bool) (*mdns.Msg, error) {
	key := cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass, do: do, cd: cd}
	if f.cache != nil {
		if m := f.cache.get(key, time.Now()); m != nil {
			f.metrics.cache.WithLabelValues("hit").Inc()
			return m, nil
		}
		f.metrics.cache.WithLabelValues("miss").Inc()
	}
	if ctx == nil {
		ctx = context.Background()
	}
	flightKey := fmt.Sprintf("%s|%d|%d|%t|%t|%t", key.name, key.qtype, key.qclass, do, cd, rd)
	v, err, _ := f.flight.Do(flightKey, func() (any, error) {
		return f.query(ctx, key, q, rd, cd, do)
	})
	if err != nil {
		return nil, err
	}
	return v.(*mdns.Msg).Copy(), nil
}

// query asks the upstreams in turn and caches the answer. The returned message is
// shared between the callers of one flight: they copy it.
func (f *forwarder) query(ctx context.Context, key cacheKey, q mdns.Question, rd, cd, do bool) (*mdns.Msg, error) {
	req := new(mdns.Msg)
	req.Id = mdns.Id()
	req.RecursionDesired = rd
	req.CheckingDisabled = cd
	req.Question = []mdns.Question{q}
	req.SetEdns0(advertisedUDPSize, do)

	var errs []error
	var fallback *mdns.Msg // a SERVFAIL or REFUSED, kept in case no upstream does better
	for _, up := range f.upstreams {
		resp, err := f.exchange(ctx, req, up)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", up, err))
			continue
		}
		if resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused {
			fallback = resp
			continue
		}
		stripOPT(resp)
		if f.cache != nil {
			f.cache.put(key, resp, time.Now())
		}
		return resp, nil
	}
	if fallback != nil {
		stripOPT(fallback)
		return fallback, nil
	}
	return nil, errors.Join(errs...)
}

func (f *forwarder) exchange(ctx context.Context, req *mdns.Msg, upstream string) (*mdns.Msg, error) {
	resp, _, err := f.udp.ExchangeContext(ctx, req, upstream)
	if err == nil && resp.Truncated {
		resp, _, err = f.tcp.ExchangeContext(ctx, req, upstream)
	}
	if err != nil {
		return nil, err
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, req.Question[0].Name) ||
		resp.Question[0].Qtype != req.Question[0].Qtype {
		return nil, errors.New("answer does not match the question")
	}
	return resp, nil
}

func stripOPT(m *mdns.Msg) {
	extra := m.Extra[:0:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != mdns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
}

// cache keeps upstream answers for their TTL, at most maxCacheTTL, and at most size
// entries.
type cache struct {
	mu      sync.Mutex
	size    int
	entries map[cacheKey]cacheEntry
}

type cacheKey struct {
	name          string
	qtype, qclass uint16
	do, cd        bool
}

type cacheEntry struct {
	msg     *mdns.Msg
	stored  time.Time
	expires time.Time
}

func newCache(size int) *cache {
	return &cache{size: size, entries: make(map[cacheKey]cacheEntry)}
}

// cacheTTL is how long m may be reused: the smallest TTL in the answer and authority
// sections; for a negative answer, min(SOA TTL, SOA minimum) (RFC 2308). Zero means do
// not cache.
func cacheTTL(m *mdns.Msg) time.Duration {
	if m.Rcode != mdns.RcodeSuccess && m.Rcode != mdns.RcodeNameError {
		return 0
	}
	var ttl uint32
	set := false
	take := func(t uint32) {
		if !set || t < ttl {
			ttl, set = t, true
		}
	}
	if len(m.Answer) == 0 {
		for _, rr := range m.Ns {
			if soa, ok := rr.(*mdns.SOA); ok {
				take(min(soa.Hdr.Ttl, soa.Minttl))
			}
		}
	} else {
		for _, rr := range m.Answer {
			take(rr.Header().Ttl)
		}
		for _, rr := range m.Ns {
			take(rr.Header().Ttl)
		}
	}
	if !set {
		return 0
	}
	return min(time.Duration(ttl)*time.Second, maxCacheTTL)
}

func (c *cache) put(key cacheKey, m *mdns.Msg, now time.Time) {
	ttl := cacheTTL(m)
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.size {
		c.evict(now)
	}
	c.entries[key] = cacheEntry{msg: m.Copy(), stored: now, expires: now.Add(ttl)}
}

// evict drops the expired entries, or an arbitrary one when none has expired.
func (c *cache) evict(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	if len(c.entries) < c.size {
		return
	}
	for k := range c.entries {
		delete(c.entries, k)
		return
	}
}

// get returns a copy of the cached answer with its TTLs aged, or nil.
func (c *cache) get(key cacheKey, now time.Time) *mdns.Msg {
	c.mu.Lock()
	e, ok := c.entries[key]
	if ok && !now.Before(e.expires) {
		delete(c.entries, key)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	m := e.msg.Copy()
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, sec := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			h.Ttl -= min(h.Ttl, age)
		}
	}
	return m
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
