package userspace

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/eventloop"
	"weir.dev/weir/internal/model"
)

// TestBulkTransfer sends 8 MiB through the proxy to an echo backend while reading the
// echo back: both directions switch to splice, the destination's back-pressure holds
// the source, the client's half-close reaches the backend, and the byte counters
// match what was sent.
func TestBulkTransfer(t *testing.T) {
	t.Parallel()
	a := startTCPBackend(t, "a")
	p := newProxy(t, Options{})
	mustSync(t, p, snap(service("bulk", model.TCP, "127.0.14.1", 80, endpoints(a.addr))))
	c, err := net.Dial("tcp", "127.0.14.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	data := make([]byte, 8<<20)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
	rng := rand.New(rand.NewPCG(1, 2))
	werr := make(chan error, 1)
	go func() {
		// Uneven writes, so that both small and large reads happen.
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(300<<10))
			if _, err := c.Write(rest[:n]); err != nil {
				werr <- err
				return
			}
			rest = rest[n:]
		}
		werr <- c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	want := append([]byte("a\n"), data...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d (equal prefix %d)", len(got), len(want), commonPrefix(got, want))
	}
	rx := p.metrics.bytes.WithLabelValues("default/bulk:80", "127.0.14.1:80", "rx")
	tx := p.metrics.bytes.WithLabelValues("default/bulk:80", "127.0.14.1:80", "tx")
	eventually(t, 2*time.Second, "byte counters", func() bool {
		return testutil.ToFloat64(rx) == float64(len(data)) && testutil.ToFloat64(tx) == float64(len(want))
	})
	active := p.metrics.active.WithLabelValues("default/bulk:80", "127.0.14.1:80")
	if v := testutil.ToFloat64(active); v != 0 {
		t.Fatalf("weir_l4_connections_active = %v after the close", v)
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// stuckBackend is a listening socket whose accept queue is full: the kernel drops
// further SYNs, so a connect to it hangs until the connector gives up.
func stuckBackend(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 99, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	sa4 := sa.(*unix.SockaddrInet4)
	ap := netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(sa4.Port))
	// One connection fills a queue of backlog 0.
	c, err := net.DialTimeout("tcp", ap.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return ap
}

// TestConnectTimeoutRetries: a connect that gets no answer is abandoned after the
// connect timeout and retried on the next endpoint; the client sees a working
// connection, a little later.
func TestConnectTimeoutRetries(t *testing.T) {
	t.Parallel()
	stuck, good := stuckBackend(t), startTCPBackend(t, "good")
	svc := service("slow", model.TCP, "127.0.14.2", 80, endpoints(stuck, good.addr))
	svc.Policy.ConnectTimeout = 200 * time.Millisecond
	p := newProxy(t, Options{})
	mustSync(t, p, snap(svc))
	var slow int
	for i := range 4 { // round robin: at least one starts with the stuck endpoint
		start := time.Now()
		name, err := greet("127.0.14.2:80", netip.Addr{})
		if err != nil || name != "good" {
			t.Fatalf("connection %d: %q, %v", i, name, err)
		}
		if time.Since(start) >= 200*time.Millisecond {
			slow++
		}
	}
	if slow == 0 {
		t.Fatal("no connection waited for the connect timeout")
	}
	errs := p.metrics.connErrors.WithLabelValues("default/slow:80", "127.0.14.2:80")
	// Each timed-out connect is one error, and made its connection slow (a connection
	// can also be slow on a busy machine without one).
	if v := testutil.ToFloat64(errs); v < 1 || v > float64(slow) {
		t.Fatalf("weir_l4_connect_errors_total = %v, want 1..%d", v, slow)
	}
}

// TestAllEndpointsDownResets: when every endpoint tried refuses, the client's
// connection is reset, not held.
func TestAllEndpointsDownResets(t *testing.T) {
	t.Parallel()
	a, b := startTCPBackend(t, "a"), startTCPBackend(t, "b")
	a.kill()
	b.kill()
	p := newProxy(t, Options{})
	mustSync(t, p, snap(service("down", model.TCP, "127.0.14.3", 80, endpoints(a.addr, b.addr))))
	c, err := net.DialTimeout("tcp", "127.0.14.3:80", time.Second)
	if err == nil { // else the reset came before the dialer saw its connect succeed
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, unix.ECONNRESET) {
		t.Fatalf("got %v, want a reset", err)
	}
	m := p.metrics
	if v := testutil.ToFloat64(m.connErrors.WithLabelValues("default/down:80", "127.0.14.3:80")); v != 2 {
		t.Fatalf("connect errors = %v, want 2", v)
	}
	if v := testutil.ToFloat64(m.refused.WithLabelValues("default/down:80", "127.0.14.3:80", "exhausted")); v != 1 {
		t.Fatalf("refused{exhausted} = %v, want 1", v)
	}
}

// TestIPv6 proxies from an IPv6 frontend to an IPv6 endpoint.
func TestIPv6(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "v6\n")
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	be := ln.Addr().(*net.TCPAddr).AddrPort()
	p := newProxy(t, Options{})
	mustSync(t, p, snap(service("v6", model.TCP, "::1", 18086, endpoints(be))))
	if name := mustGreet(t, "[::1]:18086"); name != "v6" {
		t.Fatalf("got %q", name)
	}
}

// TestLoadBalancerSourceRanges: a client inside loadBalancerSourceRanges is proxied;
// one outside is held without an answer and reset at the connect timeout.
func TestLoadBalancerSourceRanges(t *testing.T) {
	t.Parallel()
	a := startTCPBackend(t, "a")
	svc := service("lb", model.TCP, "127.0.14.4", 80, endpoints(a.addr))
	svc.Type = model.LoadBalancer
	svc.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("127.0.14.5")}
	svc.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("127.0.77.0/24")}
	svc.Policy.ConnectTimeout = 300 * time.Millisecond
	p := newProxy(t, Options{})
	mustSync(t, p, snap(svc))
	if name, err := greet("127.0.14.5:80", netip.MustParseAddr("127.0.77.1")); err != nil || name != "a" {
		t.Fatalf("client inside the source ranges: %q, %v", name, err)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 78, 1)}}
	c, err := d.Dial("tcp", "127.0.14.5:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("client outside the source ranges got %v, want no answer", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, unix.ECONNRESET) {
		t.Fatalf("held connection ended with %v, want a reset", err)
	}
	if v := testutil.ToFloat64(p.metrics.refused.WithLabelValues("default/lb:80", "127.0.14.5:80", "source-range")); v != 1 {
		t.Fatalf("refused{source-range} = %v, want 1", v)
	}
}

