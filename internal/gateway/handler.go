package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/gateway/router"
	"weir.dev/weir/internal/http1"
	"weir.dev/weir/internal/model"
)

// ruleRuntime is a route rule ready to serve: its backends' clusters, metrics and
// the policy state that outlives Syncs (limiter, canary).
type ruleRuntime struct {
	rule     *model.Rule
	backends []*backendRuntime
	retry    compiledRetry
	limiter  *limiter
	canary   *canary
	canaryAt int // index of the canary backend
	hasResp  bool
	spread   balance.Split // the weighted choice of a backend
	loopable bool          // the event loops may serve it: HTTP/1.1 backends
	cors     *model.CORS
	mirrors  []*mirrorRuntime
}

type compiledRetry struct {
	policy model.RetryPolicy
	on     retryOn
}

type backendRuntime struct {
	b       *model.Backend
	cl      *cluster // nil when the backend is invalid
	metrics *routeMetrics
	hashOn  model.HashOn
	hashing bool
}

type mirrorRuntime struct {
	cl      *cluster
	percent float64
}

// builder turns a GatewayConfig into runtimes during one Sync, reusing the state
// that must outlive it.
type builder struct {
	g        *Gateway
	now      time.Time
	rules    map[*model.Rule]*ruleRuntime
	clusters map[string]*cluster
	limiters map[string]*limiter
	canaries map[string]*canary
	series   map[[2]string]bool // (route, backend) label pairs in use
}

func (b *builder) cluster(be *model.Backend) *cluster {
	if be.Invalid {
		return nil
	}
	key := be.ID
	if be.H2C {
		key += "|h2c"
	}
	if c := b.clusters[key]; c != nil {
		return c
	}
	c := b.g.clusters[key]
	if c == nil {
		c = newCluster(key, be.H2C)
	}
	c.update(be, b.now)
	b.clusters[key] = c
	return c
}

func (b *builder) rule(r *model.Rule) *ruleRuntime {
	if rr := b.rules[r]; rr != nil {
		return rr
	}
	rr := &ruleRuntime{rule: r, canaryAt: -1}
	rp := r.Retry
	rr.retry = compiledRetry{policy: rp, on: compileRetryOn(rp.RetryOn)}
	for _, be := range r.Backends {
		br := &backendRuntime{b: be, cl: b.cluster(be), metrics: b.g.metrics.forRoute(r.ID, be.ID)}
		b.series[[2]string{r.ID, be.ID}] = true
		if be.Policy != nil && be.Policy.Algorithm.Hashing() {
			br.hashing = true
			br.hashOn = be.Policy.HashOn
		}
		rr.backends = append(rr.backends, br)
	}
	rr.loopable = true
	for _, br := range rr.backends {
		if br.cl != nil && br.cl.h2c {
			rr.loopable = false
		}
	}
	for _, f := range r.Filters {
		switch f.Type {
		case model.FilterResponseHeaders:
			rr.hasResp = true
		case model.FilterCORS:
			rr.cors = f.CORS
		case model.FilterMirror:
			if cl := b.cluster(f.Mirror.Backend); cl != nil {
				rr.mirrors = append(rr.mirrors, &mirrorRuntime{cl: cl, percent: f.Mirror.Percent})
			}
		}
	}
	if pol := r.Policy; pol != nil {
		if pol.RateLimit != nil && pol.RateLimit.Requests > 0 {
			l := b.g.limiters[r.ID]
			if l == nil || !l.same(*pol.RateLimit) {
				l = newLimiter(*pol.RateLimit)
			}
			b.limiters[r.ID] = l
			rr.limiter = l
		}
		if ca := pol.CanaryAnalysis; ca != nil && ca.Backend.Name != "" {
			for i, be := range r.Backends {
				if be.Service.Name != ca.Backend.Name || be.Service.Namespace != ca.Backend.Namespace {
					continue
				}
				key := r.ID + "|" + be.ID
				c := b.g.canaries[key]
				if c == nil || c.ca != *ca || c.weight != be.Weight {
					c = &canary{ca: *ca, weight: be.Weight}
				}
				b.canaries[key] = c
				rr.canary, rr.canaryAt = c, i
				break
			}
		}
	}
	b.rules[r] = rr
	return rr
}

