package dns

import (
	"net"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// TestTruncation: a headless Service with 200 endpoints does not fit in 512 bytes. Over
// UDP the answer is truncated to the client's buffer (512 without EDNS0, else the EDNS0
// size) with TC set; over TCP it comes whole.
func TestTruncation(t *testing.T) {
	s := startServer(t, Options{})
	s.Update(testSnapshot())
	const name = "big.other.svc.cluster.local."

	tests := []struct {
		name      string
		network   string
		edns      uint16 // 0: no EDNS0
		qtype     uint16
		wantTC    bool
		wantCount int // answers, -1: fewer than all
		maxLen    int
	}{
		{"UDP without EDNS0: 512 bytes, TC", "udp", 0, mdns.TypeA, true, -1, 512},
		{"UDP with EDNS0 1232: TC", "udp", 1232, mdns.TypeA, true, -1, 1232},
		{"UDP with EDNS0 below 512 counts as 512", "udp", 100, mdns.TypeA, true, -1, 512},
		{"UDP with EDNS0 4096: whole answer", "udp", 4096, mdns.TypeA, false, 200, 4096},
		{"TCP: whole answer", "tcp", 0, mdns.TypeA, false, 200, 65535},
		{"TCP with EDNS0 512: whole answer", "tcp", 512, mdns.TypeA, false, 200, 65535},
		{"UDP SRV with additional: TC", "udp", 1232, mdns.TypeSRV, true, -1, 1232},
		{"TCP SRV: whole answer", "tcp", 0, mdns.TypeSRV, false, 200, 65535},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			qname := name
			if tt.qtype == mdns.TypeSRV {
				qname = "_http._tcp." + name
			}
			m := question(qname, tt.qtype)
			if tt.edns != 0 {
				m.SetEdns0(tt.edns, false)
			}
			r := exchange(t, s.Addr(), tt.network, m)
			if r.Rcode != mdns.RcodeSuccess {
				t.Fatalf("rcode %s", mdns.RcodeToString[r.Rcode])
			}
			if r.Truncated != tt.wantTC {
				t.Errorf("TC = %v, want %v", r.Truncated, tt.wantTC)
			}
			if tt.wantCount >= 0 && len(r.Answer) != tt.wantCount {
				t.Errorf("%d answers, want %d", len(r.Answer), tt.wantCount)
			}
			if tt.wantCount < 0 && (len(r.Answer) == 0 || len(r.Answer) >= 200) {
				t.Errorf("%d answers, want some but not all", len(r.Answer))
			}
			if tt.edns != 0 && r.IsEdns0() == nil {
				t.Errorf("no OPT in the answer to an EDNS0 query")
			}
			if tt.edns == 0 && r.IsEdns0() != nil {
				t.Errorf("OPT in the answer to a query without EDNS0")
			}
			r.Compress = true
			if l := r.Len(); l > tt.maxLen {
				t.Errorf("answer is %d bytes, limit %d", l, tt.maxLen)
			}
		})
	}
}

// TestServfailBeforeUpdate: until the first Snapshot, the cluster zone answers SERVFAIL
// (CoreDNS does the same until it has synced with the API).
func TestServfailBeforeUpdate(t *testing.T) {
	s := startServer(t, Options{})
	r := exchange(t, s.Addr(), "udp", question("web.default.svc.cluster.local.", mdns.TypeA))
	if r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("before Update: rcode %s, want SERVFAIL", mdns.RcodeToString[r.Rcode])
	}
	s.Update(testSnapshot())
	r = exchange(t, s.Addr(), "udp", question("web.default.svc.cluster.local.", mdns.TypeA))
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("after Update: %v", r)
	}
}

