// Package flowtest is what the tests of the kernel data planes (iptables, nftables)
// share: Services built by hand (model.Translate is tested on its own), the packets and
// outcomes their rule tracers speak of, the packet-flow scenarios both must pass, and a
// Recorder of what a data plane reports besides its rules. Each data plane keeps its
// own tracer: only the world it traces through and what it must find are shared.
package flowtest

import (
	"net/netip"
	"time"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/model"
)

// EP is a ready, serving endpoint of weight 1 on node b, changed by opts.
func EP(addrPort string, opts ...func(*model.Endpoint)) model.Endpoint {
	ap := netip.MustParseAddrPort(addrPort)
	e := model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, NodeName: "node-b", Weight: 1}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// Local puts an endpoint on node a, the node under test.
func Local(e *model.Endpoint) { e.Local = true; e.NodeName = "node-a" }

// Terminating makes an endpoint terminating (not ready, still serving).
func Terminating(e *model.Endpoint) { e.Ready = false; e.Terminating = true }

// Weighted gives an endpoint weight w.
func Weighted(w uint32) func(*model.Endpoint) { return func(e *model.Endpoint) { e.Weight = w } }

// Forward is an endpoint set as Translate makes it: per-family verdicts, Reject for a
// family without endpoints.
func Forward(eps ...model.Endpoint) model.EndpointSet {
	s := model.EndpointSet{Verdict: model.Reject, IPv4Verdict: model.Reject, IPv6Verdict: model.Reject, Endpoints: eps}
	for _, e := range eps {
		s.Verdict = model.Forward
		if e.Addr.Is6() {
			s.IPv6Verdict = model.Forward
		} else {
			s.IPv4Verdict = model.Forward
		}
	}
	return s
}

// Dropped is an endpoint set whose traffic is dropped (a Local policy without a local
// endpoint).
func Dropped() model.EndpointSet {
	return model.EndpointSet{Verdict: model.Drop, IPv4Verdict: model.Drop, IPv6Verdict: model.Drop}
}

// Svc is a ClusterIP Service with the Random algorithm and no ports.
func Svc(ns, name string, clusterIPs ...string) *model.Service {
	s := &model.Service{Key: model.ServiceKey{Namespace: ns, Name: name}, Type: model.ClusterIP, Policy: &model.Policy{Algorithm: balance.Random}}
	s.ClusterIPs = Addrs(clusterIPs...)
	return s
}

// Port is a Service port forwarding cluster and external traffic to eps.
func Port(proto model.Protocol, p int32, eps ...model.Endpoint) *model.ServicePort {
	return &model.ServicePort{Protocol: proto, Port: p, Endpoints: eps, Cluster: Forward(eps...), External: Forward(eps...), ShortCircuit: Forward(eps...)}
}

