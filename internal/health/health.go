// Package health keeps weir's per-endpoint health overlay: active checks (TCP connect or
// HTTP GET) and passive outlier detection (consecutive failures reported by the data
// planes eject an endpoint for a growing time). Data planes read the overlay through
// Eligible when they build their pickers and subscribe to its changes to rebuild them;
// the overlay never rewrites the Snapshot. State outlives a Sync for every endpoint that
// still exists.
package health

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/model"
)

// Key names one endpoint of one service port.
type Key struct {
	// ServicePort is model.ServicePort.ID: "namespace/name:port".
	ServicePort string
	Endpoint    netip.AddrPort
}

func (k Key) String() string { return k.ServicePort + " " + k.Endpoint.String() }

// FailureKind says what went wrong with a request or connection to an endpoint.
type FailureKind uint8

// The failures a data plane reports.
const (
	// ConnectFailure: the endpoint refused or did not answer a connection (L4 and L7).
	ConnectFailure FailureKind = iota
	// GatewayError: an L7 answer of 502, 503 or 504.
	GatewayError
	// ServerError: any other L7 5xx answer.
	ServerError
)

func (k FailureKind) String() string {
	switch k {
	case ConnectFailure:
		return "connect-failure"
	case GatewayError:
		return "gateway-error"
	case ServerError:
		return "server-error"
	}
	return "unknown"
}

// Defaults applied when a Policy field is zero (Translate normally fills them), except
// DefaultPanicThresholdPercent, which is Translate's alone: zero is a valid threshold.
const (
	DefaultConsecutiveFailures   = 5
	DefaultBaseEjectionTime      = 30 * time.Second
	DefaultMaxEjectionPercent    = 50
	DefaultPanicThresholdPercent = 50
	// DefaultOutlierInterval is how long an endpoint must stay in rotation for its
	// ejection backoff to step down once.
	DefaultOutlierInterval = 10 * time.Second
	// MaxEjectionTime caps the ejection backoff, as Envoy's max_ejection_time does.
	MaxEjectionTime = 300 * time.Second
)

// Options configure an Overlay.
type Options struct {
	// Logger receives state changes; nil discards them.
	Logger *slog.Logger
	// Registerer receives weir_endpoint_healthy and weir_endpoint_ejections_total; nil
	// registers nothing.
	Registerer prometheus.Registerer
}

// Overlay is the health state of every endpoint of every proxied service port. It is
// safe for concurrent use. Close stops its probes and timers.
type Overlay struct {
	log     *slog.Logger
	healthy *prometheus.GaugeVec
	ejects  *prometheus.CounterVec

	ctx    context.Context // lifetime of the probes
	cancel context.CancelFunc
	wg     sync.WaitGroup // probe goroutines

	mu     sync.RWMutex
	ports  map[string]*portState
	last   *model.Snapshot
	closed bool
	subs   map[*Subscription]struct{}
	subMu  sync.Mutex // guards every Subscription's dirty set; taken after mu
}

// portState is one service port's health. Its endpoints have state (and a
// weir_endpoint_healthy series) only when the port has an active check or a data plane
// reported on them: an endpoint without state is healthy, so a port nobody checks or
// reports on costs no memory per endpoint.
type portState struct {
	id        string
	outlier   model.OutlierDetection
	check     *model.ActiveHealthCheck
	endpoints map[netip.AddrPort]*endpointState // the serving endpoints with state; nil when none
	serving   int                               // serving endpoints, with state or not
	ejected   int
	last      []model.Endpoint // as of the last Sync (the Snapshot's own slice): skips unchanged ports, tells who serves
	gen       uint64           // Sync generation, to find removed endpoints
}

// serves reports whether ap is one of the port's serving endpoints.
func (ps *portState) serves(ap netip.AddrPort) bool {
	for _, ep := range ps.last {
		if (ep.Serving || ep.Ready) && ep.AddrPort() == ap {
			return true
		}
	}
	return false
}