// reqState is one exchange of the proxy core, the same on both transports: route
// (Gateway.route), admit (Gateway.admit: filters, backend, breaker slot), attempts
// (st.a: tries, retries, health reports), respond (applyResponse), finish
// (Gateway.finish: every slot and count the exchange still holds given back, metrics,
// canary analysis, access log). Transports move the bytes and call these; they never
// touch a counter themselves. On net/http it is also the request's context (the
// downstream context plus the state under stateKey) and holds the response's
// statusWriter, so that one allocation per request carries all three.
type reqState struct {
	context.Context
	sw       statusWriter
	a        attempts
	slot     bool // a request slot of backend.cl's breaker (active) is held
	rule     *ruleRuntime
	backend  *backendRuntime
	endpoint *endpoint
	hashKey  uint64
	session  uint64
	lastErr  error
	https    bool
	client   netip.Addr
	clientIP string // client as text, for the forwarding headers
	respHdr  []*model.HeaderModifier
	origin   string // CORS origin allowed for this request
	body     *clientBody
	// Held here rather than allocated (net/http path): forwarding header values, the
	// response body's wrapper, the client trace (1xx count, the try's head timeout).
	fwd      [4]string
	tracked  trackedBody
	trace    httptrace.ClientTrace
	n1xx     atomic.Int32
	hw       atomic.Pointer[headWatch]
	cancelUp context.CancelFunc // ends an HTTP/1 client's upstream request (ClientEnded)
}

type stateKey struct{}

// Value returns the state itself under stateKey, and asks the downstream context
// otherwise.
func (s *reqState) Value(key any) any {
	if _, ok := key.(stateKey); ok {
		return s
	}
	return s.Context.Value(key)
}

// clientText is the client address as text: the address part of RemoteAddr when it
// is already in canonical form (no allocation), else the address formatted anew.
func clientText(remote string, a netip.Addr) string {
	if a.Is4() {
		if i := strings.LastIndexByte(remote, ':'); i > 0 && !strings.HasPrefix(remote, "[") {
			return remote[:i]
		}
	}
	return a.String()
}

// statusWriter records the status code written.
type statusWriter struct {
	http.ResponseWriter
	code int
	sent atomic.Bool // a final response head was written
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.code = code
	}
	if code >= 200 {
		w.sent.Store(true)
		// A response without a Content-Type goes out without one, as nginx, HAProxy and
		// Envoy relay it (and the event loops do): net/http's servers would sniff one.
		if h := w.Header(); h != nil {
			if _, ok := h["Content-Type"]; !ok {
				h["Content-Type"] = nil
			}
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
		w.sent.Store(true)
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// newRequestID makes a 128-bit random ID. It need not be unguessable, so it comes from
// the runtime's per-thread ChaCha8 generator rather than the kernel.
func newRequestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], mrand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], mrand.Uint64())
	return hex.EncodeToString(b[:])
}

// serve handles one downstream request. ctx is the request's context (r.Context()
// for net/http's server; the event loops' requests carry the gateway's).
func (g *Gateway) serve(ctx context.Context, w http.ResponseWriter, r *http.Request, t *table) {
	start := time.Now()
	st, m := g.route(ctx, w, r, t, start, nil)
	if st == nil {
		return
	}
	defer g.finish(r, st, start) // also when ReverseProxy aborts the response (a panic)
	g.serveRule(&st.sw, r, m, st)
}

