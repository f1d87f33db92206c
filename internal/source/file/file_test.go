package file

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"weir.dev/weir/internal/manifest"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/store"
)

// service is a valid Service manifest with the given name and port. Each name gets its
// own ClusterIP (two Services may not share one).
func service(name string, port int) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	ip := fmt.Sprintf("127.0.%d.%d", 1+h.Sum32()%200, 1+(h.Sum32()>>8)%250)
	return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %s}\nspec:\n  clusterIP: %s\n  ports: [{port: %d}]\n", name, ip, port)
}

const invalid = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 70000}]\n"

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic replaces a file by renaming a hidden temporary file over it, so a
// watcher never sees it half written (an in-place write on a loaded machine can be seen
// truncated, and an empty file is a valid, empty configuration).
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	write(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// harness runs a Source over a folder until the test ends.
type harness struct {
	t     *testing.T
	dir   string
	store *store.Store
	src   *Source
	reg   *prometheus.Registry
}

func newHarness(t *testing.T, debounce time.Duration, setup func(dir string)) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), store: store.New(), reg: prometheus.NewRegistry()}
	setup(h.dir)
	h.src = New(Options{Paths: []string{h.dir}, Store: h.store, Registerer: h.reg, Debounce: debounce})
	return h
}

// run starts Run and waits for its first load; the test's cleanup stops it.
func (h *harness) run() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := h.src.Run(ctx); err != nil {
			h.t.Errorf("Run: %v", err)
		}
	})
	h.t.Cleanup(func() { cancel(); wg.Wait() })
	h.waitFor("the first load", func() bool { return h.reloads("ok")+h.reloads("failed") >= 1 })
}

func (h *harness) reloads(result string) int {
	return int(testutil.ToFloat64(h.src.reloads.WithLabelValues(result)))
}

// services lists "name:port" of the Services in the store.
func (h *harness) services() string {
	objs, _ := h.store.Current()
	return names(objs)
}

func names(objs *model.Objects) string {
	if objs == nil {
		return ""
	}
	var out []string
	for _, s := range objs.Services {
		out = append(out, fmt.Sprintf("%s:%d", s.Name, s.Spec.Ports[0].Port))
	}
	return strings.Join(out, ",")
}

// waitFor polls cond until it holds or a generous deadline passes.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s (store has %q, reloads ok=%d failed=%d)",
				what, h.services(), h.reloads("ok"), h.reloads("failed"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string
		wantErr    string
		wantStore  string
		wantGen    uint64
		wantOK     int
		wantFailed int
	}{
		{name: "valid", files: map[string]string{"a.yaml": service("web", 80)}, wantStore: "web:80", wantGen: 1, wantOK: 1},
		{name: "invalid", files: map[string]string{"a.yaml": invalid}, wantErr: "a.yaml:5: Service default/web: spec.ports[0].port: 70000 is not in 1..65535", wantFailed: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, c := range tt.files {
				write(t, filepath.Join(dir, name), c)
			}
			st := store.New()
			src := New(Options{Paths: []string{dir}, Store: st})
			err := src.Load()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.HasSuffix(err.Error(), tt.wantErr)) {
				t.Errorf("Load() = %v, want error %q", err, tt.wantErr)
			}
			if err != nil {
				var errs manifest.Errors
				if !errors.As(err, &errs) {
					t.Errorf("Load error is %T, want manifest.Errors", err)
				}
			}
			objs, gen := st.Current()
			if names(objs) != tt.wantStore || gen != tt.wantGen {
				t.Errorf("store = %q at generation %d, want %q at %d", names(objs), gen, tt.wantStore, tt.wantGen)
			}
			if ok, failed := int(testutil.ToFloat64(src.reloads.WithLabelValues("ok"))), int(testutil.ToFloat64(src.reloads.WithLabelValues("failed"))); ok != tt.wantOK || failed != tt.wantFailed {
				t.Errorf("reloads ok=%d failed=%d, want %d and %d", ok, failed, tt.wantOK, tt.wantFailed)
			}
		})
	}
}

func TestInvalidLoadKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), service("web", 80))
	st := store.New()
	src := New(Options{Paths: []string{dir}, Store: st})
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "a.yaml"), invalid)
	if err := src.Load(); err == nil {
		t.Fatal("Load of an invalid edit succeeded")
	}
	objs, gen := st.Current()
	if names(objs) != "web:80" || gen != 1 {
		t.Errorf("store = %q at generation %d, want the last good web:80 at 1", names(objs), gen)
	}
	if _, err := src.LastResult(); err == nil {
		t.Error("LastResult has no error after a failed load")
	}
}

func TestUnchangedReloadLeavesStore(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), service("web", 80))
	st := store.New()
	src := New(Options{Paths: []string{dir}, Store: st})
	for range 3 {
		if err := src.Load(); err != nil {
			t.Fatal(err)
		}
	}
	if _, gen := st.Current(); gen != 1 {
		t.Errorf("generation = %d after three loads of the same files, want 1", gen)
	}
	// Reordering documents and files gives deeply equal objects too.
	write(t, filepath.Join(dir, "a.yaml"), service("b", 81)+"---\n"+service("web", 80))
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "a.yaml"), service("web", 80))
	write(t, filepath.Join(dir, "0.yaml"), service("b", 81))
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	if _, gen := st.Current(); gen != 2 {
		t.Errorf("generation = %d, want 2 (the same objects from other files are no change)", gen)
	}
}

