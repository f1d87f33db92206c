package ebpf

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/model"
)

// clientEnv makes the test binary a client: "network,address,count". The parent runs it
// inside the test cgroup, so its connects go through the programs.
const clientEnv = "WEIR_EBPF_TEST_CLIENT"

// TestMain turns the test binary into the client process when clientEnv is set: it
// connects count times and prints "RESULT <backend name or error>" for each.
func TestMain(m *testing.M) {
	spec := os.Getenv(clientEnv)
	if spec == "" {
		os.Exit(m.Run())
	}
	parts := strings.Split(spec, ",")
	n, _ := strconv.Atoi(parts[2])
	w := bufio.NewWriter(os.Stdout)
	for range n {
		if len(parts) > 3 && parts[3] == "peer" {
			fmt.Fprintf(w, "RESULT %s\n", peer(parts[0], parts[1]))
			continue
		}
		if len(parts) > 3 && parts[3] == "sendto" {
			fmt.Fprintf(w, "RESULT %s\n", sendto(parts[1]))
			continue
		}
		fmt.Fprintf(w, "RESULT %s\n", exchange(parts[0], parts[1]))
	}
	w.Flush()
	os.Exit(0)
}

// peer connects and returns the peer address getpeername() reports.
func peer(network, addr string) string {
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	return c.RemoteAddr().String()
}

// sendto sends one datagram from an unconnected UDP socket and returns the answer and
// the address recvfrom() reports it came from: "name from address".
func sendto(addr string) string {
	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr))
	network, local := "udp4", "127.0.0.1:0"
	if to.IP.To4() == nil {
		network, local = "udp6", "[::1]:0"
	}
	c, err := net.ListenPacket(network, local)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.WriteTo([]byte{'?'}, to); err != nil {
		return "error: " + err.Error()
	}
	b := make([]byte, 64)
	k, from, err := c.ReadFrom(b)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b[:k]) + " from " + from.String()
}

// exchange connects, sends a byte and returns the name the backend answers, or the
// error.
func exchange(network, addr string) string {
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{'?'}); err != nil {
		return "error: " + err.Error()
	}
	b := make([]byte, 64)
	k, err := c.Read(b)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b[:k])
}

// testCgroup makes a cgroup under the cgroup2 mount for one test (never the root) and
// returns its path; it is removed when the test ends.
func testCgroup(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("attaching cgroup programs needs root")
	}
	mount, err := CgroupMount()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	dir := filepath.Join(mount, "weir-ebpf-test-"+hex.EncodeToString(b))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("make test cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	return dir
}

// clients runs the client process in cgroup and returns what each of n exchanges got.
func clients(t *testing.T, cgroup, network, addr string, n int) []string {
	t.Helper()
	return clientsDo(t, cgroup, network, addr, n, "exchange")
}

// clientsDo is clients with what each connect does: "exchange", or "peer" to report
// the connected socket's peer address.
func clientsDo(t *testing.T, cgroup, network, addr string, n int, what string) []string {
	t.Helper()
	return clientsIn(t, "", cgroup, network, addr, n, what)
}

// clientsIn is clientsDo in network namespace netns ("" for this one).
func clientsIn(t *testing.T, netns, cgroup, network, addr string, n int, what string) []string {
	t.Helper()
	fd, err := os.Open(cgroup)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	cmd := exec.Command(os.Args[0])
	if netns != "" {
		cmd = exec.Command("ip", "netns", "exec", netns, os.Args[0])
	}
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%d,%s", clientEnv, network, addr, n, what))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client: %v: %s", err, out)
	}
	var got []string
	for _, line := range strings.Split(string(out), "\n") {
		if r, ok := strings.CutPrefix(line, "RESULT "); ok {
			got = append(got, r)
		}
	}
	if len(got) != n {
		t.Fatalf("client printed %d results, want %d: %s", len(got), n, out)
	}
	return got
}

// backend serves on a loopback port of network ("tcp"/"udp", host "127.0.0.1"/"::1")
// and answers every exchange with its name.
func backend(t *testing.T, network, host, name string) model.Endpoint {
	t.Helper()
	var addr net.Addr
	switch network {
	case "tcp":
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() { // ends when the listener is closed
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(name))
				c.Close()
			}
		}()
		addr = l.Addr()
	case "udp":
		c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		go func() { // ends when the socket is closed
			b := make([]byte, 64)
			for {
				_, from, err := c.ReadFrom(b)
				if err != nil {
					return
				}
				_, _ = c.WriteTo([]byte(name), from)
			}
		}()
		addr = c.LocalAddr()
	}
	ap := netip.MustParseAddrPort(addr.String())
	return model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}
}

