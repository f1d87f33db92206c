package gateway

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

// Health is the shared endpoint health the gateway reads and feeds: internal/health's
// *Overlay satisfies it. servicePort is model.ServicePort.ID.
type Health interface {
	Healthy(servicePort string, ep netip.AddrPort) bool
	ReportSuccess(servicePort string, ep netip.AddrPort)
	ReportFailure(servicePort string, ep netip.AddrPort, kind health.FailureKind)
}

// ejector is the gateway's own passive outlier detection, used when Options.Health is
// nil: consecutive failures (or gateway errors) eject an endpoint for BaseEjectionTime ×
// the number of its ejections (at most 300 s), never more than MaxEjectionPercent of a
// port's endpoints (one always may be). Ejections end lazily when checked.
type ejector struct {
	onEject func(servicePort string, ep netip.AddrPort)

	mu    sync.RWMutex
	ports map[string]*ejectPort
}

type ejectPort struct {
	od        model.OutlierDetection
	endpoints int
	eps       map[netip.AddrPort]*ejectState
}

type ejectState struct {
	consecutive, gateway int
	ejections            int
	until                time.Time
	// ejectedUntil mirrors until (UnixNano) for the lock-free Healthy check.
	ejectedUntil atomic.Int64
	// failing is set while consecutive or gateway is not zero.
	failing atomic.Bool
}

func newEjector(onEject func(string, netip.AddrPort)) *ejector {
	return &ejector{onEject: onEject, ports: map[string]*ejectPort{}}
}

// configure records the outlier settings and endpoint count of every port in use.
func (e *ejector) configure(ports map[string]portConfig) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, pc := range ports {
		p := e.ports[id]
		if p == nil {
			p = &ejectPort{eps: map[netip.AddrPort]*ejectState{}}
			e.ports[id] = p
		}
		p.od, p.endpoints = pc.outlier, pc.endpoints
	}
	for id := range e.ports {
		if _, ok := ports[id]; !ok {
			delete(e.ports, id)
		}
	}
}

type portConfig struct {
	outlier   model.OutlierDetection
	endpoints int
}

func (e *ejector) lookup(servicePort string, ep netip.AddrPort) *ejectState {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if p := e.ports[servicePort]; p != nil {
		return p.eps[ep]
	}
	return nil
}

func (e *ejector) Healthy(servicePort string, ep netip.AddrPort) bool {
	st := e.lookup(servicePort, ep)
	return st == nil || time.Now().UnixNano() >= st.ejectedUntil.Load()
}

func (e *ejector) ReportSuccess(servicePort string, ep netip.AddrPort) {
	st := e.lookup(servicePort, ep)
	if st == nil || !st.failing.Load() {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	st.consecutive, st.gateway = 0, 0
	st.failing.Store(false)
}

func (e *ejector) ReportFailure(servicePort string, ep netip.AddrPort, kind health.FailureKind) {
	e.mu.Lock()
	p := e.ports[servicePort]
	if p == nil {
		e.mu.Unlock()
		return
	}
	st := p.eps[ep]
	if st == nil {
		st = &ejectState{}
		p.eps[ep] = st
	}
	now := time.Now()
	if now.Before(st.until) {
		e.mu.Unlock()
		return
	}
	st.consecutive++
	st.failing.Store(true)
	if kind != health.ServerError {
		st.gateway++
	}
	limit := p.od.ConsecutiveFailures
	if limit <= 0 {
		limit = model.DefaultConsecutiveFailures
	}
	if st.consecutive < limit && (p.od.ConsecutiveGatewayErrors <= 0 || st.gateway < p.od.ConsecutiveGatewayErrors) {
		e.mu.Unlock()
		return
	}
	ejected := 0
	for _, o := range p.eps {
		if now.Before(o.until) {
			ejected++
		}
	}
	maxPct := p.od.MaxEjectionPercent
	if maxPct <= 0 {
		maxPct = model.DefaultMaxEjectionPercent
	}
	if ejected > 0 && (ejected+1)*100 > maxPct*p.endpoints {
		e.mu.Unlock()
		return
	}
	st.ejections++
	base := p.od.BaseEjectionTime
	if base <= 0 {
		base = model.DefaultBaseEjectionTime
	}
	d := min(base*time.Duration(st.ejections), 300*time.Second)
	st.until = now.Add(d)
	st.ejectedUntil.Store(st.until.UnixNano())
	st.consecutive, st.gateway = 0, 0
	st.failing.Store(false)
	e.mu.Unlock()
	if e.onEject != nil {
		e.onEject(servicePort, ep)
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
	minReq := c.ca.MinRequests
	if minReq <= 0 {
		minReq = model.DefaultCanaryMinRequests
	}
	maxPct := c.ca.MaxErrorPercent
	if maxPct <= 0 {
		maxPct = model.DefaultCanaryMaxErrorPercent
	}
	if total >= minReq && errs*100 > maxPct*total {
		c.rolledBack.Store(true)
		return true
	}
	return false
}
