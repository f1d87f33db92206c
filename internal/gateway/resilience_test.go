package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

// TestResilience runs every resilience case over both transports: the same routes,
// backends and requests, served by the event loops and by net/http alone.
func TestResilience(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, tr Options)
	}{
		{"RetriesHideBadEndpoint", resilienceRetriesHideBadEndpoint},
		{"OutlierEjectionAndRecovery", resilienceOutlierEjectionAndRecovery},
		{"BreakerOverflow", resilienceBreakerOverflow},
		{"RateLimit", resilienceRateLimit},
		{"MirrorNeverSlowsPrimary", resilienceMirrorNeverSlowsPrimary},
		{"CanaryRollback", resilienceCanaryRollback},
		{"SessionPersistence", resilienceSessionPersistence},
		{"HashOnHeaderIsSticky", resilienceHashOnHeaderIsSticky},
		{"RetryReplaysSmallBodies", resilienceRetryReplaysSmallBodies},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) { tc.run(t, tr.opts) })
			}
		})
	}
}

// onTransport is a test's Options on the transport tr selects.
func onTransport(tr, o Options) Options {
	o.DisableEventLoops = tr.DisableEventLoops
	return o
}

func resilienceRetriesHideBadEndpoint(t *testing.T, tr Options) {
	closed := func() model.Endpoint {
		ap := netip.MustParseAddrPort(freeAddr(t)) // nothing listens there
		return model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}
	}
	tests := []struct {
		name    string
		breakIt func(bad *echoBackend, be *model.Backend)
		retryOn []string
		method  string
		wantAll bool // every request 200
	}{
		{"503 GET", func(bad *echoBackend, _ *model.Backend) { bad.failAll.Store(true) }, nil, "GET", true},
		{"reset GET", func(bad *echoBackend, _ *model.Backend) { bad.reset.Store(true) }, []string{"reset", "connect-failure"}, "GET", true},
		{"connect failure GET", func(_ *echoBackend, be *model.Backend) { be.Endpoints[1] = closed() }, nil, "GET", true},
		{"503 POST not retried", func(bad *echoBackend, _ *model.Backend) { bad.failAll.Store(true) }, nil, "POST", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good, bad := startEcho(t, "good"), startEcho(t, "bad")
			be := backend("svc", 1, good, bad)
			be.Policy.Outlier.ConsecutiveFailures = 1000 // keep the bad endpoint in rotation
			tc.breakIt(bad, be)
			rm := prefixRule("retry", "/", be)
			if tc.retryOn != nil {
				rm.Rule.Retry.RetryOn = tc.retryOn
			}
			tg := startGateway(t, onTransport(tr, Options{}), httpConfig(freeAddr(t), rm))
			failed := 0
			for range 40 {
				req, _ := http.NewRequest(tc.method, tg.url+"/x", nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed++
				}
			}
			if tc.wantAll && failed > 0 {
				t.Fatalf("%d of 40 requests failed despite retries", failed)
			}
			if !tc.wantAll && failed == 0 {
				t.Fatal("POST was retried")
			}
		})
	}
}