// service is a ClusterIP Service with one port whose Cluster set is eps (Reject when
// eps is empty), as model.Translate leaves it.
func service(name string, ip netip.Addr, proto model.Protocol, port int32, eps ...model.Endpoint) *model.Service {
	set := model.EndpointSet{Verdict: model.Reject, IPv4Verdict: model.Reject, IPv6Verdict: model.Reject, Endpoints: eps}
	if len(eps) > 0 {
		set.Verdict = model.Forward
		if ip.Is4() {
			set.IPv4Verdict = model.Forward
		} else {
			set.IPv6Verdict = model.Forward
		}
	}
	return &model.Service{
		Key:        model.ServiceKey{Namespace: "test", Name: name},
		Type:       model.ClusterIP,
		ClusterIPs: []netip.Addr{ip},
		Ports:      []*model.ServicePort{{Protocol: proto, Port: port, Endpoints: eps, Cluster: set}},
	}
}

// snapshot is a Snapshot of svcs, which must be sorted by key as Translate sorts them.
func snapshot(svcs ...*model.Service) *model.Snapshot { return &model.Snapshot{Services: svcs} }

func newProxier(t *testing.T, cgroup string) *Proxier {
	t.Helper()
	p, err := New(Options{Cgroup: cgroup})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p
}

func count(got []string) map[string]int {
	m := map[string]int{}
	for _, g := range got {
		m[g]++
	}
	return m
}

func testBalance(t *testing.T, network, loopback, clusterIP string) {
	cg := testCgroup(t)
	p := newProxier(t, cg)
	ctx := context.Background()
	a, b, c := backend(t, network, loopback, "a"), backend(t, network, loopback, "b"), backend(t, network, loopback, "c")
	proto := model.TCP
	if network == "udp" {
		proto = model.UDP
	}
	ip := netip.MustParseAddr(clusterIP)
	front := net.JoinHostPort(clusterIP, "80")
	if err := p.Sync(ctx, snapshot(service("web", ip, proto, 80, a, b))); err != nil {
		t.Fatal(err)
	}

	// Spread: 40 connects to two endpoints at random all miss one of them with
	// probability 2^-39.
	got := count(clients(t, cg, network, front, 40))
	if got["a"] == 0 || got["b"] == 0 || got["a"]+got["b"] != 40 {
		t.Fatalf("connects to %s reached %v, want both a and b and nothing else", front, got)
	}

	// Unconnected UDP: sendto() a ClusterIP reaches an endpoint, and the reply's source
	// is the ClusterIP.
	if network == "udp" {
		seen := map[string]bool{}
		for _, g := range clientsDo(t, cg, network, front, 20, "sendto") {
			name, from, _ := strings.Cut(g, " from ")
			if (name != "a" && name != "b") || from != front {
				t.Fatalf("sendto %s: %q, want a or b from %s", front, g, front)
			}
			seen[name] = true
		}
		if len(seen) != 2 {
			t.Fatalf("20 datagrams to %s reached only %v", front, seen)
		}
	}

	// getpeername() reports the Service address the application connected to.
	for _, g := range clientsDo(t, cg, network, front, 3, "peer") {
		if g != front {
			t.Fatalf("peer address of a connect to %s: %s", front, g)
		}
	}

	// New endpoints: new connects go only there.
	if err := p.Sync(ctx, snapshot(service("web", ip, proto, 80, c))); err != nil {
		t.Fatal(err)
	}
	if got := count(clients(t, cg, network, front, 10)); got["c"] != 10 {
		t.Fatalf("after the endpoints changed to c, connects reached %v", got)
	}

	// No endpoints: kube-proxy rejects; the connect fails at once.
	if err := p.Sync(ctx, snapshot(service("web", ip, proto, 80))); err != nil {
		t.Fatal(err)
	}
	for _, g := range clients(t, cg, network, front, 3) {
		if !strings.Contains(g, "connection refused") {
			t.Fatalf("connect to a frontend without endpoints: %q, want connection refused", g)
		}
	}

	// A process outside the cgroup is not balanced: its connect to the ClusterIP is
	// not rewritten (there is no route to answer it).
	if network == "tcp" {
		if g := exchange(network, front); g == "a" || g == "b" || g == "c" {
			t.Fatalf("a process outside the test cgroup reached backend %s", g)
		}
	}
}

