package kube

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	apiUp          prometheus.Gauge
	synced         prometheus.Gauge
	events         *prometheus.CounterVec
	rebuildSeconds prometheus.Histogram
	leader         prometheus.Gauge
	statusWrites   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		apiUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_kube_api_up",
			Help: "1 when the Kubernetes API server answered the last probe or watch, else 0.",
		}),
		synced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_kube_synced",
			Help: "1 once the initial list of every watched kind is done.",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_kube_events_total",
			Help: "Informer events (add, update, delete) by kind.",
		}, []string{"kind"}),
		rebuildSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weir_kube_rebuild_duration_seconds",
			Help:    "Time to rebuild the object set from the informer caches and update the store.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_kube_status_leader",
			Help: "1 while this replica holds the status write-back lease.",
		}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_kube_status_writes_total",
			Help: "Status write-backs by kind and result (ok, error).",
		}, []string{"kind", "result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.apiUp, m.synced, m.events, m.rebuildSeconds, m.leader, m.statusWrites} {
		if err := reg.Register(c); err != nil {
			return m, fmt.Errorf("kube source: register metrics: %w", err)
		}
	}
	return m, nil
}
