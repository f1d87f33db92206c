package userspace

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/model"
)

func TestTCPAndUDPToThreeBackends(t *testing.T) {
	t.Parallel()
	var tcpEps, udpEps []model.Endpoint
	for _, n := range []string{"a", "b", "c"} {
		tcpEps = append(tcpEps, endpoint(startTCPBackend(t, n).addr))
		udpEps = append(udpEps, endpoint(startUDPBackend(t, n).addr))
	}
	// The IPv6 prefix holds no local address, so the test binds no IPv6 node port.
	p := newProxy(t, Options{Proxy: model.ProxyConfig{NodePortAddresses: []netip.Prefix{
		netip.MustParsePrefix("127.0.1.2/32"), netip.MustParsePrefix("fd00:dead:beef::/64")}}})
	web := service("web", model.TCP, "127.0.1.1", 8080, tcpEps)
	web.Type = model.NodePort
	web.Ports[0].NodePort = 30080
	mustSync(t, p, snap(service("dns", model.UDP, "127.0.1.1", 5353, udpEps), web))

	var got []string
	for range 6 {
		got = append(got, mustGreet(t, "127.0.1.1:8080"))
	}
	// Round robin starts at a random backend, then cycles exactly.
	if got[0] == got[1] || got[1] == got[2] || got[0] == got[2] || got[3] != got[0] || got[4] != got[1] || got[5] != got[2] {
		t.Fatalf("round robin over the ClusterIP: %v, want a cycle of a, b and c", got)
	}
	if name := mustGreet(t, "127.0.1.2:30080"); name != "a" && name != "b" && name != "c" {
		t.Fatalf("node port answered %q", name)
	}
	if v := testutil.ToFloat64(p.metrics.conns.WithLabelValues("default/web:8080", "127.0.1.1:8080")); v != 6 {
		t.Fatalf("weir_l4_connections_total = %v, want 6", v)
	}

	seen := map[string]bool{}
	for i := range 3 {
		c, err := net.ListenUDP("udp4", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := fmt.Sprintf("q%d", i)
		reply, err := udpAsk(c, "127.0.1.1:5353", msg)
		if err != nil {
			t.Fatal(err)
		}
		name, body, _ := strings.Cut(reply, ":")
		if body != msg {
			t.Fatalf("reply %q to %q", reply, msg)
		}
		seen[name] = true
		// The same client stays on its flow.
		again, err := udpAsk(c, "127.0.1.1:5353", "again")
		if err != nil || again != name+":again" {
			t.Fatalf("second datagram: %q, %v", again, err)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("three UDP clients reached %v", seen)
	}
}

func TestDistribution(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		alg     balance.Algorithm
		weights []uint32
		conns   int
		want    map[string]int
		slack   int
	}{
		{"round robin is exact", balance.RoundRobin, []uint32{1, 1, 1}, 30, map[string]int{"a": 10, "b": 10, "c": 10}, 0},
		{"weighted round robin", balance.WeightedRoundRobin, []uint32{1, 2, 3}, 60, map[string]int{"a": 10, "b": 20, "c": 30}, 1},
		{"least connections spreads sequential connections", balance.LeastConnections, []uint32{1, 1, 1}, 30, map[string]int{"a": 10, "b": 10, "c": 10}, 10},
		{"source hash sticks to one client", balance.SourceHash, []uint32{1, 1, 1}, 12, nil, 0},
		{"maglev sticks to one client", balance.Maglev, []uint32{1, 1, 1}, 12, nil, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var eps []model.Endpoint
			for j, n := range []string{"a", "b", "c"} {
				ep := endpoint(startTCPBackend(t, n).addr)
				ep.Weight = tt.weights[j]
				eps = append(eps, ep)
			}
			ip := fmt.Sprintf("127.0.2.%d", i+1)
			svc := service("web", model.TCP, ip, 80, eps)
			svc.Policy.Algorithm = tt.alg
			p := newProxy(t, Options{})
			mustSync(t, p, snap(svc))
			got := map[string]int{}
			for range tt.conns {
				got[mustGreet(t, ip+":80")]++
			}
			if tt.want == nil { // a hashing scheduler: one client IP, one backend
				if len(got) != 1 {
					t.Fatalf("one client went to %v", got)
				}
				return
			}
			for n, w := range tt.want {
				if d := got[n] - w; d < -tt.slack || d > tt.slack {
					t.Fatalf("got %v, want %v ± %d", got, tt.want, tt.slack)
				}
			}
		})
	}
}

