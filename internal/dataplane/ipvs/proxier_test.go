package ipvs

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	cipvs "github.com/cloudflare/ipvs"
	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/dataplane/kernel"
	"weir.dev/weir/internal/model"
)

func TestVirtualServers(t *testing.T) {
	w := newFakeWorld(t, model.ProxyConfig{})
	flowtest.Sync(t, w.p, flowtest.Services()...)
	dump := w.ipvs.dump()
	for _, want := range []string{
		// ClusterIP: kube-proxy's default scheduler, every endpoint at weight 1.
		"TCP 172.30.0.10:80 rr\n  -> 10.1.0.1:8080 1\n  -> 10.2.0.1:8080 1",
		// ClientIP affinity: persistence with the Service's timeout.
		"TCP 172.30.0.18:80 rr persistent 10800\n",
		// Weights: wrr.
		"TCP 172.30.0.21:80 wrr\n  -> 10.2.0.21:80 3\n  -> 10.2.0.22:80 1",
		"TCP 172.30.0.23:80 mh\n",
		// The LoadBalancer IP and the externalIP: the External set.
		"TCP 203.0.113.16:443 rr\n  -> 10.2.0.6:8443 1",
		"TCP 192.0.2.24:80 rr\n  -> 10.1.0.30:80 1\nTCP",
		"UDP 172.30.0.53:53 rr\n  -> 10.2.0.53:53 1",
		"TCP [fd00:30::20]:80 rr\n  -> [fd00:2::20]:80 1\n  -> [fd00:2::21]:80 1",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("no %q in\n%s", want, dump)
		}
	}
	for _, absent := range []string{"172.30.0.11:80", "172.30.0.12:80", "203.0.113.15:80", "192.0.2.25:80"} {
		if strings.Contains(dump, absent) {
			t.Errorf("virtual server %s exists though its set does not forward:\n%s", absent, dump)
		}
	}
	// Node ports: one firewall-mark virtual server per port and family; Local ports a
	// second one, the short-circuit, with every endpoint.
	if n := strings.Count(dump, "fwmark"); n < 8 {
		t.Errorf("%d firewall-mark virtual servers:\n%s", n, dump)
	}
	addrs := w.links.addrs[DefaultInterface]
	for _, a := range []string{"172.30.0.10", "172.30.0.11", "203.0.113.15", "192.0.2.17", "fd00:30::20", "2001:db8::26"} {
		if !containsAddr(addrs, a) {
			t.Errorf("%s not on the dummy interface: %v", a, addrs)
		}
	}
	if containsAddr(addrs, "192.168.0.2") {
		t.Errorf("a node address on the dummy interface")
	}
	// The IPv4 table names the reject, drop and source-range verdicts.
	tab := w.nft[kernel.IPv4].Dump()
	for _, want := range []string{
		"add element ip weir-ipvs service-verdicts { 172.30.0.11 . tcp . 80 : goto reject-chain }",
		"add element ip weir-ipvs service-verdicts { 172.30.0.12 . tcp . 80 : drop }",
		"add element ip weir-ipvs firewall-ips { 203.0.113.16 . tcp . 443 : goto fw-203.0.113.16-tcp-443 }",
		"add rule ip weir-ipvs fw-203.0.113.16-tcp-443 ip saddr != { 198.51.100.0/24 } drop",
		"add element ip weir-ipvs nodeport-verdicts { tcp . 30082 : drop }",
		"add element ip weir-ipvs hairpin-ips { 10.1.0.1 . 10.1.0.1 }",
		"add rule ip weir-ipvs nat-postrouting ct mark and 0x4000 == 0x4000 masquerade fully-random",
	} {
		if !strings.Contains(tab, want) {
			t.Errorf("no %q in\n%s", want, tab)
		}
	}
}

func containsAddr(as []netip.Addr, s string) bool {
	for _, a := range as {
		if a == netip.MustParseAddr(s) {
			return true
		}
	}
	return false
}

