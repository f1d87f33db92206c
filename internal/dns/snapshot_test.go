package dns

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"weir.dev/weir/internal/model"
)

// Test fixtures: Snapshots built by hand, and a live server on a free loopback port.

func clusterIPService(ns, name string, ips []string, ports ...*model.ServicePort) *model.Service {
	svc := &model.Service{Key: model.ServiceKey{Namespace: ns, Name: name}, Type: model.ClusterIP, Ports: ports}
	for _, ip := range ips {
		svc.ClusterIPs = append(svc.ClusterIPs, netip.MustParseAddr(ip))
	}
	return svc
}

func port(name string, proto model.Protocol, p int32, eps ...model.Endpoint) *model.ServicePort {
	return &model.ServicePort{Name: name, Protocol: proto, Port: p, Endpoints: eps}
}

func ep(addr string, port int32, ready bool) model.Endpoint {
	return model.Endpoint{Addr: netip.MustParseAddr(addr), Port: port, Ready: ready, Serving: ready, Weight: 1}
}

func dnsEP(addr, hostname string, ready bool) model.DNSEndpoint {
	return model.DNSEndpoint{Addr: netip.MustParseAddr(addr), Hostname: hostname, Ready: ready}
}

func headlessService(ns, name string, publishNotReady bool, eps []model.DNSEndpoint, ports ...*model.ServicePort) *model.Service {
	return &model.Service{
		Key: model.ServiceKey{Namespace: ns, Name: name}, Type: model.ClusterIP, Headless: true,
		PublishNotReadyAddresses: publishNotReady, DNSEndpoints: eps, Ports: ports,
	}
}

// bigHeadless is a headless Service with n ready endpoints 10.3.x.y without hostnames.
func bigHeadless(ns, name string, n int) *model.Service {
	var eps []model.DNSEndpoint
	var peps []model.Endpoint
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, 3, byte(i / 250), byte(1 + i%250)}).String()
		eps = append(eps, dnsEP(a, "", true))
		peps = append(peps, ep(a, 8080, true))
	}
	return headlessService(ns, name, false, eps, port("http", model.TCP, 80, peps...))
}

// testSnapshot holds one Service of every kind the specification names.
func testSnapshot() *model.Snapshot {
	return &model.Snapshot{Version: 1, Services: []*model.Service{
		// A headless Service: two StatefulSet pods with hostnames, one pod without, an
		// IPv6 one without, and a not-ready pod that DNS must not publish.
		headlessService("default", "db", false,
			[]model.DNSEndpoint{
				dnsEP("10.1.0.1", "db-0", true),
				dnsEP("10.1.0.2", "db-1", true),
				dnsEP("10.1.0.3", "", true),
				dnsEP("fd00::1:3", "", true),
			},
			port("pg", model.TCP, 5432,
				ep("10.1.0.1", 5432, true), ep("10.1.0.2", 5432, true), ep("10.1.0.3", 5432, true),
				ep("10.1.0.9", 5432, false), ep("fd00::1:3", 5432, true)),
			port("", model.TCP, 9187, ep("10.1.0.1", 9187, true)),
		),
		headlessService("default", "empty", false, nil, port("http", model.TCP, 80)),
		{
			Key: model.ServiceKey{Namespace: "default", Name: "ext"}, Type: model.ExternalName,
			ExternalName: "www.example.com",
		},
		headlessService("default", "warm", true,
			[]model.DNSEndpoint{dnsEP("10.2.0.1", "warm-0", false)},
			port("http", model.TCP, 80, ep("10.2.0.1", 8080, false))),
		clusterIPService("default", "web", []string{"10.96.0.10", "fd00::10"},
			port("http", model.TCP, 80, ep("10.0.0.1", 8080, true)),
			port("dns", model.UDP, 53, ep("10.0.0.1", 5353, true)),
			port("", model.TCP, 8443, ep("10.0.0.1", 8443, true)),
		),
		clusterIPService("kube-system", "kube-dns", []string{"10.96.0.53"}, port("dns", model.UDP, 53)),
		bigHeadless("other", "big", 200),
	}}
}

// startServer starts a Server on a free loopback port, stopped when the test ends.
func startServer(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.NameserverIPs == nil {
		opts.NameserverIPs = []netip.Addr{netip.MustParseAddr("10.96.0.53")}
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return s
}

// exchange sends one query and returns the answer, retrying briefly while the server
// starts (UDP gives no connection error).
func exchange(t testing.TB, addr, network string, m *mdns.Msg) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: network, Timeout: 2 * time.Second, UDPSize: 65535}
	var lastErr error
	for range 5 {
		r, _, err := c.Exchange(m, addr)
		if err == nil {
			return r
		}
		lastErr = err
	}
	t.Fatalf("exchange %s %s over %s: %v", m.Question[0].Name, mdns.TypeToString[m.Question[0].Qtype], network, lastErr)
	return nil
}

func question(name string, qtype uint16) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// rrStrings renders records in a stable, comparable form, sorted, SOA serials zeroed.
func rrStrings(rrs []mdns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		if rr.Header().Rrtype == mdns.TypeOPT {
			continue
		}
		if soa, ok := rr.(*mdns.SOA); ok { // the serial is a timestamp
			c := *soa
			c.Serial = 0
			rr = &c
		}
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	slices.Sort(out)
	return out
}
