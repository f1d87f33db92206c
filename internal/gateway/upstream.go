package gateway

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/http1"
	"weir.dev/weir/internal/model"
)

// Health is the shared endpoint health the gateway reads and feeds: internal/health's
// *Overlay. servicePort is model.ServicePort.ID.
type Health interface {
	Healthy(servicePort string, ep netip.AddrPort) bool
	// Eligible is health.Eligible's rule over a port's endpoints: the healthy ones, or
	// all of them in panic mode.
	Eligible(servicePort string, eps []model.Endpoint) []model.Endpoint
	ReportSuccess(servicePort string, ep netip.AddrPort)
	ReportFailure(servicePort string, ep netip.AddrPort, kind health.FailureKind)
}

// endpoint is one backend address with its live load. It outlives Syncs while the
// address stays in its cluster.
type endpoint struct {
	ap    netip.AddrPort
	host  string // "ip:port" for the request URL
	id    uint64 // balance.KeyOf(ap)
	load  *balance.Load
	since time.Time // first seen, for slow start
}

// clusterState is an immutable view of a cluster's endpoints and their picker.
type clusterState struct {
	portID    string // model.ServicePort.ID: the health key
	eps       []*endpoint
	endpoints []model.Endpoint // eps as the model has them, for health.Eligible
	weights   []uint32         // each endpoint's weight from the EndpointSlice (weir.dev/weight)
	picker    balance.Picker
	rampUntil time.Time // slow start still ramps some endpoint until then
	builtAt   time.Time
}

// cluster is one backend Service port as the gateway sees it: endpoints, picker,
// breaker counters. Clusters outlive Syncs (keyed by Backend.ID) so that load,
// breaker and retry-budget state survive reloads.
type cluster struct {
	id  string
	h2c bool // part of the cluster's key: never changes

	policy atomic.Pointer[model.Policy]
	state  atomic.Pointer[clusterState]

	active   atomic.Int64 // requests in flight (breaker, retry budget)
	retrying atomic.Int64 // retries in flight
	pending  atomic.Int64 // attempts waiting for response headers (breaker)
	conns    atomic.Int64 // open upstream connections (breaker)
	// idleConns are the connections kept alive in the event loops' pools (part of conns).
	idleConns atomic.Int64

	rebuild sync.Mutex // one slow-start rebuild at a time
	// eps is the endpoint set by address, touched only by Sync (under Gateway.mu).
	eps map[netip.AddrPort]*endpoint
}

func newCluster(id string, h2c bool) *cluster {
	return &cluster{id: id, h2c: h2c, eps: map[netip.AddrPort]*endpoint{}}
}

// update takes a new backend definition. Called under Gateway.mu.
func (c *cluster) update(b *model.Backend, now time.Time) {
	pol := b.Policy
	if pol == nil {
		pol = model.DefaultPolicy()
	}
	c.policy.Store(pol)
	seen := make(map[netip.AddrPort]*endpoint, len(b.Endpoints))
	eps := make([]*endpoint, 0, len(b.Endpoints))
	weights := make([]uint32, 0, len(b.Endpoints))
	mEps := make([]model.Endpoint, 0, len(b.Endpoints))
	for _, e := range b.Endpoints {
		ap := e.AddrPort()
		if _, dup := seen[ap]; dup {
			continue
		}
		ep := c.eps[ap]
		if ep == nil {
			ep = &endpoint{ap: ap, host: ap.String(), id: balance.KeyOf(ap), load: &balance.Load{}, since: now}
		}
		seen[ap] = ep
		eps = append(eps, ep)
		weights = append(weights, e.Weight)
		mEps = append(mEps, e)
	}
	c.eps = seen
	st := c.build(b.PortID, eps, weights, pol, now)
	st.endpoints = mEps
	c.state.Store(st)
}