// route gives a request its ID, normalises its path (router.NormalizeRequestPath: what
// is matched is what is forwarded) and matches it to a rule of t, and returns the
// request's state (into, when not nil, else a new one). Without a match it answers 404
// itself (400 for a malformed path, 421 for a Host that another listener than the TLS
// server name's serves) and returns a nil state.
func (g *Gateway) route(ctx context.Context, w http.ResponseWriter, r *http.Request, t *table, start time.Time, into *reqState) (*reqState, *model.RouteMatch) {
	if r.Header.Get("X-Request-Id") == "" {
		r.Header.Set("X-Request-Id", newRequestID())
	}
	reject := func(msg string, code int) (*reqState, *model.RouteMatch) {
		http.Error(w, msg, code)
		g.accessLog(r, code, start, "", "", nil)
		return nil, nil
	}
	if err := router.NormalizeRequestPath(r.URL); err != nil {
		return reject("bad request path", http.StatusBadRequest)
	}
	host := router.Host(r)
	if t.https && r.TLS != nil && misdirected(t.router, r.TLS.ServerName, host) {
		return reject("misdirected request", http.StatusMisdirectedRequest)
	}
	res, ok := t.router.Match(r, host)
	var rr *ruleRuntime
	if ok {
		rr = t.rules[res.Match.Rule]
	}
	if rr == nil {
		return reject("no route", http.StatusNotFound)
	}
	st := into
	if st == nil {
		st = new(reqState)
	}
	*st = reqState{Context: ctx, sw: statusWriter{ResponseWriter: w}, rule: rr, https: t.https}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		st.client = ap.Addr().Unmap()
		st.clientIP = clientText(r.RemoteAddr, st.client)
	}
	return st, res.Match
}

// finish ends an exchange, however it ended: what it still holds is given back (its
// try's pending slot and load record, a retry in backoff, its breaker slot), and it is
// recorded: backend metrics, canary analysis, access log.
func (g *Gateway) finish(r *http.Request, st *reqState, start time.Time) {
	st.a.release()
	if st.slot {
		st.slot = false
		st.backend.cl.active.Add(-1)
	}
	rr := st.rule
	code := st.sw.code
	if code == 0 {
		code = http.StatusOK
	}
	backendID := ""
	if st.backend != nil {
		backendID = st.backend.b.ID
		st.backend.metrics.observe(code, time.Since(start))
		if rr.canary != nil && st.backend == rr.backends[rr.canaryAt] && rr.canary.record(code, time.Now()) {
			g.rolledBack(rr, st.backend)
		}
	}
	g.accessLog(r, code, start, rr.rule.ID, backendID, st.endpoint)
}

func (g *Gateway) rolledBack(rr *ruleRuntime, br *backendRuntime) {
	g.metrics.rollbacks.WithLabelValues(rr.rule.ID, br.b.ID).Inc()
	g.log.Warn("gateway: canary rolled back to weight 0", "route", rr.rule.ID, "backend", br.b.ID,
		"window", rr.canary.ca.Window.String(), "maxErrorPercent", rr.canary.ca.MaxErrorPercent)
	g.rollbackMu.Lock()
	g.rollbacks = append(g.rollbacks, CanaryRollback{Route: rr.rule.ID, Backend: br.b.ID, At: time.Now()})
	g.rollbackMu.Unlock()
}

func (g *Gateway) accessLog(r *http.Request, code int, start time.Time, route, backend string, ep *endpoint) {
	if !g.opts.AccessLog {
		return
	}
	upstream := ""
	if ep != nil {
		upstream = ep.host
	}
	g.log.LogAttrs(r.Context(), slog.LevelInfo, "access",
		slog.String("requestId", r.Header.Get("X-Request-Id")),
		slog.String("client", r.RemoteAddr),
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
		slog.String("proto", r.Proto),
		slog.Int("status", code),
		slog.Duration("duration", time.Since(start)),
		slog.String("route", route),
		slog.String("backend", backend),
		slog.String("upstream", upstream))
}