func TestUnchangedSyncWritesNothing(t *testing.T) {
	w := newFakeWorld(t, model.ProxyConfig{})
	svcs := flowtest.Services()
	flowtest.Sync(t, w.p, svcs...)
	before := w.ipvs.ops
	flowtest.Sync(t, w.p, svcs...)
	if w.ipvs.ops != before {
		t.Errorf("an unchanged Snapshot wrote %d IPVS operations", w.ipvs.ops-before)
	}
	// A copy of every Service (new pointers, same content): nothing either.
	w.nft[kernel.IPv4].LastTransaction = nil
	flowtest.Sync(t, w.p, flowtest.Mutate(svcs, func(*model.Service) {})...)
	if w.ipvs.ops != before || w.nft[kernel.IPv4].LastTransaction != nil {
		t.Errorf("copied Services wrote %d IPVS operations, nft: %v", w.ipvs.ops-before, w.nft[kernel.IPv4].LastTransaction != nil)
	}
	// One endpoint added: one real server, and no nftables rewrite.
	changed := flowtest.Mutate(svcs, func(s *model.Service) {
		if s.Key.Name == "web" {
			s.Ports[0] = flowtest.Port(model.TCP, 80, flowtest.EP("10.1.0.1:8080", flowtest.Local), flowtest.EP("10.2.0.1:8080"), flowtest.EP("10.2.0.9:8080"))
		}
	})
	before = w.ipvs.ops
	flowtest.Sync(t, w.p, changed...)
	if n := w.ipvs.ops - before; n != 1 {
		t.Errorf("one endpoint added: %d IPVS operations, want 1\n%s", n, w.ipvs.dump())
	}
	if w.nft[kernel.IPv4].LastTransaction != nil {
		t.Errorf("one endpoint added rewrote the nftables table")
	}
}

func TestDeltaSync(t *testing.T) {
	w := newFakeWorld(t, model.ProxyConfig{})
	svcs := flowtest.Services()
	slices.SortFunc(svcs, func(a, b *model.Service) int { return a.Key.Compare(b.Key) }) // as Translate sorts them
	if err := w.p.Sync(context.Background(), &model.Snapshot{Version: 1, Services: svcs}); err != nil {
		t.Fatal(err)
	}
	changed := flowtest.Mutate(svcs, func(s *model.Service) {
		if s.Key.Name == "rr" {
			s.Policy = &model.Policy{Algorithm: balance.LeastConnections, Source: "shop/lc"}
		}
	})
	full := newFakeWorld(t, model.ProxyConfig{})
	flowtest.Sync(t, full.p, changed...)
	snap := &model.Snapshot{Version: 2, Services: changed, Delta: &model.Delta{Base: 1, Services: []model.ServiceKey{{Namespace: "shop", Name: "rr"}}}}
	if err := w.p.Sync(context.Background(), snap); err != nil {
		t.Fatal(err)
	}
	if got, want := w.ipvs.dump(), full.ipvs.dump(); got != want {
		t.Errorf("delta sync:\n%s\nfull sync:\n%s", got, want)
	}
	if !strings.Contains(w.ipvs.dump(), "TCP 172.30.0.22:80 lc") {
		t.Errorf("LeastConnections is not lc:\n%s", w.ipvs.dump())
	}
}

