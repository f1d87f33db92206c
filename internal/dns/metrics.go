package dns

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	nTypes  = 11 // the types typeIndex names, + other
	nRcodes = 24 // rcodes 0..22 (BADCOOKIE = 23 counts as other) + other
)

// metrics are the weir_dns_* series. The request counters are resolved once per
// (type, rcode) and cached, so that a query costs two atomic adds and a histogram
// observation.
type metrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	records  prometheus.Gauge
	invalids prometheus.Counter
	cache    *prometheus.CounterVec

	counters [nTypes][nRcodes]atomic.Pointer[prometheus.Counter]
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_dns_requests_total",
			Help: "DNS queries answered, by query type and response code.",
		}, []string{"type", "rcode"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weir_dns_request_duration_seconds",
			Help:    "Time to answer a DNS query, from the decoded query to the written response.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 25e-3, 100e-3, 500e-3, 2},
		}),
		records: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_dns_records",
			Help: "Resource records served in the cluster zone and its reverse names.",
		}),
		invalids: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weir_dns_invalid_messages_total",
			Help: "Received messages that could not be decoded.",
		}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_dns_forward_cache_total",
			Help: "Lookups in the cache of upstream answers, by result (hit or miss).",
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.records, m.invalids, m.cache} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("dns: metrics already registered: %w", err)
			}
			return nil, fmt.Errorf("dns: registering metrics: %w", err)
		}
	}
	return m, nil
}

// typeIndex is the query types counted under their own name; the rest are "other".
func typeIndex(qtype uint16) int {
	switch qtype {
	case mdns.TypeA:
		return 0
	case mdns.TypeAAAA:
		return 1
	case mdns.TypeSRV:
		return 2
	case mdns.TypePTR:
		return 3
	case mdns.TypeTXT:
		return 4
	case mdns.TypeCNAME:
		return 5
	case mdns.TypeSOA:
		return 6
	case mdns.TypeNS:
		return 7
	case mdns.TypeANY:
		return 8
	case mdns.TypeHTTPS:
		return 9
	}
	return nTypes - 1
}

func (m *metrics) observe(qtype uint16, rcode int, d time.Duration) {
	if rcode < 0 {
		return
	}
	ti, ri := typeIndex(qtype), min(rcode, nRcodes-1)
	c := m.counters[ti][ri].Load()
	if c == nil {
		typ := "other"
		if ti < nTypes-1 {
			typ = mdns.TypeToString[qtype]
		}
		rc := "other"
		if s, ok := mdns.RcodeToString[rcode]; ok && ri == rcode {
			rc = s
		}
		cc := m.requests.WithLabelValues(typ, rc)
		c = &cc
		m.counters[ti][ri].Store(c)
	}
	(*c).Inc()
	m.duration.Observe(d.Seconds())
}

func (m *metrics) setRecords(n int) { m.records.Set(float64(n)) }

func (m *metrics) invalid([]byte, error) { m.invalids.Inc() }
