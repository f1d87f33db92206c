package userspace

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	conns       *prometheus.CounterVec
	active      *prometheus.GaugeVec
	bytes       *prometheus.CounterVec
	connErrors  *prometheus.CounterVec
	refused     *prometheus.CounterVec
	unsupported *prometheus.GaugeVec
	evictions   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	lf := []string{"service_port", "frontend"}
	m := &metrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_l4_connections_total",
			Help: "Connections (TCP) or flows (UDP) accepted on a frontend and forwarded to an endpoint.",
		}, lf),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_l4_connections_active",
			Help: "Connections (TCP) or flows (UDP) open now.",
		}, lf),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_l4_bytes_total",
			Help: "Bytes proxied; direction rx is client to endpoint, tx endpoint to client. TCP bytes are counted when a connection ends.",
		}, append(lf, "direction")),
		connErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_l4_connect_errors_total",
			Help: "Failed connects (or UDP sends) to an endpoint; each is retried on another endpoint when there is one.",
		}, lf),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_l4_refused_total",
			Help: "Connections or datagrams not forwarded, by reason: reject (no endpoint), drop (traffic policy Local without a local endpoint), source-range, exhausted (every endpoint tried failed).",
		}, append(lf, "reason")),
		unsupported: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_l4_unsupported_ports",
			Help: "1 for each service port the userspace data plane cannot proxy (SCTP).",
		}, []string{"service_port", "protocol"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_l4_udp_flow_evictions_total",
			Help: "UDP flows ended before their idle timeout to make room for a new one, by reason: lru (the flow table is full, or descriptors ran short) or per-source (the client address has its maximum of flows).",
		}, []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.conns, m.active, m.bytes, m.connErrors, m.refused, m.unsupported, m.evictions} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("userspace: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// frontendMetrics are one listener's series for one service port, resolved once.
type frontendMetrics struct {
	conns, connErrors, rx, tx            prometheus.Counter
	active                               prometheus.Gauge
	reject, drop, sourceRange, exhausted prometheus.Counter
}

func (m *metrics) frontend(servicePort, frontend string) *frontendMetrics {
	return &frontendMetrics{
		conns:       m.conns.WithLabelValues(servicePort, frontend),
		connErrors:  m.connErrors.WithLabelValues(servicePort, frontend),
		rx:          m.bytes.WithLabelValues(servicePort, frontend, "rx"),
		tx:          m.bytes.WithLabelValues(servicePort, frontend, "tx"),
		active:      m.active.WithLabelValues(servicePort, frontend),
		reject:      m.refused.WithLabelValues(servicePort, frontend, "reject"),
		drop:        m.refused.WithLabelValues(servicePort, frontend, "drop"),
		sourceRange: m.refused.WithLabelValues(servicePort, frontend, "source-range"),
		exhausted:   m.refused.WithLabelValues(servicePort, frontend, "exhausted"),
	}
}

// forget deletes a removed frontend's series.
func (m *metrics) forget(servicePort, frontend string) {
	l := prometheus.Labels{"service_port": servicePort, "frontend": frontend}
	m.conns.DeletePartialMatch(l)
	m.active.DeletePartialMatch(l)
	m.bytes.DeletePartialMatch(l)
	m.connErrors.DeletePartialMatch(l)
	m.refused.DeletePartialMatch(l)
}
