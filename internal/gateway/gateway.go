// Package gateway is weir's L7 data plane: it serves the listeners and route tables of
// a Snapshot's GatewayConfig (Gateway API and Ingress), proxies HTTP/1.1, HTTP/2,
// gRPC, WebSocket and streamed responses to endpoints it picks itself with
// internal/balance, and applies the route filters and traffic policy (retries, circuit
// breaker, outlier ejection, slow start, rate limits, canary rollback, mirroring).
//
// Sync swaps each listener's route table atomically; listeners whose address and
// protocol did not change are never rebound, so in-flight requests, WebSockets and
// gRPC streams survive reloads.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/gateway/router"
	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/http1"
	"weir.dev/weir/internal/model"
)

// Options configure a Gateway. The zero value of each field has a usable default.
type Options struct {
	// Logger receives listener changes, canary rollbacks and (with AccessLog) one
	// record per request. nil discards.
	Logger *slog.Logger
	// Registerer receives the weir_gateway_* metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// IngressHTTPAddr and IngressHTTPSAddr are where Ingress objects are served
	// ("host:port"); empty leaves that listener closed.
	IngressHTTPAddr  string
	IngressHTTPSAddr string
	// TrustedProxies are the client addresses whose X-Forwarded-* and Forwarded headers
	// are kept and appended to; other clients' are replaced.
	TrustedProxies []netip.Prefix
	// AccessLog writes one structured record per request to Logger.
	AccessLog bool
	// Health is the shared endpoint health (internal/health's Overlay), synced from
	// the gateway's Sync. nil: the gateway makes an Overlay of its own.
	Health Health
	// H2C accepts cleartext HTTP/2 (prior knowledge) on HTTP listeners.
	H2C bool

	// Limits and timeouts of downstream connections. Defaults, as nginx's: 64 KiB of
	// headers, no body limit, 60 s to read headers (client_header_timeout) and 60 s
	// between two reads of a request body (client_body_timeout; 408), 120 s idle, no
	// read or write timeout (streams and WebSockets may last).
	MaxHeaderBytes    int
	MaxBodyBytes      int64
	ReadHeaderTimeout time.Duration
	BodyTimeout       time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// ShutdownGrace bounds how long a removed listener waits for its requests. Default 10 s.
	ShutdownGrace time.Duration
	// DisableEventLoops serves plaintext HTTP listeners with net/http alone instead of
	// weir's event loops (h1loop.go) first. The loops are also off when ReadTimeout or
	// WriteTimeout is set (they keep neither).
	DisableEventLoops bool
	// MaxMirrorsInFlight bounds mirror copies in flight; more are dropped. Default 256.
	MaxMirrorsInFlight int
}

// Gateway is the L7 data plane. It implements dataplane.Dataplane.
type Gateway struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	health  Health
	own     *health.Overlay // the overlay New made when Options.Health was nil
	up      *upstream
	proxy   *httputil.ReverseProxy
	bufs    sync.Pool

	// applied is the Version of the last Snapshot served without error (0: none); a
	// Snapshot whose Delta against it leaves the GatewayConfig alone needs no work.
	applied uint64

	ctx    context.Context // lifetime of mirrors and listeners
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mirror chan struct{} // semaphore

	mu        sync.Mutex // Sync and Shutdown
	closed    bool
	loops     *loopServer // started with the first plaintext listener that uses them
	listeners map[string]*listener
	bindErrs  map[string]string // configured address → why it could not be bound (status.go)
	clusters  map[string]*cluster
	limiters  map[string]*limiter
	canaries  map[string]*canary
	series    map[[2]string]bool

	rollbackMu sync.Mutex
	rollbacks  []CanaryRollback
}

// CanaryRollback records a canary taken to weight 0 by canary analysis.
type CanaryRollback struct {
	Route   string
	Backend string
	At      time.Time
}

