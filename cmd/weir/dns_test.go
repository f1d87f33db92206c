package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// freePort finds a port free on both UDP and TCP at 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free on both TCP and UDP")
	return 0
}

const headlessYAML = `apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
`

func dbSlice(addrs ...string) string {
	s := `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: default, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints:
`
	for _, a := range addrs {
		s += fmt.Sprintf("- addresses: [%q]\n", a)
	}
	return s
}

// TestDNSPropagationThroughReload edits a headless Service's endpoints and measures how
// long after the reload DNS answers with the change, at the default sync settings.
func TestDNSPropagationThroughReload(t *testing.T) {
	dir := t.TempDir()
	writeAtomically(t, filepath.Join(dir, "db.yaml"), headlessYAML)
	sliceFile := filepath.Join(dir, "slice.yaml")
	writeAtomically(t, sliceFile, dbSlice("10.1.0.1"))
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))

	ctx, cancel := context.WithCancel(context.Background())
	readyc, done := make(chan string, 1), make(chan error, 1)
	f := runFlags{
		configPaths: []string{dir}, maxManifestSize: "16Mi", mode: "userspace", adminAddr: "127.0.0.1:0", dnsAddr: dnsAddr,
		clusterDomain: "cluster.local", dnsTTL: 5 * time.Second, drainTimeout: time.Second,
		minSyncInterval: time.Second, // the default
	}
	go func() {
		done <- run(ctx, f, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a string) { readyc <- a })
	}()
	t.Cleanup(func() { cancel(); <-done })
	var admin string
	select {
	case admin = <-readyc:
	case err := <-done:
		done <- err // for the cleanup, which waits for it
		t.Fatalf("weir stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("weir not ready")
	}

	client := &mdns.Client{Timeout: time.Second}
	answers := func() int {
		m := new(mdns.Msg)
		m.SetQuestion("db.default.svc.cluster.local.", mdns.TypeA)
		r, _, err := client.Exchange(m, dnsAddr)
		if err != nil {
			return -1
		}
		return len(r.Answer)
	}
	if n := answers(); n != 1 {
		t.Fatalf("%d answers before the edit, want 1", n)
	}

	for i, want := range []struct {
		addrs []string
		n     int
	}{
		{[]string{"10.1.0.1", "10.1.0.2"}, 2},
		{[]string{"10.1.0.2"}, 1},
		{[]string{"10.1.0.2", "10.1.0.3", "10.1.0.4"}, 3},
	} {
		time.Sleep(1100 * time.Millisecond) // let the runner's burst refill, as between real edits
		before := metric(t, admin, "weir_config_last_reload_success_timestamp_seconds")
		writeAtomically(t, sliceFile, dbSlice(want.addrs...))
		deadline := time.Now().Add(10 * time.Second)
		for answers() != want.n {
			if time.Now().After(deadline) {
				t.Fatalf("edit %d: DNS never answered %d addresses", i, want.n)
			}
			time.Sleep(time.Millisecond)
		}
		seen := time.Now()
		after := metric(t, admin, "weir_config_last_reload_success_timestamp_seconds")
		if after == before {
			t.Fatalf("edit %d: answer changed but no reload was recorded", i)
		}
		ts, err := strconv.ParseFloat(after, 64)
		if err != nil {
			t.Fatal(err)
		}
		reload := time.Unix(0, int64(ts*1e9))
		lag := seen.Sub(reload)
		t.Logf("edit %d: DNS answered %d addresses %v after the reload", i, want.n, lag.Round(100*time.Microsecond))
		if lag > 100*time.Millisecond {
			t.Errorf("edit %d: DNS answered %v after the reload, want < 100ms", i, lag)
		}
	}
	_ = os.Remove(sliceFile)
}
