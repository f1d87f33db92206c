package nftables

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane/conntrack"
	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/dataplane/kernel"
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

type fixture struct {
	*flowtest.Recorder
	p  *Proxier
	v4 *countingFake
	v6 *countingFake
}

func newFixture(t *testing.T, opts kernel.Options) *fixture {
	t.Helper()
	fx := &fixture{
		Recorder: flowtest.NewRecorder(),
		v4:       &countingFake{Fake: knftables.NewFake(knftables.IPv4Family, tableName)},
		v6:       &countingFake{Fake: knftables.NewFake(knftables.IPv6Family, tableName)},
	}
	p, err := New(Options{Options: fx.Options(opts), NFTables: map[kernel.Family]knftables.Interface{kernel.IPv4: fx.v4, kernel.IPv6: fx.v6}})
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

	for _, tt := range flowtest.Scenarios() {
		t.Run(tt.Name, func(t *testing.T) {
			fake, fam := fx.v4.Fake, familyV4
			if tt.IPv6 {
				fake, fam = fx.v6.Fake, familyV6
			}
			tr := newTracer(t, fake, fam, flowtest.NodeIPs())
			tr.aff[chainName("aff", "shop/sticky/tcp/80", flowtest.StickyEndpoint, "10800")] = flowtest.StickyClient
			if got := tr.trace(tt.Pkt); !got.Matches(tt.Want) {
				t.Errorf("trace %+v\n got %v\nwant %v", tt.Pkt, got, tt.Want)
			}
		})
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
					fake, fam := fx.v4.Fake, familyV4
					if tt.IPv6 {
						fake, fam = fx.v6.Fake, familyV6
					}
					tr := newTracer(t, fake, fam, flowtest.NodeIPs())
					if got := tr.trace(tt.Pkt); !got.Matches(tt.Want) {
						t.Errorf("trace %+v\n got %v\nwant %v", tt.Pkt, got, tt.Want)
					}
				})
			}
		})
	}
}