func resilienceOutlierEjectionAndRecovery(t *testing.T, tr Options) {
	good, bad := startEcho(t, "good"), startEcho(t, "bad")
	bad.failAll.Store(true)
	be := backend("svc", 1, good, bad)
	be.Policy.Outlier = model.OutlierDetection{ConsecutiveFailures: 3, BaseEjectionTime: 400 * time.Millisecond, MaxEjectionPercent: 50}
	rm := prefixRule("eject", "/", be)
	rm.Rule.Retry.Attempts = 0
	reg := prometheus.NewRegistry()
	tg := startGateway(t, onTransport(tr, Options{Registerer: reg}), httpConfig(freeAddr(t), rm))
	// Round robin alternates; three 503s from bad eject it.
	for range 8 {
		get(t, http.DefaultClient, "GET", tg.url+"/", nil)
	}
	if n, err := testutil.GatherAndCount(reg, "weir_endpoint_ejections_total"); err != nil || n != 1 || tg.health.Healthy(be.PortID, bad.addr) {
		t.Fatalf("ejections: %d series (%v); bad endpoint healthy: %v", n, err, tg.health.Healthy(be.PortID, bad.addr))
	}
	before := bad.hits.Load()
	for range 20 {
		if resp, _ := get(t, http.DefaultClient, "GET", tg.url+"/", nil); resp.StatusCode != 200 {
			t.Fatalf("request reached the ejected endpoint: %d", resp.StatusCode)
		}
	}
	if bad.hits.Load() != before {
		t.Fatal("ejected endpoint got traffic")
	}
	bad.failAll.Store(false)
	eventually(t, 5*time.Second, func() bool {
		get(t, http.DefaultClient, "GET", tg.url+"/", nil)
		return bad.hits.Load() > before
	}, "endpoint never came back after its ejection time")
}

func resilienceBreakerOverflow(t *testing.T, tr Options) {
	tests := []struct {
		name string
		set  func(cb *model.CircuitBreaker)
	}{
		{"maxRequests", func(cb *model.CircuitBreaker) { cb.MaxRequests = 1 }},
		{"maxPendingRequests", func(cb *model.CircuitBreaker) { cb.MaxPendingRequests = 1 }},
		{"maxConnections", func(cb *model.CircuitBreaker) { cb.MaxConnections = 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { testBreakerOverflow(t, tr, tc.set) })
	}
}

func testBreakerOverflow(t *testing.T, tr Options, set func(*model.CircuitBreaker)) {
	slow := startEcho(t, "slow")
	be := backend("svc", 1, slow)
	pol := *be.Policy
	be.Policy = &pol
	set(&be.Policy.CircuitBreaker)
	reg := prometheus.NewRegistry()
	tg := startGateway(t, onTransport(tr, Options{Registerer: reg}), httpConfig(freeAddr(t), prefixRule("cb", "/", be)))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", tg.url+"/hang", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	defer func() { cancel(); wg.Wait() }()
	eventually(t, 5*time.Second, func() bool { return slow.hits.Load() == 1 }, "first request never arrived")
	start := time.Now()
	resp, _ := get(t, http.DefaultClient, "GET", tg.url+"/", nil)
	if resp.StatusCode != 503 || resp.Header.Get("X-Weir-Overflow") == "" {
		t.Fatalf("overflow: %d %v", resp.StatusCode, resp.Header)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("overflow answer took %v; must be at once", d)
	}
	if n := testutil.ToFloat64(tg.metrics.overflows.WithLabelValues("default/svc:80")); n != 1 {
		t.Fatalf("overflow metric %v", n)
	}
	// A request with a body goes through net/http's Transport: the same limits hold.
	post, err := http.Post(tg.url+"/", "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != 503 || post.Header.Get("X-Weir-Overflow") == "" {
		t.Fatalf("POST overflow: %d %v", post.StatusCode, post.Header)
	}
}

func resilienceRateLimit(t *testing.T, tr Options) {
	a := startEcho(t, "a")
	tests := []struct {
		name string
		key  string
		hdr  func(i int) map[string]string
		want []int
	}{
		{"route bucket", "route", func(int) map[string]string { return nil }, []int{200, 200, 429}},
		{"per header", "header:X-User", func(i int) map[string]string { return map[string]string{"X-User": strconv.Itoa(i)} }, []int{200, 200, 200}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rm := prefixRule("rl", "/", backend("a", 1, a))
			rm.Rule.Policy.RateLimit = &model.RateLimit{Requests: 2, Period: 10 * time.Second, Burst: 2, Key: tc.key}
			tg := startGateway(t, onTransport(tr, Options{Registerer: prometheus.NewRegistry()}), httpConfig(freeAddr(t), rm))
			for i, want := range tc.want {
				resp, _ := get(t, http.DefaultClient, "GET", tg.url+"/", tc.hdr(i))
				if resp.StatusCode != want {
					t.Fatalf("request %d: %d, want %d", i, resp.StatusCode, want)
				}
				if want == 429 {
					if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 || ra > 10 {
						t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
					}
				}
			}
		})
	}
}

