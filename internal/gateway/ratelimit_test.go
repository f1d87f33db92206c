package gateway

import (
	"hash/maphash"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/model"
)

// fakeClock is an injected clock for the limiter.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func keyHash(s string) uint64 { return maphash.String(limiterSeed, s) }

// TestLimiterFloodKeepsEstablishedBuckets: 200,000 distinct keys (a client choosing a
// new header value per request) neither reset an established client's bucket nor grow
// the table past its bound; the keys in excess share one overflow bucket.
func TestLimiterFloodKeepsEstablishedBuckets(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	l := newLimiterSized(model.RateLimit{Requests: 10, Period: time.Minute, Burst: 10, Key: "header:X-User"}, limiterKeys, clock.now)
	victim := keyHash("victim")
	for i := range 10 {
		if ok, _ := l.allow(victim); !ok {
			t.Fatalf("request %d refused within the burst", i)
		}
	}
	if ok, wait := l.allow(victim); ok || wait <= 0 || wait > 6*time.Second {
		t.Fatalf("11th request: ok %v, wait %v; want refused, about 6 s", ok, wait)
	}
	allowed := 0
	for i := range 200_000 {
		if i%1000 == 0 {
			clock.advance(time.Millisecond)
		}
		if ok, _ := l.allow(keyHash("flood-" + strconv.Itoa(i))); ok {
			allowed++
		}
	}
	if ok, _ := l.allow(victim); ok {
		t.Fatal("the flood reset the established client's bucket")
	}
	if n := l.tracked(); n > limiterKeys {
		t.Fatalf("%d buckets tracked, bound %d", n, limiterKeys)
	}
	// Every tracked flood key got its one request; the rest shared one burst of 10.
	if allowed > limiterKeys+10 {
		t.Fatalf("%d flood requests allowed, want at most %d", allowed, limiterKeys+10)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 12<<20 {
		t.Fatalf("heap grew by %d bytes for %d buckets", grew, l.tracked())
	}
	runtime.KeepAlive(l)
	t.Logf("200,000 keys: %d tracked, %d allowed, heap %+d KiB", l.tracked(), allowed, (int64(after.HeapAlloc)-int64(before.HeapAlloc))>>10)

	// A minute later every bucket has refilled: the victim is served again, and new
	// keys take the places of refilled buckets (they are tracked, not overflowed).
	clock.advance(time.Minute)
	if ok, _ := l.allow(victim); !ok {
		t.Fatal("refilled bucket refused")
	}
	fresh := keyHash("fresh")
	for i := range 10 {
		if ok, _ := l.allow(fresh); !ok {
			t.Fatalf("new key after the refill: request %d refused", i)
		}
	}
	if ok, _ := l.allow(fresh); ok {
		t.Fatal("new key after the refill not limited")
	}
}

// TestLimiterBucket: the refill rate, the burst and the wait returned.
func TestLimiterBucket(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newLimiterSized(model.RateLimit{Requests: 2, Period: time.Second, Burst: 2, Key: "route"}, 64, clock.now)
	for i := range 2 {
		if ok, _ := l.allow(1); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	if ok, wait := l.allow(1); ok || wait != 500*time.Millisecond {
		t.Fatalf("ok %v wait %v, want refused for 500ms", ok, wait)
	}
	clock.advance(499 * time.Millisecond)
	if ok, _ := l.allow(1); ok {
		t.Fatal("allowed before the refill")
	}
	clock.advance(time.Millisecond)
	if ok, _ := l.allow(1); !ok {
		t.Fatal("refused after the refill")
	}
	clock.advance(time.Hour)
	for i := range 2 {
		if ok, _ := l.allow(1); !ok {
			t.Fatalf("after an hour, request %d refused (burst 2)", i)
		}
	}
	if ok, _ := l.allow(1); ok {
		t.Fatal("the bucket held more than its burst")
	}
}

// TestRateLimitKeyFloodOverTransports: over HTTP, a client flooding distinct X-User
// values (more than the table holds) does not reset another user's limit.
func TestRateLimitKeyFloodOverTransports(t *testing.T) {
	saved := limiterKeys
	limiterKeys = 256
	t.Cleanup(func() { limiterKeys = saved })
	forEdgeTransport(t, func(t *testing.T, opts Options) {
		tb := startTargetBackend(t)
		rm := prefixRule("rl", "/", tb.backend("a"))
		rm.Rule.Policy.RateLimit = &model.RateLimit{Requests: 3, Period: time.Hour, Burst: 3, Key: "header:X-User"}
		opts.Registerer = prometheus.NewRegistry()
		tg := startGateway(t, opts, httpConfig(freeAddr(t), rm))
		c := &http.Client{Timeout: 10 * time.Second}
		send := func(user string) int {
			resp, _ := get(t, c, "GET", tg.url+"/x", map[string]string{"X-User": user})
			return resp.StatusCode
		}
		for i, want := range []int{200, 200, 200, 429} {
			if got := send("victim"); got != want {
				t.Fatalf("victim request %d: %d, want %d", i, got, want)
			}
		}
		for i := range 2000 {
			send("flood-" + strconv.Itoa(i))
		}
		if got := send("victim"); got != http.StatusTooManyRequests {
			t.Fatalf("after the flood the victim got %d, want 429", got)
		}
		tg.mu.Lock()
		l := tg.limiters["rl"]
		tg.mu.Unlock()
		if n := l.tracked(); n > 256 {
			t.Fatalf("%d buckets tracked, bound 256", n)
		}
	})
}

// TestRateLimitSourceIPBehindTrustedProxy: behind a trusted proxy a sourceIP limit
// counts the address the proxy forwarded for, not the proxy's.
func TestRateLimitSourceIPBehindTrustedProxy(t *testing.T) {
	g := &Gateway{opts: Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	proxy, client := netip.MustParseAddr("10.1.1.1"), netip.MustParseAddr("203.0.113.7")
	for _, tc := range []struct {
		peer netip.Addr
		xff  []string
		want netip.Addr
	}{
		{client, []string{"198.51.100.1"}, client},             // untrusted peer: its own address
		{proxy, []string{"198.51.100.1, 203.0.113.7"}, client}, // rightmost untrusted
		{proxy, []string{"203.0.113.7, 10.2.2.2"}, client},     // trusted hops skipped
		{proxy, []string{"203.0.113.7", "10.2.2.2"}, client},   // across header lines
		{proxy, nil, proxy},                             // nothing forwarded
		{proxy, []string{"garbage"}, proxy},             // unparsable
		{proxy, []string{"::ffff:203.0.113.7"}, client}, // mapped
		{proxy, []string{"10.3.3.3"}, proxy},            // all trusted
	} {
		r := &http.Request{Header: http.Header{}}
		if tc.xff != nil {
			r.Header["X-Forwarded-For"] = tc.xff
		}
		if got := g.limitedClient(r, tc.peer); got != tc.want {
			t.Errorf("peer %v XFF %q: %v, want %v", tc.peer, tc.xff, got, tc.want)
		}
	}
}

// tracked is the number of buckets held.
func (l *limiter) tracked() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.index)
		s.mu.Unlock()
	}
	return n
}