// Addrs parses addresses.
func Addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// Services is the world the packet-flow scenarios trace through. Node a has
// 192.168.0.2 and fd00:192::2; endpoints on it are 10.1.0.x, on node b 10.2.0.x.
func Services() []*model.Service {
	web := Svc("shop", "web", "172.30.0.10")
	web.Ports = []*model.ServicePort{Port(model.TCP, 80, EP("10.1.0.1:8080", Local), EP("10.2.0.1:8080"))}

	empty := Svc("shop", "empty", "172.30.0.11")
	empty.Ports = []*model.ServicePort{Port(model.TCP, 80)}

	itpLocal := Svc("shop", "itp-local", "172.30.0.12")
	itpLocal.InternalTrafficLocal = true
	sp := Port(model.TCP, 80, EP("10.2.0.2:80"))
	sp.Cluster = Dropped()
	itpLocal.Ports = []*model.ServicePort{sp}

	np := Svc("shop", "np", "172.30.0.13")
	np.Type = model.NodePort
	sp = Port(model.TCP, 80, EP("10.1.0.3:80", Local), EP("10.2.0.3:80"))
	sp.NodePort = 30080
	np.Ports = []*model.ServicePort{sp}

	npLocal := Svc("shop", "np-local", "172.30.0.14")
	npLocal.Type = model.NodePort
	npLocal.ExternalTrafficLocal = true
	sp = Port(model.TCP, 80, EP("10.1.0.4:80", Local), EP("10.2.0.4:80"))
	sp.NodePort = 30081
	sp.External = Forward(EP("10.1.0.4:80", Local))
	npLocal.Ports = []*model.ServicePort{sp}

	npLocalNone := Svc("shop", "np-local-none", "172.30.0.15")
	npLocalNone.Type = model.LoadBalancer
	npLocalNone.ExternalTrafficLocal = true
	npLocalNone.LoadBalancerIPs = Addrs("203.0.113.15")
	sp = Port(model.TCP, 80, EP("10.2.0.5:80"))
	sp.NodePort = 30082
	sp.External = Dropped()
	npLocalNone.Ports = []*model.ServicePort{sp}

	lb := Svc("shop", "lb", "172.30.0.16")
	lb.Type = model.LoadBalancer
	lb.LoadBalancerIPs = Addrs("203.0.113.16")
	lb.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	sp = Port(model.TCP, 443, EP("10.2.0.6:8443"))
	sp.NodePort = 30443
	lb.Ports = []*model.ServicePort{sp}

	ext := Svc("shop", "ext", "172.30.0.17")
	ext.ExternalIPs = Addrs("192.0.2.17")
	ext.Ports = []*model.ServicePort{Port(model.TCP, 80, EP("10.2.0.7:80"))}

	sticky := Svc("shop", "sticky", "172.30.0.18")
	sticky.AffinityTimeout = 10800 * time.Second
	sticky.Ports = []*model.ServicePort{Port(model.TCP, 80, EP("10.2.0.8:80"), EP(StickyEndpoint))}

	// translate chose the terminating endpoints because no endpoint is ready.
	term := Svc("shop", "terminating", "172.30.0.19")
	term.Ports = []*model.ServicePort{{Protocol: model.TCP, Port: 80,
		Endpoints: []model.Endpoint{EP("10.2.0.10:80", Terminating), EP("10.2.0.11:80", Terminating)},
		Cluster:   Forward(EP("10.2.0.10:80", Terminating)), External: Forward(EP("10.2.0.10:80", Terminating))}}

	dual := Svc("shop", "dual", "172.30.0.20", "fd00:30::20")
	dual.Ports = []*model.ServicePort{Port(model.TCP, 80, EP("10.2.0.20:80"), EP("[fd00:2::20]:80"), EP("[fd00:2::21]:80"))}

	weightedSvc := Svc("shop", "weighted", "172.30.0.21")
	weightedSvc.Ports = []*model.ServicePort{Port(model.TCP, 80, EP("10.2.0.21:80", Weighted(3)), EP("10.2.0.22:80", Weighted(1)))}

	rr := Svc("shop", "rr", "172.30.0.22")
	rr.Policy = &model.Policy{Algorithm: balance.RoundRobin, Source: "shop/rr"}
	rr.Ports = []*model.ServicePort{Port(model.TCP, 80, EP("10.2.0.23:80"), EP("10.2.0.24:80"), EP("10.2.0.25:80"))}

	hash := Svc("shop", "hash", "172.30.0.23")
	hash.Policy = &model.Policy{Algorithm: balance.Maglev, MaglevSeed: 7, Source: "shop/hash"}
	hash.Ports = []*model.ServicePort{Port(model.TCP, 80, EP("10.2.0.26:80"), EP("10.2.0.27:80"))}

	dns := Svc("kube-system", "dns", "172.30.0.53")
	dns.Ports = []*model.ServicePort{Port(model.UDP, 53, EP("10.2.0.53:53")), Port(model.TCP, 53, EP("10.2.0.53:53"))}

	// externalIPs with externalTrafficPolicy Local on a ClusterIP Service: local
	// endpoints only for outside traffic, every endpoint from the node.
	extLocal := Svc("shop", "ext-local", "172.30.0.24")
	extLocal.ExternalIPs = Addrs("192.0.2.24")
	extLocal.ExternalTrafficLocal = true
	sp = Port(model.TCP, 80, EP("10.1.0.30:80", Local), EP("10.2.0.30:80"))
	sp.External = Forward(EP("10.1.0.30:80", Local))
	extLocal.Ports = []*model.ServicePort{sp}

	extLocalNone := Svc("shop", "ext-local-none", "172.30.0.25")
	extLocalNone.ExternalIPs = Addrs("192.0.2.25")
	extLocalNone.ExternalTrafficLocal = true
	sp = Port(model.TCP, 80, EP("10.2.0.31:80"))
	sp.External = Dropped()
	extLocalNone.Ports = []*model.ServicePort{sp}

	// Source ranges of IPv4 only: the IPv6 LoadBalancer IP is open to all.
	lbV4Ranges := Svc("shop", "lb-v4-ranges", "172.30.0.26", "fd00:30::26")
	lbV4Ranges.Type = model.LoadBalancer
	lbV4Ranges.LoadBalancerIPs = Addrs("203.0.113.26", "2001:db8::26")
	lbV4Ranges.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	sp = Port(model.TCP, 80, EP("10.2.0.32:80"), EP("[fd00:2::32]:80"))
	sp.NodePort = 30026
	lbV4Ranges.Ports = []*model.ServicePort{sp}

	// Source ranges holding the node's IP: Translate admits the LoadBalancer IP too.
	lbNode := Svc("shop", "lb-node", "172.30.0.27")
	lbNode.Type = model.LoadBalancer
	lbNode.LoadBalancerIPs = Addrs("203.0.113.27")
	lbNode.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24"), netip.MustParsePrefix("203.0.113.27/32")}
	sp = Port(model.TCP, 80, EP("10.2.0.33:80"))
	sp.NodePort = 30027
	lbNode.Ports = []*model.ServicePort{sp}

	// A dual-stack node port, for --nodeport-addresses of one family.
	npDual := Svc("shop", "np-dual", "172.30.0.28", "fd00:30::28")
	npDual.Type = model.NodePort
	sp = Port(model.TCP, 80, EP("10.2.0.34:80"), EP("[fd00:2::34]:80"))
	sp.NodePort = 30028
	npDual.Ports = []*model.ServicePort{sp}

	return []*model.Service{web, empty, itpLocal, np, npLocal, npLocalNone, lb, ext, sticky, term, dual, weightedSvc, rr, hash, dns,
		extLocal, extLocalNone, lbV4Ranges, lbNode, npDual}
}

// Mutate returns copies of svcs (and of their ports) changed by f.
func Mutate(svcs []*model.Service, f func(*model.Service)) []*model.Service {
	out := make([]*model.Service, 0, len(svcs))
	for _, s := range svcs {
		c := *s
		c.Ports = nil
		for _, sp := range s.Ports {
			cp := *sp
			c.Ports = append(c.Ports, &cp)
		}
		f(&c)
		out = append(out, &c)
	}
	return out
}