func TestTCPv4(t *testing.T) { testBalance(t, "tcp", "127.0.0.1", "203.0.113.1") }
func TestUDPv4(t *testing.T) { testBalance(t, "udp", "127.0.0.1", "203.0.113.2") }
func TestTCPv6(t *testing.T) { testBalance(t, "tcp", "::1", "2001:db8:96::1") }
func TestUDPv6(t *testing.T) { testBalance(t, "udp", "::1", "2001:db8:96::2") }

// TestSyncWritesOnlyChanges checks that a Sync writes only the frontends that changed
// and that detaching stops the rewriting.
func TestSyncWritesOnlyChanges(t *testing.T) {
	cg := testCgroup(t)
	reg := prometheus.NewRegistry()
	p, err := New(Options{Cgroup: cg, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, b := backend(t, "tcp", "127.0.0.1", "a"), backend(t, "tcp", "127.0.0.1", "b")
	web := service("web", netip.MustParseAddr("203.0.113.3"), model.TCP, 80, a)
	db := service("db", netip.MustParseAddr("203.0.113.4"), model.TCP, 5432, b)
	if err := p.Sync(ctx, snapshot(db, web)); err != nil {
		t.Fatal(err)
	}
	// Two frontends, one backend slot each, and the other ports of both ClusterIPs
	// (TCP and UDP), rejected.
	if p.writes != 8 {
		t.Fatalf("first sync wrote %d elements, want 8", p.writes)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP weir_ebpf_backend_slots Backend slots in use in the backends map.
# TYPE weir_ebpf_backend_slots gauge
weir_ebpf_backend_slots 2
# HELP weir_ebpf_frontends Service frontends (address, port, protocol) in the services map.
# TYPE weir_ebpf_frontends gauge
weir_ebpf_frontends 6
# HELP weir_ebpf_programs_attached Socket load-balancing programs attached to the cgroup.
# TYPE weir_ebpf_programs_attached gauge
weir_ebpf_programs_attached 8
`), "weir_ebpf_backend_slots", "weir_ebpf_frontends", "weir_ebpf_programs_attached"); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx, snapshot(db, web)); err != nil {
		t.Fatal(err)
	}
	if p.writes != 8 {
		t.Fatalf("an unchanged sync wrote %d elements", p.writes-8)
	}
	web2 := service("web", netip.MustParseAddr("203.0.113.3"), model.TCP, 80, a, b)
	if err := p.Sync(ctx, snapshot(db, web2)); err != nil {
		t.Fatal(err)
	}
	if p.writes != 8+3 { // web: two slots and the frontend
		t.Fatalf("changing one frontend wrote %d elements, want 3", p.writes-8)
	}
	if err := p.Sync(ctx, snapshot(web2)); err != nil {
		t.Fatal(err)
	}
	if p.writes != 8+3+3 { // db's frontend and its ClusterIP's other ports
		t.Fatalf("removing one Service wrote %d elements, want 3", p.writes-11)
	}
	if got := clients(t, cg, "tcp", "203.0.113.4:5432", 1)[0]; got == "a" || got == "b" {
		t.Fatalf("a removed frontend still reached %q", got)
	}
	if got := clients(t, cg, "tcp", "203.0.113.3:80", 1)[0]; got != "a" && got != "b" {
		t.Fatalf("kept frontend reached %q", got)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(p.m.programs); got != 0 {
		t.Fatalf("weir_ebpf_programs_attached after Close: %v", got)
	}
	if got := clients(t, cg, "tcp", "203.0.113.3:80", 1)[0]; got == "a" || got == "b" {
		t.Fatalf("after Close a connect was still rewritten to %q", got)
	}
}

func TestSlotAllocator(t *testing.T) {
	a := slotAllocator{free: []slotRange{{0, 10}}}
	x, _ := a.alloc(3)
	y, _ := a.alloc(3)
	z, _ := a.alloc(4)
	if x != 0 || y != 3 || z != 6 {
		t.Fatalf("alloc offsets %d %d %d", x, y, z)
	}
	if _, ok := a.alloc(1); ok {
		t.Fatal("alloc from a full allocator succeeded")
	}
	a.release(slotRange{0, 3})
	a.release(slotRange{6, 4})
	if _, ok := a.alloc(5); ok {
		t.Fatal("alloc of 5 from two free runs of 3 and 4 succeeded")
	}
	a.release(slotRange{3, 3})
	if len(a.free) != 1 || a.free[0] != (slotRange{0, 10}) {
		t.Fatalf("free runs not merged: %v", a.free)
	}
	// reserve (adopting pinned slots) splits a free run and refuses used slots.
	if !a.reserve(slotRange{4, 2}) || a.used != 2 || len(a.free) != 2 {
		t.Fatalf("reserve 4+2: used %d, free %v", a.used, a.free)
	}
	if a.reserve(slotRange{5, 2}) {
		t.Fatal("reserve of a used slot succeeded")
	}
	a.release(slotRange{4, 2})
	if len(a.free) != 1 || a.used != 0 {
		t.Fatalf("after releasing the reserved run: used %d, free %v", a.used, a.free)
	}
}

// TestSyncDelta checks that a Snapshot with a Delta against the one applied last is
// applied by comparing only the Services the Delta names, and that any other Snapshot
// is compared in full.
func TestSyncDelta(t *testing.T) {
	cg := testCgroup(t)
	p := newProxier(t, cg)
	ctx := context.Background()
	a, b := backend(t, "tcp", "127.0.0.1", "a"), backend(t, "tcp", "127.0.0.1", "b")
	webIP, dbIP := netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("203.0.113.6")
	v1 := snapshot(service("db", dbIP, model.TCP, 5432, b), service("web", webIP, model.TCP, 80, a))
	v1.Version = 1
	if err := p.Sync(ctx, v1); err != nil {
		t.Fatal(err)
	}
	base := p.writes

	// v2 changes web and (without saying so) db: only web is looked at.
	v2 := snapshot(service("db", dbIP, model.TCP, 5432, a), service("web", webIP, model.TCP, 80, b))
	v2.Version, v2.Delta = 2, &model.Delta{Base: 1, Services: []model.ServiceKey{{Namespace: "test", Name: "web"}}}
	if err := p.Sync(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if got := p.writes - base; got != 2 {
		t.Fatalf("delta sync naming web wrote %d elements, want 2 (web's slot and value)", got)
	}
	if got := clients(t, cg, "tcp", "203.0.113.5:80", 1)[0]; got != "b" {
		t.Fatalf("web after the delta reached %q, want b", got)
	}
	if got := clients(t, cg, "tcp", "203.0.113.6:5432", 1)[0]; got != "b" {
		t.Fatalf("db, not named by the delta, reached %q, want b (unchanged)", got)
	}

	// v3 removes web, with a Delta naming it.
	v3 := snapshot(service("db", dbIP, model.TCP, 5432, a))
	v3.Version, v3.Delta = 3, &model.Delta{Base: 2, Services: []model.ServiceKey{{Namespace: "test", Name: "web"}}}
	base = p.writes
	if err := p.Sync(ctx, v3); err != nil {
		t.Fatal(err)
	}
	if got := p.writes - base; got != 3 { // the frontend and the ClusterIP's other ports
		t.Fatalf("delta removing web wrote %d elements, want 3", got)
	}
	if got := clients(t, cg, "tcp", "203.0.113.5:80", 1)[0]; got == "a" || got == "b" {
		t.Fatalf("removed web still reached %q", got)
	}

	// A Delta against another base is not trusted: everything is compared, and db's
	// change reaches the maps.
	v5 := snapshot(service("db", dbIP, model.TCP, 5432, a))
	v5.Version, v5.Delta = 5, &model.Delta{Base: 4}
	if err := p.Sync(ctx, v5); err != nil {
		t.Fatal(err)
	}
	if got := clients(t, cg, "tcp", "203.0.113.6:5432", 1)[0]; got != "a" {
		t.Fatalf("db after a full compare reached %q, want a", got)
	}
}

// TestHostileWeights checks that a frontend whose endpoint weights ask for more backend
// slots than allowed gets a clear error and no memory, and that the other frontends of
// the Sync are written; a Drop verdict fails the connect with EPERM.
func TestHostileWeights(t *testing.T) {
	cg := testCgroup(t)
	p := newProxier(t, cg)
	a := backend(t, "tcp", "127.0.0.1", "a")
	heavy := a
	heavy.Weight = 1 << 31
	drop := service("drop", netip.MustParseAddr("203.0.113.9"), model.TCP, 80)
	drop.Ports[0].Cluster = model.EndpointSet{Verdict: model.Drop, IPv4Verdict: model.Drop, IPv6Verdict: model.Reject}
	snap := snapshot(drop,
		service("heavy", netip.MustParseAddr("203.0.113.7"), model.TCP, 80, heavy),
		service("web", netip.MustParseAddr("203.0.113.8"), model.TCP, 80, a))
	err := p.Sync(context.Background(), snap)
	if err == nil || !strings.Contains(err.Error(), "203.0.113.7:80/tcp: endpoint weights need 2147483648 backend slots") {
		t.Fatalf("Sync with a weight of 2^31: %v", err)
	}
	if got := clients(t, cg, "tcp", "203.0.113.8:80", 1)[0]; got != "a" {
		t.Fatalf("the other frontend reached %q", got)
	}
	if got := clients(t, cg, "tcp", "203.0.113.9:80", 1)[0]; !strings.Contains(got, "operation not permitted") {
		t.Fatalf("a frontend with verdict Drop: %q, want operation not permitted", got)
	}
}

// TestUnsupportedScheduler checks that a Service port asking for a scheduler other than
// Random or Maglev is reported (weir_dataplane_unsupported_scheduler, as the other kernel
// modes) and balanced at random, and that the report goes when the Service does.
func TestUnsupportedScheduler(t *testing.T) {
	cg := testCgroup(t)
	reg := prometheus.NewRegistry()
	p, err := New(Options{Cgroup: cg, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, b := backend(t, "tcp", "127.0.0.1", "a"), backend(t, "tcp", "127.0.0.1", "b")
	rr := service("rr", netip.MustParseAddr("203.0.113.50"), model.TCP, 80, a, b)
	rr.Policy = &model.Policy{Algorithm: balance.RoundRobin, Source: "test/rr"}
	if err := p.Sync(context.Background(), snapshot(rr)); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP weir_dataplane_unsupported_scheduler 1 for each Service port whose scheduler the kernel data plane cannot do; it uses Random instead.
# TYPE weir_dataplane_unsupported_scheduler gauge
weir_dataplane_unsupported_scheduler{algorithm="RoundRobin",service_port="test/rr:80"} 1
`), "weir_dataplane_unsupported_scheduler"); err != nil {
		t.Fatal(err)
	}
	if got := count(clients(t, cg, "tcp", "203.0.113.50:80", 30)); got["a"] == 0 || got["b"] == 0 {
		t.Fatalf("RoundRobin, balanced at random, reached %v", got)
	}
	if err := p.Sync(context.Background(), snapshot()); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(p.unsup.Collector()); n != 0 {
		t.Fatalf("%d unsupported-scheduler series after the Service went", n)
	}
}

// TestAffinityFollowsEndpoints checks ClientIP affinity across endpoint changes: a
// client keeps its endpoint while it stays one of the Service's (kube-proxy keeps the
// affinity of surviving endpoints) and picks again once it is gone.
func TestAffinityFollowsEndpoints(t *testing.T) {
	cg := testCgroup(t)
	p := newProxier(t, cg)
	ctx := context.Background()
	a, b, c := backend(t, "tcp", "127.0.0.1", "a"), backend(t, "tcp", "127.0.0.1", "b"), backend(t, "tcp", "127.0.0.1", "c")
	ip := netip.MustParseAddr("203.0.113.60")
	sticky := func(eps ...model.Endpoint) *model.Snapshot {
		svc := service("sticky", ip, model.TCP, 80, eps...)
		svc.AffinityTimeout = time.Minute
		return snapshot(svc)
	}
	if err := p.Sync(ctx, sticky(a, b)); err != nil {
		t.Fatal(err)
	}
	got := count(clients(t, cg, "tcp", "203.0.113.60:80", 10))
	if len(got) != 1 {
		t.Fatalf("10 connects of one client reached %v, want one endpoint", got)
	}
	var first string
	for name := range got {
		first = name
	}
	// Another endpoint joins: the client keeps its own.
	if err := p.Sync(ctx, sticky(a, b, c)); err != nil {
		t.Fatal(err)
	}
	if got := count(clients(t, cg, "tcp", "203.0.113.60:80", 10)); got[first] != 10 {
		t.Fatalf("after c joined, the client reached %v, want %s every time", got, first)
	}
	// Its endpoint goes: it picks again among the others, and keeps that one.
	rest := map[string]model.Endpoint{"a": a, "b": b, "c": c}
	delete(rest, first)
	var eps []model.Endpoint
	for _, n := range []string{"a", "b", "c"} {
		if e, ok := rest[n]; ok {
			eps = append(eps, e)
		}
	}
	if err := p.Sync(ctx, sticky(eps...)); err != nil {
		t.Fatal(err)
	}
	got = count(clients(t, cg, "tcp", "203.0.113.60:80", 10))
	if len(got) != 1 || got[first] != 0 {
		t.Fatalf("after %s went, the client reached %v, want one other endpoint", first, got)
	}
}