// New makes a Gateway with no listeners; Sync opens them.
func New(opts Options) (*Gateway, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.MaxHeaderBytes = positiveOr(opts.MaxHeaderBytes, 64<<10)
	opts.ReadHeaderTimeout = positiveOr(opts.ReadHeaderTimeout, 60*time.Second)
	opts.BodyTimeout = positiveOr(opts.BodyTimeout, 60*time.Second)
	opts.IdleTimeout = positiveOr(opts.IdleTimeout, 120*time.Second)
	opts.ShutdownGrace = positiveOr(opts.ShutdownGrace, 10*time.Second)
	opts.MaxMirrorsInFlight = positiveOr(opts.MaxMirrorsInFlight, 256)
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{
		opts: opts, log: opts.Logger, metrics: m, health: opts.Health,
		ctx: ctx, cancel: cancel, mirror: make(chan struct{}, opts.MaxMirrorsInFlight),
		listeners: map[string]*listener{}, clusters: map[string]*cluster{},
		limiters: map[string]*limiter{}, canaries: map[string]*canary{},
	}
	if g.health == nil {
		o, err := health.New(health.Options{Logger: opts.Logger, Registerer: opts.Registerer})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("gateway: %w", err)
		}
		g.own, g.health = o, o
	}
	g.bufs.New = func() any { return new([copyBufferSize]byte) }
	g.up = newUpstream(g)
	g.proxy = &httputil.ReverseProxy{
		Rewrite:   g.rewrite,
		Transport: g.up,
		// 0: ReverseProxy flushes at once (FlushInterval -1) every response of unknown
		// length or of type text/event-stream (SSE, gRPC, LLM token streams), and
		// buffers the others to the end, saving a write per chunk.
		FlushInterval:  0,
		ErrorHandler:   g.proxyError,
		ModifyResponse: g.modifyResponse,
		BufferPool:     bufferPool{&g.bufs},
		ErrorLog:       slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	return g, nil
}

// positiveOr is v when it is set (positive), else def.
func positiveOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// copyBufferSize is the size of the reverse proxy's response copy buffers.
const copyBufferSize = 32 << 10

// bufferPool pools the copy buffers as array pointers, so that Put does not
// allocate a slice header for the pool.
type bufferPool struct{ p *sync.Pool }

func (b bufferPool) Get() []byte { return b.p.Get().(*[copyBufferSize]byte)[:] }

func (b bufferPool) Put(x []byte) {
	if len(x) == copyBufferSize {
		b.p.Put((*[copyBufferSize]byte)(x))
	}
}

// Name is the data plane's name.
func (g *Gateway) Name() string { return "gateway" }

// listener is one bound socket and its server.
type listener struct {
	addr     string // as configured
	protocol model.ListenerProtocol
	ln       net.Listener
	srv      *http.Server  // nil for TLS passthrough
	loops    *loopListener // plaintext HTTP listeners on the event loops: they hand to srv what they do not serve
	table    atomic.Pointer[table]
	certs    atomic.Pointer[certTable]
	pt       atomic.Pointer[ptTable] // TLS passthrough only
	conns    connSet                 // TLS passthrough only
}

// table is what one listener serves: the compiled router and each rule's runtime.
type table struct {
	router *router.Table
	rules  map[*model.Rule]*ruleRuntime
	https  bool
}

// Addresses returns the bound address of each open listener, keyed by the configured
// address ("ingress-http" and "ingress-https" for the Ingress listeners).
func (g *Gateway) Addresses() map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]string{}
	for _, l := range g.listeners {
		out[l.addr] = l.ln.Addr().String()
	}
	return out
}

// CanaryRollbacks lists the canaries rolled back so far, oldest first.
func (g *Gateway) CanaryRollbacks() []CanaryRollback {
	g.rollbackMu.Lock()
	defer g.rollbackMu.Unlock()
	return append([]CanaryRollback(nil), g.rollbacks...)
}

