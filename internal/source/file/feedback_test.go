package file

import (
	"bytes"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"weir.dev/weir/internal/store"
)

// slice is an EndpointSlice of Service name with one ready endpoint per address.
func slice(name string, port int, addrs ...string) string {
	var eps strings.Builder
	for _, a := range addrs {
		eps.WriteString("  - addresses: [\"" + a + "\"]\n")
	}
	return "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: " + name +
		"-1\n  labels: {kubernetes.io/service-name: " + name + "}\naddressType: IPv4\nports: [{port: " +
		strconv.Itoa(port) + "}]\nendpoints:\n" + eps.String()
}

// TestReloadFeedback: each reload logs what it changed in one line, and the first valid
// load after an invalid one says the configuration is valid again.
func TestReloadFeedback(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	src := New(Options{Paths: []string{dir}, Store: store.New(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	write(t, filepath.Join(dir, "web.yaml"), service("web", 80)+"---\n"+slice("web", 8080, "127.0.0.11", "127.0.0.12"))
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	last := func() string {
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		return lines[len(lines)-1]
	}
	write(t, filepath.Join(dir, "web.yaml"), service("web", 80)+"---\n"+slice("web", 8080, "127.0.0.12", "127.0.0.13", "127.0.0.14"))
	write(t, filepath.Join(dir, "db.yaml"), service("db", 5432))
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	if got := last(); !strings.Contains(got, `msg="configuration loaded"`) || !strings.Contains(got, `changes="Service +default/db; endpoints default/web +2 -1"`) {
		t.Errorf("reload line: %s", got)
	}
	write(t, filepath.Join(dir, "db.yaml"), invalid)
	if err := src.Load(); err == nil {
		t.Fatal("invalid edit loaded")
	}
	if got := last(); !strings.Contains(got, "configuration not loaded") {
		t.Errorf("after the invalid edit: %s", got)
	}
	write(t, filepath.Join(dir, "db.yaml"), "")
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	if got := last(); !strings.Contains(got, `msg="configuration valid again, loaded"`) || !strings.Contains(got, `changes="Service -default/db"`) {
		t.Errorf("after the fix: %s", got)
	}
	if _, err := src.LastResult(); err != nil {
		t.Errorf("LastResult still has an error: %v", err)
	}
	// Fixed back to exactly what is in force: valid again, nothing to change.
	write(t, filepath.Join(dir, "db.yaml"), invalid)
	_ = src.Load()
	write(t, filepath.Join(dir, "db.yaml"), "")
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	if got := last(); !strings.Contains(got, "configuration valid again; it equals the configuration in force") {
		t.Errorf("after the fix to the configuration in force: %s", got)
	}
}

// TestOwnEndpointRefused: an endpoint at one of weir's own listeners is an error with
// file and line, and the configuration in force stays.
func TestOwnEndpointRefused(t *testing.T) {
	dir := t.TempDir()
	st := store.New()
	admin := netip.MustParseAddrPort("127.0.0.1:9901")
	src := New(Options{Paths: []string{dir}, Store: st, Own: func(ap netip.AddrPort) string {
		if ap == admin {
			return "admin API (--admin-addr)"
		}
		return ""
	}})
	write(t, filepath.Join(dir, "web.yaml"), service("web", 80)+"---\n"+slice("web", 9901, "127.0.0.11"))
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "web.yaml"), service("web", 80)+"---\n"+slice("web", 9901, "127.0.0.11", "127.0.0.1"))
	err := src.Load()
	want := "web.yaml:17: EndpointSlice default/web-1: endpoints[1].addresses[0]: 127.0.0.1:9901 is weir's own admin API (--admin-addr): an endpoint must not point back at weir"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v\nwant %s", err, want)
	}
	if objs, _ := st.Current(); len(objs.EndpointSlices[0].Endpoints) != 1 {
		t.Error("the refused configuration reached the store")
	}
}
