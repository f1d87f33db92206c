package dns

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"weir.dev/weir/internal/model"
)

// SchemaVersion is the version of the Kubernetes DNS schema weir serves, published as
// TXT dns-version.<zone>.
const SchemaVersion = "1.1.0"

// versionTTL is the TTL of the dns-version TXT record, as in CoreDNS.
const versionTTL = 28800

// SOA timers, as CoreDNS's kubernetes plugin sets them.
const (
	soaRefresh = 7200
	soaRetry   = 1800
	soaExpire  = 86400
)

// index is an immutable, precomputed view of one Snapshot: every name weir answers for,
// lowercased, with its record sets already packed as complete responses. Queries read it
// without locks; Update builds a new one and swaps it in.
type index struct {
	zone    *apex // the cluster zone
	names   map[string]*node
	records int // resource records in all answer sets
}

// apex is a zone weir is authoritative for: the cluster zone, or a reverse zone for the
// PTR names it knows.
type apex struct {
	origin string // lowercased, fully qualified
	soa    *mdns.SOA
	// soaWire is the SOA RR packed without compression, ready to append to a negative
	// answer's authority section at any offset.
	soaWire []byte
}

// node is one owner name.
type node struct {
	zone *apex
	// sets holds one entry per type that exists at the name; empty for an empty
	// non-terminal (a name that exists only because names below it do).
	sets []*rrset
	// cname is set for ExternalName Services: the CNAME answers every type.
	cname *rrset
}

func (n *node) lookup(qtype uint16) *rrset {
	for _, s := range n.sets {
		if s.qtype == qtype {
			return s
		}
	}
	return nil
}

// rrset is the answer for one name and type, kept only as a packed response: header
// (QR, AA, RA as configured, counts), the question with the lowercased name, and the
// answer and additional sections. Names are compressed against the question, which is
// always at offset 12 and has the same length whatever the case the client used, so the
// bytes stay valid when the question is rewritten with the client's name.
type rrset struct {
	qtype   uint16
	wire    []byte
	nameLen int // wire length of the owner name
}

// buildIndex turns a Snapshot into an index. Records that cannot be packed (invalid
// names) are skipped with a log line; the rest of the index is still built.
func buildIndex(snap *model.Snapshot, cfg indexConfig, log *slog.Logger) *index {
	b := &builder{
		cfg:         cfg,
		log:         log,
		nodes:       make(map[string]*nodeBuilder, 4*len(snap.Services)+8),
		clusterPTR:  make(map[netip.Addr][]string),
		endpointPTR: make(map[netip.Addr][]string),
		scratch:     make([]byte, 256),
	}
	serial := uint32(cfg.now.Unix())
	b.zone = newApex(cfg.origin, cfg.origin, cfg.ttl, serial)
	b.rev4 = newApex("in-addr.arpa.", cfg.origin, cfg.ttl, serial)
	b.rev6 = newApex("ip6.arpa.", cfg.origin, cfg.ttl, serial)

	b.addApex()
	for _, svc := range snap.Services {
		b.addService(svc)
	}
	b.addPTRs()
	return b.finish()
}

// indexConfig is what an index depends on besides the Snapshot.
type indexConfig struct {
	origin      string // cluster zone, lowercased FQDN
	ttl         uint32
	nameservers []netip.Addr // A/AAAA of ns.dns.<zone>
	recursion   bool         // RA bit: upstreams are configured
	now         time.Time    // SOA serial
}

func newApex(origin, clusterOrigin string, ttl, serial uint32) *apex {
	soa := &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: origin, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: ttl},
		Ns:      "ns.dns." + clusterOrigin,
		Mbox:    "hostmaster." + clusterOrigin,
		Serial:  serial,
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		// RFC 2308: the negative TTL is min(SOA TTL, SOA minimum); both are the TTL.
		Minttl: ttl,
	}
	buf := make([]byte, mdns.Len(soa)+16)
	n, err := mdns.PackRR(soa, buf, 0, nil, false)
	if err != nil {
		// The zone name was validated in New; this cannot fail.
		panic(fmt.Sprintf("dns: packing SOA for %s: %v", origin, err))
	}
	return &apex{origin: origin, soa: soa, soaWire: buf[:n]}
}

type builder struct {
	cfg   indexConfig
	log   *slog.Logger
	zone  *apex
	rev4  *apex
	rev6  *apex
	nodes map[string]*nodeBuilder
	// clusterPTR maps a ClusterIP to its Service's name; endpointPTR maps an address of a
	// headless Service's endpoint to the endpoint's names. ClusterIPs take precedence, as
	// in CoreDNS.
	clusterPTR  map[netip.Addr][]string
	endpointPTR map[netip.Addr][]string
	scratch     []byte
}

type nodeBuilder struct {
	zone  *apex
	sets  []*setBuilder
	cname *setBuilder
}

type setBuilder struct {
	qtype  uint16
	answer []mdns.RR
	extra  []mdns.RR
}

func (b *builder) node(name string, zone *apex) *nodeBuilder {
	n := b.nodes[name]
	if n == nil {
		n = &nodeBuilder{zone: zone}
		b.nodes[name] = n
	}
	return n
}