// TestDraining: a real server that leaves is kept at weight 0 while it has
// connections, then removed; UDP ones are removed at once.
func TestDraining(t *testing.T) {
	w := newFakeWorld(t, model.ProxyConfig{})
	tcp := flowtest.Svc("ns", "tcp", "172.30.1.1")
	tcp.Ports = []*model.ServicePort{flowtest.Port(model.TCP, 80, flowtest.EP("10.2.0.1:80"), flowtest.EP("10.2.0.2:80"))}
	udp := flowtest.Svc("ns", "udp", "172.30.1.2")
	udp.Ports = []*model.ServicePort{flowtest.Port(model.UDP, 53, flowtest.EP("10.2.0.1:53"), flowtest.EP("10.2.0.2:53"))}
	flowtest.Sync(t, w.p, tcp, udp)
	tcpKey := vsKey{Addr: netip.MustParseAddr("172.30.1.1"), Proto: model.TCP, Port: 80}
	leaving := netip.MustParseAddrPort("10.2.0.2:80")
	d := w.ipvs.dests[tcpKey][leaving]
	d.ActiveConnections = 1
	w.ipvs.dests[tcpKey][leaving] = d

	tcp2 := flowtest.Svc("ns", "tcp", "172.30.1.1")
	tcp2.Ports = []*model.ServicePort{flowtest.Port(model.TCP, 80, flowtest.EP("10.2.0.1:80"))}
	udp2 := flowtest.Svc("ns", "udp", "172.30.1.2")
	udp2.Ports = []*model.ServicePort{flowtest.Port(model.UDP, 53, flowtest.EP("10.2.0.1:53"))}
	flowtest.Sync(t, w.p, tcp2, udp2)
	dump := w.ipvs.dump()
	if !strings.Contains(dump, "TCP 172.30.1.1:80 rr\n  -> 10.2.0.1:80 1\n  -> 10.2.0.2:80 0") {
		t.Errorf("the leaving TCP real server is not at weight 0:\n%s", dump)
	}
	if strings.Contains(dump, "10.2.0.2:53") {
		t.Errorf("the leaving UDP real server is still there:\n%s", dump)
	}
	if got := w.p.Draining(); len(got) != 1 {
		t.Errorf("draining %v", got)
	}
	// The connection ends: the next sync (even an unchanged one) removes it.
	d = w.ipvs.dests[tcpKey][leaving]
	d.ActiveConnections = 0
	w.ipvs.dests[tcpKey][leaving] = d
	flowtest.Sync(t, w.p, tcp2, udp2)
	if strings.Contains(w.ipvs.dump(), "10.2.0.2:80") {
		t.Errorf("drained real server not removed:\n%s", w.ipvs.dump())
	}
	if got := w.p.Draining(); len(got) != 0 {
		t.Errorf("draining %v", got)
	}
}

// TestRestartAdopts: a new Proxier changes only what differs from an earlier run's
// virtual servers, and leaves virtual servers that are not weir's alone.
func TestRestartAdopts(t *testing.T) {
	w := newFakeWorld(t, model.ProxyConfig{})
	foreign := cipvs.Service{Address: netip.MustParseAddr("10.200.0.1"), Port: 80, Protocol: cipvs.TCP, Family: cipvs.INET, Scheduler: "rr", Netmask: cipvsMask4()}
	if err := w.ipvs.CreateService(foreign); err != nil {
		t.Fatal(err)
	}
	flowtest.Sync(t, w.p, flowtest.Services()...)
	before := w.ipvs.dump()
	p2, err := New(Options{Options: flowtest.NewRecorder().Options(kernel.Options{}), IPVS: w.ipvs, Links: w.links,
		NFTables: map[kernel.Family]knftables.Interface{kernel.IPv4: w.nft[kernel.IPv4], kernel.IPv6: w.nft[kernel.IPv6]}})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	ops := w.ipvs.ops
	flowtest.Sync(t, p2, flowtest.Services()...)
	if w.ipvs.ops != ops || w.ipvs.dump() != before {
		t.Errorf("a restart rewrote IPVS (%d operations)", w.ipvs.ops-ops)
	}
	if err := p2.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := w.ipvs.dump(); got != "TCP 10.200.0.1:80 rr\n" {
		t.Errorf("after cleanup: %q, want only the foreign virtual server", got)
	}
	if ok, _ := w.links.Exists(DefaultInterface); ok {
		t.Errorf("the dummy interface survived cleanup")
	}
	if left, err := p2.Leftovers(context.Background()); err != nil || left {
		t.Errorf("Leftovers after cleanup = %v, %v", left, err)
	}
}
