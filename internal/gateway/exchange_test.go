package gateway

import (
	"bufio"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"weir.dev/weir/internal/model"
)

// Tests of the exchange flow every transport shares: each runs over both transports
// (helpers_test.go's transports) against raw loopback backends.

// TestReplayOnlyWhenSafe: a POST without a body, sent on a kept-alive upstream
// connection that the backend reads and then closes, reaches the backend exactly once
// (http.Transport's rule: only idempotent requests, or those with an Idempotency-Key,
// or those of which nothing was written, go again on a new connection). A GET in the
// same spot is replayed, and answered.
func TestReplayOnlyWhenSafe(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			var posts, gets atomic.Int64
			// Every connection: the first request is answered and the connection kept;
			// the second is read and the connection closed without an answer.
			ep := serveConns(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					switch req.Method {
					case http.MethodPost:
						posts.Add(1)
					case http.MethodGet:
						gets.Add(1)
					}
					if i > 0 {
						return
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			be := backend("b", 1)
			be.Endpoints = []model.Endpoint{ep}
			be.Policy.Outlier.ConsecutiveFailures = 1000
			tg := startGateway(t, tr.opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))

			c, err := net.Dial("tcp", tg.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			roundTrip := func(raw string) int {
				t.Helper()
				if _, err := io.WriteString(c, raw); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				return resp.StatusCode
			}
			if code := roundTrip("GET /first HTTP/1.1\r\nHost: h\r\n\r\n"); code != 200 {
				t.Fatalf("first GET: %d", code)
			}
			// The POST goes on the kept-alive connection, which the backend then drops.
			if code := roundTrip("POST /pay HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"); code != http.StatusBadGateway {
				t.Fatalf("POST: %d, want 502", code)
			}
			if n := posts.Load(); n != 1 {
				t.Fatalf("the backend saw the POST %d times, want once", n)
			}
			// A GET in the same spot goes again on a new connection, where it is the
			// first request and answered.
			if code := roundTrip("GET /first HTTP/1.1\r\nHost: h\r\n\r\n"); code != 200 {
				t.Fatalf("second GET: %d", code)
			}
			if code := roundTrip("GET /again HTTP/1.1\r\nHost: h\r\n\r\n"); code != 200 {
				t.Fatalf("GET on a dropped connection: %d, want 200 after a replay", code)
			}
			if n := gets.Load(); n < 3 {
				t.Fatalf("the backend saw %d GETs, want the replay too", n)
			}
		})
	}
}

// TestClientFaultsDoNotEject: requests that fail by the client's doing — a malformed
// chunked body (answered 400, not 502) and a client that goes away before its answer
// (499) — are not the endpoint's failures: ten of each leave a healthy endpoint in
// rotation, where three endpoint failures would eject it.
func TestClientFaultsDoNotEject(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			a := startEcho(t, "a")
			be := backend("b", 1, a)
			be.Policy.Outlier.ConsecutiveFailures = 3
			be.Policy.Outlier.ConsecutiveGatewayErrors = 3
			tg := startGateway(t, tr.opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
			for i := range 10 {
				resp, _ := rawResponse(t, tg.addr, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n")
				if resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("malformed chunked body %d: %d, want 400", i, resp.StatusCode)
				}
			}
			for range 10 {
				c, err := net.Dial("tcp", tg.addr)
				if err != nil {
					t.Fatal(err)
				}
				before := a.hits.Load()
				_, _ = io.WriteString(c, "GET /delay/5s HTTP/1.1\r\nHost: h\r\n\r\n")
				eventually(t, 5*time.Second, func() bool { return a.hits.Load() > before }, "request did not reach the backend")
				_ = c.Close()
			}
			eventually(t, 5*time.Second, func() bool {
				tg.mu.Lock()
				defer tg.mu.Unlock()
				for _, cl := range tg.clusters {
					if cl.active.Load() != 0 {
						return false
					}
				}
				return true
			}, "abandoned requests still in flight")
			if !tg.health.Healthy(be.PortID, a.addr) {
				t.Fatal("the endpoint was ejected for the clients' faults")
			}
		})
	}
}

// rawResponse sends one raw request on a new connection and reads its response.
func rawResponse(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	resps, bodies, _ := rawExchange(t, addr, raw, 1, http.MethodPost)
	return resps[0], string(bodies[0])
}