func resilienceMirrorNeverSlowsPrimary(t *testing.T, tr Options) {
	a, hang := startEcho(t, "a"), startEcho(t, "hang")
	hang.hangAll.Store(true)
	rm := prefixRule("m", "/", backend("a", 1, a))
	rm.Rule.Filters = []model.Filter{{Type: model.FilterMirror, Mirror: &model.Mirror{Backend: backend("hang", 1, hang), Percent: 100}}}
	tg := startGateway(t, onTransport(tr, Options{MaxMirrorsInFlight: 8}), httpConfig(freeAddr(t), rm))
	start := time.Now()
	for range 30 {
		if resp, rep := get(t, http.DefaultClient, "GET", tg.url+"/", nil); resp.StatusCode != 200 || rep.Name != "a" {
			t.Fatalf("primary %d", resp.StatusCode)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("30 requests took %v with a hanging mirror", d)
	}
	eventually(t, 5*time.Second, func() bool { return hang.hits.Load() >= 8 }, "mirror got no copies")
}

func resilienceCanaryRollback(t *testing.T, tr Options) {
	stable, canaryEcho := startEcho(t, "stable"), startEcho(t, "canary")
	canaryEcho.failAll.Store(true)
	cb := backend("canary", 50, canaryEcho)
	cb.Policy.Outlier.ConsecutiveFailures = 1000
	rm := prefixRule("canary", "/", backend("stable", 50, stable), cb)
	rm.Rule.Retry.Attempts = 0
	rm.Rule.Policy.CanaryAnalysis = &model.CanaryAnalysis{Backend: model.ServiceKey{Namespace: "default", Name: "canary"},
		Window: 10 * time.Second, MinRequests: 10, MaxErrorPercent: 5}
	reg := prometheus.NewRegistry()
	cfg := httpConfig(freeAddr(t), rm)
	tg := startGateway(t, onTransport(tr, Options{Registerer: reg}), cfg)
	eventually(t, 10*time.Second, func() bool {
		get(t, http.DefaultClient, "GET", tg.url+"/", nil)
		return len(tg.CanaryRollbacks()) == 1
	}, "canary never rolled back")
	for range 50 {
		if resp, rep := get(t, http.DefaultClient, "GET", tg.url+"/", nil); resp.StatusCode != 200 || rep.Name != "stable" {
			t.Fatalf("after rollback: %d %+v", resp.StatusCode, rep)
		}
	}
	if n := testutil.ToFloat64(tg.metrics.rollbacks.WithLabelValues("canary", "default/canary:80")); n != 1 {
		t.Fatalf("rollback metric %v", n)
	}
	// The rollback survives a reload of the same configuration.
	tg.sync(t, cfg)
	for range 20 {
		if _, rep := get(t, http.DefaultClient, "GET", tg.url+"/", nil); rep.Name != "stable" {
			t.Fatal("rollback lost on reload")
		}
	}
}

func resilienceSessionPersistence(t *testing.T, tr Options) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	rm := prefixRule("s", "/", backend("svc", 1, a, b))
	rm.Rule.Session = &model.SessionPersistence{CookieName: "sid"}
	tg := startGateway(t, onTransport(tr, Options{}), httpConfig(freeAddr(t), rm))
	resp, first := get(t, http.DefaultClient, "GET", tg.url+"/", nil)
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "sid" {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatal("no session cookie")
	}
	for range 10 {
		_, rep := get(t, http.DefaultClient, "GET", tg.url+"/", map[string]string{"Cookie": "sid=" + cookie.Value})
		if rep.Name != first.Name {
			t.Fatalf("session moved from %s to %s", first.Name, rep.Name)
		}
	}
}

