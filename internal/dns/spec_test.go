package dns

import (
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"weir.dev/weir/internal/model"
)

const soaRR = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 0 7200 1800 86400 5"

// TestSpecification checks every record kind of the Kubernetes DNS specification
// (schema 1.1.0) and the negative answers, with a real client over UDP and TCP against
// a live server.
func TestSpecification(t *testing.T) {
	s := startServer(t, Options{})
	s.Update(testSnapshot())

	const z = ".svc.cluster.local."
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		answer []string // sorted
		extra  []string // sorted; nil: not checked
		soa    bool     // authority holds the zone SOA (negative answer)
	}{
		// ClusterIP Service, dual-stack.
		{name: "ClusterIP A", qname: "web.default" + z, qtype: mdns.TypeA,
			answer: []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "ClusterIP AAAA", qname: "web.default" + z, qtype: mdns.TypeAAAA,
			answer: []string{"web.default.svc.cluster.local. 5 IN AAAA fd00::10"}},
		{name: "ClusterIP SRV with additional A and AAAA", qname: "_http._tcp.web.default" + z, qtype: mdns.TypeSRV,
			answer: []string{"_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."},
			extra:  []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.10", "web.default.svc.cluster.local. 5 IN AAAA fd00::10"}},
		{name: "ClusterIP SRV over UDP protocol", qname: "_dns._udp.web.default" + z, qtype: mdns.TypeSRV,
			answer: []string{"_dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local."}},
		{name: "SRV with the wrong protocol", qname: "_http._udp.web.default" + z, qtype: mdns.TypeSRV,
			rcode: mdns.RcodeNameError, soa: true},
		{name: "PTR for a ClusterIP", qname: "10.0.96.10.in-addr.arpa.", qtype: mdns.TypePTR,
			answer: []string{"10.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."}},
		{name: "PTR for an IPv6 ClusterIP (ip6.arpa nibbles)",
			qname: "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", qtype: mdns.TypePTR,
			answer: []string{"0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 IN PTR web.default.svc.cluster.local."}},
		{name: "A at a PTR name is NODATA", qname: "10.0.96.10.in-addr.arpa.", qtype: mdns.TypeA, soa: true},

		// Headless Service.
		{name: "headless A: ready endpoints only", qname: "db.default" + z, qtype: mdns.TypeA,
			answer: []string{
				"db.default.svc.cluster.local. 5 IN A 10.1.0.1",
				"db.default.svc.cluster.local. 5 IN A 10.1.0.2",
				"db.default.svc.cluster.local. 5 IN A 10.1.0.3",
			}},
		{name: "headless AAAA", qname: "db.default" + z, qtype: mdns.TypeAAAA,
			answer: []string{"db.default.svc.cluster.local. 5 IN AAAA fd00::1:3"}},
		{name: "endpoint hostname", qname: "db-0.db.default" + z, qtype: mdns.TypeA,
			answer: []string{"db-0.db.default.svc.cluster.local. 5 IN A 10.1.0.1"}},
		{name: "endpoint without hostname: dashed IPv4", qname: "10-1-0-3.db.default" + z, qtype: mdns.TypeA,
			answer: []string{"10-1-0-3.db.default.svc.cluster.local. 5 IN A 10.1.0.3"}},
		{name: "endpoint without hostname: dashed IPv6", qname: "fd00--1-3.db.default" + z, qtype: mdns.TypeAAAA,
			answer: []string{"fd00--1-3.db.default.svc.cluster.local. 5 IN AAAA fd00::1:3"}},
		{name: "not-ready endpoint has no name", qname: "10-1-0-9.db.default" + z, qtype: mdns.TypeA,
			rcode: mdns.RcodeNameError, soa: true},
		{name: "headless SRV: endpoints x named port, additional addresses",
			qname: "_pg._tcp.db.default" + z, qtype: mdns.TypeSRV,
			answer: []string{
				"_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 25 5432 10-1-0-3.db.default.svc.cluster.local.",
				"_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 25 5432 db-0.db.default.svc.cluster.local.",
				"_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 25 5432 db-1.db.default.svc.cluster.local.",
				"_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 25 5432 fd00--1-3.db.default.svc.cluster.local.",
			},
			extra: []string{
				"10-1-0-3.db.default.svc.cluster.local. 5 IN A 10.1.0.3",
				"db-0.db.default.svc.cluster.local. 5 IN A 10.1.0.1",
				"db-1.db.default.svc.cluster.local. 5 IN A 10.1.0.2",
				"fd00--1-3.db.default.svc.cluster.local. 5 IN AAAA fd00::1:3",
			}},
		{name: "PTR for a headless endpoint with hostname", qname: "1.0.1.10.in-addr.arpa.", qtype: mdns.TypePTR,
			answer: []string{"1.0.1.10.in-addr.arpa. 5 IN PTR db-0.db.default.svc.cluster.local."}},
		{name: "PTR for a headless endpoint without hostname", qname: "3.0.1.10.in-addr.arpa.", qtype: mdns.TypePTR,
			answer: []string{"3.0.1.10.in-addr.arpa. 5 IN PTR 10-1-0-3.db.default.svc.cluster.local."}},
		{name: "publishNotReadyAddresses publishes a not-ready endpoint", qname: "warm.default" + z, qtype: mdns.TypeA,
			answer: []string{"warm.default.svc.cluster.local. 5 IN A 10.2.0.1"}},
		{name: "publishNotReadyAddresses: hostname", qname: "warm-0.warm.default" + z, qtype: mdns.TypeA,
			answer: []string{"warm-0.warm.default.svc.cluster.local. 5 IN A 10.2.0.1"}},
		{name: "headless without ready endpoints is NXDOMAIN", qname: "empty.default" + z, qtype: mdns.TypeA,
			rcode: mdns.RcodeNameError, soa: true},

		// ExternalName outside the cluster zone: a CNAME, not followed.
		{name: "ExternalName A", qname: "ext.default" + z, qtype: mdns.TypeA,
			answer: []string{"ext.default.svc.cluster.local. 5 IN CNAME www.example.com."}},
		{name: "ExternalName CNAME", qname: "ext.default" + z, qtype: mdns.TypeCNAME,
			answer: []string{"ext.default.svc.cluster.local. 5 IN CNAME www.example.com."}},

		// Zone records.
		{name: "schema version", qname: "dns-version.cluster.local.", qtype: mdns.TypeTXT,
			answer: []string{`dns-version.cluster.local. 28800 IN TXT "1.1.0"`}},
		{name: "SOA", qname: "cluster.local.", qtype: mdns.TypeSOA,
			answer: []string{soaRR}},
		{name: "NS with glue", qname: "cluster.local.", qtype: mdns.TypeNS,
			answer: []string{"cluster.local. 5 IN NS ns.dns.cluster.local."},
			extra:  []string{"ns.dns.cluster.local. 5 IN A 10.96.0.53"}},
		{name: "nameserver address", qname: "ns.dns.cluster.local.", qtype: mdns.TypeA,
			answer: []string{"ns.dns.cluster.local. 5 IN A 10.96.0.53"}},

		// NODATA: the name exists without that type.
		{name: "NODATA: TXT at a Service", qname: "web.default" + z, qtype: mdns.TypeTXT, soa: true},
		{name: "NODATA: AAAA at an IPv4-only Service", qname: "kube-dns.kube-system" + z, qtype: mdns.TypeAAAA, soa: true},
		{name: "NODATA: SRV at an SRV name's A", qname: "_http._tcp.web.default" + z, qtype: mdns.TypeA, soa: true},
		{name: "NODATA: namespace (empty non-terminal)", qname: "default" + z, qtype: mdns.TypeA, soa: true},
		{name: "NODATA: svc.zone", qname: "svc.cluster.local.", qtype: mdns.TypeA, soa: true},
		{name: "NODATA: protocol label (empty non-terminal)", qname: "_tcp.web.default" + z, qtype: mdns.TypeSRV, soa: true},
		{name: "NODATA: A at the apex", qname: "cluster.local.", qtype: mdns.TypeA, soa: true},

		// NXDOMAIN.
		{name: "NXDOMAIN: unknown Service", qname: "nope.default" + z, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "NXDOMAIN: unknown namespace", qname: "web.nope" + z, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "NXDOMAIN: search-path expansion", qname: "web.default.svc.cluster.local.default" + z, qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},
		{name: "NXDOMAIN: unnamed port has no SRV", qname: "_8443._tcp.web.default" + z, qtype: mdns.TypeSRV, rcode: mdns.RcodeNameError, soa: true},
		{name: "NXDOMAIN: pod records are not served", qname: "10-0-0-1.default.pod.cluster.local.", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, soa: true},

		// Wildcard queries are refused, never expanded (they would enumerate Services).
		{name: "wildcard Service", qname: "*.default" + z, qtype: mdns.TypeA, rcode: mdns.RcodeRefused},
		{name: "wildcard namespace", qname: "web.*" + z, qtype: mdns.TypeA, rcode: mdns.RcodeRefused},
		{name: "wildcard SRV", qname: "_*._tcp.web.default" + z, qtype: mdns.TypeSRV, rcode: mdns.RcodeRefused},
		{name: "wildcard endpoint", qname: "*.db.default" + z, qtype: mdns.TypeA, rcode: mdns.RcodeRefused},

		// Case-insensitive.
		{name: "mixed case", qname: "WeB.DeFault.SVC.Cluster.LOCAL.", qtype: mdns.TypeA,
			answer: []string{"WeB.DeFault.SVC.Cluster.LOCAL. 5 IN A 10.96.0.10"}},
		{name: "mixed case SRV", qname: "_HTTP._TCP.web.default" + z, qtype: mdns.TypeSRV,
			answer: []string{"_HTTP._TCP.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."}},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				r := exchange(t, s.Addr(), network, question(tt.qname, tt.qtype))
				if r.Rcode != tt.rcode {
					t.Fatalf("rcode = %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tt.rcode])
				}
				if tt.rcode != mdns.RcodeRefused && !r.Authoritative { // a refusal is not an authoritative answer
					t.Errorf("AA not set")
				}
				if r.Truncated {
					t.Errorf("TC set")
				}
				if len(r.Question) != 1 || r.Question[0].Name != tt.qname || r.Question[0].Qtype != tt.qtype {
					t.Errorf("question = %v, want %s %s", r.Question, tt.qname, mdns.TypeToString[tt.qtype])
				}
				if got := rrStrings(r.Answer); !slices.Equal(got, tt.answer) && !(len(got) == 0 && len(tt.answer) == 0) {
					t.Errorf("answer:\n got %q\nwant %q", got, tt.answer)
				}
				if tt.extra != nil {
					if got := rrStrings(r.Extra); !slices.Equal(got, tt.extra) {
						t.Errorf("additional:\n got %q\nwant %q", got, tt.extra)
					}
				}
				checkNegativeSOA(t, r, tt.soa)
			})
		}
	}
}

