package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"weir.dev/weir/internal/echo"
)

// startEchos starts HTTP echo backends on addr:9000 for each named address.
func startEchos(t *testing.T, backends map[string]string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for name, addr := range backends {
		ln, err := net.Listen("tcp", addr+":9000")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = echo.ServeHTTP(ctx, ln, name) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

const serviceYAML = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: %s
  ports:
  - {name: http, port: %d, targetPort: http}
`

func sliceYAML(addrs ...string) string {
	var b strings.Builder
	b.WriteString(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 9000, protocol: TCP}]
endpoints:
`)
	for _, a := range addrs {
		fmt.Fprintf(&b, "- addresses: [%q]\n", a)
	}
	return b.String()
}

// writeAtomically replaces a file as editors do: write a temp file, then rename.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startWeir runs weir's main job in-process and returns the admin address.
func startWeir(t *testing.T, dir string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan string, 1)
	done := make(chan error, 1)
	f := runFlags{
		configPaths: []string{dir}, maxManifestSize: "16Mi", mode: "userspace", nodeName: "node-a", adminAddr: "127.0.0.1:0",
		drainTimeout: time.Second, minSyncInterval: 50 * time.Millisecond,
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	go func() { done <- run(ctx, f, logger, func(a string) { readyc <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case a := <-readyc:
		return a
	case err := <-done:
		done <- err // for the cleanup, which waits for it
		t.Fatalf("weir stopped before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("weir not ready after 10s")
	}
	return ""
}

// get makes one request on a new connection and returns the answering backend's name.
func get(client *http.Client, url string) (string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r echo.Reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return "", err
	}
	return r.Name, nil
}

// configErrors reads the configuration errors /api/snapshot reports.
func configErrors(t *testing.T, admin string) []string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/api/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		ConfigErrors []string `json:"configErrors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v.ConfigErrors
}

// snapshotHasAddr reports whether the live Snapshot in the admin API names addr as an
// address (not as the prefix of a longer one).
func snapshotHasAddr(t *testing.T, admin, addr string) bool {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/api/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return regexp.MustCompile(regexp.QuoteMeta(addr) + `([^0-9.]|$)`).Match(b)
}

func metric(t *testing.T, admin, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimPrefix(line, name+" ")
		}
	}
	return ""
}

// TestReloadUnderTraffic edits the manifests under continuous traffic: endpoints are
// added and removed, an invalid edit is rejected and reported, and no request fails.
func TestReloadUnderTraffic(t *testing.T) {
	startEchos(t, map[string]string{"a": "127.0.1.1", "b": "127.0.1.2", "c": "127.0.1.3"})
	dir := t.TempDir()
	svcFile, sliceFile := filepath.Join(dir, "service.yaml"), filepath.Join(dir, "slice.yaml")
	writeAtomically(t, svcFile, fmt.Sprintf(serviceYAML, "127.0.1.10", 8080))
	writeAtomically(t, sliceFile, sliceYAML("127.0.1.1", "127.0.1.2"))
	admin := startWeir(t, dir)
	url := "http://127.0.1.10:8080/"

	// Continuous traffic: every request on a new connection.
	var failures, total atomic.Int64
	var seenMu sync.Mutex
	seen := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			for {
				select {
				case <-stop:
					return
				default:
				}
				name, err := get(client, url)
				total.Add(1)
				if err != nil {
					failures.Add(1)
					t.Logf("request failed: %v", err)
					continue
				}
				seenMu.Lock()
				seen[name]++
				seenMu.Unlock()
			}
		}()
	}
	resetSeen := func() {
		seenMu.Lock()
		clear(seen)
		seenMu.Unlock()
	}
	waitSeen := func(what string, cond func(map[string]int) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			seenMu.Lock()
			ok := cond(seen)
			snapshot := fmt.Sprint(seen)
			seenMu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: traffic seen %s", what, snapshot)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	waitSeen("a and b serve", func(s map[string]int) bool { return s["a"] > 0 && s["b"] > 0 })

	// Add c.
	writeAtomically(t, sliceFile, sliceYAML("127.0.1.1", "127.0.1.2", "127.0.1.3"))
	waitSeen("c added", func(s map[string]int) bool { return s["c"] > 0 })

	// Remove a: once the reload is applied, a gets nothing new. Wait for the Snapshot to
	// drop a, then for every worker to start a request after that, so that a request
	// dispatched before the reload is not counted against it (a fixed sleep flaked on a
	// loaded machine).
	writeAtomically(t, sliceFile, sliceYAML("127.0.1.2", "127.0.1.3"))
	deadline := time.Now().Add(10 * time.Second)
	for snapshotHasAddr(t, admin, "127.0.1.1") {
		if time.Now().After(deadline) {
			t.Fatal("the Snapshot still has endpoint a 10 s after its removal")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for want := total.Load() + 8; total.Load() < want; {
		if time.Now().After(deadline) {
			t.Fatal("no traffic after the reload")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resetSeen()
	waitSeen("b and c serve", func(s map[string]int) bool { return s["b"] > 20 && s["c"] > 20 })
	seenMu.Lock()
	if seen["a"] != 0 {
		t.Errorf("removed endpoint a still got %d new requests", seen["a"])
	}
	seenMu.Unlock()

	// An invalid edit: rejected, reported in a metric, traffic keeps flowing to b and c.
	writeAtomically(t, svcFile, fmt.Sprintf(serviceYAML, "127.0.1.10", 70000))
	deadline = time.Now().Add(10 * time.Second)
	for metric(t, admin, `weir_config_reloads_total{result="failed"}`) != "1" {
		if time.Now().After(deadline) {
			t.Fatal("invalid edit not counted in weir_config_reloads_total")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The admin API shows the error, with file and line, beside the old configuration.
	if errs := configErrors(t, admin); len(errs) != 1 || !strings.Contains(errs[0], "service.yaml:7: Service default/web: spec.ports[0].port") {
		t.Errorf("configErrors after the invalid edit: %q", errs)
	}
	resetSeen()
	waitSeen("traffic after invalid edit", func(s map[string]int) bool { return s["b"] > 10 && s["c"] > 10 })
	// Fixed: the error leaves the admin API.
	writeAtomically(t, svcFile, fmt.Sprintf(serviceYAML, "127.0.1.10", 8080))
	deadline = time.Now().Add(10 * time.Second)
	for len(configErrors(t, admin)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("configErrors after the fix: %q", configErrors(t, admin))
		}
		time.Sleep(20 * time.Millisecond)
	}

	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed during reloads", n, total.Load())
	}
	t.Logf("%d requests, none failed", total.Load())
}

func TestOwnListeners(t *testing.T) {
	own := ownListeners(runFlags{adminAddr: "0.0.0.0:9901", dnsAddr: "127.0.0.1:5353", ingressHTTPAddr: "127.0.0.1:8080"})
	for ap, want := range map[string]string{
		"127.0.0.5:9901":  "admin API (--admin-addr)", // a listener on 0.0.0.0 owns its port on every local address
		"127.0.0.1:5353":  "cluster DNS (--dns-addr)",
		"127.0.0.1:8080":  "Ingress HTTP listener (--ingress-http-addr)",
		"127.0.0.2:8080":  "",
		"127.0.0.5:9902":  "",
		"192.0.2.10:9901": "", // not an address of this host
	} {
		if got := own(netip.MustParseAddrPort(ap)); got != want {
			t.Errorf("%s: %q, want %q", ap, got, want)
		}
	}
}
