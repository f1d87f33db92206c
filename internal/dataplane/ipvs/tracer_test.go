package ipvs

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"weir.dev/weir/internal/dataplane/flowtest"
	"weir.dev/weir/internal/model"
)

// tracer follows a packet through what a sync programmed: the nftables rules' meaning
// (classify, services-check, masquerade) as encoded in the Services' plans, and the
// virtual servers in the fake IPVS. The nftables text itself is loaded by the real nft
// in the namespace tests (test/e2e/dataplane, run in a VM by test/vm/run.sh).
type tracer struct {
	t    *testing.T
	w    *fakeWorld
	cfg  model.ProxyConfig
	node []netip.Addr
}

func (tr *tracer) plans(ipv6 bool) []servicePlan {
	var out []servicePlan
	for _, k := range slices.SortedFunc(func(yield func(model.ServiceKey) bool) {
		for k := range tr.w.p.services {
			if !yield(k) {
				return
			}
		}
	}, model.ServiceKey.Compare) {
		st := tr.w.p.services[k]
		for i, f := range tr.w.p.fams {
			if f.ipv6 == ipv6 {
				out = append(out, st.plans[i])
			}
		}
	}
	return out
}

func (tr *tracer) trace(pkt flowtest.Packet) flowtest.Outcome {
	src, dst := netip.MustParseAddr(pkt.Src), netip.MustParseAddr(pkt.Dst)
	ipv6 := dst.Is6()
	f := newFamily(ipv6, tr.cfg)
	proto := model.Protocol(strings.ToUpper(pkt.Proto))
	fe := frontend{Addr: dst, Proto: proto, Port: uint16(pkt.Port)}
	plans := tr.plans(ipv6)
	fromNode := slices.Contains(tr.node, src)
	isPod := false
	switch {
	case f.pods.CIDR.IsValid():
		isPod = f.pods.CIDR.Contains(src)
	case f.pods.Interface != "":
		isPod = pkt.Iif == f.pods.Interface || (f.pods.InterfacePrefix && strings.HasPrefix(pkt.Iif, f.pods.Interface))
	}
	var clusterIP, serviceAddr bool
	for _, pl := range plans {
		clusterIP = clusterIP || slices.Contains(pl.ClusterIPs, dst)
		serviceAddr = serviceAddr || slices.Contains(pl.Addrs, dst)
	}
	// fib daddr type local: the node's addresses and the dummy interface's.
	local := slices.Contains(tr.node, dst) || serviceAddr
	np := f.proxy.NodePorts(ipv6)
	nodePortDst := local && !serviceAddr && !dst.IsLoopback()
	if !np.All {
		in := false
		for _, p := range np.Prefixes {
			in = in || p.Contains(dst)
		}
		nodePortDst = local && in && !serviceAddr
	}

	// classify
	var masq bool
	var mark uint32
	if clusterIP {
		route := f.proxy.ClusterIP(model.FromElsewhere, f.pods)
		if f.proxy.MasqueradeAll || (route.Masquerade && !isPod) {
			masq = true
		}
	}
	shortCircuit := func(m uint32) bool {
		switch {
		case fromNode:
			masq, mark = true, m
		case f.pods.Enabled() && isPod:
			mark = m
		default:
			return false
		}
		return true
	}
	for _, pl := range plans {
		if slices.Contains(pl.ExtMasq, fe) {
			masq = true
		}
		for _, sc := range pl.SC {
			if sc.frontend == fe {
				shortCircuit(sc.Mark)
			}
		}
	}
	var npVerdict string
	if nodePortDst {
		for _, pl := range plans {
			for _, n := range pl.NodePorts {
				if n.Proto != proto || n.Port != uint16(pkt.Port) {
					continue
				}
				npVerdict = n.Verdict
				if n.SCMark != 0 && shortCircuit(n.SCMark) {
					break
				}
				if n.Mark != 0 {
					masq = masq || n.Masq
					mark = n.Mark
				}
			}
		}
	}

	// services-check
	for _, pl := range plans {
		for _, fw := range pl.Firewall {
			if fw.frontend == fe && !slices.ContainsFunc(fw.Ranges, func(p netip.Prefix) bool { return p.Contains(src) }) {
				return flowtest.Outcome{Verdict: "DROP"}
			}
		}
	}
	if mark == 0 {
		for _, pl := range plans {
			for _, v := range pl.Verdicts {
				if v.frontend != fe {
					continue
				}
				switch v.Verdict {
				case "reject":
					return flowtest.Outcome{Verdict: "REJECT"}
				case "drop":
					return flowtest.Outcome{Verdict: "DROP"}
				}
			}
		}
		served := false
		for _, pl := range plans {
			served = served || slices.ContainsFunc(pl.Verdicts, func(v verdictElem) bool { return v.frontend == fe })
		}
		if clusterIP && !served {
			return flowtest.Outcome{Verdict: "REJECT"}
		}
		switch npVerdict {
		case "reject":
			return flowtest.Outcome{Verdict: "REJECT"}
		case "drop":
			return flowtest.Outcome{Verdict: "DROP"}
		}
	}

	// IPVS: a firewall mark first, then the address (only packets to a local address
	// reach it).
	key := vsKey{IPv6: ipv6, Mark: mark}
	if mark == 0 {
		if !local {
			return flowtest.Outcome{Verdict: "ACCEPT"}
		}
		key = vsKey{IPv6: ipv6, Addr: dst, Proto: proto, Port: uint16(pkt.Port)}
	}
	s, ok := tr.w.ipvs.svcs[key]
	if !ok {
		return flowtest.Outcome{Verdict: "ACCEPT"}
	}
	shares := map[string]float64{}
	var total float64
	for _, d := range tr.w.ipvs.dests[key] {
		total += float64(d.Weight)
	}
	for ap, d := range tr.w.ipvs.dests[key] {
		if d.Weight > 0 {
			shares[ap.String()] = float64(d.Weight) / total
		}
	}
	if s.Timeout > 0 && pkt.Src == flowtest.StickyClient {
		if _, ok := shares[flowtest.StickyEndpoint]; ok {
			shares = map[string]float64{flowtest.StickyEndpoint: 1}
		}
	}
	// Hairpin: an endpoint reaching itself is masqueraded.
	for _, pl := range plans {
		if slices.Contains(pl.Hairpin, src) {
			for ap := range shares {
				if netip.MustParseAddrPort(ap).Addr() == src {
					masq = true
				}
			}
		}
	}
	return flowtest.Outcome{Verdict: "DNAT", Endpoints: shares, Masq: masq}
}

