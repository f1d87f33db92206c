// Package userspace is weir's userspace L4 data plane: it listens on every proxied
// frontend of a Snapshot (ClusterIP, node port, external and LoadBalancer IP ports) and
// forwards TCP connections and UDP flows to the endpoints that model chose, through the
// balance schedulers, with session affinity, the health overlay, connect retries, idle
// timeouts, kube-proxy's reject and drop verdicts, and a drain on shutdown.
package userspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

// Options configure a Proxy.
type Options struct {
	// Logger receives listener changes and errors; nil discards them.
	Logger *slog.Logger
	// Registerer receives the weir_l4_* metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Proxy holds kube-proxy's settings. Its NodePortAddresses are the prefixes whose
	// local addresses serve node ports, per family; a family without any listens on its
	// unspecified address (0.0.0.0 or [::]). DetectLocal's cluster CIDRs tell pods apart
	// for the short-circuit of externalTrafficPolicy Local; interface modes cannot be
	// told in userspace. MasqueradeAll changes nothing: every connection leaves from
	// the node.
	Proxy model.ProxyConfig
	// LocalSources, when set, gives the prefixes whose clients are this node itself
	// (externalTrafficPolicy Local short-circuits them); default every interface
	// address and 127.0.0.0/8. Tests set it to tell loopback clients apart.
	LocalSources func() []netip.Prefix
	// Health is the health overlay the Proxy syncs, reads and reports to; nil disables
	// health checking.
	Health *health.Overlay
	// DrainTimeout bounds how long Shutdown waits for open connections; zero is 30s.
	DrainTimeout time.Duration
	// MaxUDPFlows bounds the UDP flows of all frontends together; a new flow beyond it
	// evicts the least recently used one. Zero is 16384. The bound is lowered so that
	// ReservedFDs descriptors stay free below the process's limit.
	MaxUDPFlows int
	// MaxUDPFlowsPerSource bounds the flows of one client address; a new one beyond it
	// evicts that address's least recently used flow. Zero is 256.
	MaxUDPFlowsPerSource int
	// ReservedFDs are the descriptors UDP flows leave free for listeners, TCP
	// connections and the admin API. Zero is 1024.
	ReservedFDs int
}

// Proxy is the userspace data plane. It implements dataplane.Dataplane.
type Proxy struct {
	log     *slog.Logger
	metrics *metrics
	opts    Options

	mu        sync.Mutex // serializes Sync, health rebuilds and Shutdown
	listeners map[frontendKey]*listener
	ports     map[string]*portState
	sctp      map[string]bool // SCTP ports already warned about
	closed    bool

	// local holds the node's own source prefixes, refreshed by every Sync, for
	// sourceOf; pods the pod detector per family.
	local atomic.Pointer[[]netip.Prefix]
	pods  [2]model.PodMatch

	stop chan struct{}  // ends the health loop
	wg   sync.WaitGroup // every goroutine the Proxy started

	loops []*tcpLoop   // serve every TCP frontend and connection, one per P
	open  atomic.Int64 // open TCP connections, which Shutdown waits for

	buffers sync.Pool // *[copyBufferSize]byte for bytes a TCP destination could not take yet

	flows     *flowTable // every UDP flow
	datagrams sync.Pool  // *datagramBuf for UDP replies being relayed
}

// portState is what outlives a Sync for one service port: live loads and affinity.
type portState struct {
	id       string
	svc      *model.Service
	port     *model.ServicePort
	loads    map[netip.AddrPort]*balance.Load
	affinity [3]*balance.Affinity // by set: cluster, external, short-circuit
	targets  [3]*target
	// listeners serving this port, refreshed at the end of every Sync.
	listeners []*listener
}

// The endpoint sets of a port, in model.SetKind's order.
const (
	setCluster      = int(model.ClusterSet)
	setExternal     = int(model.ExternalSet)
	setShortCircuit = int(model.ShortCircuitSet)
)