func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), service("web", 80)+"---\n"+service("api", 81)+
		"---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets: [{addresses: [{ip: 127.0.0.1}], ports: [{port: 8080}]}]\n")
	reg := prometheus.NewRegistry()
	src := New(Options{Paths: []string{dir}, Store: store.New(), Registerer: reg})
	before := time.Now().Unix()
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP weir_config_objects Objects in the configuration in force, by kind (EndpointSlices include those mirrored from Endpoints).
# TYPE weir_config_objects gauge
weir_config_objects{kind="EndpointSlice"} 1
weir_config_objects{kind="Service"} 2
# HELP weir_config_reloads_total Configuration loads from manifest files, by result (ok, failed).
# TYPE weir_config_reloads_total counter
weir_config_reloads_total{result="ok"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "weir_config_objects", "weir_config_reloads_total"); err != nil {
		t.Error(err)
	}
	if ts := testutil.ToFloat64(src.lastSuccess); ts < float64(before) {
		t.Errorf("last success timestamp %v is before the load", ts)
	}
}

// TestHotReload edits a real folder while Run watches it with fsnotify.
func TestHotReload(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		edit  func(t *testing.T, dir string)
		want  string
		// inPlace edits rewrite a file where it is.
		inPlace bool
	}{
		{
			name:    "valid edit applied",
			edit:    func(t *testing.T, dir string) { write(t, filepath.Join(dir, "web.yaml"), service("web", 81)) },
			want:    "web:81",
			inPlace: true,
		},
		{
			name: "new file",
			edit: func(t *testing.T, dir string) { writeAtomic(t, filepath.Join(dir, "api.yaml"), service("api", 90)) },
			want: "api:90,web:80",
		},
		{
			name: "file removed",
			setup: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "api.yaml"), service("api", 90))
			},
			edit: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "api.yaml")); err != nil {
					t.Fatal(err)
				}
			},
			want: "web:80",
		},
		{
			name: "atomic rename (editor save)",
			edit: func(t *testing.T, dir string) {
				tmp := filepath.Join(dir, ".web.yaml.swp")
				write(t, tmp, service("web", 82))
				if err := os.Rename(tmp, filepath.Join(dir, "web.yaml")); err != nil {
					t.Fatal(err)
				}
			},
			want: "web:82",
		},
		{
			name: "file in a new subfolder",
			edit: func(t *testing.T, dir string) {
				sub := filepath.Join(dir, "team", "api")
				if err := os.MkdirAll(sub, 0o755); err != nil {
					t.Fatal(err)
				}
				writeAtomic(t, filepath.Join(sub, "api.yaml"), service("api", 91))
			},
			want: "api:91,web:80",
		},
		{
			name: "edit in an existing subfolder",
			setup: func(t *testing.T, dir string) {
				write(t, filepath.Join(dir, "sub", "api.yaml"), service("api", 90))
			},
			edit: func(t *testing.T, dir string) {
				writeAtomic(t, filepath.Join(dir, "sub", "api.yaml"), service("api", 92))
			},
			want: "api:92,web:80",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 50*time.Millisecond, func(dir string) {
				write(t, filepath.Join(dir, "web.yaml"), service("web", 80))
				if tt.setup != nil {
					tt.setup(t, dir)
				}
			})
			h.run()
			_, gen := h.store.Current()
			tt.edit(t, h.dir)
			h.waitFor(tt.want, func() bool { return h.services() == tt.want })
			// An in-place write may be seen in two steps (truncated, then written);
			// every other edit here is one update.
			if _, g := h.store.Current(); g != gen+1 && !tt.inPlace {
				t.Errorf("generation %d → %d, want one update", gen, g)
			}
		})
	}
}

func TestHotReloadInvalidEditKeptOut(t *testing.T) {
	h := newHarness(t, 50*time.Millisecond, func(dir string) {
		write(t, filepath.Join(dir, "web.yaml"), service("web", 80))
	})
	h.run()
	_, gen := h.store.Current()
	writeAtomic(t, filepath.Join(h.dir, "web.yaml"), invalid)
	h.waitFor("a failed reload", func() bool { return h.reloads("failed") == 1 })
	if objs, g := h.store.Current(); g != gen || names(objs) != "web:80" {
		t.Errorf("store = %q at generation %d, want the last good web:80 at %d", names(objs), g, gen)
	}
	// Fixing the file is picked up.
	write(t, filepath.Join(h.dir, "web.yaml"), service("web", 83))
	h.waitFor("web:83", func() bool { return h.services() == "web:83" })
}