func TestSessionAffinity(t *testing.T) {
	t.Parallel()
	eps := endpoints(startTCPBackend(t, "a").addr, startTCPBackend(t, "b").addr, startTCPBackend(t, "c").addr)
	svc := service("web", model.TCP, "127.0.3.1", 80, eps)
	svc.AffinityTimeout = 300 * time.Millisecond
	p := newProxy(t, Options{})
	mustSync(t, p, snap(svc))

	client1, client2 := netip.MustParseAddr("127.0.3.11"), netip.MustParseAddr("127.0.3.12")
	first, err := greet("127.0.3.1:80", client1)
	if err != nil {
		t.Fatal(err)
	}
	other, err := greet("127.0.3.1:80", client2)
	if err != nil {
		t.Fatal(err)
	}
	if other == first {
		t.Fatalf("round robin sent two new clients to %s", first)
	}
	for range 5 {
		if n, err := greet("127.0.3.1:80", client1); err != nil || n != first {
			t.Fatalf("sticky client moved to %q (%v), want %s", n, err, first)
		}
	}
	// After the timeout without connections, the client is picked afresh: round robin
	// continues with the third backend.
	time.Sleep(400 * time.Millisecond)
	if n, err := greet("127.0.3.1:80", client1); err != nil || n == first || n == other {
		t.Fatalf("after expiry: %q (%v), want the third backend", n, err)
	}

	// A removed endpoint is forgotten: its sticky clients move at once.
	stuck, _ := greet("127.0.3.1:80", client2)
	var keep []model.Endpoint
	for _, ep := range eps {
		if ep.AddrPort() != addrOf(t, eps, stuck) {
			keep = append(keep, ep)
		}
	}
	svc2 := service("web", model.TCP, "127.0.3.1", 80, keep)
	svc2.AffinityTimeout = time.Hour
	mustSync(t, p, snap(svc2))
	if n, err := greet("127.0.3.1:80", client2); err != nil || n == stuck {
		t.Fatalf("client stuck to removed endpoint %s: %q %v", stuck, n, err)
	}
}

// addrOf maps a backend name (a, b, c in eps order) to its address.
func addrOf(t *testing.T, eps []model.Endpoint, name string) netip.AddrPort {
	t.Helper()
	i := int(name[0] - 'a')
	if i < 0 || i >= len(eps) {
		t.Fatalf("backend %q", name)
	}
	return eps[i].AddrPort()
}