// checkNegativeSOA checks that a negative answer carries the zone's SOA with the TTLs
// RFC 2308 asks for, and that a positive one carries none.
func checkNegativeSOA(t *testing.T, r *mdns.Msg, want bool) {
	t.Helper()
	if !want {
		if len(r.Ns) != 0 {
			t.Errorf("authority = %v, want empty", r.Ns)
		}
		return
	}
	if len(r.Answer) != 0 {
		t.Errorf("negative answer has answers: %v", r.Answer)
	}
	if len(r.Ns) != 1 {
		t.Fatalf("authority = %v, want one SOA", r.Ns)
	}
	soa, ok := r.Ns[0].(*mdns.SOA)
	if !ok {
		t.Fatalf("authority = %v, want SOA", r.Ns[0])
	}
	wantZone := "cluster.local."
	if q := strings.ToLower(r.Question[0].Name); strings.HasSuffix(q, ".in-addr.arpa.") {
		wantZone = "in-addr.arpa."
	}
	if soa.Hdr.Name != wantZone || soa.Ns != "ns.dns.cluster.local." || soa.Mbox != "hostmaster.cluster.local." {
		t.Errorf("SOA = %v", soa)
	}
	// The negative TTL is min(SOA TTL, SOA minimum): both are the record TTL.
	if soa.Hdr.Ttl != 5 || soa.Minttl != 5 {
		t.Errorf("SOA TTL %d, minimum %d; want 5 and 5", soa.Hdr.Ttl, soa.Minttl)
	}
	if soa.Refresh != 7200 || soa.Retry != 1800 || soa.Expire != 86400 || soa.Serial == 0 {
		t.Errorf("SOA timers = %v", soa)
	}
}