type endpointState struct {
	key Key
	gen uint64 // the port's generation that last saw this endpoint

	consecutive atomic.Int32 // consecutive failures of any kind
	gateway     atomic.Int32 // consecutive gateway errors and connect failures

	// Outcomes the data planes reported (connections or requests), for the dashboard.
	successes, failures atomic.Uint64

	// Guarded by Overlay.mu.
	removed      bool
	activeDown   bool
	downReason   string // the failed check's error while activeDown
	ejected      bool
	ejections    int // the backoff multiplier's exponent; decays while healthy
	ejectedUntil time.Time
	returnedAt   time.Time // when the last ejection ended
	uneject      *time.Timer
	stopProbe    context.CancelFunc
	gauge        prometheus.Gauge
}

func (s *endpointState) healthy() bool { return !s.activeDown && !s.ejected }

// New returns an empty Overlay: every endpoint is healthy until Sync configures checks
// or a data plane reports failures.
func New(opts Options) (*Overlay, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := &Overlay{
		log: log,
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_endpoint_healthy",
			Help: "1 when the endpoint takes new traffic (passes its active checks and is not ejected), else 0.",
		}, []string{"service_port", "endpoint"}),
		ejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_endpoint_ejections_total",
			Help: "Times the endpoint was ejected by passive outlier detection.",
		}, []string{"service_port", "endpoint"}),
		ports: map[string]*portState{},
		subs:  map[*Subscription]struct{}{},
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{o.healthy, o.ejects} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("health: register metrics: %w", err)
			}
		}
	}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	return o, nil
}

// Sync makes the overlay track the serving endpoints of every proxied service port of
// snap, with each Service's health check and outlier settings. Endpoints that remain
// keep their state (ejections, active check results); their probes restart only when the
// check's settings changed. Removed endpoints lose their probes, timers and metrics.
// Calling Sync again with the same Snapshot does nothing, so several data planes may
// each call it. Sync does not notify subscribers: its callers rebuild anyway.
func (o *Overlay) Sync(_ context.Context, snap *model.Snapshot) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || snap == o.last {
		return
	}
	if o.last != nil {
		if d := snap.DeltaFrom(o.last.Version); d != nil {
			o.syncDelta(o.last, snap, d)
			o.last = snap
			return
		}
	}
	o.last = snap
	seen := map[string]bool{}
	for _, svc := range snap.Services {
		o.syncService(svc, seen)
	}
	for id, ps := range o.ports {
		if !seen[id] {
			for _, st := range ps.endpoints {
				o.removeLocked(ps, st)
			}
			delete(o.ports, id)
		}
	}
}

// syncDelta updates only the ports of the Services a Snapshot's Delta names.
func (o *Overlay) syncDelta(prev, snap *model.Snapshot, d *model.Delta) {
	for _, key := range d.Services {
		seen := map[string]bool{}
		if svc := snap.Service(key); svc != nil {
			o.syncService(svc, seen)
		}
		old := prev.Service(key)
		if old == nil {
			continue
		}
		for _, sp := range old.Ports {
			id := sp.ID(old.Key)
			if ps := o.ports[id]; ps != nil && !seen[id] {
				for _, st := range ps.endpoints {
					o.removeLocked(ps, st)
				}
				delete(o.ports, id)
			}
		}
	}
}

