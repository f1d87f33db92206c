package dataplane

import (
	"log/slog"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// UnsupportedScheduler is a Service port whose scheduler a kernel data plane cannot do.
type UnsupportedScheduler struct {
	Port      string // model.ServicePort.ID
	Algorithm string
}

// UnsupportedSchedulers reports what a kernel data plane falls back on: one warning per
// Service port and algorithm, and weir_dataplane_unsupported_scheduler{service_port,
// algorithm} = 1 for as long as the port asks for it. The caller serialises Update.
type UnsupportedSchedulers struct {
	mode   string
	log    *slog.Logger
	gauge  *prometheus.GaugeVec
	warned map[UnsupportedScheduler]bool
}

// NewUnsupportedSchedulers reports for the data plane called mode ("iptables", …).
func NewUnsupportedSchedulers(mode string, log *slog.Logger) *UnsupportedSchedulers {
	return &UnsupportedSchedulers{
		mode: mode,
		log:  log,
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_dataplane_unsupported_scheduler",
			Help: "1 for each Service port whose scheduler the kernel data plane cannot do; it uses Random instead.",
		}, []string{"service_port", "algorithm"}),
		warned: map[UnsupportedScheduler]bool{},
	}
}

// Collector is the gauge, for registration.
func (u *UnsupportedSchedulers) Collector() prometheus.Collector { return u.gauge }

// Update records that a Service's unsupported schedulers went from old to new.
func (u *UnsupportedSchedulers) Update(old, new []UnsupportedScheduler) {
	for _, s := range old {
		if !slices.Contains(new, s) {
			u.gauge.DeleteLabelValues(s.Port, s.Algorithm)
			delete(u.warned, s)
		}
	}
	for _, s := range new {
		u.gauge.WithLabelValues(s.Port, s.Algorithm).Set(1)
		if !u.warned[s] {
			u.warned[s] = true
			u.log.Warn("scheduler not supported by the "+u.mode+" data plane; using Random",
				"service_port", s.Port, "algorithm", s.Algorithm)
		}
	}
}