// TestExternalNameInZone checks ExternalName Services whose target lies inside the
// cluster zone: weir is authoritative for the target, so it answers with the CNAME and
// then the target's records (RFC 1034 §4.3.2 step 3a, as CoreDNS's kubernetes plugin
// does), and with NXDOMAIN or NODATA after the CNAMEs when the target has no such
// records (RFC 2308 §2.1, RFC 6604).
func TestExternalNameInZone(t *testing.T) {
	s := startServer(t, Options{})
	snap := testSnapshot()
	alias := func(name, target string) *model.Service {
		return &model.Service{Key: model.ServiceKey{Namespace: "default", Name: name}, Type: model.ExternalName, ExternalName: target}
	}
	snap.Services = append(snap.Services,
		alias("alias", "web.default.svc.cluster.local"),
		alias("alias2", "alias.default.svc.cluster.local."),
		alias("alias-db", "db.default.svc.cluster.local"),
		alias("alias-missing", "nope.default.svc.cluster.local"),
		alias("loop-a", "loop-b.default.svc.cluster.local"),
		alias("loop-b", "loop-a.default.svc.cluster.local"),
		alias("alias-ext", "ext.default.svc.cluster.local"),
	)
	s.Update(snap)

	const z = ".svc.cluster.local."
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		answer []string // in order
		soa    bool
	}{
		{name: "A follows the CNAME to the ClusterIP", qname: "alias.default" + z, qtype: mdns.TypeA,
			answer: []string{
				"alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.",
				"web.default.svc.cluster.local. 5 IN A 10.96.0.10",
			}},
		{name: "AAAA follows the CNAME", qname: "alias.default" + z, qtype: mdns.TypeAAAA,
			answer: []string{
				"alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.",
				"web.default.svc.cluster.local. 5 IN AAAA fd00::10",
			}},
		{name: "client's spelling is kept", qname: "ALIAS.default" + z, qtype: mdns.TypeA,
			answer: []string{
				"ALIAS.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.",
				"web.default.svc.cluster.local. 5 IN A 10.96.0.10",
			}},
		{name: "a chain of two", qname: "alias2.default" + z, qtype: mdns.TypeA,
			answer: []string{
				"alias2.default.svc.cluster.local. 5 IN CNAME alias.default.svc.cluster.local.",
				"alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.",
				"web.default.svc.cluster.local. 5 IN A 10.96.0.10",
			}},
		{name: "headless target: every ready endpoint", qname: "alias-db.default" + z, qtype: mdns.TypeA,
			answer: []string{
				"alias-db.default.svc.cluster.local. 5 IN CNAME db.default.svc.cluster.local.",
				"db.default.svc.cluster.local. 5 IN A 10.1.0.1",
				"db.default.svc.cluster.local. 5 IN A 10.1.0.2",
				"db.default.svc.cluster.local. 5 IN A 10.1.0.3",
			}},
		{name: "CNAME query: the CNAME alone", qname: "alias.default" + z, qtype: mdns.TypeCNAME,
			answer: []string{"alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local."}},
		{name: "target without the type: NODATA after the CNAME", qname: "alias.default" + z, qtype: mdns.TypeTXT,
			answer: []string{"alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local."}, soa: true},
		{name: "missing target: NXDOMAIN after the CNAME", qname: "alias-missing.default" + z, qtype: mdns.TypeA,
			rcode:  mdns.RcodeNameError,
			answer: []string{"alias-missing.default.svc.cluster.local. 5 IN CNAME nope.default.svc.cluster.local."}, soa: true},
		{name: "a loop ends after both CNAMEs", qname: "loop-a.default" + z, qtype: mdns.TypeA,
			answer: []string{
				"loop-a.default.svc.cluster.local. 5 IN CNAME loop-b.default.svc.cluster.local.",
				"loop-b.default.svc.cluster.local. 5 IN CNAME loop-a.default.svc.cluster.local.",
			}},
		{name: "a chain leaving the zone ends with its last CNAME", qname: "alias-ext.default" + z, qtype: mdns.TypeA,
			answer: []string{
				"alias-ext.default.svc.cluster.local. 5 IN CNAME ext.default.svc.cluster.local.",
				"ext.default.svc.cluster.local. 5 IN CNAME www.example.com.",
			}},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				r := exchange(t, s.Addr(), network, question(tt.qname, tt.qtype))
				if r.Rcode != tt.rcode {
					t.Fatalf("rcode = %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tt.rcode])
				}
				if !r.Authoritative {
					t.Errorf("AA not set")
				}
				if len(r.Question) != 1 || r.Question[0].Name != tt.qname || r.Question[0].Qtype != tt.qtype {
					t.Errorf("question = %v, want %s %s", r.Question, tt.qname, mdns.TypeToString[tt.qtype])
				}
				var got []string
				for _, rr := range r.Answer {
					got = append(got, strings.Join(strings.Fields(rr.String()), " "))
				}
				if tt.name == "headless target: every ready endpoint" && len(got) > 1 {
					slices.Sort(got[1:]) // the addresses come in any order
				}
				if !slices.Equal(got, tt.answer) {
					t.Errorf("answer:\n got %q\nwant %q", got, tt.answer)
				}
				if soa := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == mdns.TypeSOA; soa != tt.soa {
					t.Errorf("authority = %v, want SOA: %v", r.Ns, tt.soa)
				}
			})
		}
	}
}