// New returns a Proxy that listens on nothing until the first Sync.
func New(opts Options) (*Proxy, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = defaultDrainTimeout
	}
	p := &Proxy{
		log: log.With("dataplane", "userspace"), metrics: m, opts: opts,
		listeners: map[frontendKey]*listener{}, ports: map[string]*portState{},
		sctp: map[string]bool{}, stop: make(chan struct{}),
	}
	p.buffers.New = func() any { return new([copyBufferSize]byte) }
	p.flows = newFlowTable(opts.MaxUDPFlows, opts.MaxUDPFlowsPerSource, opts.ReservedFDs)
	p.datagrams.New = func() any { return new(datagramBuf) }
	if err := opts.Proxy.DetectLocal.Validate(); err != nil {
		return nil, fmt.Errorf("userspace: %w", err)
	}
	p.pods = [2]model.PodMatch{opts.Proxy.DetectLocal.Pods(false), opts.Proxy.DetectLocal.Pods(true)}
	for range min(runtime.GOMAXPROCS(0), maxLoops) {
		lp, err := newTCPLoop(p)
		if err != nil {
			for _, lp := range p.loops {
				lp.discard()
			}
			return nil, err
		}
		p.loops = append(p.loops, lp)
	}
	for _, lp := range p.loops {
		p.wg.Go(lp.run)
	}
	var sub *health.Subscription
	if opts.Health != nil {
		sub = opts.Health.Subscribe()
	}
	p.wg.Go(func() { p.background(sub) })
	return p, nil
}

// Name is "userspace".
func (p *Proxy) Name() string { return "userspace" }

// Sync listens on every frontend of snap and points each at its endpoints. Listeners
// whose frontend remains are not touched (their target is swapped atomically); new
// frontends are bound, removed ones stop accepting while their connections go on. A
// frontend that cannot be bound is reported in the error and the others still apply.
func (p *Proxy) Sync(ctx context.Context, snap *model.Snapshot) error {
	if p.opts.Health != nil {
		p.opts.Health.Sync(ctx, snap)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("userspace: Sync after Shutdown")
	}
	var errs []error
	want := make(map[frontendKey]frontendSpec, len(p.listeners))
	seenPorts := make(map[string]bool, len(p.ports))
	local, err := localAddrs()
	if err != nil {
		errs = append(errs, err)
	}
	sources := localSources(local)
	if p.opts.LocalSources != nil {
		sources = p.opts.LocalSources()
	}
	p.local.Store(&sources)
	nodeAddrs := p.nodePortAddrs(local)
	for _, svc := range snap.Services {
		if !svc.Proxied() {
			continue
		}
		for _, sp := range svc.Ports {
			id := sp.ID(svc.Key)
			if sp.Protocol == model.SCTP {
				if !p.sctp[id] {
					p.sctp[id] = true
					p.log.Warn("SCTP is not supported in userspace mode; use --mode nftables or iptables for this port",
						"service_port", id)
					p.metrics.unsupported.WithLabelValues(id, string(sp.Protocol)).Set(1)
				}
				continue
			}
			if seenPorts[id] {
				continue
			}
			seenPorts[id] = true
			ps := p.ports[id]
			if ps == nil {
				ps = &portState{id: id, loads: map[netip.AddrPort]*balance.Load{}}
				p.ports[id] = ps
			}
			if ps.svc == nil || portChanged(ps.svc, ps.port, svc, sp) {
				ps.svc, ps.port = svc, sp
				p.rebuild(ps)
			}
			ps.svc, ps.port = svc, sp
			ps.listeners = ps.listeners[:0]
			for _, spec := range frontendsOf(svc, sp, id, nodeAddrs) {
				if prev, dup := want[spec.key]; dup {
					errs = append(errs, fmt.Errorf("userspace: %s %s is claimed by both %s and %s; keeping the first",
						spec.key.proto, spec.key.addr, prev.servicePort, id))
					continue
				}
				want[spec.key] = spec
			}
		}
	}
	for id := range p.sctp {
		if !seenPorts[id] && !stillSCTP(snap, id) {
			delete(p.sctp, id)
			p.metrics.unsupported.DeletePartialMatch(prometheus.Labels{"service_port": id})
		}
	}
	for id := range p.ports {
		if !seenPorts[id] {
			delete(p.ports, id)
		}
	}
	// Stop accepting on removed frontends first (their connections go on), so that a
	// port they free can be bound below.
	for key, l := range p.listeners {
		if _, ok := want[key]; !ok {
			l.stopAccepting()
			if key.proto == model.UDP {
				l.closeUDP()
			}
			delete(p.listeners, key)
			p.metrics.forget(l.spec().servicePort, key.addr.String())
			p.log.Info("stopped listening", "frontend", key.String())
		}
	}
	// Bind new frontends and retarget kept ones.
	for key, spec := range want {
		ps := p.ports[spec.servicePort]
		t := p.routes(ps, spec)
		if l := p.listeners[key]; l != nil {
			l.retarget(spec, t)
			ps.listeners = append(ps.listeners, l)
			continue
		}
		l, err := p.listen(spec, t)
		if err != nil {
			if key.addr.Addr() == netip.IPv6Unspecified() {
				// A host without IPv6 serves node ports on IPv4 only.
				p.log.Debug("node port not served on IPv6", "frontend", key.String(), "err", err)
				continue
			}
			errs = append(errs, err)
			continue
		}
		p.listeners[key] = l
		ps.listeners = append(ps.listeners, l)
		p.log.Info("listening", "frontend", key.String(), "service_port", spec.servicePort)
	}
	return errors.Join(errs...)
}