func TestNodePortAddresses(t *testing.T) {
	fx := newFixture(t, kernel.Options{Proxy: model.ProxyConfig{NodePortAddresses: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24")}}})
	fx.sync(t, flowtest.Services()...)
	tr := newTracer(t, fx.v4.Fake, familyV4, []string{"192.168.0.2", "10.0.0.2"})
	if got := tr.trace(flowtest.Packet{Src: "198.51.100.7", Dst: "192.168.0.2", Proto: "tcp", Port: 30080}); got.Verdict != "DNAT" {
		t.Errorf("node port on an address in --nodeport-addresses: %v", got)
	}
	if got := tr.trace(flowtest.Packet{Src: "198.51.100.7", Dst: "10.0.0.2", Proto: "tcp", Port: 30080}); got.Verdict != "ACCEPT" {
		t.Errorf("node port on a local address outside --nodeport-addresses: %v", got)
	}
}

func TestPartialSync(t *testing.T) {
	fx := newFixture(t, kernel.Options{})
	svcs := flowtest.Services()
	fx.sync(t, svcs...)
	if fx.v4.runs != 1 || fx.v6.runs != 1 {
		t.Fatalf("first sync: %d/%d transactions, want one per table", fx.v4.runs, fx.v6.runs)
	}

	fx.sync(t, flowtest.Services()...)
	if fx.v4.runs != 1 || fx.v6.runs != 1 {
		t.Fatalf("a sync with no change wrote %d/%d transactions", fx.v4.runs-1, fx.v6.runs-1)
	}

	// One endpoint of one Service changes: one small IPv4 transaction, none for IPv6.
	changed := flowtest.Services()
	changed[0].Ports[0] = flowtest.Port(model.TCP, 80, flowtest.EP("10.1.0.1:8080", flowtest.Local), flowtest.EP("10.2.0.99:8080"))
	before := fx.v4.ops
	fx.sync(t, changed...)
	if fx.v4.runs != 2 || fx.v6.runs != 1 {
		t.Fatalf("one change: %d/%d transactions, want 2/1", fx.v4.runs, fx.v6.runs)
	}
	if ops := fx.v4.ops - before; ops > 6 {
		t.Errorf("one endpoint change wrote %d operations:\n%s", ops, fx.v4.LastTransaction)
	}
	tr := newTracer(t, fx.v4.Fake, familyV4, nil)
	if got := tr.trace(flowtest.Packet{Src: "10.9.0.1", Dst: "172.30.0.10", Proto: "tcp", Port: 80}); !flowtest.SameShares(got.Endpoints, map[string]float64{"10.1.0.1:8080": 0.5, "10.2.0.99:8080": 0.5}) {
		t.Errorf("after the change: %v", got)
	}
}

// TestIncrementalEqualsFull checks that any sequence of partial syncs leaves the same
// tables as one full sync of the last Snapshot.
func TestIncrementalEqualsFull(t *testing.T) {
	all := flowtest.Services()
	steps := [][]*model.Service{
		all,
		all[:5],                     // Services removed
		append(all[3:], all[:3]...), // and back
		{all[0], all[4], all[10]},   // many removed
		flowtest.Mutate(all, func(s *model.Service) { // every endpoint set changes
			for _, sp := range s.Ports {
				sp.Cluster = flowtest.Forward()
				sp.External = flowtest.Forward()
			}
		}),
		all,
		flowtest.Mutate(all, func(s *model.Service) { s.AffinityTimeout = 60 * time.Second }),
		flowtest.Mutate(all, func(s *model.Service) { s.Policy = &model.Policy{Algorithm: balance.RoundRobin, Source: "ns/rr"} }),
		nil,
		all,
	}
	inc := newFixture(t, kernel.Options{})
	for i, step := range steps {
		inc.sync(t, step...)
		full := newFixture(t, kernel.Options{})
		full.sync(t, step...)
		for _, pair := range [][2]*countingFake{{inc.v4, full.v4}, {inc.v6, full.v6}} {
			if got, want := sortedDump(pair[0].Dump()), sortedDump(pair[1].Dump()); got != want {
				t.Fatalf("step %d: incremental tables differ from a full sync\n--- incremental\n%s\n--- full\n%s", i, got, want)
			}
		}
	}
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
	fx := newFixture(t, kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}})
	s := flowtest.Svc("shop", "lc", "172.30.0.40")
	s.Policy = &model.Policy{Algorithm: balance.LeastConnections, Source: "ns/lc"}
	s.Ports = []*model.ServicePort{flowtest.Port(model.TCP, 80, flowtest.EP("10.2.0.40:80"), flowtest.EP("10.2.0.41:80"))}
	fx.sync(t, s)
	s2 := *s
	s2.Ports = []*model.ServicePort{flowtest.Port(model.TCP, 80, flowtest.EP("10.2.0.40:80"), flowtest.EP("10.2.0.42:80"))}
	fx.sync(t, &s2)

	if n := strings.Count(fx.Logs.String(), "scheduler not supported"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, fx.Logs)
	}
	want := `
# HELP weir_dataplane_unsupported_scheduler 1 for each Service port whose scheduler the kernel data plane cannot do; it uses Random instead.
# TYPE weir_dataplane_unsupported_scheduler gauge
weir_dataplane_unsupported_scheduler{algorithm="LeastConnections",service_port="shop/lc:80"} 1
`
	if err := testutil.CollectAndCompare(fx.p.syncs.Unsupported.Collector(), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	tr := newTracer(t, fx.v4.Fake, familyV4, nil)
	got := tr.trace(flowtest.Packet{Src: "10.9.0.1", Dst: "172.30.0.40", Proto: "tcp", Port: 80})
	if !flowtest.SameShares(got.Endpoints, map[string]float64{"10.2.0.40:80": 0.5, "10.2.0.42:80": 0.5}) {
		t.Errorf("fallback to random: %v", got)
	}
	fx.sync(t)
	if n := testutil.CollectAndCount(fx.p.syncs.Unsupported.Collector()); n != 0 {
		t.Errorf("metric kept %d series after the Service went away", n)
	}
}

func TestStaleUDPConntrack(t *testing.T) {
	fx := newFixture(t, kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}})
	dns := flowtest.Svc("kube-system", "dns", "172.30.0.53")
	dns.Ports = []*model.ServicePort{flowtest.Port(model.UDP, 53)}
	fx.sync(t, dns)

	withA := *dns
	withA.Ports = []*model.ServicePort{flowtest.Port(model.UDP, 53, flowtest.EP("10.2.0.53:53"))}
	fx.sync(t, &withA)
	want := []conntrack.Flow{{OrigDst: netip.MustParseAddr("172.30.0.53"), OrigDstPort: 53}}
	if got := fx.Conntrack.Take(); !slices.Equal(got, want) {
		t.Errorf("first endpoint: flows %v, want %v", got, want)
	}

	withB := *dns
	withB.Ports = []*model.ServicePort{flowtest.Port(model.UDP, 53, flowtest.EP("10.2.0.54:53"))}
	fx.sync(t, &withB)
	want = []conntrack.Flow{{OrigDstPort: 53, ReplySrc: netip.MustParseAddr("10.2.0.53")}}
	if got := fx.Conntrack.Take(); !slices.Equal(got, want) {
		t.Errorf("endpoint replaced: flows %v, want %v", got, want)
	}
}