func (b *builder) set(name string, qtype uint16, zone *apex) *setBuilder {
	n := b.node(name, zone)
	for _, s := range n.sets {
		if s.qtype == qtype {
			return s
		}
	}
	s := &setBuilder{qtype: qtype}
	n.sets = append(n.sets, s)
	return s
}

func (b *builder) hdr(name string, rrtype uint16, ttl uint32) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: rrtype, Class: mdns.ClassINET, Ttl: ttl}
}

// addr adds an A or AAAA record for ip at name.
func (b *builder) addr(name string, ip netip.Addr) {
	ip = ip.Unmap()
	if ip.Is4() {
		s := b.set(name, mdns.TypeA, b.zone)
		s.answer = append(s.answer, &mdns.A{Hdr: b.hdr(name, mdns.TypeA, b.cfg.ttl), A: ip.AsSlice()})
		return
	}
	s := b.set(name, mdns.TypeAAAA, b.zone)
	s.answer = append(s.answer, &mdns.AAAA{Hdr: b.hdr(name, mdns.TypeAAAA, b.cfg.ttl), AAAA: ip.AsSlice()})
}

// addrRecords returns the A and AAAA answers at name, for additional sections.
func (b *builder) addrRecords(name string) []mdns.RR {
	n := b.nodes[name]
	if n == nil {
		return nil
	}
	var rrs []mdns.RR
	for _, s := range n.sets {
		if s.qtype == mdns.TypeA || s.qtype == mdns.TypeAAAA {
			rrs = append(rrs, s.answer...)
		}
	}
	return rrs
}

func (b *builder) addApex() {
	o := b.zone.origin
	ttl := b.cfg.ttl
	soa := b.set(o, mdns.TypeSOA, b.zone)
	soa.answer = append(soa.answer, b.zone.soa)
	nsName := "ns.dns." + o
	for _, ip := range b.cfg.nameservers {
		b.addr(nsName, ip)
	}
	ns := b.set(o, mdns.TypeNS, b.zone)
	ns.answer = append(ns.answer, &mdns.NS{Hdr: b.hdr(o, mdns.TypeNS, ttl), Ns: nsName})
	ns.extra = b.addrRecords(nsName)
	b.node(nsName, b.zone)

	txt := b.set("dns-version."+o, mdns.TypeTXT, b.zone)
	txt.answer = append(txt.answer, &mdns.TXT{Hdr: b.hdr("dns-version."+o, mdns.TypeTXT, versionTTL), Txt: []string{SchemaVersion}})

	// The Service and pod subtrees always exist, as in CoreDNS (pod records themselves
	// are not part of schema 1.1.0 and are not served).
	b.node("svc."+o, b.zone)
	b.node("pod."+o, b.zone)
}

// endpointLabel is the first label of an endpoint's name: its hostname, or its address
// with dots or colons replaced by dashes (CoreDNS).
func endpointLabel(ep model.DNSEndpoint) string {
	if ep.Hostname != "" {
		return strings.ToLower(ep.Hostname)
	}
	s := ep.Addr.Unmap().String()
	if ep.Addr.Unmap().Is4() {
		return strings.ReplaceAll(s, ".", "-")
	}
	return strings.ReplaceAll(s, ":", "-")
}

func protoLabel(p model.Protocol) string { return "_" + strings.ToLower(string(p)) }

// srvWeight is CoreDNS's weight for n SRV records of equal priority: 100/n, rounded down.
func srvWeight(n int) uint16 { return uint16(100 / max(n, 1)) }

func (b *builder) addService(svc *model.Service) {
	ns := strings.ToLower(svc.Key.Namespace)
	name := strings.ToLower(svc.Key.Name) + "." + ns + ".svc." + b.zone.origin
	// The namespace exists as soon as it holds a Service, whatever kind.
	b.node(ns+".svc."+b.zone.origin, b.zone)
	ttl := b.cfg.ttl

	switch {
	case svc.Type == model.ExternalName:
		target := strings.ToLower(mdns.Fqdn(svc.ExternalName))
		if _, ok := mdns.IsDomainName(target); !ok || svc.ExternalName == "" {
			b.log.Warn("dns: skipping ExternalName Service with an invalid name", "service", svc.Key.String(), "externalName", svc.ExternalName)
			return
		}
		n := b.node(name, b.zone)
		n.cname = &setBuilder{qtype: mdns.TypeCNAME, answer: []mdns.RR{
			&mdns.CNAME{Hdr: b.hdr(name, mdns.TypeCNAME, ttl), Target: target},
		}}

	case svc.Headless:
		b.addHeadless(svc, name)

	default:
		for _, ip := range svc.ClusterIPs {
			b.addr(name, ip)
			b.clusterPTR[ip.Unmap()] = append(b.clusterPTR[ip.Unmap()], name)
		}
		if len(svc.ClusterIPs) == 0 {
			b.node(name, b.zone)
		}
		extra := b.addrRecords(name)
		for _, p := range svc.Ports {
			if p.Name == "" {
				continue // unnamed ports have no SRV record
			}
			owner := "_" + strings.ToLower(p.Name) + "." + protoLabel(p.Protocol) + "." + name
			s := b.set(owner, mdns.TypeSRV, b.zone)
			s.answer = append(s.answer, &mdns.SRV{Hdr: b.hdr(owner, mdns.TypeSRV, ttl),
				Priority: 0, Weight: 100, Port: uint16(p.Port), Target: name})
			s.extra = extra
		}
	}
}

