package kernel_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/dataplane/conntrack"
	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/dataplane/healthcheck"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

func TestWithDefaults(t *testing.T) {
	ct := &flowtest.RecordingConntrack{}
	tests := []struct {
		name     string
		in       kernel.Options
		mark     uint32
		families []kernel.Family
		ct       conntrack.Cleaner
		err      string
	}{
		{name: "empty", mark: kernel.DefaultMasqueradeMark, families: []kernel.Family{kernel.IPv4, kernel.IPv6}, ct: conntrack.Netlink{}},
		{name: "set", in: kernel.Options{MasqueradeMark: 0x10, IPFamilies: []kernel.Family{kernel.IPv6}, Conntrack: ct},
			mark: 0x10, families: []kernel.Family{kernel.IPv6}, ct: ct},
		{name: "unknown family", in: kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4, "IPv5"}}, err: `unknown IP family "IPv5"`},
		{name: "detect-local-mode without its interface", in: kernel.Options{Proxy: model.ProxyConfig{DetectLocal: model.DetectLocal{Mode: model.LocalModeBridgeInterface}}},
			err: "--pod-bridge-interface"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.WithDefaults()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Logger == nil || got.MasqueradeMark != tt.mark || !slices.Equal(got.IPFamilies, tt.families) || got.Conntrack != tt.ct {
				t.Errorf("got %+v", got)
			}
		})
	}
}

// loopbackHealth is a health-check server whose node ports listen on loopback, on
// ports the kernel picks.
type loopbackHealth struct {
	mu    sync.Mutex
	addrs map[int32]string
}

func (l *loopbackHealth) listen(port int32) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs[port] = ln.Addr().String()
	return ln, nil
}

func (l *loopbackHealth) get(t *testing.T, port int32) string {
	t.Helper()
	l.mu.Lock()
	addr := l.addrs[port]
	l.mu.Unlock()
	if addr == "" {
		t.Fatalf("health-check node port %d not served", port)
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSyncsTimesCountsAndServesHealthChecks(t *testing.T) {
	rec := flowtest.NewRecorder()
	lh := &loopbackHealth{addrs: map[int32]string{}}
	health := healthcheck.New(healthcheck.Options{Listen: lh.listen})
	t.Cleanup(health.Close)
	opts := rec.Options(kernel.Options{})
	opts.DisableHealthCheck, opts.HealthCheck = false, health
	syncs, err := kernel.NewSyncs("test", opts, []float64{1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kernel.NewSyncs("test", opts, []float64{1}); err == nil || !strings.Contains(err.Error(), "test: register metrics") {
		t.Errorf("registering twice: %v", err)
	}

	svc := flowtest.Svc("shop", "local", "172.30.0.1")
	svc.Type, svc.ExternalTrafficLocal, svc.HealthCheckNodePort, svc.LocalEndpoints = model.LoadBalancer, true, 32000, 2
	snap := &model.Snapshot{Services: []*model.Service{svc}}
	if err := syncs.Sync(snap, func() error { return errors.New("kernel said no") }); err == nil {
		t.Fatal("a failed sync succeeded")
	}
	want := `
# HELP weir_test_sync_errors_total test syncs that failed.
# TYPE weir_test_sync_errors_total counter
weir_test_sync_errors_total 1
`
	if err := testutil.GatherAndCompare(rec.Registry, strings.NewReader(want), "weir_test_sync_errors_total"); err != nil {
		t.Error(err)
	}
	lh.mu.Lock()
	opened := len(lh.addrs)
	lh.mu.Unlock()
	if opened != 0 {
		t.Error("a failed sync opened health-check node ports")
	}
	if err := syncs.Sync(snap, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if body := lh.get(t, 32000); !strings.Contains(body, `"localEndpoints":2`) {
		t.Errorf("health check answered %s", body)
	}
	if n, err := testutil.GatherAndCount(rec.Registry, "weir_test_sync_duration_seconds"); err != nil || n != 1 {
		t.Errorf("sync duration: %d series, %v", n, err)
	}
	syncs.Close() // not its server: it keeps serving
	if body := lh.get(t, 32000); !strings.Contains(body, `"localEndpoints":2`) {
		t.Errorf("after Close, health check answered %s", body)
	}
}

func TestWrittenDeletesStaleUDPFlowsAndReportsSchedulers(t *testing.T) {
	rec := flowtest.NewRecorder()
	syncs, err := kernel.NewSyncs("test", rec.Options(kernel.Options{}), []float64{1})
	if err != nil {
		t.Fatal(err)
	}
	dnsA := flowtest.Svc("kube-system", "dns", "172.30.0.53")
	dnsA.Ports = []*model.ServicePort{flowtest.Port(model.UDP, 53, flowtest.EP("10.2.0.53:53"))}
	dnsB := flowtest.Svc("kube-system", "dns", "172.30.0.53")
	dnsB.Ports = []*model.ServicePort{flowtest.Port(model.UDP, 53, flowtest.EP("10.2.0.54:53"))}
	maglev := []dataplane.UnsupportedScheduler{{Port: "kube-system/dns:53", Algorithm: string(balance.Maglev)}}

	syncs.Written([]kernel.Change{{New: dnsA, NewUnsupported: maglev}})
	rec.Conntrack.Take()
	if n := testutil.CollectAndCount(syncs.Unsupported.Collector()); n != 1 {
		t.Errorf("%d unsupported schedulers reported, want 1", n)
	}
	syncs.Written([]kernel.Change{{Old: dnsA, New: dnsB, OldUnsupported: maglev}})
	want := []conntrack.Flow{{OrigDstPort: 53, ReplySrc: netip.MustParseAddr("10.2.0.53")}}
	if got := rec.Conntrack.Take(); !slices.Equal(got, want) {
		t.Errorf("flows %v, want %v", got, want)
	}
	if n := testutil.CollectAndCount(syncs.Unsupported.Collector()); n != 0 {
		t.Errorf("%d unsupported schedulers still reported", n)
	}
	if !strings.Contains(rec.Logs.String(), "scheduler not supported") {
		t.Errorf("no warning for Maglev:\n%s", rec.Logs)
	}
}

func TestPortPolicyAndFamilyVerdict(t *testing.T) {
	own := &model.Policy{Algorithm: balance.RoundRobin, Source: "shop/own"}
	svc := flowtest.Svc("shop", "web", "172.30.0.10")
	svc.Policy = &model.Policy{Algorithm: balance.Maglev, Source: "shop/svc"}
	defaults := flowtest.Svc("shop", "plain", "172.30.0.11")
	defaults.Policy = model.DefaultPolicy()
	tests := []struct {
		name string
		svc  *model.Service
		sp   *model.ServicePort
		want *model.Policy
	}{
		{"the Service's", svc, &model.ServicePort{}, svc.Policy},
		{"the port's own", svc, &model.ServicePort{Policy: own}, own},
		{"none: the defaults are not a TrafficPolicy (kube-proxy's random)", defaults, &model.ServicePort{Policy: defaults.Policy}, nil},
	}
	for _, tt := range tests {
		if got := kernel.PortPolicy(tt.svc, tt.sp); got != tt.want {
			t.Errorf("%s: got %+v", tt.name, got)
		}
	}
	set := flowtest.Forward(flowtest.EP("[fd00::1]:80"))
	if v4, v6 := kernel.FamilyVerdict(set, false), kernel.FamilyVerdict(set, true); v4 != model.Reject || v6 != model.Forward {
		t.Errorf("verdicts %v/%v, want Reject/Forward", v4, v6)
	}
}
