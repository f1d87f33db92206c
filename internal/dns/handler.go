package dns

import (
	"encoding/binary"
	"net"
	"slices"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// Header bits, in the two flag bytes at offsets 2 and 3 of a message.
const (
	flagQR = 0x80 // byte 2
	flagAA = 0x04 // byte 2
	flagTC = 0x02 // byte 2
	flagRD = 0x01 // byte 2
	flagRA = 0x80 // byte 3
	flagCD = 0x10 // byte 3
)

const headerLen = 12

// ServeDNS answers one query. It implements miekg/dns's Handler.
func (s *Server) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	start := time.Now()
	qtype := uint16(0)
	if len(r.Question) == 1 {
		qtype = r.Question[0].Qtype
	}
	rcode := s.serve(w, r)
	s.metrics.observe(qtype, rcode, time.Since(start))
}

// query is what the handler needs to know about a request.
type query struct {
	req   *mdns.Msg
	q     mdns.Question
	opt   *mdns.OPT // nil without EDNS0
	limit int       // largest response that may be sent
}

func (s *Server) serve(w mdns.ResponseWriter, r *mdns.Msg) int {
	if r.Response {
		return -1 // never answer a response
	}
	if r.Opcode != mdns.OpcodeQuery {
		return s.writeRcode(w, r, nil, mdns.RcodeNotImplemented)
	}
	if len(r.Question) != 1 {
		return s.writeRcode(w, r, nil, mdns.RcodeFormatError)
	}
	qr := query{req: r, q: r.Question[0], opt: r.IsEdns0(), limit: mdns.MaxMsgSize}
	if qr.opt != nil && qr.opt.Version() != 0 {
		return s.writeRcode(w, r, qr.opt, mdns.RcodeBadVers)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		qr.limit = mdns.MinMsgSize
		if qr.opt != nil {
			qr.limit = min(max(int(qr.opt.UDPSize()), mdns.MinMsgSize), maxUDPSize)
		}
	}
	if qr.q.Qtype == mdns.TypeAXFR || qr.q.Qtype == mdns.TypeIXFR {
		return s.writeRcode(w, r, qr.opt, mdns.RcodeRefused) // zone transfers are not offered
	}

	name := strings.ToLower(qr.q.Name)
	idx := s.index.Load()
	if inZone(name, s.cfg.origin) {
		if qr.q.Qclass != mdns.ClassINET && qr.q.Qclass != mdns.ClassANY {
			return s.writeRcode(w, r, qr.opt, mdns.RcodeRefused)
		}
		if idx == nil {
			// Not synced yet: CoreDNS answers SERVFAIL until its first sync.
			return s.writeRcode(w, r, qr.opt, mdns.RcodeServerFailure)
		}
		if hasWildcardLabel(name) {
			// Wildcard queries enumerate Services; they are refused, not expanded.
			return s.writeRcode(w, r, qr.opt, mdns.RcodeRefused)
		}
		n := idx.lookup(name, true)
		if n == nil {
			return s.writeNegative(w, &qr, mdns.RcodeNameError, idx.zone)
		}
		return s.answer(w, &qr, idx, n)
	}
	if idx != nil && qr.q.Qclass == mdns.ClassINET {
		if n := idx.lookup(name, false); n != nil { // PTR for a ClusterIP or endpoint
			return s.answer(w, &qr, idx, n)
		}
	}
	if s.fwd == nil {
		return s.writeRcode(w, r, qr.opt, mdns.RcodeRefused)
	}
	return s.forward(w, &qr)
}

// hasWildcardLabel reports whether a lowercased name has a "*" label (or "_*" in an SRV
// name), the wildcard syntax of the retired kube-dns and CoreDNS wildcard queries.
func hasWildcardLabel(name string) bool {
	for label := range strings.SplitSeq(name, ".") {
		if label == "*" || label == "_*" {
			return true
		}
	}
	return false
}

// inZone reports whether the lowercased name is origin or below it.
func inZone(name, origin string) bool {
	if len(name) == len(origin) {
		return name == origin
	}
	return len(name) > len(origin) && name[len(name)-len(origin)-1] == '.' && strings.HasSuffix(name, origin)
}