// TestSourceRangesPerFamily: loadBalancerSourceRanges of one family leave the other
// family's LoadBalancer IPs open to everyone (kube-proxy's proxiers are per family).
func TestSourceRangesPerFamily(t *testing.T) {
	t.Parallel()
	a := startTCPBackend(t, "a")
	for i, tc := range []struct {
		name   string
		ranges string
		client netip.Addr
		lbIP   string
	}{
		{"IPv4 ranges leave IPv6 open", "127.0.77.0/24", netip.IPv6Loopback(), "[::1]:18087"},
		{"IPv6 ranges leave IPv4 open", "2001:db8::/32", netip.MustParseAddr("127.0.78.1"), "127.0.14.8:18088"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := service("lb", model.TCP, fmt.Sprintf("127.0.14.%d", 9+i), int32(18087+i), endpoints(a.addr))
			svc.Type = model.LoadBalancer
			svc.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("127.0.14.8"), netip.IPv6Loopback()}
			svc.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix(tc.ranges)}
			p := newProxy(t, Options{})
			mustSync(t, p, snap(svc))
			if name, err := greet(tc.lbIP, tc.client); err != nil || name != "a" {
				t.Fatalf("client %s: %q, %v", tc.client, name, err)
			}
		})
	}
}

// TestNodePortAddrsPerFamily follows kube-proxy's NewNodePortAddresses: a family with no
// prefix in --nodeport-addresses serves node ports on all its addresses.
func TestNodePortAddrsPerFamily(t *testing.T) {
	local := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("10.0.0.2"),
		netip.MustParseAddr("::1"), netip.MustParseAddr("fd00::2"), netip.MustParseAddr("fe80::1")}
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		in   []netip.Prefix
		want string
	}{
		{"unset", nil, "[0.0.0.0 ::]"},
		{"IPv4 only", pfx("192.168.0.0/24"), "[192.168.0.2 ::]"},
		{"IPv6 only", pfx("fd00::/64"), "[0.0.0.0 fd00::2]"},
		{"both", pfx("10.0.0.0/8", "fd00::/8", "fe80::/10"), "[10.0.0.2 fd00::2]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Proxy{opts: Options{Proxy: model.ProxyConfig{NodePortAddresses: tc.in}}}
			if got := fmt.Sprint(p.nodePortAddrs(local)); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestNoDelay: both proxied sockets have TCP_NODELAY (the accepted one inherits it
// from the listener), so small writes are not held back by Nagle's algorithm.
func TestNoDelay(t *testing.T) {
	t.Parallel()
	fd, err := listenTCP("tcp4", netip.MustParseAddrPort("127.0.14.6:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	c, err := net.Dial("tcp", "127.0.14.6:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nfd, _, err := eventloop.Accept(fd)
	for errors.Is(err, unix.EAGAIN) {
		time.Sleep(time.Millisecond)
		nfd, _, err = eventloop.Accept(fd)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nfd)
	if v, err := unix.GetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
		t.Fatalf("accepted socket TCP_NODELAY = %d, %v", v, err)
	}
	a := startTCPBackend(t, "a")
	up, err := eventloop.Dial(a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(up)
	if v, err := unix.GetsockoptInt(up, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
		t.Fatalf("upstream socket TCP_NODELAY = %d, %v", v, err)
	}
}

// TestConcurrentTransfers runs 32 clients for a second, each connection echoing a
// random 0–200 KiB through the proxy to one of two backends (small ones stay in the
// copy path, large ones splice), and checks every byte and that every connection is
// accounted closed: many descriptors opened and closed concurrently on both loops.
func TestConcurrentTransfers(t *testing.T) {
	t.Parallel()
	a, b := startTCPBackend(t, "a"), startTCPBackend(t, "b")
	p := newProxy(t, Options{})
	mustSync(t, p, snap(service("mixed", model.TCP, "127.0.14.7", 80, endpoints(a.addr, b.addr))))
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	var conns atomic.Int64
	for w := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for time.Now().Before(deadline) {
				if err := echoThrough("127.0.14.7:80", rng.IntN(200<<10)); err != nil {
					t.Error(err)
					return
				}
				conns.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("%d connections", conns.Load())
	eventually(t, 2*time.Second, "every connection closed", func() bool { return p.open.Load() == 0 })
}

// echoThrough sends size bytes to an echo backend through addr, half-closes and
// checks that exactly those bytes come back after the backend's greeting.
func echoThrough(addr string, size int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(br)
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err != nil || !bytes.Equal(got, data) {
		return fmt.Errorf("%d bytes sent, %d back (equal prefix %d): %v", size, len(got), commonPrefix(got, data), err)
	}
	return nil
}

// TestAcceptRetryAfterEMFILE: a loop whose accept fails for lack of descriptors takes
// the listener out, retries on a timer, and serves the waiting connection once
// descriptors are free again. The proxy runs in a child process (the descriptor limit
// is process-wide); the backend stays in this one, where its accept cannot fail.
func TestAcceptRetryAfterEMFILE(t *testing.T) {
	backend := os.Getenv("WEIR_TEST_EMFILE_BACKEND")
	if backend == "" {
		// Not parallel: while the child is between fork and exec it holds a copy of
		// every descriptor, so a listener another test closes meanwhile would still
		// accept (TestRemovedListenerKeepsConnections saw that once). Sequential tests
		// run while the parallel ones wait.
		a := startTCPBackend(t, "a")
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestAcceptRetryAfterEMFILE$", "-test.v")
		cmd.Env = append(os.Environ(), "WEIR_TEST_EMFILE_BACKEND="+a.addr.String())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	var logs lockedBuffer
	p := newProxy(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	mustSync(t, p, snap(service("emfile", model.TCP, "127.0.14.8", 80, endpoints(netip.MustParseAddrPort(backend)))))

	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = 256
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim) }()
	var hogs []int
	defer func() {
		for _, fd := range hogs {
			_ = unix.Close(fd)
		}
	}()
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EMFILE) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, fd)
	}
	// One descriptor for the client; none for the proxy's accept.
	_ = unix.Close(hogs[len(hogs)-1])
	hogs = hogs[:len(hogs)-1]
	type result struct {
		name string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		name, err := greet("127.0.14.8:80", netip.Addr{})
		done <- result{name, err}
	}()
	eventually(t, 5*time.Second, "accept failing with EMFILE logged", func() bool {
		return strings.Contains(logs.String(), "too many open files")
	})
	// The limit first, so that the retried accept and the dial to the backend cannot
	// fail again while the hogs are closed one by one.
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	for _, fd := range hogs {
		_ = unix.Close(fd)
	}
	hogs = nil
	select {
	case r := <-done:
		if r.err != nil || r.name != "a" {
			t.Fatalf("greet after the retry = %q, %v; proxy log:\n%s", r.name, r.err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection not served after descriptors were freed")
	}
}

// lockedBuffer is a log destination that loops and the test share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
