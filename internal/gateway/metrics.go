package gateway

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus series, labelled by route rule ("namespace/
// name/rule") and backend ("namespace/service:port").
type metrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	retries      *prometheus.CounterVec
	rateLimited  *prometheus.CounterVec
	overflows    *prometheus.CounterVec
	rollbacks    *prometheus.CounterVec
	mirrorDrops  *prometheus.CounterVec
	listenerErrs *prometheus.CounterVec
	handoffs     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weir_gateway_requests_total",
			Help: "HTTP requests answered by the gateway, by route rule, backend and status class."}, []string{"route", "backend", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "weir_gateway_request_duration_seconds",
			Help:    "Time from request to the end of the response headers, by route rule and backend.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"route", "backend"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weir_gateway_retries_total",
			Help: "Upstream attempts retried, by route rule and backend."}, []string{"route", "backend"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weir_gateway_rate_limited_total",
			Help: "Requests answered 429 by a local rate limit, by route rule."}, []string{"route"}),
		overflows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weir_gateway_breaker_overflows_total",
			Help: "Requests answered 503 because a backend's circuit breaker was full."}, []string{"backend"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weir_gateway_canary_rollbacks_total",
			Help: "Canary backends rolled back to weight 0 by canary analysis."}, []string{"route", "backend"}),
		mirrorDrops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weir_gateway_mirror_dropped_total",
			Help: "Mirror copies not sent (too many in flight, or a body too large to copy)."}, []string{"route"}),
		listenerErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weir_gateway_listener_errors_total",
			Help: "Listeners that could not be opened, by address."}, []string{"address"}),
		handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weir_gateway_loop_handoffs_total",
			Help: "Connections the event loops handed to the goroutine-per-connection server, by why: " +
				"a request they do not parse (a body, an upgrade, HTTP/1.0, a long or malformed head) or a route they do not serve (h2c backends)."},
			[]string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.retries, m.rateLimited, m.overflows, m.rollbacks, m.mirrorDrops, m.listenerErrs, m.handoffs} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("gateway: register metrics: %w", err)
		}
	}
	return m, nil
}

// routeMetrics are the series of one (rule, backend) pair, resolved once per Sync so
// that the request path does no label lookups.
type routeMetrics struct {
	codes    [6]prometheus.Counter // 1xx … 5xx at 1..5; 0 for anything else
	duration prometheus.Observer
	retries  prometheus.Counter
}

func (m *metrics) forRoute(route, backend string) *routeMetrics {
	rm := &routeMetrics{
		duration: m.duration.WithLabelValues(route, backend),
		retries:  m.retries.WithLabelValues(route, backend),
	}
	for i, class := range []string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		rm.codes[i] = m.requests.WithLabelValues(route, backend, class)
	}
	return rm
}

func (rm *routeMetrics) observe(code int, d time.Duration) {
	c := code / 100
	if c < 1 || c > 5 {
		c = 0
	}
	rm.codes[c].Inc()
	rm.duration.Observe(d.Seconds())
}

// forget drops the series of a (route, backend) pair no longer configured, so that
// reloads with changing routes do not grow the registry without bound.
func (m *metrics) forget(route, backend string) {
	l := prometheus.Labels{"route": route, "backend": backend}
	m.requests.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
	m.retries.DeletePartialMatch(l)
}
