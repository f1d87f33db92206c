package flowtest

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/conntrack"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

// Recorder records what a kernel data plane under test reports besides its rules: the
// UDP flows it deletes, its metrics and its logs.
type Recorder struct {
	Conntrack *RecordingConntrack
	Registry  *prometheus.Registry
	Logs      *bytes.Buffer
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{Conntrack: &RecordingConntrack{}, Registry: prometheus.NewRegistry(), Logs: &bytes.Buffer{}}
}

// Options returns o reporting to r, without a health-check server.
func (r *Recorder) Options(o kernel.Options) kernel.Options {
	o.Conntrack = r.Conntrack
	o.Registerer = r.Registry
	o.Logger = slog.New(slog.NewTextHandler(r.Logs, nil))
	o.DisableHealthCheck = true
	return o
}

// Sync syncs dp to a Snapshot of svcs and fails the test if that fails.
func Sync(t testing.TB, dp dataplane.Dataplane, svcs ...*model.Service) {
	t.Helper()
	if err := dp.Sync(context.Background(), &model.Snapshot{Services: svcs}); err != nil {
		t.Fatal(err)
	}
}

// RecordingConntrack is a conntrack.Cleaner that records the flows it is asked to
// delete.
type RecordingConntrack struct {
	mu    sync.Mutex
	flows []conntrack.Flow
}

// DeleteUDP records flows.
func (r *RecordingConntrack) DeleteUDP(flows []conntrack.Flow) (uint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flows = append(r.flows, flows...)
	return uint(len(flows)), nil
}

// Take returns the flows recorded so far and forgets them.
func (r *RecordingConntrack) Take() []conntrack.Flow {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.flows
	r.flows = nil
	return out
}
