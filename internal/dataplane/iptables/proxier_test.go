package iptables

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane/conntrack"
	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

type fixture struct {
	*flowtest.Recorder
	p             *Proxier
	v4            *fakeRunner
	v6            *fakeRunner
	routeLocalnet int // times route_localnet was set
}

func newFixture(t *testing.T, opts kernel.Options) *fixture {
	t.Helper()
	return newFixtureWith(t, Options{Options: opts})
}

// newFixtureWith makes a Proxier over fake runners; route_localnet is recorded, not set.
func newFixtureWith(t *testing.T, o Options) *fixture {
	t.Helper()
	fx := &fixture{Recorder: flowtest.NewRecorder(), v4: newFakeRunner(), v6: newFakeRunner()}
	o.Options = fx.Options(o.Options)
	o.Runners = map[kernel.Family]Runner{kernel.IPv4: fx.v4, kernel.IPv6: fx.v6}
	o.SetRouteLocalnet = func() error { fx.routeLocalnet++; return nil }
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	fx.p = p
	return fx
}

func (fx *fixture) sync(t *testing.T, svcs ...*model.Service) {
	t.Helper()
	flowtest.Sync(t, fx.p, svcs...)
}

func TestPacketFlow(t *testing.T) {
	fx := newFixture(t, kernel.Options{})
	fx.sync(t, flowtest.Services()...)
	sticky := chainName("SEP", "shop/sticky:80/tcp", flowtest.StickyEndpoint)
	for _, tt := range flowtest.Scenarios() {
		t.Run(tt.Name, func(t *testing.T) {
			r := fx.v4
			if tt.IPv6 {
				r = fx.v6
			}
			tr := &tracer{t: t, r: r, nodeIPs: flowtest.NodeIPs(), recent: map[string]string{sticky: flowtest.StickyClient}}
			want := tt.Want
			if tt.IPTables != nil {
				want = *tt.IPTables
			}
			if got := tr.trace(tt.Pkt); !got.Matches(want) {
				t.Errorf("trace %+v\n got %v\nwant %v", tt.Pkt, got, want)
			}
		})
	}
	if fx.routeLocalnet != 1 {
		t.Errorf("route_localnet set %d times, want once (localhost node ports are on by default)", fx.routeLocalnet)
	}
	if !strings.Contains(fx.Logs.String(), "scheduler not supported") {
		t.Error("no warning for Maglev")
	}
	want := `
# HELP weir_dataplane_unsupported_scheduler 1 for each Service port whose scheduler the kernel data plane cannot do; it uses Random instead.
# TYPE weir_dataplane_unsupported_scheduler gauge
weir_dataplane_unsupported_scheduler{algorithm="Maglev",service_port="shop/hash:80"} 1
`
	if err := testutil.CollectAndCompare(fx.p.syncs.Unsupported.Collector(), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// TestPacketFlowProxyConfig traces the scenarios that kube-proxy's settings change
// (--masquerade-all, --detect-local-mode, --nodeport-addresses).
func TestPacketFlowProxyConfig(t *testing.T) {
	for _, cs := range flowtest.ProxyConfigScenarios() {
		t.Run(cs.Name, func(t *testing.T) {
			fx := newFixture(t, kernel.Options{Proxy: cs.Proxy})
			fx.sync(t, flowtest.Services()...)
			for _, tt := range cs.Scenarios {
				t.Run(tt.Name, func(t *testing.T) {
					r := fx.v4
					if tt.IPv6 {
						r = fx.v6
					}
					tr := &tracer{t: t, r: r, nodeIPs: flowtest.NodeIPs()}
					if got := tr.trace(tt.Pkt); !got.Matches(tt.Want) {
						t.Errorf("trace %+v\n got %v\nwant %v", tt.Pkt, got, tt.Want)
					}
				})
			}
		})
	}
}

// TestLocalhostNodePorts follows kube-proxy's iptables tests of
// --iptables-localhost-nodeports: node ports on 127.0.0.1 unless disabled or left
// out of --nodeport-addresses, never on ::1, and route_localnet set only when served.
func TestLocalhostNodePorts(t *testing.T) {
	served := flowtest.Outcome{Verdict: "DNAT", Endpoints: map[string]float64{"10.1.0.3:80": 0.5, "10.2.0.3:80": 0.5}, Masq: true}
	accept := flowtest.Outcome{Verdict: "ACCEPT"}
	loopback := flowtest.Packet{Src: "127.0.0.1", Dst: "127.0.0.1", Proto: "tcp", Port: 30080}
	nodeIP := flowtest.Packet{Src: "198.51.100.7", Dst: "192.168.0.2", Proto: "tcp", Port: 30080}
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	tests := []struct {
		name          string
		opts          Options
		loopback      flowtest.Outcome
		nodeIP        flowtest.Outcome
		routeLocalnet int
	}{
		{name: "default: served", loopback: served, nodeIP: served, routeLocalnet: 1},
		{name: "disabled", opts: Options{DisableLocalhostNodePorts: true}, loopback: accept, nodeIP: served},
		{name: "--nodeport-addresses without loopback", opts: Options{Options: kernel.Options{Proxy: model.ProxyConfig{NodePortAddresses: []netip.Prefix{p("192.168.0.0/24")}}}},
			loopback: accept, nodeIP: served},
		{name: "--nodeport-addresses with loopback", opts: Options{Options: kernel.Options{Proxy: model.ProxyConfig{NodePortAddresses: []netip.Prefix{p("127.0.0.0/8"), p("192.168.0.0/24")}}}},
			loopback: served, nodeIP: served, routeLocalnet: 1},
		{name: "--nodeport-addresses with loopback, disabled", opts: Options{DisableLocalhostNodePorts: true, Options: kernel.Options{Proxy: model.ProxyConfig{NodePortAddresses: []netip.Prefix{p("0.0.0.0/1"), p("192.168.0.0/24")}}}},
			loopback: accept, nodeIP: served},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixtureWith(t, tc.opts)
			fx.sync(t, flowtest.Services()...)
			for _, c := range []struct {
				pkt  flowtest.Packet
				want flowtest.Outcome
			}{{loopback, tc.loopback}, {nodeIP, tc.nodeIP}} {
				tr := &tracer{t: t, r: fx.v4, nodeIPs: flowtest.NodeIPs()}
				if got := tr.trace(c.pkt); !got.Matches(c.want) {
					t.Errorf("trace %+v\n got %v\nwant %v", c.pkt, got, c.want)
				}
			}
			if fx.routeLocalnet != tc.routeLocalnet {
				t.Errorf("route_localnet set %d times, want %d", fx.routeLocalnet, tc.routeLocalnet)
			}
			// A packet from the network to 127.0.0.1 that was not DNATed is dropped
			// when route_localnet is on.
			tr := &tracer{t: t, r: fx.v4, nodeIPs: flowtest.NodeIPs()}
			martian := flowtest.Packet{Src: "198.51.100.7", Dst: "127.0.0.1", Proto: "tcp", Port: 22}
			if got, guarded := tr.trace(martian), tc.routeLocalnet > 0; (got.Verdict == "DROP") != guarded {
				t.Errorf("outside packet to 127.0.0.1:22: %v, want dropped: %v", got, guarded)
			}
		})
	}
}