func resilienceHashOnHeaderIsSticky(t *testing.T, tr Options) {
	a, b, c := startEcho(t, "a"), startEcho(t, "b"), startEcho(t, "c")
	be := backend("svc", 1, a, b, c)
	be.Policy.Algorithm = "Maglev"
	be.Policy.HashOn = model.HashOn{Header: "X-User"}
	tg := startGateway(t, onTransport(tr, Options{}), httpConfig(freeAddr(t), prefixRule("h", "/", be)))
	seen := map[string]bool{}
	for user := range 12 {
		hdr := map[string]string{"X-User": "user-" + strconv.Itoa(user)}
		_, first := get(t, http.DefaultClient, "GET", tg.url+"/", hdr)
		seen[first.Name] = true
		for range 5 {
			if _, rep := get(t, http.DefaultClient, "GET", tg.url+"/", hdr); rep.Name != first.Name {
				t.Fatalf("user %d moved from %s to %s", user, first.Name, rep.Name)
			}
		}
	}
	if len(seen) < 2 {
		t.Fatalf("12 users all hashed to %v", seen)
	}
}

func resilienceRetryReplaysSmallBodies(t *testing.T, tr Options) {
	tests := []struct {
		method        string
		nonIdempotent bool
	}{{"PUT", false}, {"POST", true}}
	for _, tc := range tests {
		t.Run(tc.method, func(t *testing.T) {
			good, bad := startEcho(t, "good"), startEcho(t, "bad")
			bad.failAll.Store(true)
			be := backend("svc", 1, good, bad)
			be.Policy.Outlier.ConsecutiveFailures = 1000
			rm := prefixRule("r", "/", be)
			rm.Rule.Retry.RetryNonIdempotent = tc.nonIdempotent
			tg := startGateway(t, onTransport(tr, Options{}), httpConfig(freeAddr(t), rm))
			for i := range 20 {
				body := "payload-" + strconv.Itoa(i)
				req, _ := http.NewRequest(tc.method, tg.url+"/", strings.NewReader(body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var rep echoReply
				_ = json.NewDecoder(resp.Body).Decode(&rep)
				resp.Body.Close()
				if resp.StatusCode != 200 || rep.Body != body {
					t.Fatalf("%s %d: status %d body %q", tc.method, i, resp.StatusCode, rep.Body)
				}
			}
		})
	}
}

func TestPanicModeSpreadsOverAll(t *testing.T) {
	eps := []*echoBackend{startEcho(t, "a"), startEcho(t, "b"), startEcho(t, "c"), startEcho(t, "d")}
	tests := []struct {
		name      string
		panicPct  int
		unhealthy int // the first n endpoints are ejected
		wantBad   bool
	}{
		{"one of four down: avoid it", 50, 1, false},
		{"three of four down: panic, spread over all", 50, 3, true},
		{"three of four down, panic off", 0, 3, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			be := backend("svc", 1, eps...)
			be.Policy.Outlier = model.OutlierDetection{ConsecutiveFailures: 1, BaseEjectionTime: time.Minute,
				MaxEjectionPercent: 100, PanicThresholdPercent: tc.panicPct}
			overlay, err := health.New(health.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(overlay.Close)
			overlay.Sync(t.Context(), snapshotOf(httpConfig("127.0.0.1:1", prefixRule("r", "/", be))))
			c := newCluster("svc", false)
			c.update(be, time.Now())
			st := c.state.Load()
			for _, ep := range st.eps[:tc.unhealthy] {
				overlay.ReportFailure(be.PortID, ep.ap, health.GatewayError)
			}
			bad := 0
			for range 400 {
				ep := c.pick(st, 0, 0, nil, overlay)
				if ep == nil {
					t.Fatal("no endpoint picked")
				}
				if !overlay.Healthy(be.PortID, ep.ap) {
					bad++
				}
			}
			if (bad > 0) != tc.wantBad {
				t.Fatalf("%d of 400 picks went to unhealthy endpoints", bad)
			}
		})
	}
}