// build makes the state of eps with their weights. The state is immutable: a weight
// changes by a new state, never in place (the pickers read them without a lock).
func (c *cluster) build(portID string, eps []*endpoint, weights []uint32, pol *model.Policy, now time.Time) *clusterState {
	st := &clusterState{portID: portID, eps: eps, weights: weights, builtAt: now}
	bs := make([]balance.Backend, len(eps))
	for i, ep := range eps {
		w := weights[i]
		if w == 0 {
			w = 1
		}
		if ss := pol.SlowStart; ss != nil && ss.Window > 0 {
			age := now.Sub(ep.since)
			if age < ss.Window {
				// Scale to keep precision for small weights.
				w = balance.SlowStartWeight(w*100, age, ss.Window, ss.Aggression, ss.MinWeightPercent)
				if end := ep.since.Add(ss.Window); end.After(st.rampUntil) {
					st.rampUntil = end
				}
			} else {
				w *= 100
			}
		}
		bs[i] = balance.Backend{ID: ep.id, Weight: w, Load: ep.load}
	}
	alg := pol.Algorithm
	p, err := balance.New(alg, bs, balance.Options{MaglevTableSize: pol.MaglevTableSize, Seed: pol.MaglevSeed})
	if err != nil {
		p, _ = balance.New(balance.RoundRobin, bs, balance.Options{}) // never fails
	}
	st.picker = p
	return st
}

// current returns the cluster state, rebuilding the picker while slow start ramps
// (at most every 250 ms).
func (c *cluster) current(now time.Time) *clusterState {
	st := c.state.Load()
	if st.rampUntil.IsZero() || now.Sub(st.builtAt) < 250*time.Millisecond {
		return st
	}
	if !c.rebuild.TryLock() {
		return st
	}
	defer c.rebuild.Unlock()
	if cur := c.state.Load(); cur == st {
		mEps := st.endpoints
		st = c.build(st.portID, st.eps, st.weights, c.policy.Load(), now)
		st.endpoints = mEps
		c.state.Store(st)
	}
	return c.state.Load()
}

// pick chooses an endpoint among those not tried yet that health makes eligible
// (health.Eligible's rule, as the userspace proxy applies it: the healthy ones, or all
// in panic mode): the session endpoint when it is one, else the scheduler's choice. h
// nil: every endpoint is eligible. nil when none is left.
func (c *cluster) pick(st *clusterState, key uint64, session uint64, tried []*endpoint, h Health) *endpoint {
	n := len(st.eps)
	if n == 0 {
		return nil
	}
	var elig []bool // by index into st.eps, once an unhealthy endpoint was met
	usable := func(i int) bool {
		ep := st.eps[i]
		if slices.Contains(tried, ep) {
			return false
		}
		if h == nil || (elig == nil && h.Healthy(st.portID, ep.ap)) {
			return true // a healthy endpoint is always eligible
		}
		if elig == nil {
			elig = st.eligible(h)
		}
		return elig[i]
	}
	if session != 0 {
		for i, ep := range st.eps {
			if ep.id == session && usable(i) {
				return ep
			}
		}
	}
	for i := range 3 {
		idx := st.picker.Pick(key + uint64(i)*0x9e3779b97f4a7c15)
		if idx < 0 || idx >= n {
			break
		}
		if usable(idx) {
			return st.eps[idx]
		}
	}
	start := rand.IntN(n)
	for j := range n {
		if i := (start + j) % n; usable(i) {
			return st.eps[i]
		}
	}
	return nil
}

// eligible marks the endpoints that take new traffic, by health's rule.
func (st *clusterState) eligible(h Health) []bool {
	out := make([]bool, len(st.eps))
	es := h.Eligible(st.portID, st.endpoints)
	j := 0
	for i, ep := range st.eps {
		if j < len(es) && es[j].AddrPort() == ep.ap {
			out[i] = true
			j++
		}
	}
	return out
}

// retryOn is a compiled RetryPolicy.RetryOn.
type retryOn struct {
	connect, reset, refused, any5xx bool
	codes                           map[int]bool
}

