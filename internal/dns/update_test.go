package dns

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"weir.dev/weir/internal/model"
)

// scaled returns a Snapshot whose headless Service default/app has n ready endpoints.
func scaled(n int) *model.Snapshot {
	var eps []model.DNSEndpoint
	var peps []model.Endpoint
	for i := range n {
		a := fmt.Sprintf("10.4.0.%d", i+1)
		eps = append(eps, dnsEP(a, fmt.Sprintf("app-%d", i), true))
		peps = append(peps, ep(a, 8080, true))
	}
	return &model.Snapshot{Services: []*model.Service{
		headlessService("default", "app", false, eps, port("http", model.TCP, 80, peps...)),
		clusterIPService("default", "web", []string{"10.96.0.10"}, port("http", model.TCP, 80)),
	}}
}

// TestUpdateUnderConcurrentQueries swaps Snapshots while clients query: every answer
// must be complete and come from one Snapshot or the other (run with -race).
func TestUpdateUnderConcurrentQueries(t *testing.T) {
	s := startServer(t, Options{})
	s.Update(scaled(2))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, _, err := c.Exchange(question("app.default.svc.cluster.local.", mdns.TypeA), s.Addr())
				if err != nil {
					continue // a lost datagram on a loaded machine is not the server's fault
				}
				if r.Rcode != mdns.RcodeSuccess || (len(r.Answer) != 2 && len(r.Answer) != 5) {
					errs <- fmt.Errorf("answer: rcode %s, %d records", mdns.RcodeToString[r.Rcode], len(r.Answer))
					return
				}
			}
		})
	}
	for i := range 200 {
		if i%2 == 0 {
			s.Update(scaled(5))
		} else {
			s.Update(scaled(2))
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func BenchmarkUpdate10k(b *testing.B) {
	s, err := New(Options{Addr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.pc.Close()
	defer s.ln.Close()
	snap := &model.Snapshot{Services: manyServices(10000)}
	s.Update(snap) // the first build packs everything; later ones reuse
	b.ReportAllocs()
	for b.Loop() {
		s.Update(snap)
	}
}

// TestPropagation measures the time from Update to the answer that shows the change (a
// scale-up, then a scale-down). Update is synchronous, so the first query after it must
// already see the change; the time asserted is Update's own: under 100 ms for a small
// Snapshot. With 10,000 more Services the figure is logged and held to a loose bound
// only: such an Update costs about 5 ms of CPU (BenchmarkUpdate10k), but on a shared
// 2-core machine the wall time is whatever the scheduler gives.
func TestPropagation(t *testing.T) {
	for _, tt := range []struct {
		name  string
		extra int           // more ClusterIP Services in the Snapshot
		limit time.Duration // for Update
	}{{"small", 0, 100 * time.Millisecond}, {"10k services", 10000, 2 * time.Second}} {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Options{})
			big := manyServices(tt.extra)
			snap := func(n int) *model.Snapshot {
				sn := scaled(n)
				sn.Services = append(big, sn.Services...) // each namespace stays contiguous
				return sn
			}
			s.Update(snap(3))
			for _, step := range []struct{ from, to int }{{3, 4}, {4, 3}} {
				start := time.Now()
				s.Update(snap(step.to))
				updated := time.Since(start)
				r := exchange(t, s.Addr(), "udp", question("app.default.svc.cluster.local.", mdns.TypeA))
				answered := time.Since(start)
				if len(r.Answer) != step.to {
					t.Fatalf("%d → %d endpoints: the first answer after Update has %d", step.from, step.to, len(r.Answer))
				}
				t.Logf("%s: %d → %d endpoints: Update returned after %v, answered after %v", tt.name, step.from, step.to, updated, answered)
				if updated > tt.limit {
					t.Errorf("Update took %v, want < %v", updated, tt.limit)
				}
			}
		})
	}
}

// manyServices returns n ClusterIP Services svc-<i> in namespaces ns-<i/100> (sorted, as
// in a Snapshot), each with a named port, as the benchmark uses.
func manyServices(n int) []*model.Service {
	out := make([]*model.Service, 0, n)
	for i := range n {
		ip := netip.AddrFrom4([4]byte{10, 100 + byte(i>>16), byte(i >> 8), byte(i)})
		out = append(out, &model.Service{
			Key:        model.ServiceKey{Namespace: fmt.Sprintf("ns-%03d", i/100), Name: fmt.Sprintf("svc-%05d", i)},
			Type:       model.ClusterIP,
			ClusterIPs: []netip.Addr{ip},
			Ports:      []*model.ServicePort{{Name: "http", Protocol: model.TCP, Port: 80}},
		})
	}
	return out
}

// TestIndexAnswersMatchLibraryPacking: the fast path (patched precomputed bytes) must
// produce, for every name and type in the index and any spelling of the name, the same
// message as building it with miekg/dns.
func TestIndexAnswersMatchLibraryPacking(t *testing.T) {
	s, err := New(Options{Addr: "127.0.0.1:0", Upstreams: []string{"127.0.0.1:9"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.pc.Close()
	defer s.ln.Close()
	s.Update(testSnapshot())
	idx := s.index.Load()
	checked := 0
	all := maps.Clone(idx.top)
	for i := range nShards {
		maps.Copy(all, idx.shards[i])
		maps.Copy(all, idx.ptrs[i])
	}
	for name, n := range all {
		if idx.lookup(name, inZone(name, idx.origin)) != n {
			t.Errorf("lookup(%q) does not find the name", name)
		}
		sets := n.sets
		if n.cname != nil {
			sets = append(sets, n.cname)
		}
		for _, set := range sets {
			for _, rd := range []bool{false, true} {
				spelled := strings.ToUpper(name[:1]) + name[1:]
				req := question(spelled, set.qtype)
				req.Id = 4242
				req.RecursionDesired = rd
				req.CheckingDisabled = rd
				req.SetEdns0(4096, rd)
				w := &recorder{} // TCP: no truncation
				s.ServeDNS(w, req)
				got := w.msg(t)

				var want mdns.Msg
				if err := want.Unpack(set.wire); err != nil {
					t.Fatal(err)
				}
				want.Id = 4242
				want.RecursionDesired, want.CheckingDisabled = rd, rd
				want.Question[0].Name = spelled
				want.SetEdns0(advertisedUDPSize, rd)
				// Owner names compressed against the question take the client's case.
				if !strings.EqualFold(got.String(), want.String()) {
					t.Errorf("%s %s:\n got %v\nwant %v", spelled, mdns.TypeToString[set.qtype], got, &want)
				}
				checked++
			}
		}
	}
	if checked < 40 {
		t.Errorf("only %d answers checked", checked)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := startServer(t, Options{Registerer: reg})
	s.Update(testSnapshot())
	exchange(t, s.Addr(), "udp", question("web.default.svc.cluster.local.", mdns.TypeA))
	exchange(t, s.Addr(), "udp", question("web.default.svc.cluster.local.", mdns.TypeA))
	exchange(t, s.Addr(), "udp", question("nope.default.svc.cluster.local.", mdns.TypeAAAA))
	exchange(t, s.Addr(), "udp", question("a.example.org.", mdns.TypeMX))

	want := `
# HELP weir_dns_requests_total DNS queries answered, by query type and response code.
# TYPE weir_dns_requests_total counter
weir_dns_requests_total{rcode="NOERROR",type="A"} 2
weir_dns_requests_total{rcode="NXDOMAIN",type="AAAA"} 1
weir_dns_requests_total{rcode="REFUSED",type="other"} 1
`
	// The handler counts a query after it has written the answer: the last count may
	// come a moment after the client has its answer.
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := testutil.GatherAndCompare(reg, strings.NewReader(want), "weir_dns_requests_total")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := testutil.CollectAndCount(reg, "weir_dns_request_duration_seconds"); n != 1 {
		t.Errorf("duration histogram: %d series", n)
	}
	records := testutil.ToFloat64(s.metrics.records)
	if records < 200 {
		t.Errorf("weir_dns_records = %v", records)
	}
	// A second server on the same registry is an error, not a panic.
	if _, err := New(Options{Addr: "127.0.0.1:0", Registerer: reg}); err == nil {
		t.Error("New with an already used registry: no error")
	}
}

func TestNewValidates(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"defaults", Options{Addr: "127.0.0.1:0"}, true},
		{"custom zone and TTL", Options{Addr: "127.0.0.1:0", Domain: "example.internal", TTL: 30 * time.Second}, true},
		{"no address", Options{}, false},
		{"bad address", Options{Addr: "nope"}, false},
		{"bad domain", Options{Addr: "127.0.0.1:0", Domain: "a..b"}, false},
		{"TTL above 3600 s", Options{Addr: "127.0.0.1:0", TTL: time.Hour + time.Second}, false},
		{"fractional TTL", Options{Addr: "127.0.0.1:0", TTL: 1500 * time.Millisecond}, false},
		{"upstream without port", Options{Addr: "127.0.0.1:0", Upstreams: []string{"192.0.2.53", "[2001:db8::53]"}}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if s != nil {
				s.pc.Close()
				s.ln.Close()
			}
		})
	}
}

// TestCustomDomain serves another cluster domain with another TTL.
func TestCustomDomain(t *testing.T) {
	s := startServer(t, Options{Domain: "Corp.Internal", TTL: 30 * time.Second})
	s.Update(testSnapshot())
	r := exchange(t, s.Addr(), "tcp", question("web.default.svc.corp.internal.", mdns.TypeA))
	if got := rrStrings(r.Answer); !slices.Equal(got, []string{"web.default.svc.corp.internal. 30 IN A 10.96.0.10"}) {
		t.Errorf("answer %q", got)
	}
	r = exchange(t, s.Addr(), "tcp", question("web.default.svc.cluster.local.", mdns.TypeA))
	if r.Rcode != mdns.RcodeRefused {
		t.Errorf("cluster.local on a corp.internal server: %s", mdns.RcodeToString[r.Rcode])
	}
}
