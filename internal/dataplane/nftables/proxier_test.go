package nftables

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane/conntrack"
	"weir.dev/weir/internal/model"
)

// countingFake counts the transactions that reach the Fake.
type countingFake struct {
	*knftables.Fake
	runs int
	ops  int
}

func (c *countingFake) Run(ctx context.Context, tx *knftables.Transaction) error {
	c.runs++
	c.ops += tx.NumOperations()
	return c.Fake.Run(ctx, tx)
}

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
	v4   *countingFake
	v6   *countingFake
	ct   *recordingConntrack
	reg  *prometheus.Registry
	logs *bytes.Buffer
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	fx := &fixture{
		v4:   &countingFake{Fake: knftables.NewFake(knftables.IPv4Family, tableName)},
		v6:   &countingFake{Fake: knftables.NewFake(knftables.IPv6Family, tableName)},
		ct:   &recordingConntrack{},
		reg:  prometheus.NewRegistry(),
		logs: &bytes.Buffer{},
	}
	opts.NFTables = map[Family]knftables.Interface{IPv4: fx.v4, IPv6: fx.v6}
	opts.Conntrack = fx.ct
	opts.Registerer = fx.reg
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

	tests := []struct {
		name string
		fam  ipFamily
		pkt  packet
		want outcome
	}{
		{"ClusterIP reaches both endpoints", familyV4, packet{"10.9.0.1", "172.30.0.10", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.1:8080": 0.5, "10.2.0.1:8080": 0.5}}},
		{"ClusterIP from the node itself", familyV4, packet{"192.168.0.2", "172.30.0.10", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.1:8080": 0.5, "10.2.0.1:8080": 0.5}}},
		{"hairpin is masqueraded", familyV4, packet{"10.1.0.1", "172.30.0.10", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.1:8080": 0.5, "10.2.0.1:8080": 0.5}, masq: true}},
		{"ClusterIP on an unserved port is rejected", familyV4, packet{"10.9.0.1", "172.30.0.10", "tcp", 81},
			outcome{verdict: "REJECT"}},
		{"ClusterIP UDP on an unserved port is rejected", familyV4, packet{"10.9.0.1", "172.30.0.10", "udp", 80},
			outcome{verdict: "REJECT"}},
		{"no endpoints is rejected", familyV4, packet{"10.9.0.1", "172.30.0.11", "tcp", 80},
			outcome{verdict: "REJECT"}},
		{"internalTrafficPolicy Local without local endpoint drops", familyV4, packet{"10.9.0.1", "172.30.0.12", "tcp", 80},
			outcome{verdict: "DROP"}},
		{"NodePort from outside is masqueraded", familyV4, packet{"198.51.100.7", "192.168.0.2", "tcp", 30080},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.3:80": 0.5, "10.2.0.3:80": 0.5}, masq: true}},
		{"NodePort on a non-local address is not a node port", familyV4, packet{"198.51.100.7", "192.168.9.9", "tcp", 30080},
			outcome{verdict: "ACCEPT"}},
		{"NodePort on loopback is not served", familyV4, packet{"127.0.0.1", "127.0.0.1", "tcp", 30080},
			outcome{verdict: "ACCEPT"}},
		{"NodePort Local goes to the local endpoint unmasqueraded", familyV4, packet{"198.51.100.7", "192.168.0.2", "tcp", 30081},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.4:80": 1}}},
		{"NodePort Local from the node uses every endpoint", familyV4, packet{"192.168.0.2", "192.168.0.2", "tcp", 30081},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.1.0.4:80": 0.5, "10.2.0.4:80": 0.5}, masq: true}},
		{"NodePort Local without local endpoint drops", familyV4, packet{"198.51.100.7", "192.168.0.2", "tcp", 30082},
			outcome{verdict: "DROP"}},
		{"LoadBalancer Local without local endpoint drops", familyV4, packet{"198.51.100.7", "203.0.113.15", "tcp", 80},
			outcome{verdict: "DROP"}},
		{"its ClusterIP still forwards", familyV4, packet{"10.9.0.1", "172.30.0.15", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.5:80": 1}}},
		{"LoadBalancer from an allowed source", familyV4, packet{"198.51.100.7", "203.0.113.16", "tcp", 443},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.6:8443": 1}, masq: true}},
		{"LoadBalancer from another source drops", familyV4, packet{"192.0.2.99", "203.0.113.16", "tcp", 443},
			outcome{verdict: "DROP"}},
		{"source ranges do not apply to the node port", familyV4, packet{"192.0.2.99", "192.168.0.2", "tcp", 30443},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.6:8443": 1}, masq: true}},
		{"externalIP", familyV4, packet{"192.0.2.99", "192.0.2.17", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.7:80": 1}, masq: true}},
		{"affinity: a new client picks at random", familyV4, packet{"10.9.0.1", "172.30.0.18", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.8:80": 0.5, "10.2.0.9:80": 0.5}}},
		{"affinity: a known client keeps its endpoint", familyV4, packet{"10.9.0.99", "172.30.0.18", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.9:80": 1}}},
		{"terminating fallback", familyV4, packet{"10.9.0.1", "172.30.0.19", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.10:80": 1}}},
		{"dual stack IPv4", familyV4, packet{"10.9.0.1", "172.30.0.20", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.20:80": 1}}},
		{"dual stack IPv6", familyV6, packet{"fd00:9::1", "fd00:30::20", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"[fd00:2::20]:80": 0.5, "[fd00:2::21]:80": 0.5}}},
		{"IPv6 unserved port is rejected", familyV6, packet{"fd00:9::1", "fd00:30::20", "tcp", 81},
			outcome{verdict: "REJECT"}},
		{"weights 3:1", familyV4, packet{"10.9.0.1", "172.30.0.21", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.21:80": 0.75, "10.2.0.22:80": 0.25}}},
		{"round robin shares evenly", familyV4, packet{"10.9.0.1", "172.30.0.22", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.23:80": 1.0 / 3, "10.2.0.24:80": 1.0 / 3, "10.2.0.25:80": 1.0 / 3}}},
		{"source hash splits the hash space", familyV4, packet{"10.9.0.1", "172.30.0.23", "tcp", 80},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.26:80": 0.5, "10.2.0.27:80": 0.5}}},
		{"UDP service", familyV4, packet{"10.9.0.1", "172.30.0.53", "udp", 53},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.53:53": 1}}},
		{"TCP on the same port", familyV4, packet{"10.9.0.1", "172.30.0.53", "tcp", 53},
			outcome{verdict: "DNAT", endpoints: map[string]float64{"10.2.0.53:53": 1}}},
		{"not a Service", familyV4, packet{"10.9.0.1", "10.2.0.1", "tcp", 8080},
			outcome{verdict: "ACCEPT"}},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := fx.v4.Fake
			if tt.fam.is6 {
				fake = fx.v6.Fake
			}
			tr := newTracer(t, fake, tt.fam, nodeIPs)
			tr.aff[chainName("aff", "shop/sticky/tcp/80", "10.2.0.9:80", "10800")] = "10.9.0.99"
			got := tr.trace(tt.pkt)
			if got.verdict != tt.want.verdict || got.masq != tt.want.masq || !sameShares(got.endpoints, tt.want.endpoints) {
				t.Errorf("trace %+v\n got %v\nwant %v", tt.pkt, got, tt.want)
			}
		})
	}
}

func TestNodePortAddresses(t *testing.T) {
	fx := newFixture(t, Options{NodePortAddresses: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24")}})
	fx.sync(t, testServices()...)
	tr := newTracer(t, fx.v4.Fake, familyV4, []string{"192.168.0.2", "10.0.0.2"})
	if got := tr.trace(packet{"198.51.100.7", "192.168.0.2", "tcp", 30080}); got.verdict != "DNAT" {
		t.Errorf("node port on an address in --nodeport-addresses: %v", got)
	}
	if got := tr.trace(packet{"198.51.100.7", "10.0.0.2", "tcp", 30080}); got.verdict != "ACCEPT" {
		t.Errorf("node port on a local address outside --nodeport-addresses: %v", got)
	}
}

func TestPartialSync(t *testing.T) {
	fx := newFixture(t, Options{})
	svcs := testServices()
	fx.sync(t, svcs...)
	if fx.v4.runs != 1 || fx.v6.runs != 1 {
		t.Fatalf("first sync: %d/%d transactions, want one per table", fx.v4.runs, fx.v6.runs)
	}

	fx.sync(t, testServices()...)
	if fx.v4.runs != 1 || fx.v6.runs != 1 {
		t.Fatalf("a sync with no change wrote %d/%d transactions", fx.v4.runs-1, fx.v6.runs-1)
	}

	// One endpoint of one Service changes: one small IPv4 transaction, none for IPv6.
	changed := testServices()
	changed[0].Ports[0] = port(model.TCP, 80, ep("10.1.0.1:8080", local), ep("10.2.0.99:8080"))
	before := fx.v4.ops
	fx.sync(t, changed...)
	if fx.v4.runs != 2 || fx.v6.runs != 1 {
		t.Fatalf("one change: %d/%d transactions, want 2/1", fx.v4.runs, fx.v6.runs)
	}
	if ops := fx.v4.ops - before; ops > 6 {
		t.Errorf("one endpoint change wrote %d operations:\n%s", ops, fx.v4.LastTransaction)
	}
	tr := newTracer(t, fx.v4.Fake, familyV4, nil)
	if got := tr.trace(packet{"10.9.0.1", "172.30.0.10", "tcp", 80}); !sameShares(got.endpoints, map[string]float64{"10.1.0.1:8080": 0.5, "10.2.0.99:8080": 0.5}) {
		t.Errorf("after the change: %v", got)
	}
}

// TestIncrementalEqualsFull checks that any sequence of partial syncs leaves the same
// tables as one full sync of the last Snapshot.
func TestIncrementalEqualsFull(t *testing.T) {
	all := testServices()
	steps := [][]*model.Service{
		all,
		all[:5],                     // Services removed
		append(all[3:], all[:3]...), // and back
		{all[0], all[4], all[10]},   // many removed
		mutate(all, func(s *model.Service) { // every endpoint set changes
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
		inc.sync(t, step...)
		full := newFixture(t, Options{})
		full.sync(t, step...)
		for _, pair := range [][2]*countingFake{{inc.v4, full.v4}, {inc.v6, full.v6}} {
			if got, want := sortedDump(pair[0].Dump()), sortedDump(pair[1].Dump()); got != want {
				t.Fatalf("step %d: incremental tables differ from a full sync\n--- incremental\n%s\n--- full\n%s", i, got, want)
			}
		}
	}
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

func sortedDump(d string) string {
	lines := strings.Split(d, "\n")
	// Element order depends on insertion order; rule order within a chain does not
	// change by sorting whole lines only when chains differ, so keep rules in order by
	// sorting lines with their chain name prefix (which Dump writes on every line).
	sortStable(lines)
	return strings.Join(lines, "\n")
}

func sortStable(lines []string) {
	// Stable sort keeps the order of rules of one chain (same prefix up to the rule).
	type kv struct {
		key  string
		line string
	}
	items := make([]kv, len(lines))
	for i, l := range lines {
		k := l
		if strings.HasPrefix(l, "add rule ") {
			f := strings.Fields(l)
			if len(f) > 4 {
				k = strings.Join(f[:5], " ")
			}
		}
		items[i] = kv{k, l}
	}
	for i := 1; i < len(items); i++ {
		for j := i; j > 0 && items[j].key < items[j-1].key; j-- {
			items[j], items[j-1] = items[j-1], items[j]
		}
	}
	for i := range items {
		lines[i] = items[i].line
	}
}

func TestUnsupportedSchedulerWarnsOnceAndUsesRandom(t *testing.T) {
	fx := newFixture(t, Options{IPFamilies: []Family{IPv4}})
	s := svc("shop", "lc", "172.30.0.40")
	s.Policy = &model.Policy{Algorithm: balance.LeastConnections}
	s.Ports = []*model.ServicePort{port(model.TCP, 80, ep("10.2.0.40:80"), ep("10.2.0.41:80"))}
	fx.sync(t, s)
	s2 := *s
	s2.Ports = []*model.ServicePort{port(model.TCP, 80, ep("10.2.0.40:80"), ep("10.2.0.42:80"))}
	fx.sync(t, &s2)

	if n := strings.Count(fx.logs.String(), "scheduler not supported"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, fx.logs)
	}
	want := `
# HELP weir_dataplane_unsupported_scheduler 1 for each Service port whose scheduler the kernel data plane cannot do; it uses Random instead.
# TYPE weir_dataplane_unsupported_scheduler gauge
weir_dataplane_unsupported_scheduler{algorithm="LeastConnections",service_port="shop/lc:80"} 1
`
	if err := testutil.CollectAndCompare(fx.p.metrics.unsupported.Collector(), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	tr := newTracer(t, fx.v4.Fake, familyV4, nil)
	got := tr.trace(packet{"10.9.0.1", "172.30.0.40", "tcp", 80})
	if !sameShares(got.endpoints, map[string]float64{"10.2.0.40:80": 0.5, "10.2.0.42:80": 0.5}) {
		t.Errorf("fallback to random: %v", got)
	}
	fx.sync(t)
	if n := testutil.CollectAndCount(fx.p.metrics.unsupported.Collector()); n != 0 {
		t.Errorf("metric kept %d series after the Service went away", n)
	}
}

func TestStaleUDPConntrack(t *testing.T) {
	fx := newFixture(t, Options{IPFamilies: []Family{IPv4}})
	dns := svc("kube-system", "dns", "172.30.0.53")
	dns.Ports = []*model.ServicePort{port(model.UDP, 53)}
	fx.sync(t, dns)

	withA := *dns
	withA.Ports = []*model.ServicePort{port(model.UDP, 53, ep("10.2.0.53:53"))}
	fx.sync(t, &withA)
	want := []conntrack.Flow{{OrigDst: netip.MustParseAddr("172.30.0.53"), OrigDstPort: 53}}
	if !equalFlows(fx.ct.flows, want) {
		t.Errorf("first endpoint: flows %v, want %v", fx.ct.flows, want)
	}

	fx.ct.flows = nil
	withB := *dns
	withB.Ports = []*model.ServicePort{port(model.UDP, 53, ep("10.2.0.54:53"))}
	fx.sync(t, &withB)
	want = []conntrack.Flow{{OrigDstPort: 53, ReplySrc: netip.MustParseAddr("10.2.0.53")}}
	if !equalFlows(fx.ct.flows, want) {
		t.Errorf("endpoint replaced: flows %v, want %v", fx.ct.flows, want)
	}
}

func equalFlows(a, b []conntrack.Flow) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCleanupRemovesTables(t *testing.T) {
	fx := newFixture(t, Options{})
	fx.sync(t, testServices()...)
	if err := fx.p.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := fx.v4.Dump() + fx.v6.Dump(); d != "" {
		t.Errorf("left behind:\n%s", d)
	}
	// A sync after cleanup writes everything again.
	fx.sync(t, testServices()...)
	if fx.v4.Dump() == "" {
		t.Error("nothing written after cleanup")
	}
}

func TestFirstSyncReplacesAnEarlierRun(t *testing.T) {
	fx := newFixture(t, Options{IPFamilies: []Family{IPv4}})
	// An earlier run left its table with a chain this run does not make.
	tx := fx.v4.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Chain{Name: "svc-OLD-gone/away/tcp/80"})
	tx.Add(&knftables.Rule{Chain: "svc-OLD-gone/away/tcp/80", Rule: "meta l4proto tcp dnat to 10.9.9.9:80"})
	if err := fx.v4.Fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	fx.sync(t, testServices()...)
	if strings.Contains(fx.v4.Dump(), "svc-OLD") {
		t.Error("the earlier run's chain survived the first sync")
	}
	fresh := newFixture(t, Options{IPFamilies: []Family{IPv4}})
	fresh.sync(t, testServices()...)
	if sortedDump(fx.v4.Dump()) != sortedDump(fresh.v4.Dump()) {
		t.Error("the first sync over an earlier run differs from one on a clean kernel")
	}
}

// missingFeature is an nft that rejects any transaction using one keyword.
type missingFeature struct {
	*knftables.Fake
	keyword string
}

func (m *missingFeature) Check(ctx context.Context, tx *knftables.Transaction) error {
	if strings.Contains(tx.String(), m.keyword) {
		return fmt.Errorf("Error: Could not process rule: No such file or directory")
	}
	return m.Fake.Check(ctx, tx)
}

func TestCheckKernelNamesWhatIsMissing(t *testing.T) {
	tests := []struct{ keyword, want string }{
		{"numgen", "numgen (nft_numgen)"},
		{"jhash", "jhash (nft_hash)"},
		{"fib", "fib (nft_fib)"},
		{"masquerade", "masquerade (nft_masq)"},
		{"timeout", "dynamic sets with timeouts"},
		{"typeof", "typeof maps keyed by numgen"},
	}
	for _, tt := range tests {
		t.Run(tt.keyword, func(t *testing.T) {
			nft := &missingFeature{Fake: knftables.NewFake(knftables.IPv4Family, tableName), keyword: tt.keyword}
			err := checkKernel(context.Background(), nft, familyV4)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to name %q", err, tt.want)
			}
		})
	}
	if err := checkKernel(context.Background(), knftables.NewFake(knftables.IPv4Family, tableName), familyV4); err != nil {
		t.Errorf("complete kernel: %v", err)
	}
}