func compileRetryOn(list []string) retryOn {
	r := retryOn{codes: map[int]bool{}}
	for _, s := range list {
		switch strings.ToLower(s) {
		case "connect-failure":
			r.connect = true
		case "reset":
			r.reset = true
		case "refused-stream":
			r.refused = true
		case "5xx":
			r.any5xx = true
		case "gateway-error":
			r.codes[502], r.codes[503], r.codes[504] = true, true, true
		default:
			if n, err := strconv.Atoi(s); err == nil {
				r.codes[n] = true
			}
		}
	}
	return r
}

func (r retryOn) status(code int) bool { return r.codes[code] || (r.any5xx && code >= 500) }

// errNoEndpoint is returned when a backend has no endpoint to send to.
var errNoEndpoint = errors.New("no endpoint available")

// errOverflow is returned when a backend's circuit breaker is full.
var errOverflow = errors.New("circuit breaker: upstream overflow")

// dial opens an upstream connection, counted against the cluster's maxConnections
// (the cluster comes from the request's context).
func (u *upstream) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	if st == nil || st.backend == nil || st.backend.cl == nil {
		return u.dialer.DialContext(ctx, network, addr)
	}
	cl := st.backend.cl
	if !cl.takeConn() {
		return nil, errOverflow
	}
	c, err := u.dialer.DialContext(ctx, network, addr)
	if err != nil {
		cl.conns.Add(-1)
		return nil, err
	}
	return &countedConn{Conn: c, n: &cl.conns}, nil
}

// takeConn counts a new upstream connection against the cluster's maxConnections;
// false (not counted) when the breaker is full.
func (c *cluster) takeConn() bool {
	return take(&c.conns, c.policy.Load().CircuitBreaker.MaxConnections)
}

// take counts one more in one of a cluster's breakers, n, against its limit (the
// model fills every limit); false, and not counted, when the breaker is full.
func take(n *atomic.Int64, limit int) bool {
	if n.Add(1) > int64(limit) {
		n.Add(-1)
		return false
	}
	return true
}

// countedConn gives its slot back to the cluster's connection count when closed.
type countedConn struct {
	net.Conn
	n    *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.n.Add(-1) })
	return c.Conn.Close()
}

// CloseWrite half-closes the connection (TLS passthrough passes half-closes on).
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

// upstream is the RoundTripper the reverse proxy uses: it picks an endpoint for each
// attempt and retries as the route's policy allows.
type upstream struct {
	g       *Gateway
	h1, h2c *http.Transport
	dialer  *net.Dialer
}

func newUpstream(g *Gateway) *upstream {
	u := &upstream{g: g, dialer: &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}}
	u.h1 = &http.Transport{
		DialContext:         u.dial,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		WriteBufferSize:     16 << 10,
		ReadBufferSize:      16 << 10,
		// One bound on response heads on every path (the loops: http1.MaxResponseHead).
		MaxResponseHeaderBytes: http1.MaxResponseHead,
	}
	u.h2c = &http.Transport{
		DialContext:            u.dial,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    64,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: http1.MaxResponseHead,
	}
	u.h2c.Protocols = new(http.Protocols)
	u.h2c.Protocols.SetUnencryptedHTTP2(true)
	return u
}

// transport is the client of cl's endpoints: HTTP/1.1, or h2c.
func (u *upstream) transport(cl *cluster) *http.Transport {
	if cl.h2c {
		return u.h2c
	}
	return u.h1
}

func (u *upstream) close() {
	u.h1.CloseIdleConnections()
	u.h2c.CloseIdleConnections()
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// replayable reports whether a request that may have reached the backend can be sent
// again on a new connection outside the retry policy: its method is idempotent
// (RFC 9110 §9.2.2, less PUT and DELETE: http.Transport's rule) or it carries an
// idempotency key.
func replayable(r *http.Request) bool {
	_, key := r.Header["Idempotency-Key"]
	_, xkey := r.Header["X-Idempotency-Key"]
	return (idempotent(r.Method) && r.Method != http.MethodPut && r.Method != http.MethodDelete) || key || xkey
}

// failure classifies a transport error for health reporting and retry-on.
func failure(err error) (kind health.FailureKind, connect, refused bool) {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return health.ConnectFailure, true, false
	}
	if strings.Contains(err.Error(), "REFUSED_STREAM") {
		return health.GatewayError, false, true
	}
	return health.GatewayError, false, false
}