// Sync serves snap's GatewayConfig: it swaps route tables, updates certificates,
// opens new listeners and closes removed ones. Listeners that stay are not rebound.
// A listener that cannot be opened is reported in the error; the others are served.
func (g *Gateway) Sync(ctx context.Context, snap *model.Snapshot) error {
	// A shared overlay learns the Services' ports and outlier settings from the
	// Snapshot; it ignores a Snapshot it has seen, so every data plane may call it.
	if hs, ok := g.health.(interface {
		Sync(context.Context, *model.Snapshot)
	}); ok && snap != nil {
		hs.Sync(ctx, snap)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errors.New("gateway: Sync after Shutdown")
	}
	if d := snap.DeltaFrom(g.applied); d != nil && !d.Gateway {
		g.applied = snap.Version
		return nil
	}
	g.applied = 0
	var cfg *model.GatewayConfig
	if snap != nil {
		cfg = snap.Gateway
	}
	if cfg == nil {
		cfg = &model.GatewayConfig{}
	}
	now := time.Now()
	b := &builder{g: g, now: now, rules: map[*model.Rule]*ruleRuntime{}, clusters: map[string]*cluster{},
		limiters: map[string]*limiter{}, canaries: map[string]*canary{},
		series: map[[2]string]bool{}}

	var errs []error
	desired := map[string]*model.Listener{}
	tables := map[string]*table{}
	certs := map[string]*certTable{}
	pts := map[string]*ptTable{}
	for _, ml := range cfg.Listeners {
		addr := ml.Address
		switch ml.Ingress {
		case "http":
			if g.opts.IngressHTTPAddr == "" {
				continue
			}
			addr = g.opts.IngressHTTPAddr
		case "https":
			if g.opts.IngressHTTPSAddr == "" {
				continue
			}
			addr = g.opts.IngressHTTPSAddr
		}
		if _, dup := desired[addr]; dup {
			errs = append(errs, fmt.Errorf("gateway: address %s is configured twice (a Gateway listener and an Ingress address?); serving the first", addr))
			continue
		}
		if ml.Protocol == model.ProtocolTLS {
			pts[addr] = b.passthrough(ml)
			desired[addr] = ml
			continue
		}
		rt, err := router.Compile(ml)
		if err != nil {
			errs = append(errs, fmt.Errorf("gateway: listener %s: %w", addr, err))
			continue
		}
		t := &table{router: rt, rules: map[*model.Rule]*ruleRuntime{}, https: ml.Protocol == model.ProtocolHTTPS}
		for _, sec := range ml.Sections {
			for _, vh := range sec.Hosts {
				for _, m := range vh.Matches {
					t.rules[m.Rule] = b.rule(m.Rule)
				}
			}
		}
		if ml.Protocol == model.ProtocolHTTPS {
			ct, err := newCertTable(ml)
			if err != nil {
				errs = append(errs, fmt.Errorf("gateway: listener %s: %w", addr, err))
				continue
			}
			certs[addr] = ct
		}
		desired[addr] = ml
		tables[addr] = t
	}
	g.clusters, g.limiters, g.canaries = b.clusters, b.limiters, b.canaries
	for pair := range g.series {
		if !b.series[pair] {
			g.metrics.forget(pair[0], pair[1])
		}
	}
	g.series = b.series

	// Close listeners that went away or changed protocol, before opening new ones, so
	// that a port can move from one protocol to another.
	for addr, l := range g.listeners {
		if ml, ok := desired[addr]; !ok || ml.Protocol != l.protocol {
			g.closeListener(l)
			delete(g.listeners, addr)
		}
	}
	for addr := range g.bindErrs {
		if _, ok := desired[addr]; !ok {
			delete(g.bindErrs, addr)
		}
	}
	addrs := make([]string, 0, len(desired))
	for addr := range desired {
		addrs = append(addrs, addr)
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		ml := desired[addr]
		l := g.listeners[addr]
		if l == nil {
			var err error
			l, err = g.openListener(addr, ml.Protocol, tables[addr], certs[addr], pts[addr])
			g.bound(addr, err)
			if err != nil {
				g.metrics.listenerErrs.WithLabelValues(addr).Inc()
				errs = append(errs, err)
				continue
			}
			g.listeners[addr] = l
			continue
		}
		if t := tables[addr]; t != nil {
			l.table.Store(t)
		}
		if p := pts[addr]; p != nil {
			l.pt.Store(p)
		}
		if c := certs[addr]; c != nil {
			l.certs.Store(c)
		}
	}
	if len(errs) == 0 && snap != nil {
		g.applied = snap.Version
	}
	return errors.Join(errs...)
}

