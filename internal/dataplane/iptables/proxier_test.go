package iptables

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane/conntrack"
	"weir.dev/weir/internal/model"
)

type recordingConntrack struct {
	mu    sync.Mutex
	flows []conntrack.Flow
}

func (r *recordingConntrack) DeleteUDP(flows []conntrack.Flow) (uint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flows = append(r.flows, flows...)
	return uint(len(flows)), nil
}

type fixture struct {
	p    *Proxier
	v4   *fakeRunner
	v6   *fakeRunner
	ct   *recordingConntrack
	logs *bytes.Buffer
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	fx := &fixture{v4: newFakeRunner(), v6: newFakeRunner(), ct: &recordingConntrack{}, logs: &bytes.Buffer{}}
	opts.Runners = map[Family]Runner{IPv4: fx.v4, IPv6: fx.v6}
	opts.Conntrack = fx.ct
	opts.Registerer = prometheus.NewRegistry()
	opts.Logger = slog.New(slog.NewTextHandler(fx.logs, nil))
	opts.DisableHealthCheck = true
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	fx.p = p
	return fx
}

func (fx *fixture) sync(t *testing.T, svcs ...*model.Service) {
	t.Helper()
	if err := fx.p.Sync(context.Background(), &model.Snapshot{Services: svcs}); err != nil {
		t.Fatal(err)
	}
}

// Helpers to build Services by hand (model.Translate is another engineer's).

func ep(addrPort string, opts ...func(*model.Endpoint)) model.Endpoint {
	ap := netip.MustParseAddrPort(addrPort)
	e := model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, NodeName: "node-b", Weight: 1}
	for _, o := range opts {
		o(&e)
	}
	return e
}

func local(e *model.Endpoint) { e.Local = true; e.NodeName = "node-a" }

func terminating(e *model.Endpoint) { e.Ready = false; e.Terminating = true }

func weighted(w uint32) func(*model.Endpoint) { return func(e *model.Endpoint) { e.Weight = w } }

// forward is an endpoint set as Translate makes it: per-family verdicts, Reject for a
// family without endpoints.
func forward(eps ...model.Endpoint) model.EndpointSet {
	s := model.EndpointSet{Verdict: model.Reject, IPv4Verdict: model.Reject, IPv6Verdict: model.Reject, Endpoints: eps}
	for _, e := range eps {
		s.Verdict = model.Forward
		if e.Addr.Is6() {
			s.IPv6Verdict = model.Forward
		} else {
			s.IPv4Verdict = model.Forward
		}
	}
	return s
}

var dropped = model.EndpointSet{Verdict: model.Drop, IPv4Verdict: model.Drop, IPv6Verdict: model.Drop}

func svc(ns, name string, clusterIPs ...string) *model.Service {
	s := &model.Service{Key: model.ServiceKey{Namespace: ns, Name: name}, Type: model.ClusterIP, Policy: &model.Policy{Algorithm: balance.Random}}
	for _, ip := range clusterIPs {
		s.ClusterIPs = append(s.ClusterIPs, netip.MustParseAddr(ip))
	}
	return s
}