func (g *Gateway) serveRule(w *statusWriter, r *http.Request, m *model.RouteMatch, st *reqState) {
	br := g.admit(w, r, m, st)
	if br == nil {
		return
	}
	// The upstream request ends with the client's, except that an HTTP/1 client that
	// only half-closes after its answer has begun still reads it whole, as on the
	// event loops: its connection's guard tells (ClientEnded).
	var ctx context.Context = st
	if gd, ok := st.Value(connKey{}).(interface{ Watch(http1.Watcher) }); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(context.WithoutCancel(st))
		defer cancel()
		st.cancelUp = cancel
		gd.Watch(st)
		defer gd.Watch((*reqState)(nil))
	}
	if timeout := st.rule.rule.RequestTimeout; timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	// One trace per request, added before ReverseProxy's own (which relays each 1xx
	// and runs first; ours decides the hook's result).
	st.trace.Got1xxResponse = st.got1xx
	if st.rule.rule.ResponseTimeout > 0 {
		st.trace.WroteRequest = st.wroteRequest
	}
	g.proxy.ServeHTTP(w, r.WithContext(httptrace.WithClientTrace(ctx, &st.trace)))
}

// connKey holds a downstream connection in its requests' contexts (net/http).
type connKey struct{}

// ClientEnded hears the end of an HTTP/1 client's stream (http1.Watcher): it ends the
// upstream request unless the client only half-closed after its answer began.
func (st *reqState) ClientEnded(aborted bool) {
	if st != nil && (aborted || !st.sw.sent.Load()) {
		st.cancelUp()
	}
}

// admit takes a request through its rule up to the upstream: rate limit, CORS
// preflight, request filters, mirrors, the backend's choice and its circuit breaker.
// When one of them answers the request (on w) it returns nil; otherwise it returns
// the backend, the request counted in its breaker (st.slot, which finish gives back).
func (g *Gateway) admit(w *statusWriter, r *http.Request, m *model.RouteMatch, st *reqState) *backendRuntime {
	rr := st.rule
	rule := rr.rule
	if rule.Invalid {
		http.Error(w, "route rule is invalid", http.StatusInternalServerError)
		return nil
	}
	g.inboundHeaders(r, st)
	if rr.limiter != nil {
		if ok, wait := rr.limiter.allow(g.limiterKey(rr.limiter, r, st)); !ok {
			g.metrics.rateLimited.WithLabelValues(rule.ID).Inc()
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			http.Error(w, "rate limited", http.StatusTooManyRequests)
			return nil
		}
	}
	if r.Body != nil && r.Body != http.NoBody {
		if g.opts.MaxBodyBytes > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, g.opts.MaxBodyBytes)
		}
		st.body = &clientBody{rc: r.Body, timeout: g.opts.BodyTimeout,
			deadline: http.NewResponseController(w.ResponseWriter).SetReadDeadline}
		r.Body = st.body
	}
	if rr.cors != nil && corsRequest(w, r, rr.cors, st) {
		return nil
	}
	if done := g.applyFilters(w, r, m, st, rule.Filters); done {
		return nil
	}
	// The body (up to 64 KiB) is read before the request takes a breaker slot (a client
	// that sends it slowly holds no slot meanwhile), and before mirrors copy it.
	if err := bufferBody(r); err != nil {
		w.WriteHeader(errorStatus(err))
		return nil
	}
	for _, mr := range rr.mirrors {
		g.sendMirror(r, rr, mr)
	}
	br := g.chooseBackend(r, st)
	if br == nil {
		http.Error(w, "no backend", http.StatusInternalServerError)
		return nil
	}
	st.backend = br
	if br.cl == nil {
		http.Error(w, "backend is invalid", http.StatusInternalServerError)
		return nil
	}
	if done := g.applyFilters(w, r, m, st, br.b.Filters); done {
		return nil
	}
	if len(br.cl.state.Load().eps) == 0 {
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return nil
	}
	if !take(&br.cl.active, br.cl.policy.Load().CircuitBreaker.MaxRequests) {
		g.answerError(w, r, st, errOverflow)
		return nil
	}
	st.slot = true
	if br.hashing {
		st.hashKey = hashKey(r, br.hashOn, st.client)
	}
	return br
}