func stillSCTP(snap *model.Snapshot, id string) bool {
	for _, svc := range snap.Services {
		for _, sp := range svc.Ports {
			if sp.Protocol == model.SCTP && sp.ID(svc.Key) == id {
				return true
			}
		}
	}
	return false
}

// rebuild builds the port's cluster and external targets from its endpoint sets and
// the health overlay. p.mu is held.
func (p *Proxy) rebuild(ps *portState) {
	svc, sp := ps.svc, ps.port
	pol := policyOf(svc, sp)
	live := map[netip.AddrPort]bool{}
	for _, ep := range sp.Endpoints {
		live[ep.AddrPort()] = true
	}
	for ap := range ps.loads {
		if !live[ap] {
			delete(ps.loads, ap)
		}
	}
	for set, es := range [3]model.EndpointSet{sp.Cluster, sp.External, sp.ShortCircuit} {
		if set == setShortCircuit && !svc.ExternalTrafficLocal {
			// The same set as External: share its target.
			ps.affinity[set], ps.targets[set] = nil, ps.targets[setExternal]
			continue
		}
		aff := ps.affinity[set]
		if svc.AffinityTimeout <= 0 {
			aff = nil
		} else if aff == nil || aff.Timeout() != svc.AffinityTimeout {
			aff = balance.NewAffinity(svc.AffinityTimeout)
		}
		ps.affinity[set] = aff
		t := p.buildTarget(ps, pol, es, aff)
		if aff != nil && ps.targets[set] != nil {
			for _, b := range ps.targets[set].bal {
				if balance.Find(t.bal, b.ID) < 0 {
					aff.Forget(b.ID)
				}
			}
		}
		ps.targets[set] = t
	}
	// Retarget this port's listeners (as of the last Sync; Sync retargets new ones) and
	// drop UDP flows to endpoints that are gone.
	for _, l := range ps.listeners {
		spec := l.spec()
		l.retarget(spec, p.routes(ps, spec))
	}
}

// routes are the targets of one of the port's frontends by the client's model.Source:
// the route model.ProxyConfig gives each source (external frontends of Local Services
// send the node's and recognised pods' connections to the short-circuit set).
func (p *Proxy) routes(ps *portState, spec frontendSpec) routes {
	var out routes
	for src := range out {
		set := spec.set
		if set == setExternal {
			pods := p.pods[btoi(spec.key.addr.Addr().Is6())]
			set = int(p.opts.Proxy.External(ps.svc, model.Source(src), pods).Set)
		}
		out[src] = ps.targets[set]
	}
	return out
}