// TestMalformed sends queries the server must reject, and garbage it must survive.
func TestMalformed(t *testing.T) {
	s := startServer(t, Options{})
	s.Update(testSnapshot())

	pack := func(m *mdns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	twoQuestions := question("web.default.svc.cluster.local.", mdns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	noQuestion := new(mdns.Msg)
	noQuestion.Id = 7
	notify := question("cluster.local.", mdns.TypeSOA)
	notify.Opcode = mdns.OpcodeNotify
	update := question("cluster.local.", mdns.TypeSOA)
	update.Opcode = mdns.OpcodeUpdate
	status := question("cluster.local.", mdns.TypeSOA)
	status.Opcode = mdns.OpcodeStatus
	badVersion := question("web.default.svc.cluster.local.", mdns.TypeA)
	badVersion.SetEdns0(1232, false)
	badVersion.IsEdns0().SetVersion(1)
	truncatedQuestion := pack(question("web.default.svc.cluster.local.", mdns.TypeA))
	truncatedQuestion = truncatedQuestion[:len(truncatedQuestion)-6]
	response := question("web.default.svc.cluster.local.", mdns.TypeA)
	response.Response = true

	tests := []struct {
		name    string
		packet  []byte
		rcode   int  // expected rcode
		noReply bool // the server stays silent
	}{
		{name: "two questions", packet: pack(twoQuestions), rcode: mdns.RcodeFormatError},
		{name: "no question", packet: pack(noQuestion), rcode: mdns.RcodeFormatError},
		{name: "NOTIFY", packet: pack(notify), rcode: mdns.RcodeNotImplemented},
		{name: "UPDATE", packet: pack(update), rcode: mdns.RcodeNotImplemented},
		{name: "STATUS", packet: pack(status), rcode: mdns.RcodeNotImplemented},
		{name: "EDNS version 1", packet: pack(badVersion), rcode: mdns.RcodeBadVers},
		{name: "question cut short", packet: truncatedQuestion, rcode: mdns.RcodeFormatError},
		{name: "shorter than a header", packet: []byte{1, 2, 3}, noReply: true},
		{name: "a response", packet: pack(response), noReply: true},
		{name: "label pointer loop", packet: []byte{0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}, rcode: mdns.RcodeFormatError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("udp", s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(tt.packet); err != nil {
				t.Fatal(err)
			}
			wait := 2 * time.Second
			if tt.noReply {
				wait = 200 * time.Millisecond
			}
			_ = conn.SetReadDeadline(time.Now().Add(wait))
			buf := make([]byte, 4096)
			n, err := conn.Read(buf)
			if tt.noReply {
				if err == nil {
					t.Fatalf("got a %d-byte reply, want none", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			var r mdns.Msg
			if err := r.Unpack(buf[:n]); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if r.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tt.rcode])
			}
			if !r.Response {
				t.Errorf("QR not set")
			}
		})
	}
	// The server still answers.
	r := exchange(t, s.Addr(), "udp", question("web.default.svc.cluster.local.", mdns.TypeA))
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("after malformed input: %v", r)
	}
}

// TestEDNS: the OPT record of the answer advertises weir's buffer size and echoes DO.
func TestEDNS(t *testing.T) {
	s := startServer(t, Options{})
	s.Update(testSnapshot())
	for _, tt := range []struct {
		name  string
		qname string
		do    bool
		rcode int
	}{
		{"positive", "web.default.svc.cluster.local.", false, mdns.RcodeSuccess},
		{"positive with DO", "web.default.svc.cluster.local.", true, mdns.RcodeSuccess},
		{"NXDOMAIN with DO", "nope.default.svc.cluster.local.", true, mdns.RcodeNameError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := question(tt.qname, mdns.TypeA)
			m.SetEdns0(1232, tt.do)
			r := exchange(t, s.Addr(), "udp", m)
			if r.Rcode != tt.rcode {
				t.Fatalf("rcode %s", mdns.RcodeToString[r.Rcode])
			}
			opt := r.IsEdns0()
			if opt == nil {
				t.Fatal("no OPT")
			}
			if opt.UDPSize() != advertisedUDPSize || opt.Do() != tt.do || opt.Version() != 0 {
				t.Errorf("OPT = size %d DO %v version %d", opt.UDPSize(), opt.Do(), opt.Version())
			}
		})
	}
}

// TestQueryClass: class ANY is answered like IN, with the question echoed; other classes
// (CHAOS version.bind and the like) are refused in the cluster zone.
func TestQueryClass(t *testing.T) {
	s := startServer(t, Options{})
	s.Update(testSnapshot())
	for _, tt := range []struct {
		name   string
		qname  string
		qclass uint16
		rcode  int
		n      int
	}{
		{"IN", "web.default.svc.cluster.local.", mdns.ClassINET, mdns.RcodeSuccess, 1},
		{"ANY", "web.default.svc.cluster.local.", mdns.ClassANY, mdns.RcodeSuccess, 1},
		{"ANY NXDOMAIN", "nope.default.svc.cluster.local.", mdns.ClassANY, mdns.RcodeNameError, 0},
		{"CHAOS", "web.default.svc.cluster.local.", mdns.ClassCHAOS, mdns.RcodeRefused, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := question(tt.qname, mdns.TypeA)
			m.Question[0].Qclass = tt.qclass
			r := exchange(t, s.Addr(), "udp", m)
			if r.Rcode != tt.rcode || len(r.Answer) != tt.n {
				t.Fatalf("rcode %s, %d answers; want %s, %d", mdns.RcodeToString[r.Rcode], len(r.Answer), mdns.RcodeToString[tt.rcode], tt.n)
			}
			if len(r.Question) == 1 && r.Question[0].Qclass != tt.qclass {
				t.Errorf("question class %d, want %d", r.Question[0].Qclass, tt.qclass)
			}
		})
	}
}
