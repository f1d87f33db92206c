package runner

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/model"
)

// objects is a minimal stand-in for internal/store (which has its own tests).
type objects struct {
	mu      sync.Mutex
	objs    *model.Objects
	gen     uint64
	changed chan struct{}
}

func newObjects() *objects { return &objects{changed: make(chan struct{}, 1)} }

func (o *objects) Current() (*model.Objects, uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.objs, o.gen
}
func (o *objects) Changed() <-chan struct{} { return o.changed }
func (o *objects) set(names ...string) {
	objs := &model.Objects{}
	for _, n := range names {
		objs.Services = append(objs.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: n},
			Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.1", ClusterIPs: []string{"10.0.0.1"},
				Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
		})
	}
	o.mu.Lock()
	o.objs, o.gen = objs, o.gen+1
	o.mu.Unlock()
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

type recorder struct {
	mu    sync.Mutex
	snaps []*model.Snapshot
	fail  int // fail this many syncs first
}

func (r *recorder) Name() string { return "recorder" }
func (r *recorder) Sync(_ context.Context, s *model.Snapshot) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return errors.New("injected failure")
	}
	r.snaps = append(r.snaps, s)
	return nil
}
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.snaps)
}
func (r *recorder) last() *model.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.snaps) == 0 {
		return nil
	}
	return r.snaps[len(r.snaps)-1]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func start(t *testing.T, opts Options) *Runner {
	t.Helper()
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func TestRunnerAppliesChanges(t *testing.T) {
	objs := newObjects()
	objs.set("a")
	rec := &recorder{}
	r := start(t, Options{Objects: objs, Dataplanes: []dataplane.Dataplane{rec}, MinInterval: 10 * time.Millisecond})
	waitFor(t, "first sync", func() bool { return rec.count() == 1 && r.Synced() })
	objs.set("a", "b")
	waitFor(t, "second sync", func() bool { return rec.count() >= 2 && len(rec.last().Services) == 2 })
	if v := r.Snapshot().Version; v < 2 {
		t.Fatalf("version %d, want >= 2", v)
	}
}

func TestRunnerThrottlesBursts(t *testing.T) {
	objs := newObjects()
	objs.set("a")
	rec := &recorder{}
	start(t, Options{Objects: objs, Dataplanes: []dataplane.Dataplane{rec}, MinInterval: time.Hour, Burst: 2})
	waitFor(t, "first sync", func() bool { return rec.count() == 1 })
	for i := 0; i < 20; i++ {
		objs.set("a", "b")
	}
	waitFor(t, "burst sync", func() bool { return rec.count() == 2 })
	time.Sleep(50 * time.Millisecond)
	if n := rec.count(); n != 2 {
		t.Fatalf("%d syncs after a burst of 20 changes with 2 tokens, want 2", n)
	}
}

func TestRunnerRetriesFailedSync(t *testing.T) {
	objs := newObjects()
	objs.set("a")
	rec := &recorder{fail: 2}
	r := start(t, Options{Objects: objs, Dataplanes: []dataplane.Dataplane{rec}, MinInterval: 5 * time.Millisecond, RetryInterval: 5 * time.Millisecond})
	// A failed sync still counts as applied (the data plane applied what it could), so
	// readiness does not wait for a frontend that cannot be bound.
	waitFor(t, "applied despite the failure", r.Synced)
	waitFor(t, "sync after retries", func() bool { return rec.count() == 1 })
	if r.Snapshot() == nil {
		t.Fatal("no snapshot after a successful retry")
	}
}

// TestRunnerSyncError: the last sync's error is readable (the admin API shows it) until
// a sync succeeds.
func TestRunnerSyncError(t *testing.T) {
	objs := newObjects()
	objs.set("a")
	rec := &recorder{fail: 1}
	r := start(t, Options{Objects: objs, Dataplanes: []dataplane.Dataplane{rec}, MinInterval: 5 * time.Millisecond, RetryInterval: 300 * time.Millisecond})
	waitFor(t, "applied despite the failure", r.Synced)
	if err := r.SyncError(); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Errorf("SyncError after a failed sync = %v", err)
	}
	waitFor(t, "the retry succeeds", func() bool { return rec.count() == 1 })
	waitFor(t, "SyncError cleared", func() bool { return r.SyncError() == nil })
}

func TestRunnerRetryBacksOff(t *testing.T) {
	objs := newObjects()
	objs.set("a")
	rec := &recorder{fail: 1 << 30} // never succeeds
	attempts := func() int { rec.mu.Lock(); defer rec.mu.Unlock(); return 1<<30 - rec.fail }
	start(t, Options{Objects: objs, Dataplanes: []dataplane.Dataplane{rec}, MinInterval: time.Millisecond,
		RetryInterval: 20 * time.Millisecond, MaxRetryInterval: 80 * time.Millisecond})
	time.Sleep(500 * time.Millisecond)
	// 20+40+80+80+80+80 ms: about 6 retries in 500 ms; without backoff there would be 25.
	if n := attempts(); n < 3 || n > 12 {
		t.Fatalf("%d attempts in 500ms with a 20ms→80ms backoff, want about 7", n)
	}
}