func TestPartialSync(t *testing.T) {
	fx := newFixture(t, kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}})
	fx.sync(t, flowtest.Services()...)
	if fx.v4.restores != 1 {
		t.Fatalf("first sync: %d restores", fx.v4.restores)
	}
	fx.sync(t, flowtest.Services()...)
	if fx.v4.restores != 1 {
		t.Fatalf("a sync with no change ran iptables-restore")
	}
	changed := flowtest.Services()
	changed[0].Ports[0] = flowtest.Port(model.TCP, 80, flowtest.EP("10.1.0.1:8080", flowtest.Local), flowtest.EP("10.2.0.99:8080"))
	fx.sync(t, changed...)
	// Only web's chains are declared besides the fixed ones.
	var declared []string
	for _, line := range strings.Split(fx.v4.last, "\n") {
		if strings.HasPrefix(line, ":WEIR-SVC-") || strings.HasPrefix(line, ":WEIR-SEP-") || strings.HasPrefix(line, ":WEIR-EXT-") {
			declared = append(declared, line)
		}
	}
	// svc chain rewritten, new SEP created, old SEP deleted.
	if len(declared) != 3 {
		t.Errorf("one endpoint change declared %d service chains, want 3:\n%s", len(declared), fx.v4.last)
	}
	tr := &tracer{t: t, r: fx.v4}
	if got := tr.trace(flowtest.Packet{Src: "10.9.0.1", Dst: "172.30.0.10", Proto: "tcp", Port: 80}); !flowtest.SameShares(got.Endpoints, map[string]float64{"10.1.0.1:8080": 0.5, "10.2.0.99:8080": 0.5}) {
		t.Errorf("after the change: %v", got)
	}
}