func (s *Server) answer(w mdns.ResponseWriter, qr *query, idx *index, n *node) int {
	set := n.cname
	if set != nil && n.inZoneTarget != "" && qr.q.Qtype != mdns.TypeCNAME && qr.q.Qtype != mdns.TypeANY {
		return s.answerChain(w, qr, idx, n)
	}
	if set == nil {
		if qr.q.Qtype == mdns.TypeANY {
			return s.answerAny(w, qr, idx, n)
		}
		set = n.lookup(qr.q.Qtype)
	}
	if set == nil {
		return s.writeNegative(w, qr, mdns.RcodeSuccess, idx.apexOf(n))
	}

	bp := s.bufs.Get().(*[]byte)
	buf := append((*bp)[:0], set.wire...)
	r := qr.req
	binary.BigEndian.PutUint16(buf, r.Id)
	buf[2] &^= flagRD
	if r.RecursionDesired {
		buf[2] |= flagRD
	}
	buf[3] &^= flagCD
	if r.CheckingDisabled {
		buf[3] |= flagCD
	}
	// Echo the client's spelling of the name (DNS 0x20), its type (a CNAME answers
	// every type) and its class (IN or ANY).
	var name [256]byte
	if l, err := mdns.PackDomainName(qr.q.Name, name[:], 0, nil, false); err == nil && l == set.nameLen {
		copy(buf[headerLen:], name[:l])
	}
	binary.BigEndian.PutUint16(buf[headerLen+set.nameLen:], qr.q.Qtype)
	binary.BigEndian.PutUint16(buf[headerLen+set.nameLen+2:], qr.q.Qclass)
	if qr.opt != nil {
		buf = appendOPT(buf, qr.opt.Do())
	}
	s.write(w, buf, qr.limit)
	*bp = buf[:0]
	s.bufs.Put(bp)
	return mdns.RcodeSuccess
}

// answerAny answers qtype ANY with every set at the name (rare; not precomputed).
func (s *Server) answerAny(w mdns.ResponseWriter, qr *query, idx *index, n *node) int {
	if len(n.sets) == 0 {
		return s.writeNegative(w, qr, mdns.RcodeSuccess, idx.apexOf(n))
	}
	m := new(mdns.Msg)
	m.SetReply(qr.req)
	m.Authoritative, m.RecursionAvailable, m.Compress = true, s.cfg.recursion, true
	for _, set := range n.sets {
		var part mdns.Msg
		if err := part.Unpack(set.wire); err != nil {
			continue
		}
		m.Answer = append(m.Answer, part.Answer...)
		m.Extra = append(m.Extra, part.Extra...)
	}
	if qr.opt != nil {
		m.SetEdns0(advertisedUDPSize, qr.opt.Do())
	}
	m.Truncate(qr.limit)
	_ = w.WriteMsg(m)
	return mdns.RcodeSuccess
}

// maxCNAMEChain bounds the in-zone CNAMEs one answer follows, as CoreDNS bounds them.
const maxCNAMEChain = 8

// answerChain answers at an ExternalName whose target lies in the cluster zone. weir is
// authoritative for the target, so it follows the alias as RFC 1034 §4.3.2 step 3a asks
// (and CoreDNS does): the CNAME, then the target's records of the queried type. When the
// target does not exist the answer is NXDOMAIN, when it has no such records NODATA,
// both with the CNAMEs and the zone's SOA (RFC 2308 §2.1, RFC 6604). A chain leaving the
// zone, a loop or more than maxCNAMEChain aliases ends with the last CNAME, for the
// resolver to follow.
func (s *Server) answerChain(w mdns.ResponseWriter, qr *query, idx *index, n *node) int {
	m := new(mdns.Msg)
	m.SetReply(qr.req)
	m.Authoritative, m.RecursionAvailable, m.Compress = true, s.cfg.recursion, true
	var seen [maxCNAMEChain + 1]*node
	for hop := 0; ; hop++ {
		if n.cname != nil {
			var part mdns.Msg
			if err := part.Unpack(n.cname.wire); err != nil || len(part.Answer) == 0 {
				s.log.Error("dns: unpacking a built CNAME", "err", err)
				return s.writeRcode(w, qr.req, qr.opt, mdns.RcodeServerFailure)
			}
			if hop == 0 {
				part.Answer[0].Header().Name = qr.q.Name // the client's spelling
			}
			m.Answer = append(m.Answer, part.Answer...)
			seen[hop] = n
			if n.inZoneTarget == "" || hop == maxCNAMEChain {
				break
			}
			next := idx.lookup(n.inZoneTarget, true)
			if next == nil {
				m.Rcode = mdns.RcodeNameError
				m.Ns = []mdns.RR{idx.zone.soa}
				break
			}
			if slices.Contains(seen[:hop+1], next) {
				break // a loop: the resolver sees it in the CNAMEs
			}
			n = next
			continue
		}
		set := n.lookup(qr.q.Qtype)
		if set == nil {
			m.Ns = []mdns.RR{idx.apexOf(n).soa}
			break
		}
		var part mdns.Msg
		if err := part.Unpack(set.wire); err != nil {
			s.log.Error("dns: unpacking a built response", "err", err)
			return s.writeRcode(w, qr.req, qr.opt, mdns.RcodeServerFailure)
		}
		m.Answer = append(m.Answer, part.Answer...)
		m.Extra = append(m.Extra, part.Extra...)
		break
	}
	if qr.opt != nil {
		m.SetEdns0(advertisedUDPSize, qr.opt.Do())
	}
	m.Truncate(qr.limit)
	_ = w.WriteMsg(m)
	return m.Rcode
}