func (b *builder) addHeadless(svc *model.Service, name string) {
	if len(svc.DNSEndpoints) == 0 {
		return // no ready endpoint: the name does not exist (NXDOMAIN)
	}
	ttl := b.cfg.ttl
	published := make(map[netip.Addr]string, len(svc.DNSEndpoints)) // address → endpoint name
	for _, ep := range svc.DNSEndpoints {
		epName := endpointLabel(ep) + "." + name
		b.addr(name, ep.Addr)
		b.addr(epName, ep.Addr)
		published[ep.Addr.Unmap()] = epName
		b.endpointPTR[ep.Addr.Unmap()] = append(b.endpointPTR[ep.Addr.Unmap()], epName)
	}
	for _, p := range svc.Ports {
		if p.Name == "" {
			continue
		}
		type target struct {
			name string
			port int32
		}
		var targets []target
		for _, ep := range p.Endpoints {
			epName, ok := published[ep.Addr.Unmap()]
			if !ok {
				continue
			}
			t := target{epName, ep.Port}
			if !slices.Contains(targets, t) {
				targets = append(targets, t)
			}
		}
		if len(targets) == 0 {
			continue
		}
		owner := "_" + strings.ToLower(p.Name) + "." + protoLabel(p.Protocol) + "." + name
		s := b.set(owner, mdns.TypeSRV, b.zone)
		w := srvWeight(len(targets))
		seen := make(map[string]bool, len(targets))
		for _, t := range targets {
			s.answer = append(s.answer, &mdns.SRV{Hdr: b.hdr(owner, mdns.TypeSRV, ttl),
				Priority: 0, Weight: w, Port: uint16(t.port), Target: t.name})
			if !seen[t.name] {
				seen[t.name] = true
				s.extra = append(s.extra, b.addrRecords(t.name)...)
			}
		}
	}
}

func (b *builder) addPTRs() {
	for ip, names := range b.clusterPTR {
		b.addPTRSet(ip, names)
	}
	for ip, names := range b.endpointPTR {
		if _, ok := b.clusterPTR[ip]; !ok {
			b.addPTRSet(ip, names)
		}
	}
}

func (b *builder) addPTRSet(ip netip.Addr, names []string) {
	rev, err := mdns.ReverseAddr(ip.String())
	if err != nil {
		return
	}
	zone := b.rev4
	if ip.Is6() {
		zone = b.rev6
	}
	s := b.set(rev, mdns.TypePTR, zone)
	for _, n := range names {
		s.answer = append(s.answer, &mdns.PTR{Hdr: b.hdr(rev, mdns.TypePTR, b.cfg.ttl), Ptr: n})
	}
}

// finish adds the empty non-terminals of the cluster zone and packs every set.
func (b *builder) finish() *index {
	origin := b.zone.origin
	for name, n := range b.nodes {
		if n.zone != b.zone {
			continue
		}
		for p := parent(name); len(p) > len(origin); p = parent(p) {
			if _, ok := b.nodes[p]; ok {
				break
			}
			b.nodes[p] = &nodeBuilder{zone: b.zone}
		}
	}

	idx := &index{zone: b.zone, names: make(map[string]*node, len(b.nodes))}
	for name, nb := range b.nodes {
		n := &node{zone: nb.zone}
		for _, sb := range nb.sets {
			if rs := b.pack(name, sb); rs != nil {
				n.sets = append(n.sets, rs)
				idx.records += len(sb.answer)
			}
		}
		if nb.cname != nil {
			n.cname = b.pack(name, nb.cname)
			if n.cname != nil {
				idx.records += len(nb.cname.answer)
			}
		}
		idx.names[name] = n
	}
	return idx
}

// parent strips the first label of a fully qualified name.
func parent(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 || i == len(name)-1 {
		return "."
	}
	return name[i+1:]
}

func (b *builder) pack(name string, sb *setBuilder) *rrset {
	m := &mdns.Msg{
		MsgHdr: mdns.MsgHdr{
			Response:           true,
			Authoritative:      true,
			RecursionAvailable: b.cfg.recursion,
		},
		Compress: true,
		Question: []mdns.Question{{Name: name, Qtype: sb.qtype, Qclass: mdns.ClassINET}},
		Answer:   sb.answer,
		Extra:    sb.extra,
	}
	wire, err := m.Pack()
	if err != nil {
		b.log.Warn("dns: skipping a record set that cannot be packed", "name", name, "type", mdns.TypeToString[sb.qtype], "err", err)
		return nil
	}
	nameLen, err := mdns.PackDomainName(name, b.scratch, 0, nil, false)
	if err != nil {
		return nil
	}
	return &rrset{qtype: sb.qtype, wire: wire, nameLen: nameLen}
}