// TestResponseTimeout: a backend that takes the request and never answers is given up
// after the rule's ResponseTimeout (the model's default is 60 s), answered 504.
func TestResponseTimeout(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			be := backend("slow", 1)
			be.Endpoints = []model.Endpoint{slowBackend(t, time.Minute)}
			be.Policy.Outlier.ConsecutiveFailures = 1000
			rm := prefixRule("t", "/", be)
			rm.Rule.ResponseTimeout = 150 * time.Millisecond
			tg := startGateway(t, tr.opts, httpConfig(freeAddr(t), rm))
			for _, raw := range []string{
				"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
				"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok",
			} {
				start := time.Now()
				resp, _ := rawResponse(t, tg.addr, raw)
				if resp.StatusCode != http.StatusGatewayTimeout || time.Since(start) > 5*time.Second {
					t.Fatalf("%q: %d after %v, want 504 soon after 150ms", raw, resp.StatusCode, time.Since(start))
				}
			}
		})
	}
	if d := model.DefaultPolicy().ResponseTimeout; d != 60*time.Second {
		t.Fatalf("default response timeout %v, want 60s", d)
	}
}

// TestSlowBodies: clients that send their bodies slowly hold no breaker slot (the body
// is read before the request takes one), and are answered 408 once the body timeout
// passes between two reads.
func TestSlowBodies(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			a := startEcho(t, "a")
			be := backend("b", 1, a)
			be.Policy.CircuitBreaker.MaxRequests = 2
			opts := tr.opts
			opts.BodyTimeout = 300 * time.Millisecond
			tg := startGateway(t, opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
			var slow []net.Conn
			for range 5 {
				c, err := net.Dial("tcp", tg.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nx")
				slow = append(slow, c)
			}
			// Meanwhile ordinary requests pass the breaker.
			for i := range 3 {
				resp, _ := rawResponse(t, tg.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
				if resp.StatusCode != 200 {
					t.Fatalf("GET %d beside slow bodies: %d", i, resp.StatusCode)
				}
			}
			for i, c := range slow {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("slow body %d: %v", i, err)
				}
				if resp.StatusCode != http.StatusRequestTimeout {
					t.Fatalf("slow body %d: %d, want 408", i, resp.StatusCode)
				}
			}
		})
	}
}

// TestPassthroughCountsAgainstBreaker: TLS connections sent on to a backend count
// against its maxConnections, as HTTP's upstream connections do: past the limit a new
// connection is closed without reaching the backend, and one that ends gives its slot
// back.
func TestPassthroughCountsAgainstBreaker(t *testing.T) {
	crt, key := certPEM(t, "a.example.com")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(crt)
	be := tcpBackend("a", 1, startTCPEcho(t, "a"))
	be.Policy.CircuitBreaker.MaxConnections = 1
	addr := freeAddr(t)
	startGateway(t, Options{}, &model.GatewayConfig{Listeners: []*model.Listener{{Address: addr, Protocol: model.ProtocolTLS,
		Sections: []*model.Section{{Name: "default/gw/a", Terminate: true, Certificates: []model.Certificate{{Source: "default/a", CertPEM: crt, KeyPEM: key}},
			Passthrough: []*model.PassthroughRoute{tlsRoute("a", []string{""}, be)}}}}}})
	first, _, _, err := terminateDial(t, addr, "a.example.com", pool)
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	if c, _, _, err := terminateDial(t, addr, "a.example.com", pool); err == nil {
		c.Close()
		t.Fatal("a second connection reached the backend past maxConnections 1")
	}
	first.Close()
	eventually(t, 5*time.Second, func() bool {
		c, _, _, err := terminateDial(t, addr, "a.example.com", pool)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "the slot of a closed connection was not given back")
}

// TestRetrySameEndpointWhenAlone: attempts counts tries, not endpoints: a backend
// with one endpoint that answers 503 once is retried on it, on both transports.
func TestRetrySameEndpointWhenAlone(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			var n atomic.Int64
			ep := serveConns(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if n.Add(1) == 1 {
						_, _ = io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
						continue
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			be := backend("one", 1)
			be.Endpoints = []model.Endpoint{ep}
			be.Policy.Outlier.ConsecutiveFailures = 1000
			tg := startGateway(t, tr.opts, httpConfig(freeAddr(t), prefixRule("r", "/", be)))
			if resp, _ := rawResponse(t, tg.addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 || n.Load() != 2 {
				t.Fatalf("%d after %d tries, want 200 after 2", resp.StatusCode, n.Load())
			}
		})
	}
}

// counters is everything the proxy core and the loops count.
type counters struct {
	active, pending, retrying, conns, idle, epLoad, open, hlLoad int64
}

// counters reads them, after closing http.Transport's kept-alive connections (so that
// the clusters' connection counts are the loops' idle connections alone).
func (tg *testGateway) counters(t *testing.T) counters {
	t.Helper()
	tg.up.close()
	var lc counters
	tg.mu.Lock()
	defer tg.mu.Unlock()
	for _, cl := range tg.clusters {
		lc.active += cl.active.Load()
		lc.pending += cl.pending.Load()
		lc.retrying += cl.retrying.Load()
		lc.conns += cl.conns.Load()
		for _, ep := range cl.eps {
			lc.epLoad += ep.load.Active()
		}
	}
	if l := tg.listeners[tg.addr]; l != nil && l.loops != nil {
		lc.open = l.loops.open.Load()
	}
	if tg.loops != nil {
		var idle atomic.Int64
		tg.loops.onLoops(func(hl *h1Loop) {
			for _, list := range hl.idle {
				idle.Add(int64(len(list)))
			}
		})
		lc.idle = idle.Load()
		for _, hl := range tg.loops.loops {
			lc.hlLoad += hl.load.Load()
		}
	}
	return lc
}

// settled waits until nothing is held: no request, try, retry or load record in
// flight, no connection on the loops, and no upstream connection but the loops' idle
// ones.
func (tg *testGateway) settled(t *testing.T) {
	t.Helper()
	var lc counters
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		lc = tg.counters(t)
		if lc.active == 0 && lc.pending == 0 && lc.retrying == 0 && lc.epLoad == 0 && lc.open == 0 && lc.hlLoad == 0 && lc.conns == lc.idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counters did not settle: %+v", lc)
		}
	}
}

