// Package kernel is what weir's kernel data planes (iptables and nftables) share
// around their own rule writers: the options both take and their defaults, the IP
// families, and the bookkeeping of a sync: its metrics, the health-check node ports,
// stale UDP conntrack entries and schedulers the kernel cannot do. How rules are built
// and written stays in each data plane's package.
package kernel

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/conntrack"
	"weir.dev/weir/internal/dataplane/healthcheck"
	"weir.dev/weir/internal/model"
)

// DefaultMasqueradeMark is kube-proxy's masquerade mark bit.
const DefaultMasqueradeMark = 0x4000

// Family is an IP family weir programs.
type Family string

// The IP families.
const (
	IPv4 Family = "IPv4"
	IPv6 Family = "IPv6"
)

// Options configure a kernel data plane; each embeds them in its own Options.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Proxy holds kube-proxy's settings that change verdicts: --masquerade-all,
	// --detect-local-mode and --nodeport-addresses (empty: every local address but
	// loopback).
	Proxy model.ProxyConfig
	// IPFamilies to program; default both.
	IPFamilies []Family
	// MasqueradeMark is the mark bit that asks for masquerade; default 0x4000.
	MasqueradeMark uint32
	// Conntrack deletes stale UDP flows; default netlink in the current namespace.
	Conntrack conntrack.Cleaner
	// HealthCheck serves health-check node ports; default a new server. Set
	// DisableHealthCheck to serve none.
	HealthCheck        *healthcheck.Server
	DisableHealthCheck bool
}

// WithDefaults returns o with every option left unset at its default, or an error
// naming an IP family weir does not know.
func (o Options) WithDefaults() (Options, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MasqueradeMark == 0 {
		o.MasqueradeMark = DefaultMasqueradeMark
	}
	if len(o.IPFamilies) == 0 {
		o.IPFamilies = []Family{IPv4, IPv6}
	}
	for _, f := range o.IPFamilies {
		if f != IPv4 && f != IPv6 {
			return o, fmt.Errorf("unknown IP family %q", f)
		}
	}
	if err := o.Proxy.DetectLocal.Validate(); err != nil {
		return o, err
	}
	if o.Conntrack == nil {
		o.Conntrack = conntrack.Netlink{}
	}
	return o, nil
}

// Syncs is the bookkeeping around one data plane's syncs. The data plane serialises
// its calls.
type Syncs struct {
	// Options are the data plane's, with defaults filled in.
	Options Options
	// Log is Options.Logger, labelled with the data plane.
	Log *slog.Logger
	// Unsupported reports the schedulers the data plane falls back from.
	Unsupported *dataplane.UnsupportedSchedulers

	health       *healthcheck.Server
	ownHealth    bool // health was started here; Close stops it
	syncDuration prometheus.Histogram
	syncErrors   prometheus.Counter
}

// NewSyncs fills in o's defaults and makes the sync metrics of the data plane called
// mode ("iptables", "nftables"): weir_<mode>_sync_duration_seconds with buckets,
// weir_<mode>_sync_errors_total and the unsupported scheduler gauge, registered with
// o.Registerer together with the data plane's own collectors. It starts a health-check
// server unless one is given or they are disabled.
func NewSyncs(mode string, o Options, buckets []float64, collectors ...prometheus.Collector) (*Syncs, error) {
	o, err := o.WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mode, err)
	}
	s := &Syncs{Options: o, Log: o.Logger.With("dataplane", mode)}
	s.syncDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "weir_" + mode + "_sync_duration_seconds", Help: "Time to compute and write one " + mode + " sync.",
		Buckets: buckets,
	})
	s.syncErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "weir_" + mode + "_sync_errors_total", Help: mode + " syncs that failed.",
	})
	s.Unsupported = dataplane.NewUnsupportedSchedulers(mode, s.Log)
	if o.Registerer != nil {
		for _, c := range append([]prometheus.Collector{s.syncDuration, s.syncErrors, s.Unsupported.Collector()}, collectors...) {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("%s: register metrics: %w", mode, err)
			}
		}
	}
	if !o.DisableHealthCheck {
		s.health = o.HealthCheck
		if s.health == nil {
			s.health = healthcheck.New(healthcheck.Options{Logger: o.Logger})
			s.ownHealth = true
		}
	}
	return s, nil
}

// Sync runs sync, the data plane's own, for snap: it is timed, a failure counted, and
// on success the health-check node ports follow snap.
func (s *Syncs) Sync(snap *model.Snapshot, sync func() error) error {
	start := time.Now()
	err := sync()
	s.syncDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		s.syncErrors.Inc()
		return err
	}
	if s.health != nil {
		if err := s.health.Sync(healthcheck.FromSnapshot(snap)); err != nil {
			s.Log.Warn("health check node ports", "err", err)
		}
	}
	return nil
}

// Change is one Service a sync wrote: Old is nil when it was added, New when removed.
type Change struct {
	Old, New                       *model.Service
	OldUnsupported, NewUnsupported []dataplane.UnsupportedScheduler
}

// Written does what follows a sync that wrote changes: it deletes the conntrack
// entries of UDP flows whose endpoint went away and reports unsupported schedulers.
func (s *Syncs) Written(changes []Change) {
	var flows []conntrack.Flow
	for _, c := range changes {
		flows = append(flows, conntrack.StaleUDPFlows(c.Old, c.New)...)
		s.Unsupported.Update(c.OldUnsupported, c.NewUnsupported)
	}
	if len(flows) == 0 {
		return
	}
	if n, err := s.Options.Conntrack.DeleteUDP(flows); err != nil {
		s.Log.Warn("delete stale UDP conntrack entries", "err", err)
	} else if n > 0 {
		s.Log.Debug("deleted stale UDP conntrack entries", "count", n)
	}
}

// Close stops the health-check server if NewSyncs started it.
func (s *Syncs) Close() {
	if s.ownHealth {
		s.health.Close()
	}
}

// PortPolicy is the TrafficPolicy in force for a Service port: its own, else the
// Service's; nil when no TrafficPolicy applies (Source ""). A Service without one is
// balanced as kube-proxy balances it, at random: the defaults' algorithm (RoundRobin)
// is the userspace proxy's and the gateway's, and in the kernel it would cost a chain
// of rules per Service port where a shared chain and map elements do.
func PortPolicy(svc *model.Service, sp *model.ServicePort) *model.Policy {
	pol := svc.Policy
	if sp.Policy != nil {
		pol = sp.Policy
	}
	if pol == nil || pol.Source == "" {
		return nil
	}
	return pol
}

// FamilyVerdict is the set's verdict for one IP family.
func FamilyVerdict(s model.EndpointSet, ipv6 bool) model.Verdict {
	if ipv6 {
		return s.IPv6Verdict
	}
	return s.IPv4Verdict
}
