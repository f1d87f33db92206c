package dns

import (
	"testing"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/model"
)

// discard is a UDP ResponseWriter that drops what it is given.
type discard struct{ recorder }

func (d *discard) Write(b []byte) (int, error) { return len(b), nil }

// BenchmarkServeDNS measures the handler alone (no socket), with metrics registered, on
// an index of 10,000 Services.
func BenchmarkServeDNS(b *testing.B) {
	s, err := New(Options{Addr: "127.0.0.1:0", Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.pc.Close()
	defer s.ln.Close()
	snap := testSnapshot()
	snap.Services = append(manyServices(10000), snap.Services...)
	s.Update(&model.Snapshot{Services: snap.Services})

	for _, bc := range []struct {
		name  string
		qname string
		qtype uint16
		edns  bool
	}{
		{"A", "svc-04242.ns-042.svc.cluster.local.", mdns.TypeA, false},
		{"A with EDNS0", "svc-04242.ns-042.svc.cluster.local.", mdns.TypeA, true},
		{"SRV", "_http._tcp.svc-04242.ns-042.svc.cluster.local.", mdns.TypeSRV, false},
		{"PTR", "66.16.100.10.in-addr.arpa.", mdns.TypePTR, false},
		{"NXDOMAIN", "svc-04242.ns-042.svc.cluster.local.ns-042.svc.cluster.local.", mdns.TypeA, false},
		{"NODATA", "svc-04242.ns-042.svc.cluster.local.", mdns.TypeAAAA, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := question(bc.qname, bc.qtype)
			if bc.edns {
				req.SetEdns0(1232, false)
			}
			w := &discard{recorder{udp: true}}
			b.ReportAllocs()
			for b.Loop() {
				s.ServeDNS(w, req)
			}
		})
	}
}