func TestCleanupRemovesTables(t *testing.T) {
	fx := newFixture(t, kernel.Options{})
	fx.sync(t, flowtest.Services()...)
	if found, err := fx.p.Leftovers(context.Background()); err != nil || !found {
		t.Fatalf("Leftovers before Cleanup = %v, %v", found, err)
	}
	if err := fx.p.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if found, err := fx.p.Leftovers(context.Background()); err != nil || found {
		t.Fatalf("Leftovers after Cleanup = %v, %v", found, err)
	}
	if d := fx.v4.Dump() + fx.v6.Dump(); d != "" {
		t.Errorf("left behind:\n%s", d)
	}
	// A sync after cleanup writes everything again.
	fx.sync(t, flowtest.Services()...)
	if fx.v4.Dump() == "" {
		t.Error("nothing written after cleanup")
	}
}

func TestFirstSyncReplacesAnEarlierRun(t *testing.T) {
	fx := newFixture(t, kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}})
	// An earlier run left its table with a chain this run does not make.
	tx := fx.v4.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Chain{Name: "svc-OLD-gone/away/tcp/80"})
	tx.Add(&knftables.Rule{Chain: "svc-OLD-gone/away/tcp/80", Rule: "meta l4proto tcp dnat to 10.9.9.9:80"})
	if err := fx.v4.Fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	fx.sync(t, flowtest.Services()...)
	if strings.Contains(fx.v4.Dump(), "svc-OLD") {
		t.Error("the earlier run's chain survived the first sync")
	}
	fresh := newFixture(t, kernel.Options{IPFamilies: []kernel.Family{kernel.IPv4}})
	fresh.sync(t, flowtest.Services()...)
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

// TestTwoServicesClaimOneFrontend: of two Services with the same external IP and port,
// the first by key keeps the frontend through full and partial syncs, its own changes
// reach it, and the other's changes never do.
func TestTwoServicesClaimOneFrontend(t *testing.T) {
	fx := newFixture(t, kernel.Options{})
	build := func(ns, clusterIP, ep string) *model.Service {
		s := flowtest.Svc(ns, "web", clusterIP)
		s.ExternalIPs = flowtest.Addrs("192.0.2.50")
		s.Ports = []*model.ServicePort{flowtest.Port(model.TCP, 80, flowtest.EP(ep))}
		return s
	}
	slot := func() string {
		t.Helper()
		for _, line := range strings.Split(fx.v4.Dump(), "\n") {
			if strings.Contains(line, "endpoint-slots") && strings.Contains(line, "192.0.2.50 . tcp . 80 . 0") {
				return line[strings.LastIndex(line, ":")+2:]
			}
		}
		t.Fatalf("no slot of the external IP:\n%s", fx.v4.Dump())
		return ""
	}
	a, b := build("a", "172.30.1.1", "10.3.0.1:80"), build("b", "172.30.1.2", "10.3.0.2:80")
	fx.sync(t, b, a) // full: the first by key wins, whatever the order
	if got := slot(); got != "10.3.0.1 . 80 }" {
		t.Fatalf("full sync: external IP goes to %q, want a's endpoint", got)
	}
	b2 := build("b", "172.30.1.2", "10.3.0.3:80")
	fx.sync(t, a, b2) // partial: b changed
	if got := slot(); got != "10.3.0.1 . 80 }" {
		t.Fatalf("b's change took the external IP: %q", got)
	}
	a2 := build("a", "172.30.1.1", "10.3.0.4:80")
	fx.sync(t, a2, b2) // partial: a changed
	if got := slot(); got != "10.3.0.4 . 80 }" {
		t.Fatalf("a's change did not reach its external IP: %q", got)
	}
	fx.sync(t, a2) // b goes: a keeps it
	if got := slot(); got != "10.3.0.4 . 80 }" {
		t.Fatalf("after b went: %q", got)
	}
}
