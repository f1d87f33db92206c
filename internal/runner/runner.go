// Package runner is weir's sync runner: it watches the store, translates the latest
// valid objects into a Snapshot and hands it to every data plane, at most as often as a
// bounded-frequency limit allows (kube-proxy's BoundedFrequencyRunner: a burst of quick
// syncs, then at most one per MinInterval).
package runner

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/model"
)

// Objects is where the runner reads the latest valid objects (internal/store).
type Objects interface {
	Current() (*model.Objects, uint64)
	Changed() <-chan struct{}
}

// Options configure a Runner.
type Options struct {
	Objects Objects
	Node    model.Node
	// NodeFrom, when set, is asked for the node before every translation (the Kubernetes
	// source learns the zone from the Node object) and overrides Node.
	NodeFrom   func() model.Node
	Dataplanes []dataplane.Dataplane
	// MinInterval between syncs once Burst quick syncs are used up. Default 1 s.
	MinInterval time.Duration
	// Burst of syncs allowed back to back. Default 2, so that a lone change is applied at
	// once.
	Burst int
	// RetryInterval after a data plane failed to sync; it doubles with each failure in a
	// row up to MaxRetryInterval. Default 1 s.
	RetryInterval time.Duration
	// MaxRetryInterval caps the retry backoff. Default 30 s.
	MaxRetryInterval time.Duration
	// ResyncInterval is how often a full translation runs (every Service translated
	// again, and the Snapshot handed over without a Delta, so that each data plane
	// compares everything). Between them, only what changed is translated. Default 1 h.
	ResyncInterval time.Duration
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
}

// Runner translates and syncs.
type Runner struct {
	opts     Options
	log      *slog.Logger
	current  atomic.Pointer[model.Snapshot]
	version  uint64
	metrics  metrics
	lastGen  uint64
	haveSync bool
	synced   atomic.Bool           // haveSync, for readers outside Run
	syncErr  atomic.Pointer[error] // the last sync's error; nil once a sync succeeds
	// translator keeps the previous Snapshot's inputs; owned by Run.
	translator *model.Translator
}

type metrics struct {
	translate prometheus.Histogram
	sync      *prometheus.HistogramVec
	errors    *prometheus.CounterVec
	version   prometheus.Gauge
	services  prometheus.Gauge
}

// New makes a Runner. It registers its metrics with opts.Registerer when set.
func New(opts Options) (*Runner, error) {
	if opts.Objects == nil {
		return nil, errors.New("runner: no object source")
	}
	if opts.MinInterval <= 0 {
		opts.MinInterval = time.Second
	}
	if opts.Burst <= 0 {
		opts.Burst = 2
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = time.Second
	}
	if opts.MaxRetryInterval < opts.RetryInterval {
		opts.MaxRetryInterval = max(30*time.Second, opts.RetryInterval)
	}
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Runner{opts: opts, log: opts.Logger, translator: model.NewTranslator()}
	r.metrics = metrics{
		translate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weir_translate_duration_seconds", Help: "Time to translate objects into a Snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		sync: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "weir_sync_duration_seconds", Help: "Time a data plane took to apply a Snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"dataplane"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_sync_errors_total", Help: "Failed data plane syncs (retried).",
		}, []string{"dataplane"}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_snapshot_version", Help: "Version of the Snapshot in force.",
		}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_services", Help: "Services in the Snapshot in force.",
		}),
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{r.metrics.translate, r.metrics.sync, r.metrics.errors, r.metrics.version, r.metrics.services} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// Snapshot is the Snapshot most recently handed to the data planes, or nil before the
// first sync.
func (r *Runner) Snapshot() *model.Snapshot { return r.current.Load() }

// Synced reports whether every data plane has applied at least one Snapshot.
func (r *Runner) Synced() bool { return r.synced.Load() }

// SyncError is the error of the latest sync, nil when it applied cleanly: a data plane
// that failed (its rules are partly applied and retried) until a later sync succeeds.
func (r *Runner) SyncError() error {
	if p := r.syncErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Run syncs until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	tokens := r.opts.Burst
	refill := time.NewTicker(r.opts.MinInterval)
	defer refill.Stop()
	retry := time.NewTimer(0)
	if !retry.Stop() {
		<-retry.C
	}
	defer retry.Stop()
	resync := time.NewTicker(r.opts.ResyncInterval)
	defer resync.Stop()

	pending := true // sync once at start
	force := false  // re-sync even if the objects did not change (a retry)
	failures := 0
	for {
		if pending && tokens > 0 {
			pending = false
			worked, err := r.syncOnce(ctx, force)
			force = false
			if worked {
				tokens--
			}
			switch {
			case err != nil && ctx.Err() != nil:
				return nil
			case err != nil:
				wait := min(r.opts.RetryInterval<<min(failures, 16), r.opts.MaxRetryInterval)
				failures++
				r.log.Warn("sync incomplete; what could be applied is in force, the rest is retried", "err", err, "retry_in", wait, "failures_in_a_row", failures)
				retry.Reset(wait)
			case worked:
				failures = 0
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.opts.Objects.Changed():
			pending = true
		case <-retry.C:
			pending, force = true, true
		case <-resync.C:
			r.translator.Reset()
			pending, force = true, true
		case <-refill.C:
			if tokens < r.opts.Burst {
				tokens++
			}
		}
	}
}

// syncOnce translates and syncs if the objects changed since the last sync, or if
// force is set. It reports whether it did any work, so that a no-op does not use up the
// burst. A data plane that fails applies what it can (the Dataplane contract), so the
// Snapshot counts as applied either way; the error asks for a retry.
func (r *Runner) syncOnce(ctx context.Context, force bool) (bool, error) {
	objs, gen := r.opts.Objects.Current()
	if objs == nil {
		return false, nil // nothing loaded yet
	}
	if r.haveSync && gen == r.lastGen && !force {
		return false, nil
	}
	start := time.Now()
	node := r.opts.Node
	if r.opts.NodeFrom != nil {
		node = r.opts.NodeFrom()
	}
	snap := r.translator.Translate(objs, node)
	r.metrics.translate.Observe(time.Since(start).Seconds())
	r.version++
	snap.Version = r.version

	var errs []error
	for _, dp := range r.opts.Dataplanes {
		t := time.Now()
		err := dp.Sync(ctx, snap)
		d := time.Since(t)
		r.metrics.sync.WithLabelValues(dp.Name()).Observe(d.Seconds())
		if err != nil {
			r.metrics.errors.WithLabelValues(dp.Name()).Inc()
			errs = append(errs, err)
			continue
		}
		r.log.Debug("synced", "dataplane", dp.Name(), "version", snap.Version, "took", d)
	}
	r.current.Store(snap)
	r.metrics.version.Set(float64(snap.Version))
	r.metrics.services.Set(float64(len(snap.Services)))
	r.lastGen = gen
	r.haveSync = true
	var err error
	if len(errs) > 0 {
		err = errors.Join(errs...)
		r.syncErr.Store(&err)
	} else {
		r.syncErr.Store(nil)
	}
	r.synced.Store(true)
	if err != nil {
		return true, err
	}
	changed := len(snap.Services)
	if d := snap.DeltaFrom(snap.Version - 1); d != nil {
		changed = len(d.Services)
	}
	r.log.Info("configuration applied", "version", snap.Version, "services", len(snap.Services), "changed", changed, "took", time.Since(start).Round(time.Microsecond))
	return true, nil
}
