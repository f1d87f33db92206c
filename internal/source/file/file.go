// Package file is weir's file source: it loads a folder (or files) of Kubernetes
// manifests into the store, watches it with fsnotify and reloads on change. An invalid
// change is logged and counted, and the store keeps the last valid objects.
package file

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"k8s.io/apimachinery/pkg/api/equality"

	"weir.dev/weir/internal/manifest"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/store"
)

// DefaultDebounce is how long the folder must be quiet before a reload.
const DefaultDebounce = 200 * time.Millisecond

// Options configure a Source.
type Options struct {
	// Paths are files or folders of manifests (folders are read recursively).
	Paths []string
	// Store receives every valid object set that differs from its current one.
	Store *store.Store
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registerer takes the source's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Debounce is the quiet time after a change before a reload (default 200 ms). A
	// burst of changes longer than ten times Debounce still reloads every 10×Debounce.
	Debounce time.Duration
	// Own describes weir's own listeners; an endpoint at one is refused (manifest.Options).
	Own func(netip.AddrPort) string
	// MaxFileBytes is the largest manifest file read (manifest.DefaultMaxFileBytes when
	// zero); a larger file is an error, never read into memory.
	MaxFileBytes int64
}

// Source loads manifests into a Store and keeps them up to date.
type Source struct {
	paths    []string
	store    *store.Store
	log      *slog.Logger
	debounce time.Duration
	reload   chan struct{}
	own      func(netip.AddrPort) string
	maxBytes int64

	mu      sync.Mutex // serializes loads
	lastErr error
	report  *manifest.Report

	reloads     *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	objects     *prometheus.GaugeVec
}

// New returns a Source. It does nothing until Load or Run.
func New(opts Options) *Source {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	debounce := opts.Debounce
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	f := promauto.With(opts.Registerer)
	return &Source{
		paths:    opts.Paths,
		store:    opts.Store,
		log:      log.With("source", "file"),
		debounce: debounce,
		reload:   make(chan struct{}, 1),
		own:      opts.Own,
		maxBytes: opts.MaxFileBytes,
		reloads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_config_reloads_total",
			Help: "Configuration loads from manifest files, by result (ok, failed).",
		}, []string{"result"}),
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "weir_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last configuration load that succeeded.",
		}),
		objects: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_config_objects",
			Help: "Objects in the configuration in force, by kind (EndpointSlices include those mirrored from Endpoints).",
		}, []string{"kind"}),
	}
}

// Load reads the manifests once. When they are valid it updates the store (unless they
// are deeply equal to the store's current objects) and returns nil. When they are not,
// it logs each error, leaves the store as it is and returns the manifest.Errors.
func (s *Source) Load() error { return s.load(true) }

// load is Load; countUnchanged false leaves a valid load that changes nothing out of
// weir_config_reloads_total (Run's catch-up load right after the watches are in place
// repeats the CLI's first Load and is not a reload).
func (s *Source) load(countUnchanged bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, report, err := manifest.LoadWith(manifest.Options{Own: s.own, MaxFileBytes: s.maxBytes}, s.paths...)
	wasInvalid := s.lastErr != nil
	s.report, s.lastErr = report, err
	if err != nil {
		s.reloads.WithLabelValues("failed").Inc()
		var errs manifest.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				s.log.Error("invalid manifest", "error", e.Error())
			}
		} else {
			s.log.Error("invalid manifests", "error", err)
		}
		s.log.Warn("configuration not loaded; the last valid configuration stays in force",
			"paths", strings.Join(s.paths, ","))
		return err
	}
	s.lastSuccess.SetToCurrentTime()
	s.objects.Reset()
	for kind, n := range countObjects(objs) {
		s.objects.WithLabelValues(kind).Set(float64(n))
	}
	cur, _ := s.store.Current()
	if cur != nil && equality.Semantic.DeepEqual(cur, objs) {
		if countUnchanged {
			s.reloads.WithLabelValues("ok").Inc()
		}
		if wasInvalid {
			s.log.Info("configuration valid again; it equals the configuration in force", "summary", report.Summary())
		} else {
			s.log.Debug("configuration unchanged", "summary", report.Summary())
		}
		return nil
	}
	s.reloads.WithLabelValues("ok").Inc()
	s.store.Update(objs)
	msg := "configuration loaded"
	if wasInvalid {
		msg = "configuration valid again, loaded"
	}
	if cur == nil {
		s.log.Info(msg, "summary", report.Summary())
	} else {
		s.log.Info(msg, "changes", describeChanges(cur, objs), "summary", report.Summary())
	}
	for _, w := range report.Warnings {
		s.log.Warn("manifest warning", "warning", w.Error())
	}
	return nil
}

// LastResult is the Report and error of the latest load (nil, nil before the first).
func (s *Source) LastResult() (*manifest.Report, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.report, s.lastErr
}