// portChanged reports whether a port's targets must be rebuilt: its endpoint sets,
// scheduling or timeouts changed. Health changes arrive through the subscription.
func portChanged(oldSvc *model.Service, oldSP *model.ServicePort, svc *model.Service, sp *model.ServicePort) bool {
	if oldSvc.AffinityTimeout != svc.AffinityTimeout ||
		oldSvc.ExternalTrafficLocal != svc.ExternalTrafficLocal ||
		!sameSet(oldSP.Cluster, sp.Cluster) || !sameSet(oldSP.External, sp.External) ||
		!sameSet(oldSP.ShortCircuit, sp.ShortCircuit) ||
		!slices.Equal(oldSP.Endpoints, sp.Endpoints) {
		return true
	}
	a, b := policyOf(oldSvc, oldSP), policyOf(svc, sp)
	return a != b && (a.Algorithm != b.Algorithm || a.MaglevTableSize != b.MaglevTableSize ||
		a.MaglevSeed != b.MaglevSeed || a.ConnectTimeout != b.ConnectTimeout ||
		a.IdleTimeout != b.IdleTimeout || a.UDPIdleTimeout != b.UDPIdleTimeout)
}

func sameSet(a, b model.EndpointSet) bool {
	return a.Verdict == b.Verdict && slices.Equal(a.Endpoints, b.Endpoints)
}

func (p *Proxy) buildTarget(ps *portState, pol *model.Policy, es model.EndpointSet, aff *balance.Affinity) *target {
	t := &target{
		servicePort: ps.id, verdict: es.Verdict, affinity: aff, health: p.opts.Health,
		connectTimeout: orDefault(pol.ConnectTimeout, defaultConnectTimeout),
		idleTimeout:    orDefault(pol.IdleTimeout, defaultIdleTimeout),
		udpIdleTimeout: orDefault(pol.UDPIdleTimeout, defaultUDPIdleTimeout),
	}
	eps := es.Endpoints
	if es.Verdict == model.Forward && p.opts.Health != nil {
		eps = p.opts.Health.Eligible(ps.id, eps)
	}
	if es.Verdict != model.Forward {
		eps = nil
	}
	for _, ep := range eps {
		ap := ep.AddrPort()
		load := ps.loads[ap]
		if load == nil {
			load = &balance.Load{}
			ps.loads[ap] = load
		}
		t.backends = append(t.backends, backend{addr: ap, load: load})
		t.bal = append(t.bal, balance.Backend{ID: balance.KeyOf(ap), Weight: ep.Weight, Load: load})
	}
	if es.Verdict == model.Forward && len(t.backends) == 0 {
		t.verdict = model.Reject
	}
	switch pol.Algorithm {
	case balance.SourceHash, balance.Maglev:
		t.keyOn = keySource
	case balance.DestinationHash:
		t.keyOn = keyDestination
	}
	picker, err := balance.New(pol.Algorithm, t.bal, balance.Options{MaglevTableSize: pol.MaglevTableSize, Seed: pol.MaglevSeed})
	if err != nil {
		p.log.Error("scheduler rejected; using round robin", "service_port", ps.id, "algorithm", pol.Algorithm, "err", err)
		picker, _ = balance.New(balance.RoundRobin, t.bal, balance.Options{})
		t.keyOn = keyNone
	}
	t.picker = picker
	return t
}

