package ebpf

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/netnstest"
)

// flowWorld is flowtest's world built in network namespaces for socket load balancing:
// a node namespace with the node's addresses, and one namespace per pod address a
// scenario sends from (a pod on this node: a socket of another network namespace). In
// every one of them the endpoint ranges (10.0.0.0/8, fd00:2::/64) are local routes
// with listeners that answer with the address they were reached at, and everything
// else is unreachable, so a connect shows at once what the programs did to it:
// rewritten to an endpoint (DNAT), refused (REJECT), EPERM (DROP), or left alone (it
// reaches the address it asked for, or fails as unreachable: ACCEPT).
type flowWorld struct {
	t      *testing.T
	h      *netnstest.Harness
	cg     string
	node   *netnstest.NS
	pods   map[string]*netnstest.NS // by source address
	ports  []int
	udpEPs []netip.AddrPort
}

// podSource reports whether src is a pod on node a in flowtest's world (10.0.0.0/8,
// fd00::/8 but not the node's own addresses).
func podSource(src netip.Addr) bool {
	return netip.MustParsePrefix("10.0.0.0/8").Contains(src) || (netip.MustParsePrefix("fd00::/8").Contains(src) && src != netip.MustParseAddr("fd00:192::2"))
}

func nodeSource(src netip.Addr) bool {
	return src.IsLoopback() || slices.Contains(flowtest.NodeIPs(), src.String())
}

func newFlowWorld(t *testing.T, cg string, scenarios []flowtest.Scenario) *flowWorld {
	w := &flowWorld{t: t, h: netnstest.New(t), cg: cg, pods: map[string]*netnstest.NS{}}
	ports := map[int]bool{}
	for _, svc := range flowtest.Services() {
		for _, sp := range svc.Ports {
			for _, ep := range sp.Endpoints {
				ports[int(ep.Port)] = true
				if sp.Protocol == model.UDP {
					w.udpEPs = append(w.udpEPs, netip.AddrPortFrom(ep.Addr, uint16(ep.Port)))
				}
			}
		}
	}
	for _, sc := range scenarios {
		ports[sc.Pkt.Port] = true
	}
	for p := range ports {
		w.ports = append(w.ports, p)
	}
	w.node = w.namespace("node", "192.168.0.2/32", "fd00:192::2/128")
	return w
}