// writeNegative answers NXDOMAIN or NODATA with the zone's SOA in the authority section.
func (s *Server) writeNegative(w mdns.ResponseWriter, qr *query, rcode int, zone *apex) int {
	bp := s.bufs.Get().(*[]byte)
	buf := (*bp)[:0]
	r := qr.req
	var hdr [headerLen]byte
	binary.BigEndian.PutUint16(hdr[0:], r.Id)
	hdr[2] = flagQR | flagAA
	if r.RecursionDesired {
		hdr[2] |= flagRD
	}
	hdr[3] = byte(rcode & 0xF)
	if s.cfg.recursion {
		hdr[3] |= flagRA
	}
	if r.CheckingDisabled {
		hdr[3] |= flagCD
	}
	binary.BigEndian.PutUint16(hdr[4:], 1) // QDCOUNT
	binary.BigEndian.PutUint16(hdr[8:], 1) // NSCOUNT
	buf = append(buf, hdr[:]...)
	var name [256]byte
	l, err := mdns.PackDomainName(qr.q.Name, name[:], 0, nil, false)
	if err != nil {
		s.bufs.Put(bp)
		return s.writeRcode(w, r, qr.opt, mdns.RcodeFormatError)
	}
	buf = append(buf, name[:l]...)
	buf = binary.BigEndian.AppendUint16(buf, qr.q.Qtype)
	buf = binary.BigEndian.AppendUint16(buf, qr.q.Qclass)
	buf = append(buf, zone.soaWire...)
	if qr.opt != nil {
		buf = appendOPT(buf, qr.opt.Do())
	}
	s.write(w, buf, qr.limit)
	*bp = buf[:0]
	s.bufs.Put(bp)
	return rcode
}

// appendOPT appends weir's OPT record (RFC 6891) and counts it in ARCOUNT. The DO bit
// is copied from the query (RFC 3225).
func appendOPT(buf []byte, do bool) []byte {
	var flags byte
	if do {
		flags = 0x80
	}
	buf = append(buf,
		0,                     // root name
		0, byte(mdns.TypeOPT), // type
		byte(advertisedUDPSize>>8), byte(advertisedUDPSize&0xFF), // class: UDP payload size
		0, 0, flags, 0, // TTL: extended rcode, version, DO and Z
		0, 0, // RDLENGTH
	)
	binary.BigEndian.PutUint16(buf[10:], binary.BigEndian.Uint16(buf[10:])+1)
	return buf
}

// write sends buf, truncating it to limit first when it is too large (UDP: TC is set
// and as many records as fit are kept; the client retries over TCP).
func (s *Server) write(w mdns.ResponseWriter, buf []byte, limit int) {
	if len(buf) <= limit {
		_, _ = w.Write(buf)
		return
	}
	m := new(mdns.Msg)
	if err := m.Unpack(buf); err != nil {
		s.log.Error("dns: unpacking a built response", "err", err)
		return
	}
	m.Truncate(limit)
	_ = w.WriteMsg(m)
}

// writeRcode answers with an empty message carrying rcode.
func (s *Server) writeRcode(w mdns.ResponseWriter, r *mdns.Msg, opt *mdns.OPT, rcode int) int {
	m := new(mdns.Msg)
	m.SetRcode(r, rcode)
	if rcode == mdns.RcodeFormatError || rcode == mdns.RcodeNotImplemented {
		m.Question = nil
		m.Opcode = r.Opcode
	}
	m.RecursionAvailable = s.cfg.recursion
	if opt != nil || rcode > 0xF {
		do := opt != nil && opt.Do()
		m.SetEdns0(advertisedUDPSize, do)
	}
	_ = w.WriteMsg(m)
	return rcode
}
