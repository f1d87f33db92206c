package health

import (
	"net/netip"
	"time"
)

// ReportSuccess records a successful connection or request: it ends the endpoint's run
// of consecutive failures. It is cheap enough for every connection.
func (o *Overlay) ReportSuccess(servicePort string, ep netip.AddrPort) {
	st := o.state(servicePort, ep)
	if st == nil {
		return
	}
	st.successes.Add(1)
	if st.consecutive.Load() != 0 {
		st.consecutive.Store(0)
	}
	if st.gateway.Load() != 0 {
		st.gateway.Store(0)
	}
}

// ReportFailure records a failed connection or request. Every kind counts toward
// ConsecutiveFailures; ConnectFailure and GatewayError also count toward
// ConsecutiveGatewayErrors. Reaching either threshold ejects the endpoint with
// exponential backoff: BaseEjectionTime × 2^(k−1), where k counts its recent ejections
// (at most MaxEjectionTime). k decays by one for every outlier Interval the endpoint
// then stays in rotation, as Envoy's ejection multiplier does,
// unless MaxEjectionPercent of the port's endpoints are already ejected (one endpoint
// may always be ejected, as in Envoy). Subscribers hear of the ejection at once.
func (o *Overlay) ReportFailure(servicePort string, ep netip.AddrPort, kind FailureKind) {
	st := o.state(servicePort, ep)
	if st == nil {
		return
	}
	st.failures.Add(1)
	n := st.consecutive.Add(1)
	g := st.gateway.Load()
	if kind == ConnectFailure || kind == GatewayError {
		g = st.gateway.Add(1)
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	ps := o.ports[servicePort]
	if o.closed || st.removed || st.ejected || ps == nil {
		return
	}
	od := ps.outlier
	limit := od.ConsecutiveFailures
	if limit <= 0 {
		limit = DefaultConsecutiveFailures
	}
	if int(n) < limit && (od.ConsecutiveGatewayErrors <= 0 || int(g) < od.ConsecutiveGatewayErrors) {
		return
	}
	maxPercent := od.MaxEjectionPercent
	if maxPercent <= 0 {
		maxPercent = DefaultMaxEjectionPercent
	}
	if ps.ejected >= max(1, ps.serving*maxPercent/100) {
		return
	}
	base := od.BaseEjectionTime
	if base <= 0 {
		base = DefaultBaseEjectionTime
	}
	if !st.returnedAt.IsZero() {
		interval := od.Interval
		if interval <= 0 {
			interval = DefaultOutlierInterval
		}
		st.ejections = max(0, st.ejections-int(time.Since(st.returnedAt)/interval))
	}
	st.ejected = true
	st.ejections++
	ps.ejected++
	st.consecutive.Store(0)
	st.gateway.Store(0)
	d := min(base<<min(st.ejections-1, 20), max(base, MaxEjectionTime))
	st.ejectedUntil = time.Now().Add(d)
	st.uneject = time.AfterFunc(d, func() { o.unejectEndpoint(st) })
	st.gauge.Set(0)
	o.ejects.WithLabelValues(servicePort, ep.String()).Inc()
	o.log.Warn("endpoint ejected", "service_port", servicePort, "endpoint", ep.String(),
		"reason", kind.String(), "failures", n, "for", d, "ejections", st.ejections)
	o.changedLocked(servicePort)
}

func (o *Overlay) unejectEndpoint(st *endpointState) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || st.removed || !st.ejected {
		return
	}
	st.ejected = false
	st.ejectedUntil = time.Time{}
	st.returnedAt = time.Now()
	if ps := o.ports[st.key.ServicePort]; ps != nil {
		ps.ejected--
	}
	st.gauge.Set(b2f(st.healthy()))
	o.log.Info("endpoint returned from ejection", "service_port", st.key.ServicePort, "endpoint", st.key.Endpoint.String())
	o.changedLocked(st.key.ServicePort)
}

// state returns the state of a serving endpoint of servicePort, made on the first
// report about it; nil for an endpoint the overlay does not track.
func (o *Overlay) state(servicePort string, ep netip.AddrPort) *endpointState {
	o.mu.RLock()
	st := o.lookupLocked(servicePort, ep)
	o.mu.RUnlock()
	if st != nil {
		return st
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	ps := o.ports[servicePort]
	if o.closed || ps == nil {
		return nil
	}
	if st = ps.endpoints[ep]; st != nil {
		return st
	}
	if !ps.serves(ep) {
		return nil
	}
	return o.newStateLocked(ps, ep)
}

func (o *Overlay) lookupLocked(servicePort string, ep netip.AddrPort) *endpointState {
	ps := o.ports[servicePort]
	if ps == nil {
		return nil
	}
	return ps.endpoints[ep]
}