// namespace makes a namespace with addrs on its loopback interface, the endpoint ranges
// local, everything else unreachable, and the listeners.
func (w *flowWorld) namespace(role string, addrs ...string) *netnstest.NS {
	ns := w.h.NS(role)
	for _, a := range addrs {
		if strings.Contains(a, ":") {
			ns.MustRun("ip", "-6", "addr", "add", a, "dev", "lo", "nodad")
		} else {
			ns.MustRun("ip", "addr", "add", a, "dev", "lo")
		}
	}
	ns.MustRun("ip", "route", "add", "local", "10.0.0.0/8", "dev", "lo")
	ns.MustRun("ip", "-6", "route", "add", "local", "fd00:2::/64", "dev", "lo")
	ns.MustRun("ip", "route", "add", "unreachable", "default")
	ns.MustRun("ip", "-6", "route", "add", "unreachable", "default")
	err := ns.Do(func() error {
		for _, p := range w.ports {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
			if err != nil {
				return err
			}
			w.t.Cleanup(func() { l.Close() })
			go func() { // ends when l is closed
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					// Read the client's byte first: closing with it unread would
					// send a reset, which can reach the client before the answer.
					_ = c.SetDeadline(time.Now().Add(2 * time.Second))
					_, _ = c.Read(make([]byte, 1))
					_, _ = c.Write([]byte(c.LocalAddr().String()))
					c.Close()
				}
			}()
		}
		for _, ep := range w.udpEPs {
			c, err := net.ListenPacket("udp", ep.String())
			if err != nil {
				return err
			}
			w.t.Cleanup(func() { c.Close() })
			go func() { // ends when c is closed
				b := make([]byte, 64)
				for {
					_, from, err := c.ReadFrom(b)
					if err != nil {
						return
					}
					_, _ = c.WriteTo([]byte(ep.String()), from)
				}
			}()
		}
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return ns
}

// from returns the namespace a packet from src starts in, or nil when src is neither
// the node nor a pod on it (traffic arriving from outside the node).
func (w *flowWorld) from(src netip.Addr) *netnstest.NS {
	switch {
	case nodeSource(src):
		return w.node
	case podSource(src):
		ns, ok := w.pods[src.String()]
		if !ok {
			bits := "/32"
			if src.Is6() {
				bits = "/128"
			}
			ns = w.namespace(fmt.Sprintf("pod%d", len(w.pods)), src.String()+bits)
			w.pods[src.String()] = ns
		}
		return ns
	}
	return nil
}

// connect runs the client in the test cgroup and in ns: n exchanges with dst.
func (w *flowWorld) connect(t *testing.T, ns *netnstest.NS, proto string, dst netip.AddrPort, n int) []string {
	t.Helper()
	return clientsIn(t, ns.Name, w.cg, proto, dst.String(), n, "exchange")
}

// outcome is what one exchange shows: the verdict and, for DNAT, the endpoint.
func outcome(dst netip.AddrPort, got string) (verdict, endpoint string) {
	switch {
	case strings.Contains(got, "connection refused"):
		return "REJECT", ""
	case strings.Contains(got, "operation not permitted"):
		return "DROP", ""
	case strings.Contains(got, "network is unreachable"), strings.Contains(got, "no route to host"):
		return "ACCEPT", ""
	case strings.HasPrefix(got, "error"):
		return "ERROR " + got, ""
	}
	ap, err := netip.ParseAddrPort(got)
	if err != nil {
		return "ERROR " + got, ""
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if ap == dst {
		return "ACCEPT", ""
	}
	return "DNAT", ap.String()
}

// northSouth is why a scenario from outside the node is not run: socket load
// balancing sees only sockets of the node and its pods.
const northSouth = "traffic from outside the node: socket load balancing sees only the node's and its pods' sockets (no tc program)"

// runFlows runs scenarios against Services() synced with proxy.
func runFlows(t *testing.T, proxy model.ProxyConfig, scenarios []flowtest.Scenario) {
	cg := testCgroup(t)
	w := newFlowWorld(t, cg, scenarios)
	var p *Proxier
	// The Proxier runs in the node namespace: its addresses serve node ports, and its
	// sockets are the node's.
	if err := w.node.Do(func() error {
		var err error
		if p, err = New(Options{Cgroup: cg, Proxy: proxy}); err != nil {
			return err
		}
		return p.Sync(context.Background(), &model.Snapshot{Services: flowtest.Services()})
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	for _, sc := range scenarios { // every namespace first, owned by t
		w.from(netip.MustParseAddr(sc.Pkt.Src))
	}

	for _, sc := range scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			src := netip.MustParseAddr(sc.Pkt.Src)
			ns := w.from(src)
			if ns == nil {
				t.Skip(northSouth)
			}
			dst := netip.AddrPortFrom(netip.MustParseAddr(sc.Pkt.Dst), uint16(sc.Pkt.Port))
			n := 30
			sticky := strings.HasPrefix(sc.Name, "affinity") || strings.HasPrefix(sc.Name, "Maglev")
			if sc.Name == "affinity: a known client keeps its endpoint" {
				seedAffinity(t, p, ns, dst, netip.MustParseAddrPort(flowtest.StickyEndpoint))
			}
			reached := map[string]int{}
			verdicts := map[string]bool{}
			for _, g := range w.connect(t, ns, sc.Pkt.Proto, dst, n) {
				v, ep := outcome(dst, g)
				verdicts[v] = true
				if ep != "" {
					reached[ep]++
				}
			}
			if len(verdicts) != 1 || !verdicts[sc.Want.Verdict] {
				t.Fatalf("%s from %s: verdicts %v, want %s", dst, src, verdicts, sc.Want.Verdict)
			}
			if sc.Want.Verdict != "DNAT" {
				return
			}
			var want []string
			for ep, share := range sc.Want.Endpoints {
				if share > 0 {
					want = append(want, ep)
				}
			}
			if sticky {
				// One client (network namespace) keeps one endpoint: affinity, or its
				// Maglev slot.
				if len(reached) != 1 {
					t.Fatalf("%s from one client reached %v, want one endpoint", dst, reached)
				}
				for ep := range reached {
					if !slices.Contains(want, ep) {
						t.Fatalf("%s reached %s, not one of %v", dst, ep, want)
					}
					if strings.HasPrefix(sc.Name, "Maglev") {
						checkMaglevSlot(t, ns, sc, ep)
					}
				}
				return
			}
			for ep := range reached {
				if !slices.Contains(want, ep) {
					t.Fatalf("%s from %s reached %v, want only %v", dst, src, reached, want)
				}
			}
			for _, ep := range want {
				if reached[ep] == 0 {
					t.Fatalf("%s from %s: %d connects reached %v, never %s", dst, src, n, reached, ep)
				}
			}
		})
	}
}

// seedAffinity records that the client namespace ns was sent to ep by dst's frontend,
// as the tracers of the other modes put flowtest.StickyClient in their affinity
// record.
func seedAffinity(t *testing.T, p *Proxier, ns *netnstest.NS, dst, ep netip.AddrPort) {
	var cookie uint64
	if err := ns.Do(func() (err error) { cookie, err = netnsCookie(); return err }); err != nil {
		t.Fatal(err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	key := socklbAffKey{Netns: cookie, Svc: socklbSvcKey{Addr: dst.Addr().As16(), Port: htons(dst.Port()), Proto: 6}}
	val := socklbAffValue{Endpoint: socklbBackend{Addr: ep.Addr().As16(), Port: htons(ep.Port())}, Last: uint64(ts.Nano())}
	if err := p.objs.Affinity.Put(key, val); err != nil {
		t.Fatal(err)
	}
}

// checkMaglevSlot checks that the endpoint a client got is the one balance's Maglev
// table holds at balance.MaglevSlot of the client's key (its network namespace's
// cookie): the program and internal/balance agree.
func checkMaglevSlot(t *testing.T, ns *netnstest.NS, sc flowtest.Scenario, got string) {
	var cookie uint64
	if err := ns.Do(func() (err error) { cookie, err = netnsCookie(); return err }); err != nil {
		t.Fatal(err)
	}
	for _, svc := range flowtest.Services() {
		if len(svc.ClusterIPs) == 0 || svc.ClusterIPs[0].String() != sc.Pkt.Dst {
			continue
		}
		sp := svc.Ports[0]
		set := sp.Cluster.ForFamily(false)
		pol := svc.Policy
		bs := make([]balance.Backend, len(set.Endpoints))
		for i, ep := range set.Endpoints {
			bs[i] = balance.Backend{ID: balance.KeyOf(netip.AddrPortFrom(ep.Addr, uint16(ep.Port))), Weight: ep.EffectiveWeight()}
		}
		table, err := balance.MaglevTable(bs, balance.Options{MaglevTableSize: pol.MaglevTableSize, Seed: pol.MaglevSeed})
		if err != nil {
			t.Fatal(err)
		}
		ep := set.Endpoints[table[balance.MaglevSlot(cookie, len(table), pol.MaglevSeed)]]
		if want := netip.AddrPortFrom(ep.Addr, uint16(ep.Port)).String(); got != want {
			t.Fatalf("Maglev: the client reached %s, balance's table says %s", got, want)
		}
		return
	}
	t.Fatalf("no Service with ClusterIP %s", sc.Pkt.Dst)
}

// TestPacketFlow runs flowtest's scenarios with real sockets in network namespaces.
// Masquerade is not compared: socket load balancing rewrites no packet, and the
// endpoint always sees the socket's own address.
func TestPacketFlow(t *testing.T) {
	runFlows(t, model.ProxyConfig{}, flowtest.Scenarios())
}

// TestPacketFlowProxyConfig runs flowtest's scenarios of kube-proxy's settings.
func TestPacketFlowProxyConfig(t *testing.T) {
	for _, cs := range flowtest.ProxyConfigScenarios() {
		t.Run(cs.Name, func(t *testing.T) { runFlows(t, cs.Proxy, cs.Scenarios) })
	}
}

// socketScenarios are flowtest's Services reached from where socket load balancing
// works, the node and its pods, where flowtest's own scenarios send from outside.
func socketScenarios() []flowtest.Scenario {
	type shares = map[string]float64
	dnat := func(s shares) flowtest.Outcome { return flowtest.Outcome{Verdict: "DNAT", Endpoints: s} }
	tcp := func(src, dst string, port int) flowtest.Packet {
		return flowtest.Packet{Src: src, Dst: dst, Proto: "tcp", Port: port}
	}
	drop, accept := flowtest.Outcome{Verdict: "DROP"}, flowtest.Outcome{Verdict: "ACCEPT"}
	return []flowtest.Scenario{
		{Name: "NodePort from a pod", Pkt: tcp("10.9.0.1", "192.168.0.2", 30080), Want: dnat(shares{"10.1.0.3:80": 0.5, "10.2.0.3:80": 0.5})},
		{Name: "NodePort from the node", Pkt: tcp("192.168.0.2", "192.168.0.2", 30080), Want: dnat(shares{"10.1.0.3:80": 0.5, "10.2.0.3:80": 0.5})},
		{Name: "NodePort on a non-local address, from the node, is not a node port", Pkt: tcp("192.168.0.2", "192.168.9.9", 30080), Want: accept},
		// A pod that --detect-local-mode does not recognise gets the External set.
		{Name: "NodePort Local from a pod: the local endpoint", Pkt: tcp("10.9.0.1", "192.168.0.2", 30081), Want: dnat(shares{"10.1.0.4:80": 1})},
		{Name: "NodePort Local without local endpoint from a pod drops", Pkt: tcp("10.9.0.1", "192.168.0.2", 30082), Want: drop},
		{Name: "externalIP from a pod", Pkt: tcp("10.9.0.1", "192.0.2.17", 80), Want: dnat(shares{"10.2.0.7:80": 1})},
		{Name: "externalIP from the node", Pkt: tcp("192.168.0.2", "192.0.2.17", 80), Want: dnat(shares{"10.2.0.7:80": 1})},
		{Name: "externalIP Local from a pod: the local endpoint", Pkt: tcp("10.9.0.1", "192.0.2.24", 80), Want: dnat(shares{"10.1.0.30:80": 1})},
		{Name: "externalIP Local without local endpoint from a pod drops", Pkt: tcp("10.9.0.1", "192.0.2.25", 80), Want: drop},
		// loadBalancerSourceRanges: the node is admitted when they hold one of its
		// addresses, pods when they hold the pod CIDR (none here).
		{Name: "LoadBalancer source ranges without the node's address drop the node", Pkt: tcp("192.168.0.2", "203.0.113.16", 443), Want: drop},
		{Name: "LoadBalancer source ranges drop a pod", Pkt: tcp("10.9.0.1", "203.0.113.16", 443), Want: drop},
		{Name: "LoadBalancer source ranges: the node port is open to a pod", Pkt: tcp("10.9.0.1", "192.168.0.2", 30443), Want: dnat(shares{"10.2.0.6:8443": 1})},
		{Name: "IPv4 source ranges leave the IPv6 LoadBalancer IP open to the node", IPv6: true, Pkt: tcp("fd00:192::2", "2001:db8::26", 80), Want: dnat(shares{"[fd00:2::32]:80": 1})},
		{Name: "LoadBalancer Local without local endpoint from a pod drops", Pkt: tcp("10.9.0.1", "203.0.113.15", 80), Want: drop},
	}
}

// TestPacketFlowSocket runs socketScenarios.
func TestPacketFlowSocket(t *testing.T) {
	runFlows(t, model.ProxyConfig{}, socketScenarios())
}