// policyOf is the port's policy, else the Service's, else the zero Policy (whose
// zero fields read as defaults).
func policyOf(svc *model.Service, sp *model.ServicePort) *model.Policy {
	switch {
	case sp.Policy != nil:
		return sp.Policy
	case svc.Policy != nil:
		return svc.Policy
	}
	return &model.Policy{}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// affinitySweep is how often expired session affinity entries are dropped in bulk
// (lookups drop them lazily too).
const affinitySweep = time.Minute

// releaseCheck is how often the Proxy looks whether a flood of UDP flows has ended.
const releaseCheck = 2 * time.Second

// releaseMemory gives the memory of a flood of UDP flows back to the operating system
// once the flow table has shrunk to a quarter of its peak. The Go runtime would keep
// the freed goroutine stacks and heap for minutes (until its next forced collection),
// so a burst of clients would leave weir's RSS high long after they left.
func (p *Proxy) releaseMemory() {
	if !p.flows.shrunk() {
		return
	}
	start := time.Now()
	debug.FreeOSMemory()
	p.log.Info("UDP flows fell after a peak: memory returned to the operating system",
		"flows", p.flows.len(), "took", time.Since(start).Round(time.Millisecond))
}

// background rebuilds the targets of service ports whose endpoints changed health, and
// sweeps expired affinity entries and releases the memory of ended UDP floods, until
// Shutdown.
func (p *Proxy) background(sub *health.Subscription) {
	var changed <-chan struct{}
	if sub != nil {
		defer sub.Close()
		changed = sub.C()
	}
	sweep := time.NewTicker(affinitySweep)
	defer sweep.Stop()
	release := time.NewTicker(releaseCheck)
	defer release.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-release.C:
			p.releaseMemory()
		case now := <-sweep.C:
			p.mu.Lock()
			for _, ps := range p.ports {
				for _, aff := range ps.affinity {
					if aff != nil {
						aff.Sweep(now)
					}
				}
			}
			p.mu.Unlock()
		case <-changed:
			ids := sub.Take()
			p.mu.Lock()
			if !p.closed {
				for _, id := range ids {
					if ps := p.ports[id]; ps != nil {
						p.rebuild(ps)
					}
				}
			}
			p.mu.Unlock()
		}
	}
}

// Drain settings: connections idle for drainIdle are closed (checked every
// drainIdleCheck); the drain logs its progress every drainProgress.
const (
	drainIdle      = 2 * time.Second
	drainIdleCheck = 250 * time.Millisecond
	drainProgress  = time.Second
)

// Shutdown stops accepting on every frontend, closes the TCP connections idle for
// drainIdle (at once, then as others fall idle), waits for the others to finish until
// ctx ends or the drain timeout passes, logging progress every second, then closes
// what is left. It returns once every goroutine of the Proxy has returned.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ls := make([]*listener, 0, len(p.listeners))
	for _, l := range p.listeners {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	close(p.stop)
	for _, l := range ls {
		l.stopAccepting()
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.DrainTimeout)
	defer cancel()
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	idle := time.NewTicker(drainIdleCheck)
	defer idle.Stop()
	progress := time.NewTicker(drainProgress)
	defer progress.Stop()
	if n := p.open.Load(); n > 0 {
		p.log.Info("draining: closing idle connections, waiting for the others", "open", n, "timeout", p.opts.DrainTimeout)
		p.closeIdle(drainIdle)
	}
	var err error
	for p.open.Load() > 0 && err == nil {
		select {
		case <-ctx.Done():
			err = fmt.Errorf("userspace: drain: %d connections still open, closed: %w", p.open.Load(), ctx.Err())
		case <-idle.C:
			p.closeIdle(drainIdle)
		case <-progress.C:
			p.log.Info("draining", "open", p.open.Load(), "elapsed", time.Since(start).Round(time.Second))
		case <-tick.C:
		}
	}
	for _, l := range ls {
		l.closeUDP()
	}
	for _, lp := range p.loops {
		lp.stop() // closes the loop's connections
	}
	p.wg.Wait()
	return err
}

// closeIdle closes the established TCP connections that carried no byte for idleFor
// and have nothing buffered, so that an idle connection (a pooled client connection,
// a forgotten shell) does not hold the drain until its timeout.
func (p *Proxy) closeIdle(idleFor time.Duration) {
	var closed atomic.Int64
	var wg sync.WaitGroup
	for _, lp := range p.loops {
		wg.Add(1)
		if !lp.do(func() { closed.Add(int64(lp.closeIdle(idleFor))); wg.Done() }) {
			wg.Done()
		}
	}
	wg.Wait()
	if n := closed.Load(); n > 0 {
		p.log.Info("draining: closed idle connections", "closed", n, "idle_for", idleFor, "open", p.open.Load())
	}
}

// Close shuts down at once, without draining.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.Shutdown(ctx)
	return nil
}

// Frontends lists the frontends the Proxy listens on, sorted, for status pages.
func (p *Proxy) Frontends() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.listeners))
	for k := range p.listeners {
		out = append(out, k.String())
	}
	slices.Sort(out)
	return out
}