func TestSyncUnderTraffic(t *testing.T) {
	t.Parallel()
	var bs []*tcpBackend
	for _, n := range []string{"a", "b", "c", "d"} {
		bs = append(bs, startTCPBackend(t, n))
	}
	eps := func(idx ...int) []model.Endpoint {
		var out []model.Endpoint
		for _, i := range idx {
			out = append(out, endpoint(bs[i].addr))
		}
		return out
	}
	p := newProxy(t, Options{})
	mustSync(t, p, snap(service("web", model.TCP, "127.0.4.1", 80, eps(0))))

	// An established connection to a, which is about to be removed.
	long, err := net.Dial("tcp", "127.0.4.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	lr := bufio.NewReader(long)
	if n, _ := lr.ReadString('\n'); n != "a\n" {
		t.Fatalf("first connection went to %q", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if _, err := greet("127.0.4.1:80", netip.Addr{}); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	steps := [][]int{{0, 1, 2, 3}, {1, 2, 3}, {2, 3}, {1, 2}, {1, 2, 3}, {3}, {0, 1, 2, 3}}
	for _, s := range steps {
		time.Sleep(40 * time.Millisecond)
		mustSync(t, p, snap(service("web", model.TCP, "127.0.4.1", 80, eps(s...))))
	}
	time.Sleep(40 * time.Millisecond)
	cancel()
	wg.Wait()
	if failed.Load() != 0 || ok.Load() < 20 {
		t.Fatalf("%d connections ok, %d failed (first: %v)", ok.Load(), failed.Load(), firstErr.Load())
	}
	// The established connection survived a's removal and return.
	if _, err := io.WriteString(long, "still here\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := lr.ReadString('\n'); err != nil || got != "still here\n" {
		t.Fatalf("established connection after syncs: %q, %v", got, err)
	}
	t.Logf("%d connections during %d syncs, none failed", ok.Load(), len(steps))
}

func TestBackendKilledIsEjected(t *testing.T) {
	t.Parallel()
	a, b, c := startTCPBackend(t, "a"), startTCPBackend(t, "b"), startTCPBackend(t, "c")
	h := newHealth(t)
	svc := service("web", model.TCP, "127.0.5.1", 80, endpoints(a.addr, b.addr, c.addr))
	svc.Policy.Outlier = model.OutlierDetection{ConsecutiveFailures: 3, BaseEjectionTime: time.Minute, MaxEjectionPercent: 50, PanicThresholdPercent: 50}
	p := newProxy(t, Options{Health: h})
	mustSync(t, p, snap(svc))
	for range 3 {
		mustGreet(t, "127.0.5.1:80")
	}
	b.kill()
	killed := time.Now()
	// Every connection succeeds: a refused connect is retried on the next endpoint.
	for i := 0; h.Healthy("default/web:80", b.addr); i++ {
		if _, err := greet("127.0.5.1:80", netip.Addr{}); err != nil {
			t.Fatalf("connection %d after the kill: %v", i, err)
		}
		if time.Since(killed) > time.Second {
			t.Fatal("killed backend not ejected within 1s")
		}
	}
	t.Logf("ejected %v after the kill", time.Since(killed).Round(time.Millisecond))
	errs := p.metrics.connErrors.WithLabelValues("default/web:80", "127.0.5.1:80")
	eventually(t, time.Second, "picker rebuilt without the ejected backend", func() bool {
		before := testutil.ToFloat64(errs)
		for range 6 {
			if _, err := greet("127.0.5.1:80", netip.Addr{}); err != nil {
				t.Fatal(err)
			}
		}
		return testutil.ToFloat64(errs) == before
	})
	for i := range 30 {
		if _, err := greet("127.0.5.1:80", netip.Addr{}); err != nil {
			t.Fatalf("connection %d after the ejection: %v", i, err)
		}
	}
}

func TestNoEndpointsIsRefusedAtOnce(t *testing.T) {
	t.Parallel()
	p := newProxy(t, Options{})
	mustSync(t, p, snap(service("empty", model.TCP, "127.0.6.1", 80, nil)))
	// The best of three, so that one scheduling hiccup on a busy machine does not fail
	// the test; each must be a reset, none may wait for a timeout.
	var took []time.Duration
	for range 3 {
		start := time.Now()
		c, err := net.DialTimeout("tcp", "127.0.6.1:80", time.Second)
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		took = append(took, time.Since(start))
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("got %v, want a reset", err)
		}
	}
	if best := slices.Min(took); best > 100*time.Millisecond {
		t.Fatalf("refusals took %v, want < 100ms", took)
	}
	t.Logf("refused in %v", took)
}

func TestTerminatingFallback(t *testing.T) {
	t.Parallel()
	a := startTCPBackend(t, "a")
	ep := endpoint(a.addr)
	ep.Ready, ep.Serving, ep.Terminating = false, true, true
	// What Translate gives when every endpoint is terminating but still serving.
	svc := service("web", model.TCP, "127.0.7.1", 80, []model.Endpoint{ep})
	p := newProxy(t, Options{Health: newHealth(t)})
	mustSync(t, p, snap(svc))
	if n := mustGreet(t, "127.0.7.1:80"); n != "a" {
		t.Fatalf("got %q", n)
	}
}

// TestTrafficPolicyLocal follows kube-proxy's packet-flow tests of
// externalTrafficPolicy Local: clients elsewhere reach the local endpoints or are
// dropped; the node itself, and pods that --cluster-cidr recognises, are short-circuited
// to every endpoint (model.ProxyConfig.External). Every client here is on loopback, so
// the test tells the node's own address (127.0.8.250) apart with Options.LocalSources.
func TestTrafficPolicyLocal(t *testing.T) {
	t.Parallel()
	local, remote := startTCPBackend(t, "local"), startTCPBackend(t, "remote")
	eps := endpoints(local.addr, remote.addr)
	eps[1].Local = false
	nodeIP, podIP := netip.MustParseAddr("127.0.8.250"), netip.MustParseAddr("127.0.8.241")
	opts := Options{
		LocalSources: func() []netip.Prefix { return []netip.Prefix{netip.PrefixFrom(nodeIP, 32)} },
		Proxy:        model.ProxyConfig{DetectLocal: model.DetectLocal{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.8.240/29")}}},
	}
	tests := []struct {
		name     string
		external model.EndpointSet
		want     string // "" for a drop
	}{
		{"local endpoint only", model.EndpointSet{Verdict: model.Forward, Endpoints: eps[:1]}, "local"},
		{"no local endpoint drops", model.EndpointSet{Verdict: model.Drop}, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			svc := service("web", model.TCP, fmt.Sprintf("127.0.8.%d", 2*i+1), 80, eps)
			ext := netip.MustParseAddr(fmt.Sprintf("127.0.8.%d", 2*i+2))
			svc.ExternalIPs = []netip.Addr{ext}
			svc.ExternalTrafficLocal = true
			svc.Ports[0].External = tt.external
			svc.Policy.ConnectTimeout = 300 * time.Millisecond
			p := newProxy(t, opts)
			mustSync(t, p, snap(svc))
			// The node and pods reach every endpoint through the external IP.
			for _, from := range []netip.Addr{nodeIP, podIP} {
				seen := map[string]bool{}
				for range 6 {
					n, err := greet(ext.String()+":80", from)
					if err != nil {
						t.Fatalf("from %s: %v", from, err)
					}
					seen[n] = true
				}
				if len(seen) != 2 {
					t.Fatalf("external traffic from %s reached %v, want every endpoint", from, seen)
				}
			}
			// ClusterIP traffic is unaffected (Cluster policy).
			seen := map[string]bool{}
			for range 4 {
				seen[mustGreet(t, svc.ClusterIPs[0].String()+":80")] = true
			}
			if len(seen) != 2 {
				t.Fatalf("cluster traffic reached %v", seen)
			}
			extAddr := ext.String() + ":80"
			if tt.want != "" {
				for range 4 {
					if n := mustGreet(t, extAddr); n != tt.want {
						t.Fatalf("external traffic reached %q", n)
					}
				}
				return
			}
			c, err := net.Dial("tcp", extAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ETIMEDOUT) && !isTimeout(err) {
				t.Fatalf("dropped connection got %v, want no answer", err)
			}
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Fatalf("dropped connection not closed after the connect timeout: %v", err)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestUDPEndpointReplaced(t *testing.T) {
	t.Parallel()
	a, b := startUDPBackend(t, "a"), startUDPBackend(t, "b")
	p := newProxy(t, Options{})
	mustSync(t, p, snap(service("dns", model.UDP, "127.0.9.1", 53, endpoints(a.addr))))
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := udpAsk(c, "127.0.9.1:53", "x"); err != nil || r != "a:x" {
		t.Fatalf("before: %q %v", r, err)
	}
	mustSync(t, p, snap(service("dns", model.UDP, "127.0.9.1", 53, endpoints(b.addr))))
	// The very next datagram from the same client port reaches the new endpoint.
	if r, err := udpAsk(c, "127.0.9.1:53", "y"); err != nil || r != "b:y" {
		t.Fatalf("after replacing the endpoint: %q %v", r, err)
	}
}

func TestUDPIdleFlowEnds(t *testing.T) {
	t.Parallel()
	a := startUDPBackend(t, "a")
	svc := service("dns", model.UDP, "127.0.9.2", 53, endpoints(a.addr))
	svc.Policy.UDPIdleTimeout = 100 * time.Millisecond
	p := newProxy(t, Options{})
	mustSync(t, p, snap(svc))
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := udpAsk(c, "127.0.9.2:53", "x"); err != nil {
		t.Fatal(err)
	}
	active := p.metrics.active.WithLabelValues("default/dns:53", "127.0.9.2:53")
	if testutil.ToFloat64(active) != 1 {
		t.Fatal("no active flow")
	}
	eventually(t, 2*time.Second, "idle flow ended", func() bool { return testutil.ToFloat64(active) == 0 })
}

func TestHalfClose(t *testing.T) {
	t.Parallel()
	a := startTCPBackend(t, "a")
	p := newProxy(t, Options{})
	mustSync(t, p, snap(service("web", model.TCP, "127.0.10.1", 80, endpoints(a.addr))))
	c, err := net.Dial("tcp", "127.0.10.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "request body"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c) // the backend answers after our EOF, then closes
	if err != nil || string(got) != "a\nrequest body" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	a := startTCPBackend(t, "a")
	svc := service("web", model.TCP, "127.0.10.2", 80, endpoints(a.addr))
	// Wide margins: on a loaded 2-core machine a 50 ms sleep can overrun by 100 ms.
	svc.Policy.IdleTimeout = 400 * time.Millisecond
	p := newProxy(t, Options{})
	mustSync(t, p, snap(svc))

	// A connection that talks every 50 ms outlives many idle timeouts.
	busy, err := net.Dial("tcp", "127.0.10.2:80")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	br := bufio.NewReader(busy)
	_, _ = br.ReadString('\n')
	for i := range 15 {
		time.Sleep(50 * time.Millisecond)
		fmt.Fprintf(busy, "%d\n", i)
		_ = busy.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatalf("busy connection closed after %d exchanges: %v", i, err)
		}
	}
	// A silent one is closed after one to two idle timeouts.
	start := time.Now()
	_ = busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
		t.Fatalf("idle connection closed after %v", took)
	}
}

func TestShutdownDrains(t *testing.T) {
	t.Parallel()
	a := startTCPBackend(t, "a")
	p := newProxy(t, Options{DrainTimeout: 5 * time.Second})
	mustSync(t, p, snap(service("web", model.TCP, "127.0.11.1", 80, endpoints(a.addr))))
	c, err := net.Dial("tcp", "127.0.11.1:80")
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	_, _ = r.ReadString('\n')

	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	eventually(t, 2*time.Second, "listener closed", func() bool {
		c2, err := net.Dial("tcp", "127.0.11.1:80")
		if err == nil {
			c2.Close()
		}
		return err != nil
	})
	// The established connection still works while draining.
	fmt.Fprintf(c, "draining\n")
	if got, err := r.ReadString('\n'); err != nil || got != "draining\n" {
		t.Fatalf("during drain: %q %v", got, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned with a connection open: %v", err)
	default:
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return after the last connection closed")
	}
}

func TestShutdownDrainTimeout(t *testing.T) {
	t.Parallel()
	a := startTCPBackend(t, "a")
	p := newProxy(t, Options{DrainTimeout: 200 * time.Millisecond})
	mustSync(t, p, snap(service("web", model.TCP, "127.0.11.2", 80, endpoints(a.addr))))
	c, err := net.Dial("tcp", "127.0.11.2:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	_, _ = r.ReadString('\n')
	start := time.Now()
	if err := p.Shutdown(context.Background()); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want a drain timeout", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Shutdown took %v", took)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := r.ReadString('\n'); err == nil || isTimeout(err) {
		t.Fatalf("connection not closed by the drain timeout: %v", err)
	}
}

func TestRemovedListenerKeepsConnections(t *testing.T) {
	t.Parallel()
	a := startTCPBackend(t, "a")
	p := newProxy(t, Options{})
	mustSync(t, p, snap(service("web", model.TCP, "127.0.11.3", 80, endpoints(a.addr))))
	c, err := net.Dial("tcp", "127.0.11.3:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	_, _ = r.ReadString('\n')
	mustSync(t, p, snap())
	if _, err := net.DialTimeout("tcp", "127.0.11.3:80", time.Second); err == nil {
		t.Fatal("removed frontend still accepts")
	}
	fmt.Fprintf(c, "after\n")
	if got, err := r.ReadString('\n'); err != nil || got != "after\n" {
		t.Fatalf("established connection after its listener went: %q %v", got, err)
	}
}

func TestSyncErrors(t *testing.T) {
	t.Parallel()
	a := startTCPBackend(t, "a")
	tests := []struct {
		name    string
		svc     *model.Service
		wantErr string
	}{
		{"address not local", service("far", model.TCP, "192.0.2.10", 80, endpoints(a.addr)),
			"192.0.2.10 is not an address of this host: add it with `ip addr add 192.0.2.10/32 dev lo`"},
		{"sctp is a warning", service("sctp", model.SCTP, "127.0.12.1", 80, endpoints(a.addr)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newProxy(t, Options{})
			ok := service("ok", model.TCP, "127.0.12.2", 80, endpoints(a.addr))
			if tt.name == "sctp is a warning" {
				ok.ClusterIPs[0] = netip.MustParseAddr("127.0.12.3")
			}
			err := p.Sync(context.Background(), snap(ok, tt.svc))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if v := testutil.ToFloat64(p.metrics.unsupported.WithLabelValues("default/sctp:80", "SCTP")); v != 1 {
					t.Fatalf("unsupported metric = %v", v)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
			}
			// The other Service is served regardless.
			mustGreet(t, ok.ClusterIPs[0].String()+":80")
		})
	}
}

func TestHealthCheckedEndpointLeavesRotation(t *testing.T) {
	t.Parallel()
	a, b := startTCPBackend(t, "a"), startTCPBackend(t, "b")
	h := newHealth(t)
	svc := service("web", model.TCP, "127.0.13.1", 80, endpoints(a.addr, b.addr))
	svc.Policy.HealthCheck = &model.ActiveHealthCheck{Interval: 20 * time.Millisecond, Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1}
	svc.Policy.Outlier.PanicThresholdPercent = 1
	p := newProxy(t, Options{Health: h})
	mustSync(t, p, snap(svc))
	_ = b.ln.Close() // b stops accepting: its active check fails
	eventually(t, 3*time.Second, "b unhealthy", func() bool { return !h.Healthy("default/web:80", b.addr) })
	eventually(t, time.Second, "only a in rotation", func() bool {
		for range 4 {
			if mustGreet(t, "127.0.13.1:80") != "a" {
				return false
			}
		}
		return true
	})
}

// TestShutdownClosesIdleFirst: an idle connection does not hold the drain. It is
// closed once idle for drainIdle, while a busy one is served to its end, and Shutdown
// returns when that one ends, long before the drain timeout; the drain logs progress.
func TestShutdownClosesIdleFirst(t *testing.T) {
	t.Parallel()
	a := startTCPBackend(t, "a")
	var logs lockedBuffer
	p := newProxy(t, Options{DrainTimeout: 30 * time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	mustSync(t, p, snap(service("web", model.TCP, "127.0.11.9", 80, endpoints(a.addr))))
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", "127.0.11.9:80")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		r := bufio.NewReader(c)
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		return c, r
	}
	idleConn, idleR := dial()
	busy, busyR := dial()

	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	// The busy connection talks every 100 ms for 3 s (beyond drainIdle), then ends.
	for time.Since(start) < 3*time.Second {
		fmt.Fprintf(busy, "busy\n")
		_ = busy.SetReadDeadline(time.Now().Add(2 * time.Second))
		if got, err := busyR.ReadString('\n'); err != nil || got != "busy\n" {
			t.Fatalf("busy connection during the drain, after %v: %q %v", time.Since(start), got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = idleConn.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := idleR.ReadString('\n'); err == nil || isTimeout(err) {
		t.Fatalf("the idle connection is still open after %v: %v", time.Since(start), err)
	}
	busy.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return after the busy connection ended")
	}
	took := time.Since(start)
	for _, want := range []string{"draining: closing idle connections", "draining: closed idle connections", "msg=draining dataplane=userspace open="} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %q in the log:\n%s", want, logs.String())
		}
	}
	t.Logf("drain with one idle and one busy connection took %v (timeout 30 s)", took.Round(10*time.Millisecond))
}