func TestHotReloadBurstDebounced(t *testing.T) {
	h := newHarness(t, 300*time.Millisecond, func(dir string) {
		write(t, filepath.Join(dir, "web.yaml"), service("web", 80))
	})
	h.run()
	before := h.reloads("ok")
	for i := range 20 {
		write(t, filepath.Join(h.dir, "web.yaml"), service("web", 1000+i))
	}
	h.waitFor("web:1019", func() bool { return h.services() == "web:1019" })
	// 20 writes in a tight loop are one burst: one reload, a few at most if the
	// machine stalls the loop for longer than the debounce.
	if n := h.reloads("ok") - before; n > 3 {
		t.Errorf("%d reloads for a burst of 20 writes, want at most 3", n)
	}
}

func TestHotReloadConfigMapSwap(t *testing.T) {
	// The layout kubelet gives a ConfigMap volume, and its atomic update: a new hidden
	// timestamped folder, a ..data_tmp symlink to it renamed over ..data, the old
	// folder removed.
	version := func(dir, ts, content string) {
		write(t, filepath.Join(dir, ts, "web.yaml"), content)
	}
	h := newHarness(t, 50*time.Millisecond, func(dir string) {
		version(dir, "..2026_11_23_10_00_00.1", service("web", 80))
		for _, l := range [][2]string{{"..2026_11_23_10_00_00.1", "..data"}, {"..data/web.yaml", "web.yaml"}} {
			if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
				t.Fatal(err)
			}
		}
	})
	h.run()
	if got := h.services(); got != "web:80" {
		t.Fatalf("store = %q, want web:80", got)
	}
	version(h.dir, "..2026_11_23_10_05_00.2", service("web", 84))
	tmp := filepath.Join(h.dir, "..data_tmp")
	if err := os.Symlink("..2026_11_23_10_05_00.2", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(h.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(h.dir, "..2026_11_23_10_00_00.1")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("web:84", func() bool { return h.services() == "web:84" })
}

func TestWatchSingleFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "web.yaml")
	write(t, path, service("web", 80))
	h := &harness{t: t, dir: dir, store: store.New()}
	h.src = New(Options{Paths: []string{path}, Store: h.store, Debounce: 50 * time.Millisecond})
	h.run()
	// Another file in the same folder is not a manifest path: no reload.
	write(t, filepath.Join(dir, "other.yaml"), invalid)
	// A rename-and-replace save of the file is seen.
	tmp := filepath.Join(dir, "web.yaml.new")
	write(t, tmp, service("web", 85))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	h.waitFor("web:85", func() bool { return h.services() == "web:85" })
	if f := h.reloads("failed"); f != 0 {
		t.Errorf("%d failed reloads: a file beside the watched one was loaded", f)
	}
}

func TestReloadRequest(t *testing.T) {
	h := newHarness(t, time.Hour, func(dir string) { // a debounce no test waits for
		write(t, filepath.Join(dir, "web.yaml"), service("web", 80))
	})
	h.run()
	_, gen := h.store.Current()
	before := h.reloads("ok")
	h.src.Reload()
	h.waitFor("a reload", func() bool { return h.reloads("ok") == before+1 })
	if _, g := h.store.Current(); g != gen {
		t.Errorf("a reload of unchanged files bumped the generation %d → %d", gen, g)
	}
	// A change is picked up by Reload without waiting for the (hour-long) debounce.
	write(t, filepath.Join(h.dir, "web.yaml"), service("web", 86))
	h.src.Reload()
	h.waitFor("web:86", func() bool { return h.services() == "web:86" })
}

func TestRootFolderCreatedLater(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "manifests")
	h := &harness{t: t, dir: root, store: store.New()}
	h.src = New(Options{Paths: []string{root}, Store: h.store, Debounce: 50 * time.Millisecond})
	h.run() // the first load fails: the folder is missing
	if h.reloads("failed") != 1 {
		t.Fatalf("reloads failed = %d, want 1", h.reloads("failed"))
	}
	tmp := filepath.Join(parent, ".manifests.tmp")
	write(t, filepath.Join(tmp, "web.yaml"), service("web", 87))
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	h.waitFor("web:87", func() bool { return h.services() == "web:87" })
	// Now it is watched as a folder.
	writeAtomic(t, filepath.Join(root, "web.yaml"), service("web", 88))
	h.waitFor("web:88", func() bool { return h.services() == "web:88" })
}

// TestStartCountsOneLoad: the CLI loads once before Run, and Run loads again once its
// watches are in place; an unchanged catch-up load is not a reload, so the counter
// reads 1 after start and 2 after one explicit reload.
func TestStartCountsOneLoad(t *testing.T) {
	h := newHarness(t, time.Hour, func(dir string) {
		write(t, filepath.Join(dir, "web.yaml"), service("web", 80))
	})
	if err := h.src.Load(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = h.src.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	h.src.Reload() // handled after Run's catch-up load
	h.waitFor("the reload", func() bool { return h.reloads("ok") >= 2 })
	time.Sleep(100 * time.Millisecond)
	if n := h.reloads("ok"); n != 2 {
		t.Errorf("reloads ok = %d after Load, Run and one Reload, want 2", n)
	}
}