// attempts is one request's way through its backend's endpoints, the part of the
// exchange (reqState) both transports drive: which endpoint each try goes to, and
// every counter a try holds — the pending-requests breaker, the endpoint's load
// record, the retries in backoff — with the health reports and retry decisions
// (retry-on, attempts, a fresh endpoint, the retry budget). What a try holds is noted
// here and given back by its own outcome (answered, failed, end) or, whatever way the
// request ends (client gone, timeout, overflow), by release from Gateway.finish.
type attempts struct {
	u        *upstream
	st       *reqState
	cl       *cluster
	cs       *clusterState
	pol      compiledRetry
	canRetry bool
	n        int // tries begun
	triedBuf [4]*endpoint
	tried    []*endpoint
	next     *endpoint // the endpoint a retry goes to
	ep       *endpoint // the current try's
	t0       time.Time // when the current try began
	start    time.Time
	// What the request holds now: a pending-requests slot (the try waits for its
	// response head), the endpoint's load record, a retry in backoff.
	pending, loaded, backingOff bool
}

// init prepares the tries of a request to st's backend; replayable: its body can be
// sent again.
func (a *attempts) init(u *upstream, st *reqState, method string, replayable, upgrade bool, now time.Time) {
	cl := st.backend.cl
	*a = attempts{u: u, st: st, cl: cl, cs: cl.current(now), pol: st.rule.retry, start: now}
	a.tried = a.triedBuf[:0]
	a.canRetry = replayable && !upgrade && (idempotent(method) || a.pol.policy.RetryNonIdempotent)
}

// perTry is the timeout of one try: the rule's backendRequest timeout or the retry
// policy's per-try timeout, whichever is shorter (0: none).
func (a *attempts) perTry() time.Duration {
	perTry := a.st.rule.rule.BackendTimeout
	if pt := a.pol.policy.PerTryTimeout; pt > 0 && (perTry == 0 || pt < perTry) {
		perTry = pt
	}
	return perTry
}

// begin starts a try: it picks the endpoint (the one chosen for a retry, else the
// scheduler's, skipping those tried and unhealthy ones), admits the try past the
// pending-requests breaker (errOverflow) and starts the endpoint's load record.
func (a *attempts) begin() (*endpoint, error) {
	ep := a.next
	if ep == nil {
		ep = a.cl.pick(a.cs, a.st.hashKey, a.st.session, a.tried, a.u.g.health)
	}
	a.next = nil
	if ep == nil {
		if a.n == 0 {
			return nil, errNoEndpoint
		}
		return nil, a.st.lastErr
	}
	a.n++
	a.tried = append(a.tried, ep)
	a.st.endpoint = ep
	a.ep = ep
	if !take(&a.cl.pending, a.cl.policy.Load().CircuitBreaker.MaxPendingRequests) {
		return nil, errOverflow
	}
	ep.load.Begin()
	a.pending, a.loaded = true, true
	a.t0 = a.start // the first try starts with the request; a retry after its backoff
	if a.n > 1 {
		a.t0 = time.Now()
	}
	return ep, nil
}

// release gives back whatever the request still holds, without a health report: the
// end of every request (Gateway.finish), and of a try the client ended or the
// breaker refused.
func (a *attempts) release() {
	if a.pending {
		a.pending = false
		a.cl.pending.Add(-1)
	}
	if a.loaded {
		a.loaded = false
		a.ep.load.End()
	}
	a.backoff(false)
}

// failed records a try that ended without a response: the load record ends, the
// endpoint's health hears of it. It reports whether to retry; timedOut: the try's
// own timeout passed (not the request's); done: the request itself is over.
func (a *attempts) failed(err error, timedOut, done bool) bool {
	a.release()
	kind, connect, refused := failure(err)
	if !done {
		// A request that ended (the client went away, its own deadline passed) says
		// nothing of the endpoint.
		a.u.g.health.ReportFailure(a.cs.portID, a.ep.ap, kind)
	}
	a.st.lastErr = err
	var retry bool
	switch {
	case connect:
		retry = a.pol.on.connect
	case refused:
		retry = a.pol.on.refused
	case timedOut:
		retry = a.pol.on.status(504) || a.pol.on.reset
	default:
		retry = a.pol.on.reset
	}
	return a.mayRetry(retry, done)
}