// syncService syncs the ports of a proxied Service not in seen, and adds them to seen.
func (o *Overlay) syncService(svc *model.Service, seen map[string]bool) {
	if !svc.Proxied() {
		return
	}
	for _, sp := range svc.Ports {
		id := sp.ID(svc.Key)
		pol := sp.Policy
		if pol == nil {
			pol = svc.Policy
		}
		if pol == nil {
			pol = &model.Policy{}
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		o.syncPort(id, pol, sp.Endpoints)
	}
}

func (o *Overlay) syncPort(id string, pol *model.Policy, eps []model.Endpoint) {
	ps := o.ports[id]
	if ps == nil {
		ps = &portState{id: id}
		o.ports[id] = ps
	}
	checkChanged := !sameCheck(ps.check, pol.HealthCheck)
	ps.outlier = pol.Outlier
	ps.check = pol.HealthCheck
	if !checkChanged && ps.last != nil && slices.Equal(ps.last, eps) {
		return
	}
	ps.last = eps
	ps.gen++
	ps.serving = 0
	for _, ep := range eps {
		if !ep.Serving && !ep.Ready {
			continue
		}
		ps.serving++
		ap := ep.AddrPort()
		st := ps.endpoints[ap]
		if st == nil {
			if ps.check != nil { // checked: every endpoint has state and a probe
				o.startProbe(ps, o.newStateLocked(ps, ap))
			}
			continue
		}
		st.gen = ps.gen
		if checkChanged {
			if st.stopProbe != nil {
				st.stopProbe()
				st.stopProbe = nil
			}
			st.activeDown = false
			st.gauge.Set(b2f(st.healthy()))
			o.startProbe(ps, st)
		}
	}
	for _, st := range ps.endpoints {
		if st.gen != ps.gen {
			o.removeLocked(ps, st)
		}
	}
}

// newStateLocked gives the port's serving endpoint ap its state and its series.
// o.mu is held.
func (o *Overlay) newStateLocked(ps *portState, ap netip.AddrPort) *endpointState {
	st := &endpointState{key: Key{ServicePort: ps.id, Endpoint: ap}, gen: ps.gen}
	st.gauge = o.healthy.WithLabelValues(ps.id, ap.String())
	st.gauge.Set(1)
	if ps.endpoints == nil {
		ps.endpoints = map[netip.AddrPort]*endpointState{}
	}
	ps.endpoints[ap] = st
	return st
}

func (o *Overlay) removeLocked(ps *portState, st *endpointState) {
	st.removed = true
	if st.stopProbe != nil {
		st.stopProbe()
	}
	if st.uneject != nil {
		st.uneject.Stop()
	}
	if st.ejected {
		ps.ejected--
	}
	delete(ps.endpoints, st.key.Endpoint)
	o.healthy.DeleteLabelValues(st.key.ServicePort, st.key.Endpoint.String())
	o.ejects.DeleteLabelValues(st.key.ServicePort, st.key.Endpoint.String())
}

// Close stops every probe and ejection timer and waits for the probes to return.
func (o *Overlay) Close() {
	o.mu.Lock()
	o.closed = true
	for _, ps := range o.ports {
		for _, st := range ps.endpoints {
			if st.uneject != nil {
				st.uneject.Stop()
			}
		}
	}
	o.mu.Unlock()
	o.cancel()
	o.wg.Wait()
}

// Healthy reports whether the endpoint takes new traffic. Endpoints the overlay does not
// track are healthy.
func (o *Overlay) Healthy(servicePort string, ep netip.AddrPort) bool {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.healthyLocked(o.ports[servicePort], ep)
}

func (o *Overlay) healthyLocked(ps *portState, ep netip.AddrPort) bool {
	if ps == nil {
		return true
	}
	st := ps.endpoints[ep]
	return st == nil || st.healthy()
}

// Eligible returns the endpoints of eps, which belong to servicePort, that should take
// new traffic, applying the port's panic threshold (see the function Eligible).
func (o *Overlay) Eligible(servicePort string, eps []model.Endpoint) []model.Endpoint {
	o.mu.RLock()
	defer o.mu.RUnlock()
	ps := o.ports[servicePort]
	if ps == nil {
		return eps
	}
	// PanicThresholdPercent is used as is: 0 is a valid setting (panic only when no
	// endpoint is healthy); Translate fills in the default of 50.
	return Eligible(eps, func(ap netip.AddrPort) bool { return o.healthyLocked(ps, ap) }, ps.outlier.PanicThresholdPercent)
}

// EndpointStatus is one endpoint's health, for the admin API.
type EndpointStatus struct {
	Key          Key
	Healthy      bool
	ActiveDown   bool      // failed its active checks
	Reason       string    // why, while ActiveDown: the last failed check's error
	Ejected      bool      // ejected by outlier detection
	Ejections    int       // times ejected so far
	EjectedUntil time.Time // zero unless Ejected
	// Successes and Failures count the connections or requests the data planes
	// reported for the endpoint since it was first tracked.
	Successes, Failures uint64
}

// Status lists every endpoint with state (those of ports with an active check, and
// those a data plane reported on), sorted by service port and endpoint.
func (o *Overlay) Status() []EndpointStatus {
	o.mu.RLock()
	var out []EndpointStatus
	for _, ps := range o.ports {
		for _, st := range ps.endpoints {
			out = append(out, EndpointStatus{
				Key: st.key, Healthy: st.healthy(), ActiveDown: st.activeDown, Reason: st.downReason,
				Ejected: st.ejected, Ejections: st.ejections, EjectedUntil: st.ejectedUntil,
				Successes: st.successes.Load(), Failures: st.failures.Load(),
			})
		}
	}
	o.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Key, out[j].Key
		if a.ServicePort != b.ServicePort {
			return a.ServicePort < b.ServicePort
		}
		return a.Endpoint.Compare(b.Endpoint) < 0
	})
	return out
}