// maxBufferedBody is the most of a request body of known length read before the
// request is sent, and the largest body kept for replay on retry (Linkerd's limit).
const maxBufferedBody = 64 << 10

// bufferBody reads a request body of known length, up to maxBufferedBody, before the
// request goes upstream (nginx reads bodies first too): a whole body can be sent again
// (GetBody); of a larger one the rest follows what was read. A body of unknown length
// (chunked, an HTTP/2 stream) may be a stream the client feeds as answers come, so it
// is not waited for. The error is the client's (clientError).
func bufferBody(r *http.Request) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength <= 0 || r.GetBody != nil {
		return nil
	}
	n := min(r.ContentLength, maxBufferedBody)
	b := make([]byte, n)
	if _, err := io.ReadFull(r.Body, b); err != nil {
		return clientFault(err)
	}
	if n < r.ContentLength {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
		return nil
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return nil
}

// clientBody is a downstream request body. It bounds the wait for each read
// (Options.BodyTimeout, as nginx's client_body_timeout) and remembers a failed read,
// so that the request is answered as the client's fault (400, 408, 413) and the
// endpoint is not blamed.
type clientBody struct {
	rc       io.ReadCloser
	timeout  time.Duration
	deadline func(time.Time) error // the downstream connection's read deadline, if settable
	err      atomic.Pointer[clientError]
}

func (b *clientBody) Read(p []byte) (int, error) {
	if b.timeout > 0 && b.deadline != nil {
		_ = b.deadline(time.Now().Add(b.timeout))
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		if b.timeout > 0 && b.deadline != nil {
			_ = b.deadline(time.Time{}) // the server's own read after the body has none
		}
	case err != nil:
		ce := clientFault(err)
		b.err.CompareAndSwap(nil, ce)
		return n, ce
	}
	return n, err
}

func (b *clientBody) Close() error { return b.rc.Close() }

// failed returns the client's error if reading the body failed.
func (b *clientBody) failed() error {
	if b != nil && b.err.Load() != nil {
		return b.err.Load() // set once, never cleared
	}
	return nil
}

// clientError is a request that failed by the client's doing: its status is the answer,
// and no endpoint is blamed.
type clientError struct {
	code int
	err  error
}

func (e *clientError) Error() string { return "client request body: " + e.err.Error() }
func (e *clientError) Unwrap() error { return e.err }

// clientFault classifies a failed read of a request body: 413 over MaxBodyBytes, 408
// when the client was too slow, else 400 (malformed chunked framing, a body cut short).
func clientFault(err error) *clientError {
	var ce *clientError
	if errors.As(err, &ce) {
		return ce
	}
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		return &clientError{http.StatusRequestEntityTooLarge, err}
	case errors.As(err, &ne) && ne.Timeout():
		return &clientError{http.StatusRequestTimeout, err}
	}
	return &clientError{http.StatusBadRequest, err}
}

func hashKey(r *http.Request, h model.HashOn, client netip.Addr) uint64 {
	switch {
	case h.Header != "":
		return balance.HashString(r.Header.Get(h.Header))
	case h.Cookie != "":
		if c, err := r.Cookie(h.Cookie); err == nil {
			return balance.HashString(c.Value)
		}
		return 0
	case h.QueryParam != "":
		return balance.HashString(r.URL.Query().Get(h.QueryParam))
	}
	return balance.HashAddr(client)
}