// answered records a try's response status and reports whether to retry instead of
// passing the response on (the try's load record ends then; else it goes on until
// the body is done: end).
func (a *attempts) answered(code int, done bool) bool {
	a.pending = false
	a.cl.pending.Add(-1)
	hl := a.u.g.health
	switch {
	case code == 502 || code == 503 || code == 504:
		hl.ReportFailure(a.cs.portID, a.ep.ap, health.GatewayError)
	case code >= 500:
		hl.ReportFailure(a.cs.portID, a.ep.ap, health.ServerError)
	default:
		hl.ReportSuccess(a.cs.portID, a.ep.ap)
	}
	retry := a.mayRetry(a.pol.on.status(code), done)
	if retry {
		a.release()
	}
	return retry
}

// replayed counts a request sent again on a new connection after its kept-alive one
// failed (upConn.failed) as a try.
func (a *attempts) replayed() { a.n++ }

// end closes the current try's load record once its response is done (for
// peak-EWMA, with the try's latency).
func (a *attempts) end() {
	if a.loaded {
		a.loaded = false
		a.ep.load.EndWithLatency(time.Since(a.t0))
	}
}

// backoff counts a retry waiting for its backoff (on) in the cluster's retries in
// flight (the retry budget), or its end.
func (a *attempts) backoff(on bool) {
	if a.backingOff != on {
		a.backingOff = on
		if on {
			a.cl.retrying.Add(1)
		} else {
			a.cl.retrying.Add(-1)
		}
	}
}

// mayRetry admits a retry: allowed by retry-on and the method, attempts left, an
// eligible endpoint (preferably one not tried yet), and room in the retry budget.
func (a *attempts) mayRetry(retry, done bool) bool {
	if !retry || !a.canRetry || a.n > a.pol.policy.Attempts || done {
		return false
	}
	// An eligible endpoint not tried yet, else one tried before: attempts counts tries,
	// not distinct endpoints (a backend with one endpoint is retried on it).
	if a.next = a.cl.pick(a.cs, a.st.hashKey, a.st.session, a.tried, a.u.g.health); a.next == nil {
		if a.next = a.cl.pick(a.cs, a.st.hashKey, a.st.session, nil, a.u.g.health); a.next == nil {
			return false
		}
	}
	if !a.u.budget(a.cl, a.pol.policy) {
		a.next = nil
		return false
	}
	a.st.backend.metrics.retries.Inc()
	return true
}

// backoffDelay is the wait before retry number n (1, 2 …): base × 2^(n-1) with full
// jitter, capped at 10 × base.
func (a *attempts) backoffDelay() time.Duration {
	base := a.pol.policy.BackoffBase
	d := min(base<<min(a.n-1, 10), 10*base)
	return base/2 + time.Duration(rand.Int64N(int64(d-base/2)+1))
}