func TestIncrementalEqualsFull(t *testing.T) {
	all := flowtest.Services()
	steps := [][]*model.Service{
		all,
		all[:5],
		append(all[3:], all[:3]...),
		{all[0], all[4], all[10]},
		flowtest.Mutate(all, func(s *model.Service) {
			for _, sp := range s.Ports {
				sp.Cluster = flowtest.Forward()
				sp.External = flowtest.Forward()
			}
		}),
		all,
		flowtest.Mutate(all, func(s *model.Service) { s.AffinityTimeout = 60 * time.Second }),
		flowtest.Mutate(all, func(s *model.Service) { s.Policy = &model.Policy{Algorithm: balance.RoundRobin} }),
		nil,
		all,
	}
	inc := newFixture(t, kernel.Options{})
	for i, step := range steps {
		inc.sync(t, sortByKey(step)...)
		full := newFixture(t, kernel.Options{})
		full.sync(t, sortByKey(step)...)
		for _, pair := range [][2]*fakeRunner{{inc.v4, full.v4}, {inc.v6, full.v6}} {
			for _, table := range []string{"nat", "filter"} {
				got, _ := pair[0].Save(context.Background(), table)
				want, _ := pair[1].Save(context.Background(), table)
				if string(got) != string(want) {
					t.Fatalf("step %d %s: incremental differs from full\n--- incremental\n%s\n--- full\n%s", i, table, got, want)
				}
			}
		}
	}
}

func sortByKey(svcs []*model.Service) []*model.Service {
	out := append([]*model.Service(nil), svcs...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Key.Compare(out[j-1].Key) < 0; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func TestStartupReplacesAnEarlierRunAndCleanupRemovesAll(t *testing.T) {
	fx := newFixture(t, kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}})
	// An earlier run left a chain and its jumps.
	if err := fx.v4.Restore(context.Background(), []byte("*nat\n:WEIR-SVC-OLDOLDOLDOLDOLDO - [0:0]\n:WEIR-SERVICES - [0:0]\n-A WEIR-SERVICES -d 10.0.0.1/32 -j WEIR-SVC-OLDOLDOLDOLDOLDO\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	fx.sync(t, flowtest.Services()...)
	if _, ok := fx.v4.tables["nat"]["WEIR-SVC-OLDOLDOLDOLDOLDO"]; ok {
		t.Error("the earlier run's chain survived the first sync")
	}
	fx.sync(t, flowtest.Services()...) // jumps are not duplicated
	if n := len(fx.v4.tables["nat"]["PREROUTING"]); n != 1 {
		t.Errorf("PREROUTING has %d rules", n)
	}
	if found, err := fx.p.Leftovers(context.Background()); err != nil || !found {
		t.Fatalf("Leftovers before Cleanup = %v, %v", found, err)
	}
	if err := fx.p.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if found, err := fx.p.Leftovers(context.Background()); err != nil || found {
		t.Fatalf("Leftovers after Cleanup = %v, %v", found, err)
	}
	for _, table := range []string{"nat", "filter"} {
		after, _ := fx.v4.Save(context.Background(), table)
		clean, _ := newFakeRunner().Save(context.Background(), table)
		if string(after) != string(clean) {
			t.Errorf("%s after cleanup:\n%s", table, after)
		}
	}
}

func TestStaleUDPConntrack(t *testing.T) {
	fx := newFixture(t, kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}})
	dns := flowtest.Svc("kube-system", "dns", "172.30.0.53")
	dns.Ports = []*model.ServicePort{flowtest.Port(model.UDP, 53, flowtest.EP("10.2.0.53:53"))}
	fx.sync(t, dns)
	fx.Conntrack.Take()
	withB := *dns
	withB.Ports = []*model.ServicePort{flowtest.Port(model.UDP, 53, flowtest.EP("10.2.0.54:53"))}
	fx.sync(t, &withB)
	want := []conntrack.Flow{{OrigDstPort: 53, ReplySrc: netip.MustParseAddr("10.2.0.53")}}
	if got := fx.Conntrack.Take(); len(got) != 1 || got[0] != want[0] {
		t.Errorf("flows %v, want %v", got, want)
	}
}