// chooseBackend picks the rule's backend by weight (a rolled-back canary weighs 0),
// or the one named by the session cookie.
func (g *Gateway) chooseBackend(r *http.Request, st *reqState) *backendRuntime {
	rr := st.rule
	if s := rr.rule.Session; s != nil {
		if c, err := r.Cookie(s.CookieName); err == nil {
			if bi, id, ok := parseSession(c.Value); ok && bi < len(rr.backends) && rr.backends[bi].b.Weight > 0 {
				st.session = id
				return rr.backends[bi]
			}
		}
	}
	if len(rr.backends) == 1 {
		if rr.backends[0].b.Weight <= 0 || (rr.canary != nil && rr.canary.rolledBack.Load()) {
			return nil
		}
		return rr.backends[0]
	}
	i := rr.spread.Pick(len(rr.backends), func(i int) int64 {
		if i == rr.canaryAt && rr.canary.rolledBack.Load() {
			return 0
		}
		return int64(rr.backends[i].b.Weight)
	})
	if i < 0 {
		return nil
	}
	return rr.backends[i]
}

func sessionValue(backend int, ep uint64) string {
	return strconv.Itoa(backend) + "." + strconv.FormatUint(ep, 36)
}

func parseSession(v string) (int, uint64, bool) {
	a, b, ok := strings.Cut(v, ".")
	if !ok {
		return 0, 0, false
	}
	bi, err1 := strconv.Atoi(a)
	id, err2 := strconv.ParseUint(b, 36, 64)
	return bi, id, err1 == nil && err2 == nil && bi >= 0
}

// applyFilters runs request filters in order; it returns true when one answered.
func (g *Gateway) applyFilters(w http.ResponseWriter, r *http.Request, m *model.RouteMatch, st *reqState, fs []model.Filter) bool {
	for _, f := range fs {
		switch f.Type {
		case model.FilterRequestHeaders:
			modifyHeaders(r.Header, f.Headers, r)
		case model.FilterResponseHeaders:
			st.respHdr = append(st.respHdr, f.Headers)
		case model.FilterRedirect:
			redirect(w, r, m, f.Redirect, st.https)
			return true
		case model.FilterRewrite:
			if f.Rewrite.Hostname != "" {
				r.Host = f.Rewrite.Hostname
			}
			if f.Rewrite.Path != nil {
				p := modifyPath(router.RequestPath(r.URL), m, f.Rewrite.Path)
				if router.SetEscapedPath(r.URL, p) != nil {
					r.URL.Path, r.URL.RawPath = p, ""
				}
			}
		}
	}
	return false
}

func modifyHeaders(h http.Header, hm *model.HeaderModifier, r *http.Request) {
	for _, x := range hm.Set {
		if r != nil && strings.EqualFold(x.Name, "Host") {
			r.Host = x.Value
			continue
		}
		h.Set(x.Name, x.Value)
	}
	for _, x := range hm.Add {
		h.Add(x.Name, x.Value)
	}
	for _, n := range hm.Remove {
		h.Del(n)
	}
}