// TestCountersSettle: on every way an exchange can end, over both transports —
// success, 5xx retried, connect failure retried, per-try and request timeouts, the
// client going away during the head, the body, the backoff or its own upload, each
// of the three breakers overflowing, a replay on a new connection (and a POST that may
// not be replayed), a malformed response, a bad chunk, a backend that closes early —
// every counter the proxy core holds (breaker slots, pending tries, retries in
// backoff, endpoint load, upstream connections) and the loops' connection counts come
// back to zero once the client is gone.
func TestCountersSettle(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	canned := cannedBackend(t, map[string]string{
		"/close-bad":     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
		"/close-short":   "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nshort",
		"/close-garbage": "HTTP/1.1 2x0 OK\r\n\r\n",
		"/close-101":     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
		"/close-silent":  "", // read, then the connection closes without an answer
	})
	dead := freeAddr(t) // nothing listens: connection refused
	deadAP := netip.MustParseAddrPort(dead)
	deadEP := model.Endpoint{Addr: deadAP.Addr(), Port: int32(deadAP.Port()), Ready: true, Serving: true, Weight: 1}
	cannedOnly := func(be *model.Backend, r *model.Rule) { be.Endpoints = []model.Endpoint{canned} }
	for _, tc := range []struct {
		name string
		req  string // the request (a GET of this path when it has no space)
		// pre: a request answered first on the same connection; hold: a path requested
		// on another connection, kept in flight while req is sent.
		pre, hold string
		setup     func(be *model.Backend, r *model.Rule)
		// gone: the client closes its connection after this long (0: it reads the answer)
		gone time.Duration
		want int // the status, when the client reads the answer; -1: cut short
	}{
		{name: "success", req: "/x", want: 200},
		{name: "5xx retried", req: "/status/503", want: 503, setup: func(be *model.Backend, r *model.Rule) {
			r.Retry.RetryOn, r.Retry.Attempts, r.Retry.BackoffBase = []string{"5xx"}, 2, time.Millisecond
		}},
		{name: "connect failure retried", req: "/x", want: 200, setup: func(be *model.Backend, r *model.Rule) {
			be.Endpoints = append([]model.Endpoint{deadEP}, be.Endpoints[:1]...)
			r.Retry.RetryOn, r.Retry.Attempts, r.Retry.BackoffBase = []string{"connect-failure"}, 2, time.Millisecond
		}},
		{name: "per-try timeout", req: "/delay/3s", want: 504, setup: func(be *model.Backend, r *model.Rule) {
			r.Retry.PerTryTimeout, r.Retry.RetryOn, r.Retry.Attempts, r.Retry.BackoffBase = 100*time.Millisecond, []string{"gateway-error"}, 2, time.Millisecond
		}},
		{name: "response timeout", req: "/hang", want: 504, setup: func(be *model.Backend, r *model.Rule) { r.ResponseTimeout = 100 * time.Millisecond }},
		{name: "request timeout", req: "/hang", want: 504, setup: func(be *model.Backend, r *model.Rule) { r.RequestTimeout = 100 * time.Millisecond }},
		{name: "request timeout during backoff", req: "/status/503", want: 504, setup: func(be *model.Backend, r *model.Rule) {
			r.RequestTimeout = 150 * time.Millisecond
			r.Retry.RetryOn, r.Retry.Attempts, r.Retry.BackoffBase = []string{"5xx"}, 2, 2*time.Second
		}},
		{name: "client gone during head", req: "/hang", gone: 150 * time.Millisecond},
		{name: "client gone during body", req: "/stream", gone: 150 * time.Millisecond},
		{name: "client gone during backoff", req: "/status/503", gone: 150 * time.Millisecond, setup: func(be *model.Backend, r *model.Rule) {
			r.Retry.RetryOn, r.Retry.Attempts, r.Retry.BackoffBase = []string{"5xx"}, 2, 2*time.Second
		}},
		{name: "client gone during connect retry", req: "/hang", gone: 150 * time.Millisecond, setup: func(be *model.Backend, r *model.Rule) {
			be.Endpoints = append([]model.Endpoint{deadEP}, be.Endpoints[:1]...)
			r.Retry.RetryOn, r.Retry.Attempts, r.Retry.BackoffBase = []string{"connect-failure"}, 2, time.Millisecond
		}},
		{name: "client gone during its upload", req: "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", gone: 150 * time.Millisecond},
		{name: "request breaker overflow", req: "/x", hold: "/hang", want: 503, setup: func(be *model.Backend, r *model.Rule) {
			be.Policy.CircuitBreaker.MaxRequests = 1
		}},
		{name: "pending breaker overflow", req: "/x", hold: "/hang", want: 503, setup: func(be *model.Backend, r *model.Rule) {
			be.Policy.CircuitBreaker.MaxPendingRequests = 1
		}},
		{name: "connection breaker overflow", req: "/x", hold: "/hang", want: 503, setup: func(be *model.Backend, r *model.Rule) {
			be.Policy.CircuitBreaker.MaxConnections = 1
		}},
		{name: "replayed", pre: "/x", req: "/close-silent", want: 502, setup: cannedOnly},
		{name: "not replayed", pre: "/x", req: "POST /close-silent HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", want: 502, setup: cannedOnly},
		{name: "malformed status line", req: "/close-garbage", want: 502, setup: cannedOnly},
		{name: "101 not asked for", req: "/close-101", want: 502, setup: cannedOnly},
		{name: "bad chunk", req: "/close-bad", want: -1, setup: cannedOnly},
		{name: "body cut short", req: "/close-short", want: -1, setup: cannedOnly},
	} {
		for _, tr := range transports {
			t.Run(tc.name+"/"+tr.name, func(t *testing.T) {
				be := backend("ab", 1, a, b)
				be.Policy.Outlier.ConsecutiveFailures = 1000
				rm := prefixRule("r", "/", be)
				if tc.setup != nil {
					tc.setup(be, rm.Rule)
				}
				tg := startGateway(t, tr.opts, httpConfig(freeAddr(t), rm))
				raw := func(req string) string {
					if !strings.Contains(req, " ") {
						return "GET " + req + " HTTP/1.1\r\nHost: h\r\n\r\n"
					}
					return req
				}
				dial := func() net.Conn {
					c, err := net.Dial("tcp", tg.addr)
					if err != nil {
						t.Fatal(err)
					}
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					return c
				}
				var held net.Conn
				if tc.hold != "" {
					held = dial()
					h := held
					before := a.hits.Load() + b.hits.Load()
					_, _ = io.WriteString(h, raw(tc.hold))
					eventually(t, 5*time.Second, func() bool { return a.hits.Load()+b.hits.Load() > before }, "held request did not reach the backend")
				}
				c := dial()
				br := bufio.NewReader(c)
				if tc.pre != "" {
					_, _ = io.WriteString(c, raw(tc.pre))
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
				}
				_, _ = io.WriteString(c, raw(tc.req))
				if tc.gone > 0 {
					time.Sleep(tc.gone) // the request is under way (not an assertion)
				} else {
					resp, err := http.ReadResponse(br, nil)
					switch {
					case tc.want < 0: // cut short: any outcome but a clean answer
						if err == nil {
							if _, err = io.Copy(io.Discard, resp.Body); err == nil {
								t.Fatalf("%s: a whole answer (%d), want it cut short", tc.req, resp.StatusCode)
							}
						}
					case err != nil:
						t.Fatalf("%s: %v", tc.req, err)
					case resp.StatusCode != tc.want:
						t.Fatalf("%s: %d, want %d", tc.req, resp.StatusCode, tc.want)
					}
				}
				_ = c.Close()
				if held != nil {
					_ = held.Close()
				}
				tg.settled(t)
			})
		}
	}
}
