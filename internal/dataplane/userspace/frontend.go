package userspace

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/model"
)

// frontendKey is what a listener is bound to.
type frontendKey struct {
	proto model.Protocol
	addr  netip.AddrPort
}

func (k frontendKey) String() string { return k.addr.String() + "/" + string(k.proto) }

// frontendSpec says which service port and endpoint set a frontend serves.
type frontendSpec struct {
	key         frontendKey
	servicePort string
	set         int            // setCluster or setExternal
	sourceRange []netip.Prefix // LoadBalancer IP frontends only, of the frontend's family
}

// allowed reports whether a client may use the frontend (LoadBalancer source ranges).
func (s *frontendSpec) allowed(client netip.Addr) bool {
	if len(s.sourceRange) == 0 {
		return true
	}
	client = client.Unmap()
	for _, p := range s.sourceRange {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

// frontendsOf lists the frontends of one service port: each ClusterIP (cluster set),
// each external and LoadBalancer IP, and the node port on nodeAddrs (external set).
func frontendsOf(svc *model.Service, sp *model.ServicePort, id string, nodeAddrs []netip.Addr) []frontendSpec {
	var out []frontendSpec
	add := func(a netip.Addr, port int32, set int, ranges []netip.Prefix) {
		out = append(out, frontendSpec{
			key:         frontendKey{proto: sp.Protocol, addr: netip.AddrPortFrom(a, uint16(port))},
			servicePort: id, set: set, sourceRange: ranges,
		})
	}
	for _, a := range svc.ClusterIPs {
		add(a, sp.Port, setCluster, nil)
	}
	for _, a := range svc.ExternalIPs {
		add(a, sp.Port, setExternal, nil)
	}
	for _, a := range svc.LoadBalancerIPs {
		add(a, sp.Port, setExternal, svc.SourceRanges(a.Is6()))
	}
	if sp.NodePort != 0 {
		for _, a := range nodeAddrs {
			add(a, sp.NodePort, setExternal, nil)
		}
	}
	return out
}

// nodePortAddrs are the addresses node ports listen on, family by family
// (model.ProxyConfig.NodePorts): the family's unspecified address when no prefix of it
// is configured, else its local addresses inside the prefixes (a prefix that is a
// single address counts as that address, so 127.0.0.5/32 works without setup). local
// are the node's addresses.
func (p *Proxy) nodePortAddrs(local []netip.Addr) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, ipv6 := range []bool{false, true} {
		np := p.opts.Proxy.NodePorts(ipv6)
		if np.All {
			if ipv6 {
				out = append(out, netip.IPv6Unspecified())
			} else {
				out = append(out, netip.IPv4Unspecified())
			}
			continue
		}
		for _, pfx := range np.Prefixes {
			if pfx.IsSingleIP() && !seen[pfx.Addr()] {
				seen[pfx.Addr()] = true
				out = append(out, pfx.Addr())
				continue
			}
			for _, a := range local {
				if pfx.Contains(a) && !seen[a] && !a.IsLinkLocalUnicast() {
					seen[a] = true
					out = append(out, a)
				}
			}
		}
	}
	return out
}

// localAddrs lists the node's addresses.
func localAddrs() ([]netip.Addr, error) {
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("userspace: list local addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(ifAddrs))
	for _, ia := range ifAddrs {
		if ipn, ok := ia.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return out, nil
}

// localSources are the prefixes whose addresses are the node's own (kube-proxy's `fib
// saddr type local`): each interface address, and the whole IPv4 loopback range, which
// Linux routes to lo.
func localSources(addrs []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		if a.Is4() && a.IsLoopback() {
			out = append(out, netip.PrefixFrom(a, 8).Masked())
			continue
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// sourceOf classifies a client as kube-proxy's rules do (model.Source): a pod in the
// family's --cluster-cidr, an address of this node, or elsewhere. Interface-based pod
// detection cannot be done here: a userspace socket does not see the interface a
// connection came in on without extra work per packet.
func (p *Proxy) sourceOf(client netip.Addr) model.Source {
	client = client.Unmap()
	if pods := p.pods[btoi(client.Is6())]; pods.CIDR.IsValid() && pods.CIDR.Contains(client) {
		return model.FromPod
	}
	if local := p.local.Load(); local != nil {
		for _, pfx := range *local {
			if pfx.Contains(client) {
				return model.FromNode
			}
		}
	}
	return model.FromElsewhere
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// listener serves one frontend.
type listener struct {
	p     *Proxy
	key   frontendKey
	label string
	state atomic.Pointer[listenerState]

	fd        int // TCP listening socket, served by the Proxy's event loops; -1 for UDP
	udp       *net.UDPConn
	accepting atomic.Bool
}

// listenerState is what a listener forwards to; replaced atomically.
type listenerState struct {
	spec frontendSpec
	// targets are where new connections go, by model.Source of the client: all the
	// same but for external frontends of externalTrafficPolicy Local Services.
	targets routes
	metrics *frontendMetrics
}

// routes are a frontend's targets by model.Source.
type routes [3]*target

// target is where a connection from client goes.
func (l *listener) target(st *listenerState, client netip.Addr) *target {
	ts := &st.targets
	if ts[model.FromNode] == ts[model.FromElsewhere] && ts[model.FromPod] == ts[model.FromElsewhere] {
		return ts[model.FromElsewhere]
	}
	return ts[l.p.sourceOf(client)]
}

// has reports whether addr is a backend of one of the targets.
func (st *listenerState) has(addr netip.AddrPort) bool {
	for _, t := range st.targets {
		if t.has(addr) {
			return true
		}
	}
	return false
}

func (l *listener) spec() frontendSpec { return l.state.Load().spec }

// retarget points the listener at new targets. p.mu is held.
func (l *listener) retarget(spec frontendSpec, ts routes) {
	old := l.state.Load()
	if old.targets == ts && old.spec.servicePort == spec.servicePort && old.spec.set == spec.set &&
		slices.Equal(old.spec.sourceRange, spec.sourceRange) {
		return
	}
	m := old.metrics
	if old.spec.servicePort != spec.servicePort {
		l.p.metrics.forget(old.spec.servicePort, l.label)
		m = l.p.metrics.frontend(spec.servicePort, l.label)
	}
	st := &listenerState{spec: spec, targets: ts, metrics: m}
	l.state.Store(st)
	if l.udp != nil {
		l.pruneFlows(st)
	}
}

// listen binds a frontend and starts serving it. p.mu is held.
func (p *Proxy) listen(spec frontendSpec, ts routes) (*listener, error) {
	l := &listener{p: p, key: spec.key, label: spec.key.addr.String(), fd: -1}
	l.state.Store(&listenerState{spec: spec, targets: ts, metrics: p.metrics.frontend(spec.servicePort, l.label)})
	network := "tcp"
	if spec.key.proto == model.UDP {
		network = "udp"
	}
	a := spec.key.addr.Addr()
	if a.Is4() {
		network += "4"
	} else {
		network += "6"
	}
	var err error
	switch spec.key.proto {
	case model.TCP:
		l.fd, err = listenTCP(network, spec.key.addr)
	case model.UDP:
		l.udp, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(spec.key.addr))
	default:
		return nil, fmt.Errorf("userspace: %s: protocol %s is not supported in userspace mode", spec.key, spec.key.proto)
	}
	if err != nil {
		return nil, listenError(spec, err)
	}
	l.accepting.Store(true)
	if l.udp != nil {
		p.wg.Go(l.serveUDP)
		return l, nil
	}
	for _, lp := range p.loops {
		lp.do(func() { l.addTo(lp) })
	}
	return l, nil
}

// listenError explains the usual reasons a frontend cannot be bound.
func listenError(spec frontendSpec, err error) error {
	a := spec.key.addr.Addr()
	bits := 32
	if a.Is6() {
		bits = 128
	}
	switch {
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		hint := "or use a 127.0.0.0/8 address, which Linux routes to lo"
		if a.Is6() {
			hint = "(IPv6 has no loopback range beyond ::1)"
		}
		return fmt.Errorf("userspace: %s for %s: %s is not an address of this host: add it with `ip addr add %s/%d dev lo` %s: %w",
			spec.key, spec.servicePort, a, a, bits, hint, err)
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("userspace: %s for %s: the port is already in use by another socket on this host (see `ss -lntup`): %w",
			spec.key, spec.servicePort, err)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("userspace: %s for %s: ports below 1024 need root or CAP_NET_BIND_SERVICE: %w",
			spec.key, spec.servicePort, err)
	case errors.Is(err, syscall.EAFNOSUPPORT):
		return fmt.Errorf("userspace: %s for %s: this host has no IPv6: %w", spec.key, spec.servicePort, err)
	}
	return fmt.Errorf("userspace: listen on %s for %s: %w", spec.key, spec.servicePort, err)
}

// stopAccepting closes the TCP listening socket once no event loop waits on it any
// more (established connections go on), or stops UDP from starting new flows.
func (l *listener) stopAccepting() {
	if !l.accepting.Swap(false) || l.fd < 0 {
		return
	}
	var wg sync.WaitGroup
	for _, lp := range l.p.loops {
		wg.Add(1)
		if !lp.do(func() { l.removeFrom(lp); wg.Done() }) {
			wg.Done()
		}
	}
	wg.Wait()
	_ = unix.Close(l.fd)
}

// closeUDP closes the UDP socket and every flow.
func (l *listener) closeUDP() {
	if l.udp == nil {
		return
	}
	l.accepting.Store(false)
	_ = l.udp.Close()
	for _, f := range l.p.flows.of(l, func(*flow) bool { return true }) {
		l.endFlow(f)
	}
}
