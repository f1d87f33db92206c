package userspace

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

// backendAddr is where test backends listen: not 127.0.0.1, whose ephemeral ports a
// concurrent load test on the machine can exhaust (bind 127.0.0.1:0 then fails with
// EADDRINUSE while its TIME_WAIT sockets last).
const backendAddr = "127.0.99.1:0"

// tcpBackend is a loopback TCP server that greets every connection with "name\n",
// then echoes what it reads and half-closes after the client does.
type tcpBackend struct {
	name string
	ln   net.Listener
	addr netip.AddrPort
	wg   sync.WaitGroup
	mu   sync.Mutex
	cs   map[net.Conn]struct{}
}

func startTCPBackend(t testing.TB, name string) *tcpBackend {
	t.Helper()
	ln, err := net.Listen("tcp4", backendAddr)
	if err != nil {
		t.Fatal(err)
	}
	b := &tcpBackend{name: name, ln: ln, addr: ln.Addr().(*net.TCPAddr).AddrPort(), cs: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.cs[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				if _, err := io.WriteString(c, name+"\n"); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
				b.mu.Lock()
				delete(b.cs, c)
				b.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(b.kill)
	return b
}

// kill stops listening and closes every connection: the backend is gone.
func (b *tcpBackend) kill() {
	_ = b.ln.Close()
	b.mu.Lock()
	for c := range b.cs {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// udpBackend answers every datagram with "name:" and the datagram.
type udpBackend struct {
	name string
	pc   net.PacketConn
	addr netip.AddrPort
}

func startUDPBackend(t *testing.T, name string) *udpBackend {
	t.Helper()
	pc, err := net.ListenPacket("udp4", backendAddr)
	if err != nil {
		t.Fatal(err)
	}
	b := &udpBackend{name: name, pc: pc, addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { _ = pc.Close(); <-done })
	return b
}

func endpoint(ap netip.AddrPort) model.Endpoint {
	return model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1, Local: true}
}

func endpoints(aps ...netip.AddrPort) []model.Endpoint {
	out := make([]model.Endpoint, 0, len(aps))
	for _, ap := range aps {
		out = append(out, endpoint(ap))
	}
	return out
}

// service is a one-port Service "default/<name>" on clusterIP:port whose cluster and
// external sets both forward to eps (Reject when eps is empty).
func service(name string, proto model.Protocol, clusterIP string, port int32, eps []model.Endpoint) *model.Service {
	set := model.EndpointSet{Verdict: model.Forward, Endpoints: eps}
	if len(eps) == 0 {
		set = model.EndpointSet{Verdict: model.Reject}
	}
	return &model.Service{
		Key:        model.ServiceKey{Namespace: "default", Name: name},
		Type:       model.ClusterIP,
		ClusterIPs: []netip.Addr{netip.MustParseAddr(clusterIP)},
		Policy:     &model.Policy{Algorithm: balance.RoundRobin},
		Ports: []*model.ServicePort{{
			Protocol: proto, Port: port, Endpoints: eps, Cluster: set, External: set, ShortCircuit: set,
		}},
	}
}

func snap(svcs ...*model.Service) *model.Snapshot { return &model.Snapshot{Services: svcs} }

type testProxy struct {
	*Proxy
	reg    *prometheus.Registry
	health *health.Overlay
}

func newProxy(t testing.TB, opts Options) *testProxy {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return &testProxy{Proxy: p, reg: reg, health: opts.Health}
}

func newHealth(t *testing.T) *health.Overlay {
	t.Helper()
	h, err := health.New(health.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func mustSync(t *testing.T, p *testProxy, s *model.Snapshot) {
	t.Helper()
	if err := p.Sync(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// greet connects to addr (from local, when valid), reads the backend's name, checks the
// echo of a short message and closes.
func greet(addr string, local netip.Addr) (string, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	if local.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return "", err
	}
	echo, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if echo != "ping\n" {
		return "", errors.New("bad echo " + echo)
	}
	return strings.TrimSuffix(name, "\n"), nil
}

func mustGreet(t *testing.T, addr string) string {
	t.Helper()
	name, err := greet(addr, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// udpAsk sends msg from c to addr and returns the reply.
func udpAsk(c *net.UDPConn, addr string, msg string) (string, error) {
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return "", err
	}
	if _, err := c.WriteTo([]byte(msg), to); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