// RoundTrip is net/http's side of the tries (the loops drive the same attempts from
// their exchange): the request is sent to each try's endpoint in turn, its counters
// held in st.a.
func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	st, _ := req.Context().Value(stateKey{}).(*reqState)
	if st == nil || st.backend == nil || st.backend.cl == nil {
		return nil, errNoEndpoint
	}
	cl := st.backend.cl
	upgrade := req.Header.Get("Upgrade") != ""
	bodyless := req.Body == nil || req.Body == http.NoBody
	rt := u.transport(cl)
	a := &st.a
	a.init(u, st, req.Method, bodyless || req.GetBody != nil, upgrade, time.Now())
	perTry := a.perTry()
	for {
		ep, err := a.begin()
		if err != nil {
			return nil, err
		}
		req.URL.Host = ep.host
		// The try's own context, when it has a timeout, ends with the try or its body.
		ctx, cancel := req.Context(), context.CancelFunc(func() {})
		if perTry > 0 && !upgrade {
			ctx, cancel = context.WithTimeout(ctx, perTry)
		}
		var hw *headWatch
		if d := st.rule.rule.ResponseTimeout; d > 0 {
			if ctx == req.Context() {
				ctx, cancel = context.WithCancel(ctx)
			}
			hw = &headWatch{d: d, cancel: cancel}
			st.hw.Store(hw) // started by the request's trace (reqState.wroteRequest)
		}
		areq := req
		if ctx != req.Context() {
			areq = req.WithContext(ctx)
		}
		resp, err := rt.RoundTrip(areq)
		if hw != nil && hw.stop() {
			if err == nil {
				drain(resp.Body)
				resp = nil
			}
			err = context.DeadlineExceeded // the try's own timeout: 504, or a retry
		}
		var retry bool
		switch {
		case errors.Is(err, errOverflow): // the connection breaker, when dialing
			cancel()
			return nil, err
		case err != nil:
			cancel()
			if cerr := st.body.failed(); cerr != nil {
				return nil, cerr // the client's fault, not the endpoint's (finish releases)
			}
			timedOut := errors.Is(err, context.DeadlineExceeded) && req.Context().Err() == nil
			if retry = a.failed(err, timedOut, req.Context().Err() != nil); !retry {
				return nil, err
			}
		case a.answered(resp.StatusCode, req.Context().Err() != nil):
			drain(resp.Body)
			cancel()
		case resp.StatusCode == http.StatusSwitchingProtocols:
			a.release() // the tunnel is not a request in flight
			return resp, nil
		default:
			st.tracked = trackedBody{ReadCloser: resp.Body, a: a, cancel: cancel}
			resp.Body = &st.tracked
			return resp, nil
		}
		a.backoff(true)
		t := time.NewTimer(a.backoffDelay())
		select {
		case <-t.C:
		case <-req.Context().Done():
		}
		t.Stop()
		a.backoff(false)
		if err := req.Context().Err(); err != nil {
			return nil, err
		}
		if !bodyless {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req.Body = body
		}
	}
}

// headWatch fails a try whose response head has not come within the rule's
// ResponseTimeout of its request being written (net/http's side of the loops'
// headTimer).
type headWatch struct {
	d      time.Duration
	cancel context.CancelFunc
	mu     sync.Mutex
	t      *time.Timer
	done   bool // the try is over (stop)
	late   bool // the timeout passed first
}

func (h *headWatch) wrote(httptrace.WroteRequestInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.done {
		h.t = time.AfterFunc(h.d, h.expire)
	}
}

func (h *headWatch) expire() {
	h.mu.Lock()
	if h.done {
		h.mu.Unlock()
		return
	}
	h.late = true
	h.mu.Unlock()
	h.cancel()
}

// stop ends the watch once the try has a response or an error, and reports whether
// the timeout passed first.
func (h *headWatch) stop() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = true
	if h.t != nil {
		h.t.Stop()
	}
	return h.late
}

// budget admits a retry when retries in flight stay under BudgetPercent of the
// requests in flight, or under MinRetryConcurrency.
func (u *upstream) budget(cl *cluster, p model.RetryPolicy) bool {
	inFlight := cl.retrying.Load()
	return inFlight < int64(p.MinRetryConcurrency) || inFlight*100 < int64(p.BudgetPercent)*cl.active.Load()
}

func drain(b io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, b, 64<<10)
	_ = b.Close()
}

// trackedBody ends an endpoint's load record (with its latency, for peak-EWMA) when
// the response body is finished.
type trackedBody struct {
	io.ReadCloser
	a      *attempts
	cancel context.CancelFunc
	done   atomic.Bool
}

func (b *trackedBody) finish() {
	if b.done.CompareAndSwap(false, true) {
		b.a.end()
		b.cancel()
	}
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		defer b.finish()
	}
	return n, err
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.finish()
	return err
}
