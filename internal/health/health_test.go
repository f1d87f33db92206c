package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"weir.dev/weir/internal/model"
)

func ep(s string) model.Endpoint {
	ap := netip.MustParseAddrPort(s)
	return model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}
}

// snapshot builds a Snapshot of one Service "default/web" port 80 over eps.
func snapshot(pol *model.Policy, eps ...model.Endpoint) *model.Snapshot {
	return &model.Snapshot{Services: []*model.Service{{
		Key:        model.ServiceKey{Namespace: "default", Name: "web"},
		Type:       model.ClusterIP,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("127.0.0.10")},
		Policy:     pol,
		Ports: []*model.ServicePort{{
			Protocol: model.TCP, Port: 80, Endpoints: eps,
			Cluster: model.EndpointSet{Endpoints: eps}, External: model.EndpointSet{Endpoints: eps},
		}},
	}}}
}

const webPort = "default/web:80"

// testAddr is where test servers listen: not 127.0.0.1, whose ephemeral ports a
// concurrent load test on the machine can exhaust.
const testAddr = "127.0.98.1:0"

func newOverlay(t *testing.T) (*Overlay, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o, err := New(Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	return o, reg
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEligible(t *testing.T) {
	a, b, c, d := ep("10.0.0.1:80"), ep("10.0.0.2:80"), ep("10.0.0.3:80"), ep("10.0.0.4:80")
	all := []model.Endpoint{a, b, c, d}
	tests := []struct {
		name      string
		unhealthy []model.Endpoint
		panicPct  int
		want      []model.Endpoint
	}{
		{"all healthy", nil, 50, all},
		{"one down", []model.Endpoint{b}, 50, []model.Endpoint{a, c, d}},
		{"half down at threshold 50 is not panic", []model.Endpoint{a, b}, 50, []model.Endpoint{c, d}},
		{"three down is panic", []model.Endpoint{a, b, c}, 50, all},
		{"three down without threshold", []model.Endpoint{a, b, c}, 0, []model.Endpoint{d}},
		{"all down is always panic", all, 0, all},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			down := map[netip.AddrPort]bool{}
			for _, e := range tt.unhealthy {
				down[e.AddrPort()] = true
			}
			got := Eligible(all, func(ap netip.AddrPort) bool { return !down[ap] }, tt.panicPct)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i].AddrPort() != tt.want[i].AddrPort() {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestPassiveEjection(t *testing.T) {
	o, reg := newOverlay(t)
	pol := &model.Policy{Outlier: model.OutlierDetection{
		ConsecutiveFailures: 3, BaseEjectionTime: 150 * time.Millisecond, MaxEjectionPercent: 50, PanicThresholdPercent: 1,
	}}
	eps := []model.Endpoint{ep("127.0.0.1:1001"), ep("127.0.0.1:1002"), ep("127.0.0.1:1003"), ep("127.0.0.1:1004")}
	o.Sync(context.Background(), snapshot(pol, eps...))
	sub := o.Subscribe()
	defer sub.Close()

	a := eps[0].AddrPort()
	fail := func(ap netip.AddrPort, n int) {
		for range n {
			o.ReportFailure(webPort, ap, ConnectFailure)
		}
	}
	// Two failures, a success, two failures: never three in a row.
	fail(a, 2)
	o.ReportSuccess(webPort, a)
	fail(a, 2)
	if !o.Healthy(webPort, a) {
		t.Fatal("ejected without three consecutive failures")
	}
	fail(a, 1)
	if o.Healthy(webPort, a) {
		t.Fatal("not ejected after three consecutive failures")
	}
	select {
	case <-sub.C():
		if got := sub.Take(); len(got) != 1 || got[0] != webPort {
			t.Fatalf("Take = %v", got)
		}
	case <-time.After(time.Second):
		t.Fatal("no notification of the ejection")
	}
	if got := len(o.Eligible(webPort, eps)); got != 3 {
		t.Fatalf("eligible = %d, want 3", got)
	}
	if v := testutil.ToFloat64(o.ejects.WithLabelValues(webPort, a.String())); v != 1 {
		t.Fatalf("ejections metric = %v", v)
	}
	// No active check: only the endpoint reported on has state and a series.
	if n, err := testutil.GatherAndCount(reg, "weir_endpoint_healthy"); err != nil || n != 1 {
		t.Fatalf("weir_endpoint_healthy series = %d, %v; want 1", n, err)
	}

	// At most 50 % of four: a second endpoint may go, a third may not.
	fail(eps[1].AddrPort(), 3)
	fail(eps[2].AddrPort(), 3)
	if o.Healthy(webPort, eps[1].AddrPort()) || !o.Healthy(webPort, eps[2].AddrPort()) {
		t.Fatalf("max ejection percent not applied: %+v", o.Status())
	}

	// Ejection ends after the base time, and the second one lasts twice as long.
	eventually(t, 2*time.Second, "endpoint back from its first ejection", func() bool { return o.Healthy(webPort, a) })
	fail(a, 3)
	st := o.Status()[0]
	if !st.Ejected || st.Ejections != 2 {
		t.Fatalf("status after second ejection = %+v", st)
	}
	if left := time.Until(st.EjectedUntil); left < 200*time.Millisecond {
		t.Fatalf("second ejection lasts %v, want about 300ms", left)
	}
	// Exponential backoff: the third lasts four times the base.
	eventually(t, 3*time.Second, "endpoint back from its second ejection", func() bool { return o.Healthy(webPort, a) })
	fail(a, 3)
	st = o.Status()[0]
	if left := time.Until(st.EjectedUntil); !st.Ejected || st.Ejections != 3 || left < 450*time.Millisecond {
		t.Fatalf("third ejection: %+v, lasts %v; want 3 ejections and about 600ms", st, left)
	}
}

// TestEjectionBackoffDecays: an endpoint that stays in rotation for some outlier
// intervals after an ejection steps its backoff down, one step per interval.
func TestEjectionBackoffDecays(t *testing.T) {
	o, _ := newOverlay(t)
	pol := &model.Policy{Outlier: model.OutlierDetection{ConsecutiveFailures: 1, BaseEjectionTime: 20 * time.Millisecond,
		Interval: 50 * time.Millisecond, MaxEjectionPercent: 100}}
	a := ep("127.0.0.1:2101")
	o.Sync(context.Background(), snapshot(pol, a))
	for i := 0; i < 3; i++ { // three ejections in a row: the backoff exponent reaches 3
		o.ReportFailure(webPort, a.AddrPort(), ConnectFailure)
		eventually(t, 2*time.Second, "return from ejection", func() bool { return o.Healthy(webPort, a.AddrPort()) })
	}
	time.Sleep(250 * time.Millisecond) // five intervals in rotation: the exponent decays to 0
	o.ReportFailure(webPort, a.AddrPort(), ConnectFailure)
	if st := o.Status()[0]; !st.Ejected || st.Ejections != 1 {
		t.Fatalf("after staying healthy, status = %+v; want a fresh first ejection", st)
	}
}

func TestStateSurvivesSync(t *testing.T) {
	o, _ := newOverlay(t)
	pol := &model.Policy{Outlier: model.OutlierDetection{ConsecutiveFailures: 1, BaseEjectionTime: time.Hour, MaxEjectionPercent: 100}}
	a, b, c := ep("127.0.0.1:2001"), ep("127.0.0.1:2002"), ep("127.0.0.1:2003")
	o.Sync(context.Background(), snapshot(pol, a, b))
	o.ReportFailure(webPort, a.AddrPort(), ConnectFailure)
	o.Sync(context.Background(), snapshot(pol, a, c))
	if o.Healthy(webPort, a.AddrPort()) {
		t.Fatal("ejection lost across Sync")
	}
	st := o.Status()
	if len(st) != 1 || st[0].Key.Endpoint != a.AddrPort() {
		t.Fatalf("status = %+v; want a alone (c has no check and no report)", st)
	}
	// Removed and re-added: fresh state.
	o.Sync(context.Background(), snapshot(pol, c))
	o.Sync(context.Background(), snapshot(pol, a, c))
	if !o.Healthy(webPort, a.AddrPort()) {
		t.Fatal("a removed endpoint kept its ejection")
	}
}

func TestActiveTCPCheck(t *testing.T) {
	o, _ := newOverlay(t)
	ln, err := net.Listen("tcp4", testAddr)
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	pol := &model.Policy{HealthCheck: &model.ActiveHealthCheck{
		Interval: 20 * time.Millisecond, Timeout: 500 * time.Millisecond, HealthyThreshold: 1, UnhealthyThreshold: 2,
	}}
	e := ep(addr)
	o.Sync(context.Background(), snapshot(pol, e))
	time.Sleep(100 * time.Millisecond)
	if !o.Healthy(webPort, e.AddrPort()) {
		t.Fatal("listening endpoint unhealthy")
	}
	_ = ln.Close()
	eventually(t, 3*time.Second, "closed endpoint marked unhealthy", func() bool { return !o.Healthy(webPort, e.AddrPort()) })
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	eventually(t, 3*time.Second, "reopened endpoint marked healthy", func() bool { return o.Healthy(webPort, e.AddrPort()) })
}

func TestActiveHTTPCheck(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		expected []int
		healthy  bool
	}{
		{"200 by default", 200, nil, true},
		{"503 by default", 503, nil, false},
		{"204 expected", 204, []int{200, 204}, true},
		{"302 not followed", 302, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var path atomic.Value
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				path.Store(r.URL.Path + " " + r.Host)
				if tt.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.status)
			}))
			ln, err := net.Listen("tcp4", testAddr)
			if err != nil {
				t.Fatal(err)
			}
			srv.Listener = ln
			srv.Start()
			defer srv.Close()
			o, _ := newOverlay(t)
			pol := &model.Policy{HealthCheck: &model.ActiveHealthCheck{
				HTTP: true, Path: "/healthz", Host: "web.example", ExpectedStatuses: tt.expected,
				Interval: 20 * time.Millisecond, Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1,
			}}
			e := ep(srv.Listener.Addr().String())
			o.Sync(context.Background(), snapshot(pol, e))
			eventually(t, 3*time.Second, "a probe", func() bool { return path.Load() != nil })
			eventually(t, 3*time.Second, "health settles", func() bool { return o.Healthy(webPort, e.AddrPort()) == tt.healthy })
			if got := path.Load().(string); got != "/healthz web.example" {
				t.Fatalf("probe asked %q", got)
			}
			// Status says why an endpoint fails its checks, for the dashboard.
			st := o.Status()[0]
			if want := fmt.Sprintf("GET /healthz answered %d", tt.status); !tt.healthy && !strings.Contains(st.Reason, want) {
				t.Errorf("Reason %q, want it to say %q", st.Reason, want)
			}
			if tt.healthy && st.Reason != "" {
				t.Errorf("Reason %q for a healthy endpoint", st.Reason)
			}
		})
	}
}