// modifyPath applies a path modifier to an escaped, normalised path (the form routes
// match); ReplacePrefixMatch replaces the matched prefix.
func modifyPath(path string, m *model.RouteMatch, pm *model.PathModifier) string {
	if pm.Type == model.ReplaceFullPath {
		return pm.Value
	}
	prefix := m.Path.Value
	if p, err := router.NormalizePath(prefix); err == nil && prefix != "" {
		prefix = p // as the router compares it
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if m.Path.Type != model.PathPrefix || !router.PrefixMatches(prefix, path) {
		return path
	}
	rest := path[len(prefix):]
	repl := strings.TrimSuffix(pm.Value, "/")
	out := repl + rest
	if out == "" {
		return "/"
	}
	if !strings.HasPrefix(out, "/") {
		out = "/" + out
	}
	return out
}

func redirect(w http.ResponseWriter, r *http.Request, m *model.RouteMatch, rd *model.Redirect, https bool) {
	scheme := "http"
	if https {
		scheme = "https"
	}
	host, port := r.Host, ""
	if h, p, err := net.SplitHostPort(r.Host); err == nil {
		host, port = h, p
	}
	if rd.Scheme != "" {
		if rd.Scheme != scheme {
			port = "" // the well-known port of the new scheme
		}
		scheme = rd.Scheme
	}
	if rd.Hostname != "" {
		host = rd.Hostname
	}
	if rd.Port != 0 {
		port = strconv.Itoa(int(rd.Port))
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	path := router.RequestPath(r.URL)
	if rd.Path != nil {
		path = modifyPath(path, m, rd.Path)
	}
	hostport := host
	if port != "" {
		hostport = net.JoinHostPort(host, port)
	}
	loc := scheme + "://" + hostport + path
	if r.URL.RawQuery != "" {
		loc += "?" + r.URL.RawQuery
	}
	code := rd.StatusCode
	if code == 0 {
		code = http.StatusFound
	}
	w.Header().Set("Location", loc)
	w.WriteHeader(code)
}

// modifyResponse applies response header filters, CORS and session cookies.
func (g *Gateway) modifyResponse(resp *http.Response) error {
	st, _ := resp.Request.Context().Value(stateKey{}).(*reqState)
	g.applyResponse(resp, st)
	return nil
}

// applyResponse is modifyResponse for both proxy paths.
func (g *Gateway) applyResponse(resp *http.Response, st *reqState) {
	if resp.Header.Get("Grpc-Status") != "" {
		grpcTrailersOnly(resp)
	}
	if st == nil {
		return
	}
	for _, hm := range st.respHdr {
		modifyHeaders(resp.Header, hm, nil)
	}
	if c := st.rule.cors; c != nil && st.origin != "" {
		corsResponse(resp.Header, c, st.origin)
	}
	if s := st.rule.rule.Session; s != nil && st.endpoint != nil && st.backend != nil {
		bi := 0
		for i, br := range st.rule.backends {
			if br == st.backend {
				bi = i
			}
		}
		if st.session != st.endpoint.id {
			c := &http.Cookie{Name: s.CookieName, Value: sessionValue(bi, st.endpoint.id), Path: "/", HttpOnly: true}
			if s.TTL > 0 {
				c.MaxAge = int(s.TTL.Seconds())
			}
			resp.Header.Add("Set-Cookie", c.String())
		}
	}
}

// grpcTrailersOnly turns a gRPC Trailers-Only answer (grpc-status in the headers of a
// stream that ends at once) into headers plus trailers: relayed as it came, the status
// would arrive in a HEADERS frame without END_STREAM and clients would see a stream
// closed without trailers.
func grpcTrailersOnly(resp *http.Response) {
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc") {
		return
	}
	if resp.Trailer == nil {
		resp.Trailer = http.Header{}
	}
	for _, k := range []string{"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin"} {
		if v, ok := resp.Header[k]; ok {
			resp.Trailer[k] = v
			delete(resp.Header, k)
		}
	}
}

// errorStatus is the status that answers a request no upstream response could be
// had for: the client's fault's (clientError: 400, 408, 413), 503 without an
// endpoint or with the breaker full, 504 after a timeout, else 502.
func errorStatus(err error) int {
	var ce *clientError
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, errNoEndpoint), errors.Is(err, errOverflow):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// proxyError answers when no upstream response could be had (ReverseProxy's
// ErrorHandler).
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := r.Context().Value(stateKey{}).(*reqState)
	g.answerError(w, r, st, err)
}

// answerError answers a request of st that got no upstream response, on both
// transports.
func (g *Gateway) answerError(w http.ResponseWriter, r *http.Request, st *reqState, err error) {
	code := errorStatus(err)
	switch {
	case errors.Is(err, errOverflow):
		w.Header().Set("X-Weir-Overflow", "circuit-breaker")
		if st != nil && st.backend != nil {
			g.metrics.overflows.WithLabelValues(st.backend.b.ID).Inc()
		}
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		code = 499 // the client went away; nobody reads this
	}
	g.log.Debug("gateway: upstream error", "path", r.URL.Path, "err", err)
	w.WriteHeader(code)
}

