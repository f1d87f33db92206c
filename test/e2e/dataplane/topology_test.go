// Package dataplane_test runs weir's kernel data planes in real network namespaces: a
// client namespace, a node namespace where weir programs the kernel, and backend
// namespaces running echo servers that say which backend answered.
//
//	client 10.100.0.2 ──veth── 10.100.0.1 node 10.244.i.1 ──veth── 10.244.i.2 backend i
//	       fd00:100::2           fd00:100::1   fd00:244:i::1         fd00:244:i::2
//
// Service IPs live in 10.96.0.0/16, routed by the node towards an absent neighbour, so
// traffic that weir does not DNAT reaches its filter chains and then vanishes.
package dataplane_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/echo"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/netnstest"
)

const (
	clientIP  = "10.100.0.2"
	nodeIP    = "10.100.0.1"
	clientIP6 = "fd00:100::2"
	nodeIP6   = "fd00:100::1"
)

// mode is a kernel data plane under test, living in the node namespace.
type mode interface {
	Sync(ctx context.Context, snap *model.Snapshot) error
	Cleanup(ctx context.Context) error
	Close()
}

type topology struct {
	t        *testing.T
	h        *netnstest.Harness
	client   *netnstest.NS
	node     *netnstest.NS
	backends []*netnstest.NS
	dp       mode
}

func backendIP(i int) string { return fmt.Sprintf("10.244.%d.2", i+1) }

func backendIP6(i int) string { return fmt.Sprintf("fd00:244:%d::2", i+1) }

// newTopology builds the namespaces and starts n backends: TCP echo on 8080 greeting
// with "b<i>", UDP echo on 5353.
func newTopology(t *testing.T, n int) *topology {
	h := netnstest.New(t)
	tp := &topology{t: t, h: h, client: h.NS("client"), node: h.NS("node")}
	h.Veth(tp.client, "eth0", []string{clientIP + "/24", clientIP6 + "/64"}, tp.node, "eth-client", []string{nodeIP + "/24", nodeIP6 + "/64"})
	tp.client.MustRun("ip", "route", "add", "default", "via", nodeIP)
	tp.client.MustRun("ip", "-6", "route", "add", "default", "via", nodeIP6)
	tp.node.MustRun("sysctl", "-qw", "net.ipv4.ip_forward=1")
	tp.node.MustRun("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	tp.node.MustRun("ip", "-6", "route", "add", "fd00:96::/64", "via", "fd00:100::254", "dev", "eth-client")
	// Service IPs route to an absent neighbour: what weir does not DNAT, reject or drop
	// goes nowhere.
	tp.node.MustRun("ip", "route", "add", "10.96.0.0/16", "via", "10.100.0.254", "dev", "eth-client")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := 0; i < n; i++ {
		b := h.NS(fmt.Sprintf("b%d", i))
		h.Veth(tp.node, fmt.Sprintf("eth-b%d", i), []string{fmt.Sprintf("10.244.%d.1/24", i+1), fmt.Sprintf("fd00:244:%d::1/64", i+1)},
			b, "eth0", []string{backendIP(i) + "/24", backendIP6(i) + "/64"})
		b.MustRun("ip", "route", "add", "default", "via", fmt.Sprintf("10.244.%d.1", i+1))
		b.MustRun("ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd00:244:%d::1", i+1))
		name := fmt.Sprintf("b%d", i)
		var ln net.Listener
		var pc net.PacketConn
		if err := b.Do(func() error {
			var err error
			if ln, err = net.Listen("tcp", ":8080"); err != nil {
				return err
			}
			pc, err = net.ListenPacket("udp", ":5353")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go func() { defer wg.Done(); _ = echo.ServeTCP(ctx, ln, name, true) }()
		go func() { defer wg.Done(); _ = echo.ServeUDP(ctx, pc, name) }()
		tp.backends = append(tp.backends, b)
	}
	return tp
}

// start runs newMode inside the node namespace.
func (tp *topology) start(newMode func() (mode, error)) {
	tp.t.Helper()
	if err := tp.node.Do(func() error {
		var err error
		tp.dp, err = newMode()
		return err
	}); err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() {
		_ = tp.node.Do(func() error { tp.dp.Close(); return nil })
	})
}

func (tp *topology) sync(svcs ...*model.Service) {
	tp.t.Helper()
	if err := tp.node.Do(func() error {
		return tp.dp.Sync(context.Background(), &model.Snapshot{Services: svcs})
	}); err != nil {
		tp.t.Fatal(err)
	}
}

// ask connects from the client to addr and returns the greeting backend's name.
func (tp *topology) ask(addr string, timeout time.Duration) (string, error) {
	var name string
	err := tp.client.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("read greeting: %w", err)
		}
		name = strings.TrimSpace(line)
		return nil
	})
	return name, err
}

// udpClient is one client UDP socket with a fixed source port.
type udpClient struct {
	c net.Conn
}

func (tp *topology) udpClient(addr string) *udpClient {
	tp.t.Helper()
	var c net.Conn
	if err := tp.client.Do(func() error {
		var err error
		c, err = net.Dial("udp", addr)
		return err
	}); err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() { c.Close() })
	return &udpClient{c: c}
}

// ask sends one datagram and returns the answering backend, or "" on timeout.
func (u *udpClient) ask(msg string) (string, error) {
	if _, err := u.c.Write([]byte(msg)); err != nil {
		return "", err
	}
	_ = u.c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 512)
	n, err := u.c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	name, _, _ := strings.Cut(string(buf[:n]), " ")
	return name, nil
}

// Service builders.

func endpoint(i int, port int32, local bool) model.Endpoint {
	e := model.Endpoint{Addr: netip.MustParseAddr(backendIP(i)), Port: port, Ready: true, Serving: true, NodeName: "other", Weight: 1}
	if local {
		e.Local, e.NodeName = true, "node"
	}
	return e
}

func endpoint6(i int, port int32) model.Endpoint {
	return model.Endpoint{Addr: netip.MustParseAddr(backendIP6(i)), Port: port, Ready: true, Serving: true, NodeName: "other", Weight: 1}
}

func service(name, clusterIPs string, proto model.Protocol, port int32, eps ...model.Endpoint) *model.Service {
	var ips []netip.Addr
	for _, ip := range strings.Split(clusterIPs, ",") {
		ips = append(ips, netip.MustParseAddr(ip))
	}
	return &model.Service{
		Key:        model.ServiceKey{Namespace: "e2e", Name: name},
		Type:       model.ClusterIP,
		ClusterIPs: ips,
		Policy:     &model.Policy{},
		Ports: []*model.ServicePort{{
			Protocol: proto, Port: port, Endpoints: eps,
			Cluster: flowtest.Forward(eps...), External: flowtest.Forward(eps...), ShortCircuit: flowtest.Forward(eps...),
		}},
	}
}
