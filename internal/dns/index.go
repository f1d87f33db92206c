package dns

import (
	"bytes"
	"fmt"
	"hash/maphash"
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

// nShards is the number of maps the names under Services, and the reverse names, are
// spread over. An Update rebuilds only the shards whose Services changed.
const nShards = 256

// index is an immutable, precomputed view of one Snapshot: every name weir answers for,
// lowercased, with its record sets already packed as complete responses. Queries read it
// without locks; Update builds a new one and swaps it in, sharing with the previous one
// every shard in which nothing changed.
type index struct {
	zone, rev4, rev6 *apex
	origin           string
	seed             maphash.Seed
	// top holds the names not under a Service: the apex, the schema version, the
	// nameserver, and the empty non-terminals svc, pod and each namespace.
	top map[string]*node
	// shards hold the names at and under <svc>.<ns>.svc.<zone>, by shardOf("<svc>.<ns>.").
	shards [nShards]map[string]*node
	// ptrs hold the reverse names, by shardOf(name).
	ptrs       [nShards]map[string]*node
	ptrRecords [nShards]int
	records    int // resource records in all answer sets

	// services are the records of each Service with the fingerprint of the fields they
	// came from, for the next build to reuse.
	services map[model.ServiceKey]*svcRecords
}

func shardOf(seed maphash.Seed, s string) int { return int(maphash.String(seed, s) % nShards) }

// lookup returns the node of a lowercased name, or nil.
func (idx *index) lookup(name string, inZone bool) *node {
	if !inZone {
		return idx.ptrs[shardOf(idx.seed, name)][name]
	}
	// Names under a Service end in "<svc>.<ns>.svc.<zone>".
	rel := name[:len(name)-len(idx.origin)]
	if strings.HasSuffix(rel, ".svc.") {
		rest := rel[:len(rel)-len("svc.")] // "…<svc>.<ns>."
		if i := strings.LastIndexByte(rest[:len(rest)-1], '.'); i >= 0 {
			if j := strings.LastIndexByte(rest[:i], '.'); j+1 < i {
				return idx.shards[shardOf(idx.seed, rest[j+1:])][name]
			}
		}
	}
	return idx.top[name]
}

// apexOf returns the zone whose SOA goes with negative answers for n.
func (idx *index) apexOf(n *node) *apex {
	switch n.zone {
	case zoneRev4:
		return idx.rev4
	case zoneRev6:
		return idx.rev6
	}
	return idx.zone
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

// zoneKind says which apex a node belongs to. Nodes are kept across builds, apexes are
// not (the SOA serial changes), so nodes name their zone rather than point at it.
type zoneKind uint8

const (
	zoneCluster zoneKind = iota
	zoneRev4
	zoneRev6
)

// node is one owner name.
type node struct {
	zone zoneKind
	// sets holds one entry per type that exists at the name; empty for an empty
	// non-terminal (a name that exists only because names below it do).
	sets []*rrset
	// cname is set for ExternalName Services: the CNAME answers every type.
	cname *rrset
	// inZoneTarget is the CNAME's target when it lies inside the cluster zone, which
	// weir is authoritative for: answers follow it (RFC 1034 §4.3.2).
	inZoneTarget string
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
	records int // answer records
}

// indexConfig is what an index depends on besides the Snapshot. It does not change
// during a Server's life, so records built under it can be reused.
type indexConfig struct {
	origin      string // cluster zone, lowercased FQDN
	ttl         uint32
	nameservers []netip.Addr // A/AAAA of ns.dns.<zone>
	recursion   bool         // RA bit: upstreams are configured
	seed        maphash.Seed // for Service fingerprints
}

// svcRecords are the names one Service owns, packed.
type svcRecords struct {
	fp      uint64
	shard   int
	names   []ownedName
	records int
	// ptrs are the reverse names of the Service's ClusterIPs, or of a headless
	// Service's published endpoint addresses.
	ptrs []*ownedPTR
}

type ownedName struct {
	name string
	node *node
}

// ownedPTR is a reverse name with the names it points at.
type ownedPTR struct {
	rev     string
	shard   int
	ip      netip.Addr
	cluster bool // a ClusterIP: takes precedence over endpoint addresses (CoreDNS)
	node    *node
}

// buildIndex turns a Snapshot into an index, reusing from prev (which may be nil) the
// records of every Service whose DNS-relevant fields did not change, and every shard
// that holds none of the changed Services, so that an Update that scales one Service
// repacks only that Service and rebuilds two small maps. Records that cannot be packed
// (invalid names) are skipped with a log line.
func buildIndex(snap *model.Snapshot, cfg indexConfig, prev *index, now time.Time, log *slog.Logger) *index {
	serial := uint32(now.Unix())
	idx := &index{
		zone:     newApex(cfg.origin, cfg.origin, cfg.ttl, serial),
		rev4:     newApex("in-addr.arpa.", cfg.origin, cfg.ttl, serial),
		rev6:     newApex("ip6.arpa.", cfg.origin, cfg.ttl, serial),
		origin:   cfg.origin,
		seed:     cfg.seed,
		top:      make(map[string]*node),
		services: make(map[model.ServiceKey]*svcRecords, len(snap.Services)),
	}
	p := newPacker(cfg, log)
	for _, o := range p.apexNames(idx.zone.soa) {
		idx.records += idx.add(idx.top, o)
	}

	var dirty, dirtyPTR [nShards]bool
	touch := func(recs *svcRecords) {
		dirty[recs.shard] = true
		for _, o := range recs.ptrs {
			dirtyPTR[o.shard] = true
		}
	}
	ent := &node{zone: zoneCluster}
	lastNs := ""
	var h maphash.Hash
	h.SetSeed(cfg.seed)
	for _, svc := range snap.Services {
		fp := fingerprint(&h, svc)
		var old *svcRecords
		if prev != nil {
			old = prev.services[svc.Key]
		}
		recs := old
		if old == nil || old.fp != fp {
			recs = p.service(svc)
			recs.fp = fp
			touch(recs)
			if old != nil {
				touch(old)
			}
		}
		idx.services[svc.Key] = recs
		// The namespace exists as soon as it holds a Service, whatever kind. (Services
		// come sorted by namespace: build each name once.)
		if svc.Key.Namespace != lastNs {
			lastNs = svc.Key.Namespace
			if nsName := strings.ToLower(lastNs) + ".svc." + cfg.origin; idx.top[nsName] == nil {
				idx.top[nsName] = ent
			}
		}
	}
	if prev == nil {
		dirty, dirtyPTR = allShards(), allShards()
	} else {
		for key, old := range prev.services {
			if _, ok := idx.services[key]; !ok {
				touch(old)
			}
		}
	}

	for i := range nShards {
		if !dirty[i] {
			idx.shards[i] = prev.shards[i]
			continue
		}
		idx.shards[i] = make(map[string]*node)
	}
	for _, recs := range idx.services {
		idx.records += recs.records
		if dirty[recs.shard] {
			for _, o := range recs.names {
				idx.add(idx.shards[recs.shard], o)
			}
		}
	}
	idx.addPTRs(p, prev, &dirtyPTR)
	return idx
}

func allShards() (all [nShards]bool) {
	for i := range all {
		all[i] = true
	}
	return all
}

// add puts a name in m, merging with a name another Service already holds (which only
// malformed Snapshots cause). It returns the records added.
func (idx *index) add(m map[string]*node, o ownedName) int {
	records := 0
	for _, s := range o.node.sets {
		records += s.records
	}
	old := m[o.name]
	if old == nil || (len(old.sets) == 0 && old.cname == nil) {
		m[o.name] = o.node
		return records
	}
	merged := &node{zone: old.zone, sets: slices.Clone(old.sets), cname: old.cname, inZoneTarget: old.inZoneTarget}
	for _, s := range o.node.sets {
		if merged.lookup(s.qtype) == nil {
			merged.sets = append(merged.sets, s)
		}
	}
	if merged.cname == nil {
		merged.cname, merged.inZoneTarget = o.node.cname, o.node.inZoneTarget
	}
	m[o.name] = merged
	return records
}

// addPTRs adds the reverse names, rebuilding the dirty shards. A ClusterIP points at
// its Service and takes precedence over endpoint addresses, which point at the
// endpoints' names (CoreDNS); an address published by several headless Services points
// at all their names.
func (idx *index) addPTRs(p *packer, prev *index, dirty *[nShards]bool) {
	var owners [nShards]map[string]*ownedPTR
	for i := range nShards {
		if dirty[i] {
			owners[i] = make(map[string]*ownedPTR)
		}
	}
	for _, recs := range idx.services {
		for _, o := range recs.ptrs {
			if !dirty[o.shard] {
				continue
			}
			cur := owners[o.shard][o.rev]
			switch {
			case cur == nil || (o.cluster && !cur.cluster):
				owners[o.shard][o.rev] = o
			case o.cluster == cur.cluster: // rare: one address, several Services
				targets := slices.Compact(slices.Sorted(slices.Values(append(ptrTargets(cur.node), ptrTargets(o.node)...))))
				merged := &ownedPTR{rev: o.rev, shard: o.shard, ip: o.ip, cluster: o.cluster}
				if merged.node = p.ptr(merged.rev, merged.ip, targets); merged.node != nil {
					owners[o.shard][o.rev] = merged
				}
			}
		}
	}
	for i := range nShards {
		if !dirty[i] {
			idx.ptrs[i], idx.ptrRecords[i] = prev.ptrs[i], prev.ptrRecords[i]
		} else {
			idx.ptrs[i] = make(map[string]*node, len(owners[i]))
			for rev, o := range owners[i] {
				idx.ptrs[i][rev] = o.node
				idx.ptrRecords[i] += o.node.sets[0].records
			}
		}
		idx.records += idx.ptrRecords[i]
	}
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

// fingerprint hashes the fields of a Service that its DNS records come from.
func fingerprint(h *maphash.Hash, svc *model.Service) uint64 {
	h.Reset()
	str := func(s string) { h.WriteString(s); h.WriteByte(0) }
	addr := func(a netip.Addr) { b := a.As16(); h.Write(b[:]) }
	num := func(n int32) { h.Write([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}) }
	str(svc.Key.Namespace)
	str(svc.Key.Name)
	str(string(svc.Type))
	str(svc.ExternalName)
	if svc.Headless {
		h.WriteByte(1)
	}
	for _, ip := range svc.ClusterIPs {
		addr(ip)
	}
	h.WriteByte(0)
	for _, e := range svc.DNSEndpoints {
		addr(e.Addr)
		str(e.Hostname)
	}
	h.WriteByte(0)
	for _, p := range svc.Ports {
		str(p.Name)
		str(string(p.Protocol))
		num(p.Port)
		if svc.Headless && p.Name != "" { // SRV targets: the endpoints carrying the port
			for _, e := range p.Endpoints {
				addr(e.Addr)
				num(e.Port)
			}
		}
		h.WriteByte(0)
	}
	return h.Sum64()
}

// packer builds and packs record sets.
type packer struct {
	cfg     indexConfig
	log     *slog.Logger
	scratch []byte
	packBuf []byte
	// ent is the node of every empty non-terminal under a Service (immutable, shared).
	ent *node
	// nodes of the Service being built, in order of creation.
	nodes map[string]*nodeBuilder
	order []string
}

type nodeBuilder struct {
	sets   []*setBuilder
	cname  *setBuilder
	target string // the CNAME's target, lowercased FQDN
}

type setBuilder struct {
	qtype  uint16
	answer []mdns.RR
	extra  []mdns.RR
}

func newPacker(cfg indexConfig, log *slog.Logger) *packer {
	return &packer{cfg: cfg, log: log, scratch: make([]byte, 256), packBuf: make([]byte, 0, 4096),
		nodes: make(map[string]*nodeBuilder), ent: &node{zone: zoneCluster}}
}

func (p *packer) reset() {
	clear(p.nodes)
	p.order = p.order[:0]
}

func (p *packer) node(name string) *nodeBuilder {
	n := p.nodes[name]
	if n == nil {
		n = &nodeBuilder{}
		p.nodes[name] = n
		p.order = append(p.order, name)
	}
	return n
}

func (p *packer) set(name string, qtype uint16) *setBuilder {
	n := p.node(name)
	for _, s := range n.sets {
		if s.qtype == qtype {
			return s
		}
	}
	s := &setBuilder{qtype: qtype}
	n.sets = append(n.sets, s)
	return s
}

func (p *packer) hdr(name string, rrtype uint16, ttl uint32) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: rrtype, Class: mdns.ClassINET, Ttl: ttl}
}

// addr adds an A or AAAA record for ip at name.
func (p *packer) addr(name string, ip netip.Addr) {
	ip = ip.Unmap()
	if ip.Is4() {
		s := p.set(name, mdns.TypeA)
		s.answer = append(s.answer, &mdns.A{Hdr: p.hdr(name, mdns.TypeA, p.cfg.ttl), A: ip.AsSlice()})
		return
	}
	s := p.set(name, mdns.TypeAAAA)
	s.answer = append(s.answer, &mdns.AAAA{Hdr: p.hdr(name, mdns.TypeAAAA, p.cfg.ttl), AAAA: ip.AsSlice()})
}

// addrRecords returns the A and AAAA answers at name, for additional sections.
func (p *packer) addrRecords(name string) []mdns.RR {
	n := p.nodes[name]
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

// apexNames returns the zone's own names: SOA and NS at the apex, the nameserver's
// address, the schema version, and the svc and pod subtrees.
func (p *packer) apexNames(soa *mdns.SOA) []ownedName {
	p.reset()
	o := p.cfg.origin
	s := p.set(o, mdns.TypeSOA)
	s.answer = append(s.answer, soa)
	nsName := "ns.dns." + o
	for _, ip := range p.cfg.nameservers {
		p.addr(nsName, ip)
	}
	ns := p.set(o, mdns.TypeNS)
	ns.answer = append(ns.answer, &mdns.NS{Hdr: p.hdr(o, mdns.TypeNS, p.cfg.ttl), Ns: nsName})
	ns.extra = p.addrRecords(nsName)
	p.node(nsName)
	p.node("dns." + o)

	txt := p.set("dns-version."+o, mdns.TypeTXT)
	txt.answer = append(txt.answer, &mdns.TXT{Hdr: p.hdr("dns-version."+o, mdns.TypeTXT, versionTTL), Txt: []string{SchemaVersion}})

	// The Service and pod subtrees always exist, as in CoreDNS (pod records themselves
	// are not part of schema 1.1.0 and are not served).
	p.node("svc." + o)
	p.node("pod." + o)
	names, _ := p.finish("")
	return names
}

// endpointLabel is the first label of an endpoint's name: its hostname, or its address
// with dots or colons replaced by dashes (CoreDNS).
func endpointLabel(ep model.DNSEndpoint) string {
	if ep.Hostname != "" {
		return strings.ToLower(ep.Hostname)
	}
	a := ep.Addr.Unmap()
	if a.Is4() {
		return strings.ReplaceAll(a.String(), ".", "-")
	}
	return strings.ReplaceAll(a.String(), ":", "-")
}

func protoLabel(p model.Protocol) string { return "_" + strings.ToLower(string(p)) }

// srvWeight is CoreDNS's weight for n SRV records of equal priority: 100/n, rounded down.
func srvWeight(n int) uint16 { return uint16(100 / max(n, 1)) }

// service builds the records of one Service.
func (p *packer) service(svc *model.Service) *svcRecords {
	p.reset()
	svcNs := strings.ToLower(svc.Key.Name) + "." + strings.ToLower(svc.Key.Namespace) + "."
	recs := &svcRecords{shard: shardOf(p.cfg.seed, svcNs)}
	name := svcNs + "svc." + p.cfg.origin
	ttl := p.cfg.ttl

	switch {
	case svc.Type == model.ExternalName:
		target := strings.ToLower(mdns.Fqdn(svc.ExternalName))
		if _, ok := mdns.IsDomainName(target); !ok || svc.ExternalName == "" {
			p.log.Warn("dns: skipping ExternalName Service with an invalid name", "service", svc.Key.String(), "externalName", svc.ExternalName)
			return recs
		}
		nb := p.node(name)
		nb.cname = &setBuilder{qtype: mdns.TypeCNAME, answer: []mdns.RR{
			&mdns.CNAME{Hdr: p.hdr(name, mdns.TypeCNAME, ttl), Target: target},
		}}
		nb.target = target

	case svc.Headless:
		p.headless(svc, name, recs)

	default:
		p.node(name)
		for _, ip := range svc.ClusterIPs {
			p.addr(name, ip)
			recs.ptrs = p.addPTR(recs.ptrs, ip, name, true)
		}
		extra := p.addrRecords(name)
		for _, sp := range svc.Ports {
			if sp.Name == "" {
				continue // unnamed ports have no SRV record
			}
			owner := "_" + strings.ToLower(sp.Name) + "." + protoLabel(sp.Protocol) + "." + name
			s := p.set(owner, mdns.TypeSRV)
			s.answer = append(s.answer, &mdns.SRV{Hdr: p.hdr(owner, mdns.TypeSRV, ttl),
				Priority: 0, Weight: 100, Port: uint16(sp.Port), Target: name})
			s.extra = extra
		}
	}
	recs.names, recs.records = p.finish(name)
	return recs
}

func (p *packer) headless(svc *model.Service, name string, recs *svcRecords) {
	if len(svc.DNSEndpoints) == 0 {
		return // no ready endpoint: the name does not exist (NXDOMAIN)
	}
	ttl := p.cfg.ttl
	published := make(map[netip.Addr]string, len(svc.DNSEndpoints)) // address → endpoint name
	for _, ep := range svc.DNSEndpoints {
		epName := endpointLabel(ep) + "." + name
		p.addr(name, ep.Addr)
		p.addr(epName, ep.Addr)
		published[ep.Addr.Unmap()] = epName
		recs.ptrs = p.addPTR(recs.ptrs, ep.Addr, epName, false)
	}
	type target struct {
		name string
		port int32
	}
	for _, sp := range svc.Ports {
		if sp.Name == "" {
			continue
		}
		var targets []target
		seen := make(map[target]bool)
		for _, ep := range sp.Endpoints {
			epName, ok := published[ep.Addr.Unmap()]
			if t := (target{epName, ep.Port}); ok && !seen[t] {
				seen[t] = true
				targets = append(targets, t)
			}
		}
		if len(targets) == 0 {
			continue
		}
		owner := "_" + strings.ToLower(sp.Name) + "." + protoLabel(sp.Protocol) + "." + name
		s := p.set(owner, mdns.TypeSRV)
		w := srvWeight(len(targets))
		extraFor := make(map[string]bool, len(targets))
		for _, t := range targets {
			s.answer = append(s.answer, &mdns.SRV{Hdr: p.hdr(owner, mdns.TypeSRV, ttl),
				Priority: 0, Weight: w, Port: uint16(t.port), Target: t.name})
			if !extraFor[t.name] {
				extraFor[t.name] = true
				s.extra = append(s.extra, p.addrRecords(t.name)...)
			}
		}
	}
}

// addPTR appends the reverse name of ip, pointing at name, to ptrs.
func (p *packer) addPTR(ptrs []*ownedPTR, ip netip.Addr, name string, cluster bool) []*ownedPTR {
	ip = ip.Unmap()
	rev, err := mdns.ReverseAddr(ip.String())
	if err != nil {
		return ptrs
	}
	n := p.ptr(rev, ip, []string{name})
	if n == nil {
		return ptrs
	}
	return append(ptrs, &ownedPTR{rev: rev, shard: shardOf(p.cfg.seed, rev), ip: ip, cluster: cluster, node: n})
}

// ptrTargets reads back the names a PTR node points at.
func ptrTargets(n *node) []string {
	var m mdns.Msg
	if len(n.sets) == 0 || m.Unpack(n.sets[0].wire) != nil {
		return nil
	}
	var out []string
	for _, rr := range m.Answer {
		if ptr, ok := rr.(*mdns.PTR); ok {
			out = append(out, ptr.Ptr)
		}
	}
	return out
}

// ptr builds the node of a reverse name.
func (p *packer) ptr(rev string, ip netip.Addr, targets []string) *node {
	sb := &setBuilder{qtype: mdns.TypePTR}
	for _, t := range targets {
		sb.answer = append(sb.answer, &mdns.PTR{Hdr: p.hdr(rev, mdns.TypePTR, p.cfg.ttl), Ptr: t})
	}
	rs := p.pack(rev, sb)
	if rs == nil {
		return nil
	}
	zone := zoneRev4
	if ip.Is6() {
		zone = zoneRev6
	}
	return &node{zone: zone, sets: []*rrset{rs}}
}

// finish packs the names built since reset, adding the empty non-terminals between
// them and top (the Service's name; "" for none).
func (p *packer) finish(top string) ([]ownedName, int) {
	if top != "" {
		for _, name := range slices.Clone(p.order) {
			for q := parent(name); len(q) >= len(top) && q != name; q = parent(q) {
				if _, ok := p.nodes[q]; ok {
					break
				}
				p.node(q)
			}
		}
	}
	out := make([]ownedName, 0, len(p.order))
	records := 0
	for _, name := range p.order {
		nb := p.nodes[name]
		if len(nb.sets) == 0 && nb.cname == nil {
			out = append(out, ownedName{name, p.ent})
			continue
		}
		n := &node{zone: zoneCluster, sets: make([]*rrset, 0, len(nb.sets))}
		for _, sb := range nb.sets {
			if rs := p.pack(name, sb); rs != nil {
				n.sets = append(n.sets, rs)
				records += rs.records
			}
		}
		if nb.cname != nil {
			if n.cname = p.pack(name, nb.cname); n.cname != nil {
				records += n.cname.records
				if inZone(nb.target, p.cfg.origin) {
					n.inZoneTarget = nb.target
				}
			}
		}
		out = append(out, ownedName{name, n})
	}
	return out, records
}

// parent strips the first label of a fully qualified name.
func parent(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 || i == len(name)-1 {
		return "."
	}
	return name[i+1:]
}

func (p *packer) pack(name string, sb *setBuilder) *rrset {
	m := &mdns.Msg{
		MsgHdr: mdns.MsgHdr{
			Response:           true,
			Authoritative:      true,
			RecursionAvailable: p.cfg.recursion,
		},
		Compress: true,
		Question: []mdns.Question{{Name: name, Qtype: sb.qtype, Qclass: mdns.ClassINET}},
		Answer:   sb.answer,
		Extra:    sb.extra,
	}
	packed, err := m.PackBuffer(p.packBuf[:cap(p.packBuf)]) // miekg/dns looks at len
	if err != nil {
		p.log.Warn("dns: skipping a record set that cannot be packed", "name", name, "type", mdns.TypeToString[sb.qtype], "err", err)
		return nil
	}
	nameLen, err := mdns.PackDomainName(name, p.scratch, 0, nil, false)
	if err != nil {
		return nil
	}
	if cap(packed) > cap(p.packBuf) {
		p.packBuf = packed[:0]
	}
	// An exact copy: Pack's buffer is sized for the uncompressed message.
	return &rrset{qtype: sb.qtype, wire: bytes.Clone(packed), nameLen: nameLen, records: len(sb.answer)}
}