// sendMirror sends a copy of r to the mirror backend, fire-and-forget: it never
// waits for the mirror, and drops the copy when too many are in flight or the body
// was not buffered whole (over 64 KiB, or of unknown length: bufferBody).
func (g *Gateway) sendMirror(r *http.Request, rr *ruleRuntime, mr *mirrorRuntime) {
	if mr.percent < 100 && mrand.Float64()*100 >= mr.percent {
		return
	}
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if hasBody && r.GetBody == nil {
		g.metrics.mirrorDrops.WithLabelValues(rr.rule.ID).Inc()
		return
	}
	select {
	case g.mirror <- struct{}{}:
	default:
		g.metrics.mirrorDrops.WithLabelValues(rr.rule.ID).Inc()
		return
	}
	out := r.Clone(g.ctx)
	out.RequestURI, out.URL.Scheme, out.Body, out.ContentLength = "", "http", nil, 0
	if hasBody {
		out.Body, _ = r.GetBody() // the buffered copy
		out.ContentLength = r.ContentLength
	}
	g.wg.Go(func() {
		defer func() { <-g.mirror }()
		cl := mr.cl
		ep := cl.pick(cl.current(time.Now()), 0, 0, nil, nil)
		if ep == nil {
			return
		}
		ctx, cancel := context.WithTimeout(g.ctx, 10*time.Second)
		defer cancel()
		out = out.WithContext(ctx)
		out.URL.Host = ep.host
		resp, err := g.up.transport(cl).RoundTrip(out)
		if err != nil {
			return
		}
		drain(resp.Body)
	})
}

var errTooManyInformational = errors.New("too many informational responses")

// got1xx bounds the informational (1xx) responses a backend may send before its final
// one on the net/http path, as the event loops bound them (http1.MaxInformational):
// httputil.ReverseProxy relays each, and the one past the bound fails the try.
// http.Transport itself leaves the count to whoever receives them.
func (st *reqState) got1xx(int, textproto.MIMEHeader) error {
	if st.n1xx.Add(1) > http1.MaxInformational {
		return errTooManyInformational
	}
	return nil
}

// wroteRequest starts the current try's response head timeout (headWatch). (A
// previous try's late report would start it a little early, never late.)
func (st *reqState) wroteRequest(info httptrace.WroteRequestInfo) {
	if hw := st.hw.Load(); hw != nil {
		hw.wrote(info)
	}
}

// canary watches one canary backend's 5xx rate over a sliding window of ten buckets
// and rolls it back (weight 0) when the rate exceeds the threshold with enough
// requests. A rollback lasts until the route's canary weight changes.
type canary struct {
	ca     model.CanaryAnalysis
	weight int32 // the configured weight the rollback applies to

	rolledBack atomic.Bool
	mu         sync.Mutex
	buckets    [10]canaryBucket
}

type canaryBucket struct {
	start       time.Time
	total, errs int
}

// record counts one answer; it returns true when this answer triggered the rollback.
func (c *canary) record(code int, now time.Time) bool {
	if c.rolledBack.Load() {
		return false
	}
	width := c.ca.Window / 10
	if width <= 0 {
		width = time.Second
	}
	slot := now.Truncate(width)
	c.mu.Lock()
	defer c.mu.Unlock()
	b := &c.buckets[int(slot.UnixNano()/int64(width))%len(c.buckets)]
	if !b.start.Equal(slot) {
		*b = canaryBucket{start: slot}
	}
	b.total++
	if code >= 500 {
		b.errs++
	}
	total, errs := 0, 0
	cutoff := now.Add(-c.ca.Window)
	for _, x := range c.buckets {
		if x.start.After(cutoff) {
			total += x.total
			errs += x.errs
		}
	}
	if total >= c.ca.MinRequests && errs*100 > c.ca.MaxErrorPercent*total {
		c.rolledBack.Store(true)
		return true
	}
	return false
}