// Reload asks Run to reload now, without waiting for a change (the CLI wires SIGHUP to
// it). Requests made while a reload is pending coalesce. It does nothing when Run is
// not running.
func (s *Source) Reload() {
	select {
	case s.reload <- struct{}{}:
	default:
	}
}

// Run watches the paths until ctx is done, reloading after changes settle for the
// debounce time and on Reload. It watches folders recursively (new subfolders too),
// sees editors' write-to-temp-and-rename saves and Kubernetes ConfigMap volume updates
// (the ..data symlink swap), and loads once right after the watches are in place, so
// nothing changed since a previous Load is missed.
func (s *Source) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("file source: starting the watcher: %w", err)
	}
	defer w.Close()
	t := newTargets(s.paths)
	t.watch(w, s.log)
	_ = s.load(false) // errors are logged and counted

	var (
		timer   *time.Timer
		timerC  <-chan time.Time
		pending time.Time // first change not yet loaded
	)
	maxWait := 10 * s.debounce
	reloadNow := func() {
		if timer != nil {
			timer.Stop()
		}
		timerC, pending = nil, time.Time{}
		t.watch(w, s.log) // new folders, swapped symlinks
		_ = s.Load()
	}
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("file source: the watcher closed")
			}
			if !t.relevant(ev) {
				continue
			}
			s.log.Debug("change", "path", ev.Name, "op", ev.Op.String())
			if ev.Has(fsnotify.Create) {
				if info, err := os.Stat(ev.Name); err == nil && info.IsDir() {
					t.watch(w, s.log) // watch a new subfolder before files land in it
				}
			}
			now := time.Now()
			if pending.IsZero() {
				pending = now
			}
			wait := min(s.debounce, maxWait-now.Sub(pending))
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timerC = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("file source: the watcher closed")
			}
			s.log.Warn("watch error; reloading", "error", err) // e.g. event queue overflow
			s.Reload()
		case <-timerC:
			reloadNow()
		case <-s.reload:
			reloadNow()
		}
	}
}

// targets are what Run watches: every folder under the folder paths, and the parent
// folders of the file paths.
type targets struct {
	paths    []string
	treeDirs map[string]bool // folders whose manifests Load reads
	files    map[string]bool // files named in paths
	parents  map[string]bool // folders watched only for files named in paths
}

func newTargets(paths []string) *targets {
	return &targets{paths: paths}
}

// watch (re)adds watches for every folder that should have one.
func (t *targets) watch(w *fsnotify.Watcher, log *slog.Logger) {
	t.treeDirs, t.files, t.parents = map[string]bool{}, map[string]bool{}, map[string]bool{}
	add := func(dir string) {
		if err := w.Add(dir); err != nil {
			log.Warn("cannot watch folder", "path", dir, "error", err)
		}
	}
	var walk func(dir string)
	walk = func(dir string) {
		if t.treeDirs[dir] {
			return
		}
		t.treeDirs[dir] = true
		add(dir)
		entries, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue // hidden, and ConfigMap internals: their swaps show in dir itself
			}
			p := filepath.Join(dir, e.Name())
			if info, err := os.Stat(p); err == nil && info.IsDir() {
				walk(p)
			}
		}
	}
	for _, p := range t.paths {
		p = filepath.Clean(p)
		if info, err := os.Stat(p); err == nil && info.IsDir() {
			walk(p)
			continue
		}
		// A file (or a path that does not exist yet): watch its folder, so that
		// rename-and-replace saves and symlink swaps are seen.
		t.files[p] = true
		if parent := filepath.Dir(p); !t.parents[parent] {
			t.parents[parent] = true
			add(parent)
		}
	}
}

// relevant reports whether an event may change what Load reads.
func (t *targets) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Clean(ev.Name)
	base := filepath.Base(name)
	dir := filepath.Dir(name)
	if t.files[name] {
		return true
	}
	if strings.HasPrefix(base, "..") {
		return t.treeDirs[dir] || t.parents[dir] // a ConfigMap volume's ..data swap
	}
	if !t.treeDirs[dir] || strings.HasPrefix(base, ".") {
		return false
	}
	if manifest.IsManifestName(base) {
		return true
	}
	if info, err := os.Stat(name); err == nil {
		return info.IsDir()
	}
	return filepath.Ext(base) == "" // removed: it may have been a folder
}

// countObjects counts the objects of each kind.
func countObjects(o *model.Objects) map[string]int {
	counts := map[string]int{}
	v := reflect.ValueOf(o).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() != reflect.Slice || f.Len() == 0 {
			continue
		}
		kind := f.Type().Elem().Elem().Name() // []*corev1.Service → "Service"
		counts[kind] = f.Len()
	}
	return counts
}