func newTracer(t *testing.T, cfg model.ProxyConfig) *tracer {
	tr := &tracer{t: t, w: newFakeWorld(t, cfg), cfg: cfg}
	for _, a := range flowtest.NodeIPs() {
		tr.node = append(tr.node, netip.MustParseAddr(a))
	}
	tr.node = append(tr.node, netip.MustParseAddr("::1"))
	flowtest.Sync(t, tr.w.p, flowtest.Services()...)
	return tr
}

func TestPacketFlow(t *testing.T) {
	tr := newTracer(t, model.ProxyConfig{})
	for _, sc := range flowtest.Scenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			if got := tr.trace(sc.Pkt); !got.Matches(sc.Want) {
				t.Errorf("%+v: got %v, want %v", sc.Pkt, got, sc.Want)
			}
		})
	}
}

func TestPacketFlowProxyConfig(t *testing.T) {
	for _, cs := range flowtest.ProxyConfigScenarios() {
		t.Run(cs.Name, func(t *testing.T) {
			tr := newTracer(t, cs.Proxy)
			for _, sc := range cs.Scenarios {
				t.Run(sc.Name, func(t *testing.T) {
					if got := tr.trace(sc.Pkt); !got.Matches(sc.Want) {
						t.Errorf("%+v: got %v, want %v", sc.Pkt, got, sc.Want)
					}
				})
			}
		})
	}
}