func TestCloseStopsProbes(t *testing.T) {
	o, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	pol := &model.Policy{HealthCheck: &model.ActiveHealthCheck{Interval: 10 * time.Millisecond}}
	o.Sync(context.Background(), snapshot(pol, ep("127.0.0.1:1"), ep("127.0.0.1:2")))
	done := make(chan struct{})
	go func() { o.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	o.ReportFailure(webPort, netip.MustParseAddrPort("127.0.0.1:1"), ConnectFailure) // no panic after Close
}

// TestTraffic: reported outcomes are counted per endpoint, Traffic walks only the
// endpoints with traffic, and Status carries the counts.
func TestTraffic(t *testing.T) {
	o, _ := newOverlay(t)
	eps := []model.Endpoint{ep("127.0.0.1:1001"), ep("127.0.0.1:1002")}
	o.Sync(context.Background(), snapshot(&model.Policy{}, eps...))
	a := eps[0].AddrPort()
	for range 5 {
		o.ReportSuccess(webPort, a)
	}
	o.ReportFailure(webPort, a, ServerError)
	o.ReportSuccess("default/other:80", a) // untracked: ignored
	var got []string
	o.Traffic(func(k Key, ok, bad uint64) {
		got = append(got, fmt.Sprintf("%s %s %d/%d", k.ServicePort, k.Endpoint, ok, bad))
	})
	if want := "default/web:80 127.0.0.1:1001 5/1"; len(got) != 1 || got[0] != want {
		t.Errorf("Traffic: %q, want [%q]", got, want)
	}
	for _, st := range o.Status() {
		if st.Key.Endpoint == a && (st.Successes != 5 || st.Failures != 1) {
			t.Errorf("Status of %s: %d successes, %d failures", a, st.Successes, st.Failures)
		}
	}
}

// TestStateOnlyWhereNeeded: endpoints of a port without an active check get state and a
// weir_endpoint_healthy series only when a data plane reports on them (a Snapshot of
// 100,000 endpoints costs nothing per endpoint); a check gives every serving endpoint
// both, and removing the endpoint removes them.
func TestStateOnlyWhereNeeded(t *testing.T) {
	o, reg := newOverlay(t)
	var eps []model.Endpoint
	for i := range 1000 {
		eps = append(eps, ep(fmt.Sprintf("10.1.%d.%d:80", i>>8, i&255)))
	}
	notServing := ep("10.2.0.1:80")
	notServing.Ready, notServing.Serving = false, false
	eps = append(eps, notServing)
	series := func() int {
		t.Helper()
		n, err := testutil.GatherAndCount(reg, "weir_endpoint_healthy")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	pol := &model.Policy{Outlier: model.OutlierDetection{ConsecutiveFailures: 1, BaseEjectionTime: time.Hour, MaxEjectionPercent: 10}}
	o.Sync(context.Background(), snapshot(pol, eps...))
	if n, st := series(), len(o.Status()); n != 0 || st != 0 {
		t.Fatalf("without checks or reports: %d series, %d states; want none", n, st)
	}
	o.ReportSuccess(webPort, notServing.AddrPort())
	o.ReportFailure(webPort, netip.MustParseAddrPort("10.9.9.9:80"), ConnectFailure)
	if n := series(); n != 0 {
		t.Fatalf("reports on endpoints that do not serve made %d series", n)
	}
	// Max ejection percent counts every serving endpoint, with state or not: 10 % of
	// 1,000 may go.
	for i := range 101 {
		o.ReportFailure(webPort, eps[i].AddrPort(), ConnectFailure)
	}
	if got := len(o.Eligible(webPort, eps[:1000])); got != 900 {
		t.Fatalf("eligible after 101 failing endpoints = %d, want 900 (100 ejected)", got)
	}
	if n := series(); n != 101 {
		t.Fatalf("%d series after reports on 101 endpoints", n)
	}

	checked := &model.Policy{HealthCheck: &model.ActiveHealthCheck{Interval: time.Hour}}
	o.Sync(context.Background(), snapshot(checked, eps[:20]...))
	if n, st := series(), len(o.Status()); n != 20 || st != 20 {
		t.Fatalf("with a check over 20 endpoints: %d series, %d states; want 20", n, st)
	}
	o.Sync(context.Background(), snapshot(checked, eps[:5]...))
	if n := series(); n != 5 {
		t.Fatalf("after removing 15 endpoints: %d series, want 5", n)
	}
}