func port(proto model.Protocol, p int32, eps ...model.Endpoint) *model.ServicePort {
	return &model.ServicePort{Protocol: proto, Port: p, Endpoints: eps, Cluster: forward(eps...), External: forward(eps...)}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// testServices is the world the packet-flow tests trace through. Node a has 192.168.0.2
// and fd00:192::2; endpoints on it are 10.1.0.x, on node b 10.2.0.x.
func testServices() []*model.Service {
	web := svc("shop", "web", "172.30.0.10")
	web.Ports = []*model.ServicePort{port(model.TCP, 80, ep("10.1.0.1:8080", local), ep("10.2.0.1:8080"))}

	empty := svc("shop", "empty", "172.30.0.11")
	empty.Ports = []*model.ServicePort{port(model.TCP, 80)}

	itpLocal := svc("shop", "itp-local", "172.30.0.12")
	itpLocal.InternalTrafficLocal = true
	sp := port(model.TCP, 80, ep("10.2.0.2:80"))
	sp.Cluster = dropped
	itpLocal.Ports = []*model.ServicePort{sp}

	np := svc("shop", "np", "172.30.0.13")
	np.Type = model.NodePort
	sp = port(model.TCP, 80, ep("10.1.0.3:80", local), ep("10.2.0.3:80"))
	sp.NodePort = 30080
	np.Ports = []*model.ServicePort{sp}

	npLocal := svc("shop", "np-local", "172.30.0.14")
	npLocal.Type = model.NodePort
	npLocal.ExternalTrafficLocal = true
	sp = port(model.TCP, 80, ep("10.1.0.4:80", local), ep("10.2.0.4:80"))
	sp.NodePort = 30081
	sp.External = forward(ep("10.1.0.4:80", local))
	npLocal.Ports = []*model.ServicePort{sp}

	npLocalNone := svc("shop", "np-local-none", "172.30.0.15")
	npLocalNone.Type = model.LoadBalancer
	npLocalNone.ExternalTrafficLocal = true
	npLocalNone.LoadBalancerIPs = addrs("203.0.113.15")
	sp = port(model.TCP, 80, ep("10.2.0.5:80"))
	sp.NodePort = 30082
	sp.External = dropped
	npLocalNone.Ports = []*model.ServicePort{sp}

	lb := svc("shop", "lb", "172.30.0.16")
	lb.Type = model.LoadBalancer
	lb.LoadBalancerIPs = addrs("203.0.113.16")
	lb.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	sp = port(model.TCP, 443, ep("10.2.0.6:8443"))
	sp.NodePort = 30443
	lb.Ports = []*model.ServicePort{sp}

	ext := svc("shop", "ext", "172.30.0.17")
	ext.ExternalIPs = addrs("192.0.2.17")
	ext.Ports = []*model.ServicePort{port(model.TCP, 80, ep("10.2.0.7:80"))}

	sticky := svc("shop", "sticky", "172.30.0.18")
	sticky.AffinityTimeout = 10800 * time.Second
	sticky.Ports = []*model.ServicePort{port(model.TCP, 80, ep("10.2.0.8:80"), ep("10.2.0.9:80"))}

	// translate chose the terminating endpoints because no endpoint is ready.
	term := svc("shop", "terminating", "172.30.0.19")
	term.Ports = []*model.ServicePort{{Protocol: model.TCP, Port: 80,
		Endpoints: []model.Endpoint{ep("10.2.0.10:80", terminating), ep("10.2.0.11:80", terminating)},
		Cluster:   forward(ep("10.2.0.10:80", terminating)), External: forward(ep("10.2.0.10:80", terminating))}}

	dual := svc("shop", "dual", "172.30.0.20", "fd00:30::20")
	dual.Ports = []*model.ServicePort{port(model.TCP, 80, ep("10.2.0.20:80"), ep("[fd00:2::20]:80"), ep("[fd00:2::21]:80"))}

	weightedSvc := svc("shop", "weighted", "172.30.0.21")
	weightedSvc.Ports = []*model.ServicePort{port(model.TCP, 80, ep("10.2.0.21:80", weighted(3)), ep("10.2.0.22:80", weighted(1)))}

	rr := svc("shop", "rr", "172.30.0.22")
	rr.Policy = &model.Policy{Algorithm: balance.RoundRobin}
	rr.Ports = []*model.ServicePort{port(model.TCP, 80, ep("10.2.0.23:80"), ep("10.2.0.24:80"), ep("10.2.0.25:80"))}

	hash := svc("shop", "hash", "172.30.0.23")
	hash.Policy = &model.Policy{Algorithm: balance.Maglev, MaglevSeed: 7}
	hash.Ports = []*model.ServicePort{port(model.TCP, 80, ep("10.2.0.26:80"), ep("10.2.0.27:80"))}

	dns := svc("kube-system", "dns", "172.30.0.53")
	dns.Ports = []*model.ServicePort{port(model.UDP, 53, ep("10.2.0.53:53")), port(model.TCP, 53, ep("10.2.0.53:53"))}

	return []*model.Service{web, empty, itpLocal, np, npLocal, npLocalNone, lb, ext, sticky, term, dual, weightedSvc, rr, hash, dns}
}

func TestPacketFlow(t *testing.T) {
	fx := newFixture(t, Options{})
	fx.sync(t, testServices()...)
	nodeIPs := []string{"192.168.0.2", "fd00:192::2", "127.0.0.1"}
	sticky := func(ep string) string { return chainName("SEP", "shop/sticky:80/tcp", ep) }

	tests := []struct {
		name string
		v6   bool
		pkt  packet
		want outcome
	}{
		{"ClusterIP reaches both endpoints", false, packet{"10.9.0.1", "172.30.0.10", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.1:8080": 0.5, "10.2.0.1:8080": 0.5}}},
		{"ClusterIP from the node itself", false, packet{"192.168.0.2", "172.30.0.10", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.1:8080": 0.5, "10.2.0.1:8080": 0.5}}},
		{"hairpin is masqueraded", false, packet{"10.1.0.1", "172.30.0.10", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.1:8080": 0.5, "10.2.0.1:8080": 0.5}, masq: true}},
		{"ClusterIP on an unserved port is rejected", false, packet{"10.9.0.1", "172.30.0.10", "tcp", 81},
			outcome{verdict: "REJECT"}},
		{"no endpoints is rejected", false, packet{"10.9.0.1", "172.30.0.11", "tcp", 80},
			outcome{verdict: "REJECT"}},
		{"internalTrafficPolicy Local without local endpoint drops", false, packet{"10.9.0.1", "172.30.0.12", "tcp", 80},
			outcome{verdict: "DROP"}},
		{"NodePort from outside is masqueraded", false, packet{"198.51.100.7", "192.168.0.2", "tcp", 30080},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.3:80": 0.5, "10.2.0.3:80": 0.5}, masq: true}},
		{"NodePort on a non-local address is not a node port", false, packet{"198.51.100.7", "192.168.9.9", "tcp", 30080},
			outcome{verdict: "ACCEPT"}},
		{"NodePort on loopback is not served", false, packet{"127.0.0.1", "127.0.0.1", "tcp", 30080},
			outcome{verdict: "ACCEPT"}},
		{"NodePort Local goes to the local endpoint unmasqueraded", false, packet{"198.51.100.7", "192.168.0.2", "tcp", 30081},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.4:80": 1}}},
		{"NodePort Local from the node uses every endpoint", false, packet{"192.168.0.2", "192.168.0.2", "tcp", 30081},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.4:80": 0.5, "10.2.0.4:80": 0.5}, masq: true}},
		{"NodePort Local without local endpoint drops", false, packet{"198.51.100.7", "192.168.0.2", "tcp", 30082},
			outcome{verdict: "DROP"}},
		{"LoadBalancer Local without local endpoint drops", false, packet{"198.51.100.7", "203.0.113.15", "tcp", 80},
			outcome{verdict: "DROP"}},
		{"its ClusterIP still forwards", false, packet{"10.9.0.1", "172.30.0.15", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.5:80": 1}}},
		{"LoadBalancer from an allowed source", false, packet{"198.51.100.7", "203.0.113.16", "tcp", 443},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.6:8443": 1}, masq: true}},
		{"LoadBalancer from another source drops", false, packet{"192.0.2.99", "203.0.113.16", "tcp", 443},
			outcome{verdict: "DROP"}},
		{"source ranges do not apply to the node port", false, packet{"192.0.2.99", "192.168.0.2", "tcp", 30443},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.6:8443": 1}, masq: true}},
		{"externalIP", false, packet{"192.0.2.99", "192.0.2.17", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.7:80": 1}, masq: true}},
		{"affinity: a new client picks at random", false, packet{"10.9.0.1", "172.30.0.18", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.8:80": 0.5, "10.2.0.9:80": 0.5}}},
		{"affinity: a known client keeps its endpoint", false, packet{"10.9.0.99", "172.30.0.18", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.9:80": 1}}},
		{"terminating fallback", false, packet{"10.9.0.1", "172.30.0.19", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.10:80": 1}}},
		{"dual stack IPv4", false, packet{"10.9.0.1", "172.30.0.20", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.20:80": 1}}},
		{"dual stack IPv6", true, packet{"fd00:9::1", "fd00:30::20", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"[fd00:2::20]:80": 0.5, "[fd00:2::21]:80": 0.5}}},
		{"IPv6 unserved port is rejected", true, packet{"fd00:9::1", "fd00:30::20", "tcp", 81},
			outcome{verdict: "REJECT"}},
		{"weights 3:1", false, packet{"10.9.0.1", "172.30.0.21", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.21:80": 0.75, "10.2.0.22:80": 0.25}}},
		{"round robin shares evenly", false, packet{"10.9.0.1", "172.30.0.22", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.23:80": 1.0 / 3, "10.2.0.24:80": 1.0 / 3, "10.2.0.25:80": 1.0 / 3}}},
		{"Maglev is not supported: random", false, packet{"10.9.0.1", "172.30.0.23", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.26:80": 0.5, "10.2.0.27:80": 0.5}}},
		{"UDP service", false, packet{"10.9.0.1", "172.30.0.53", "udp", 53},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.53:53": 1}}},
		{"TCP on the same port", false, packet{"10.9.0.1", "172.30.0.53", "tcp", 53},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.53:53": 1}}},
		{"not a Service", false, packet{"10.9.0.1", "10.2.0.1", "tcp", 8080},
			outcome{verdict: "ACCEPT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fx.v4
			if tt.v6 {
				r = fx.v6
			}
			tr := &tracer{t: t, r: r, nodeIPs: nodeIPs, recent: map[string]string{sticky("10.2.0.9:80"): "10.9.0.99"}}
			got := tr.trace(tt.pkt)
			if got.verdict != tt.want.verdict || got.masq != tt.want.masq || !sameShares(got.endpoints, tt.want.endpoints) {
				t.Errorf("trace %+v\n got %v\nwant %v", tt.pkt, got, tt.want)
			}
		})
	}
	if !strings.Contains(fx.logs.String(), "scheduler not supported") {
		t.Error("no warning for Maglev")
	}
	want := `
# HELP weir_dataplane_unsupported_scheduler 1 for each Service port whose scheduler the kernel data plane cannot do; it uses Random instead.
# TYPE weir_dataplane_unsupported_scheduler gauge
weir_dataplane_unsupported_scheduler{algorithm="Maglev",service_port="shop/hash:80"} 1
`
	if err := testutil.CollectAndCompare(fx.p.metrics.unsupported.Collector(), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestPartialSync(t *testing.T) {
	fx := newFixture(t, Options{IPFamilies: []Family{IPv4}})
	fx.sync(t, testServices()...)
	if fx.v4.restores != 1 {
		t.Fatalf("first sync: %d restores", fx.v4.restores)
	}
	fx.sync(t, testServices()...)
	if fx.v4.restores != 1 {
		t.Fatalf("a sync with no change ran iptables-restore")
	}
	changed := testServices()
	changed[0].Ports[0] = port(model.TCP, 80, ep("10.1.0.1:8080", local), ep("10.2.0.99:8080"))
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
	if got := tr.trace(packet{"10.9.0.1", "172.30.0.10", "tcp", 80}); !sameShares(got.endpoints, map[string]float64{"10.1.0.1:8080": 0.5, "10.2.0.99:8080": 0.5}) {
		t.Errorf("after the change: %v", got)
	}
}

func TestIncrementalEqualsFull(t *testing.T) {
	all := testServices()
	steps := [][]*model.Service{
		all,
		all[:5],
		append(all[3:], all[:3]...),
		{all[0], all[4], all[10]},
		mutate(all, func(s *model.Service) {
			for _, sp := range s.Ports {
				sp.Cluster = forward()
				sp.External = forward()
			}
		}),
		all,
		mutate(all, func(s *model.Service) { s.AffinityTimeout = 60 * time.Second }),
		mutate(all, func(s *model.Service) { s.Policy = &model.Policy{Algorithm: balance.RoundRobin} }),
		nil,
		all,
	}
	inc := newFixture(t, Options{})
	for i, step := range steps {
		inc.sync(t, sortByKey(step)...)
		full := newFixture(t, Options{})
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

func mutate(svcs []*model.Service, f func(*model.Service)) []*model.Service {
	out := make([]*model.Service, 0, len(svcs))
	for _, s := range svcs {
		c := *s
		c.Ports = nil
		for _, sp := range s.Ports {
			cp := *sp
			c.Ports = append(c.Ports, &cp)
		}
		f(&c)
		out = append(out, &c)
	}
	return out
}

func TestStartupReplacesAnEarlierRunAndCleanupRemovesAll(t *testing.T) {
	fx := newFixture(t, Options{IPFamilies: []Family{IPv4}})
	// An earlier run left a chain and its jumps.
	if err := fx.v4.Restore(context.Background(), []byte("*nat\n:WEIR-SVC-OLDOLDOLDOLDOLDO - [0:0]\n:WEIR-SERVICES - [0:0]\n-A WEIR-SERVICES -d 10.0.0.1/32 -j WEIR-SVC-OLDOLDOLDOLDOLDO\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	fx.sync(t, testServices()...)
	if _, ok := fx.v4.tables["nat"]["WEIR-SVC-OLDOLDOLDOLDOLDO"]; ok {
		t.Error("the earlier run's chain survived the first sync")
	}
	fx.sync(t, testServices()...) // jumps are not duplicated
	if n := len(fx.v4.tables["nat"]["PREROUTING"]); n != 1 {
		t.Errorf("PREROUTING has %d rules", n)
	}
	if err := fx.p.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
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
	fx := newFixture(t, Options{IPFamilies: []Family{IPv4}})
	dns := svc("kube-system", "dns", "172.30.0.53")
	dns.Ports = []*model.ServicePort{port(model.UDP, 53, ep("10.2.0.53:53"))}
	fx.sync(t, dns)
	fx.ct.flows = nil
	withB := *dns
	withB.Ports = []*model.ServicePort{port(model.UDP, 53, ep("10.2.0.54:53"))}
	fx.sync(t, &withB)
	want := []conntrack.Flow{{OrigDstPort: 53, ReplySrc: netip.MustParseAddr("10.2.0.53")}}
	if len(fx.ct.flows) != 1 || fx.ct.flows[0] != want[0] {
		t.Errorf("flows %v, want %v", fx.ct.flows, want)
	}
}