func (g *Gateway) openListener(addr string, proto model.ListenerProtocol, t *table, certs *certTable, pt *ptTable) (*listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: listen %s: %w", addr, err)
	}
	l := &listener{addr: addr, protocol: proto, ln: ln}
	if proto == model.ProtocolTLS {
		l.pt.Store(pt)
		g.wg.Go(func() { g.acceptPassthrough(l) })
		g.log.Info("gateway: listening", "address", ln.Addr().String(), "protocol", string(proto))
		return l, nil
	}
	l.table.Store(t)
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.serve(r.Context(), w, r, l.table.Load()) }),
		MaxHeaderBytes:    g.opts.MaxHeaderBytes,
		ReadHeaderTimeout: g.opts.ReadHeaderTimeout,
		ReadTimeout:       g.opts.ReadTimeout,
		WriteTimeout:      g.opts.WriteTimeout,
		IdleTimeout:       g.opts.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return g.ctx },
		ConnContext:       func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	l.srv = srv
	var served net.Listener = ln
	switch {
	case proto == model.ProtocolHTTPS:
		l.certs.Store(certs)
		srv.Protocols.SetHTTP2(true)
		served = g.newTLSListener(ln, serverTLS(func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return l.certs.Load().get(hello.ServerName)
		}))
	case g.opts.H2C:
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	if proto == model.ProtocolHTTP {
		handoff := newHandoffListener(ln.Addr())
		ll, err := g.startLoops(ln, handoff, l.table.Load)
		switch {
		case err != nil:
			g.log.Warn("gateway: event loops unavailable; serving with net/http", "address", addr, "err", err)
		case ll != nil:
			l.loops, served = ll, handoff
		}
		// weir's framing rules on every request net/http reads (the loops apply
		// them by handing such requests over).
		served = http1.GuardListener(served, g.opts.MaxHeaderBytes+4096)
	}
	g.wg.Go(func() {
		if err := srv.Serve(served); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Error("gateway: listener stopped", "address", addr, "err", err)
		}
	})
	g.log.Info("gateway: listening", "address", ln.Addr().String(), "protocol", string(proto))
	return l, nil
}

// startLoops puts a plaintext listener on the event loops, starting them first, unless
// the options keep them off (nil). Called under g.mu.
func (g *Gateway) startLoops(ln net.Listener, handoff *handoffListener, table func() *table) (*loopListener, error) {
	o := g.opts
	if o.DisableEventLoops || o.ReadTimeout > 0 || o.WriteTimeout > 0 {
		return nil, nil
	}
	if g.loops == nil {
		s, err := newLoopServer(g)
		if err != nil {
			return nil, err
		}
		g.loops = s
	}
	return g.loops.listen(ln, handoff, table)
}

// closeListener stops accepting at once and lets in-flight requests finish within
// ShutdownGrace.
func (g *Gateway) closeListener(l *listener) {
	g.log.Info("gateway: closing listener", "address", l.addr)
	if l.loops != nil {
		l.loops.stopAccepting() // at once, so that the address may be opened again
	} else if l.srv == nil {
		_ = l.ln.Close()
	}
	g.wg.Go(func() {
		ctx, cancel := context.WithTimeout(g.ctx, g.opts.ShutdownGrace)
		defer cancel()
		_ = l.shutdown(ctx)
	})
}

// shutdown stops l accepting and ends its connections: idle ones at once, the others
// when their request is done, and those left when ctx ends (a TLS passthrough
// listener's then).
func (l *listener) shutdown(ctx context.Context) error {
	switch {
	case l.srv == nil:
		_ = l.ln.Close()
		<-ctx.Done()
		l.conns.closeAll()
		return nil
	case l.loops != nil:
		return l.loops.shutdown(ctx, l.srv)
	}
	err := l.srv.Shutdown(ctx)
	if err != nil {
		_ = l.srv.Close()
	}
	return err
}

// Shutdown closes every listener, waits for in-flight requests until ctx ends, and
// stops mirrors. The Gateway cannot be used afterwards.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	ls := g.listeners
	g.listeners = map[string]*listener{}
	g.mu.Unlock()

	var errs []error
	var errMu sync.Mutex
	var wg sync.WaitGroup
	for _, l := range ls {
		if l.srv == nil { // TLS passthrough: its connections end now
			_ = l.ln.Close()
			l.conns.closeAll()
			continue
		}
		wg.Go(func() {
			if err := l.shutdown(ctx); err != nil {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	if g.loops != nil {
		g.loops.stop()
	}
	g.cancel()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	g.up.close()
	if g.own != nil {
		g.own.Close()
	}
	return errors.Join(errs...)
}