// Traffic calls fn for every tracked endpoint that the data planes have reported on,
// with its counts so far; unlike Status it does not allocate or sort.
func (o *Overlay) Traffic(fn func(k Key, successes, failures uint64)) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	for _, ps := range o.ports {
		for _, st := range ps.endpoints {
			if ok, bad := st.successes.Load(), st.failures.Load(); ok+bad > 0 {
				fn(st.key, ok, bad)
			}
		}
	}
}

// Subscription delivers the service ports whose endpoints changed health. C receives a
// value whenever Take has something new; Take returns and clears it.
type Subscription struct {
	o     *Overlay
	c     chan struct{}
	dirty map[string]struct{} // guarded by o.subMu
}

// Subscribe starts a Subscription; Close it when done.
func (o *Overlay) Subscribe() *Subscription {
	s := &Subscription{o: o, c: make(chan struct{}, 1), dirty: map[string]struct{}{}}
	o.mu.Lock()
	o.subs[s] = struct{}{}
	o.mu.Unlock()
	return s
}

// C is signalled (coalesced) when there are changes to Take.
func (s *Subscription) C() <-chan struct{} { return s.c }

// Take returns the service port IDs that changed since the last Take, sorted.
func (s *Subscription) Take() []string {
	s.o.subMu.Lock()
	defer s.o.subMu.Unlock()
	out := make([]string, 0, len(s.dirty))
	for id := range s.dirty {
		out = append(out, id)
	}
	clear(s.dirty)
	slices.Sort(out)
	return out
}

// Close ends the Subscription.
func (s *Subscription) Close() {
	s.o.mu.Lock()
	delete(s.o.subs, s)
	s.o.mu.Unlock()
}

// changedLocked tells every subscriber that servicePort changed. o.mu is held.
func (o *Overlay) changedLocked(servicePort string) {
	o.subMu.Lock()
	defer o.subMu.Unlock()
	for s := range o.subs {
		s.dirty[servicePort] = struct{}{}
		select {
		case s.c <- struct{}{}:
		default:
		}
	}
}

func sameCheck(a, b *model.ActiveHealthCheck) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.HTTP == b.HTTP && a.Path == b.Path && a.Host == b.Host &&
		slices.Equal(a.ExpectedStatuses, b.ExpectedStatuses) && a.Interval == b.Interval &&
		a.Timeout == b.Timeout && a.HealthyThreshold == b.HealthyThreshold &&
		a.UnhealthyThreshold == b.UnhealthyThreshold
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Run blocks until ctx ends, then closes the overlay: the way to own it from an
// errgroup. It returns nil.
func (o *Overlay) Run(ctx context.Context) error {
	<-ctx.Done()
	o.Close()
	return nil
}
