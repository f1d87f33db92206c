package dns

import (
	"net"
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"weir.dev/weir/internal/model"
)

// recorder is a ResponseWriter that keeps what the handler writes.
type recorder struct {
	udp     bool
	replies [][]byte
}

func (r *recorder) LocalAddr() net.Addr {
	if r.udp {
		return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
}

func (r *recorder) RemoteAddr() net.Addr {
	if r.udp {
		return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000}
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000}
}

func (r *recorder) WriteMsg(m *mdns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = r.Write(b)
	return err
}

func (r *recorder) Write(b []byte) (int, error) {
	r.replies = append(r.replies, append([]byte(nil), b...))
	return len(b), nil
}

func (r *recorder) Close() error        { return nil }
func (r *recorder) TsigStatus() error   { return nil }
func (r *recorder) TsigTimersOnly(bool) {}
func (r *recorder) Hijack()             {}

// msg returns the one reply, decoded.
func (r *recorder) msg(t *testing.T) *mdns.Msg {
	t.Helper()
	if len(r.replies) != 1 {
		t.Fatalf("%d replies, want 1", len(r.replies))
	}
	var m mdns.Msg
	if err := m.Unpack(r.replies[0]); err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return &m
}

// FuzzHandler feeds raw query bytes to the handler (as the miekg/dns server would after
// decoding them) and checks that every query gets exactly one well-formed reply with its
// ID and question, within the transport's size limit. The corpus in
// testdata/fuzz/FuzzHandler holds real queries of every kind; plain `go test` runs it.
func FuzzHandler(f *testing.F) {
	s, err := New(Options{Addr: "127.0.0.1:0"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.pc.Close(); s.ln.Close() })
	snap := testSnapshot()
	// ExternalNames inside the zone, which answers follow: to the big headless Service
	// (truncation), to a missing name, and in a loop.
	for name, target := range map[string]string{"alias-big": "big.other.svc.cluster.local", "alias-missing": "nope.default.svc.cluster.local",
		"loop-a": "loop-b.default.svc.cluster.local", "loop-b": "loop-a.default.svc.cluster.local"} {
		snap.Services = append(snap.Services, &model.Service{Key: model.ServiceKey{Namespace: "default", Name: name}, Type: model.ExternalName, ExternalName: target})
	}
	slices.SortFunc(snap.Services, func(a, b *model.Service) int { return a.Key.Compare(b.Key) })
	s.Update(snap)

	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.default.svc.cluster.local.", mdns.TypeA},
		{"_http._tcp.web.default.svc.cluster.local.", mdns.TypeSRV},
		{"big.other.svc.cluster.local.", mdns.TypeA},
		{"alias-big.default.svc.cluster.local.", mdns.TypeA},
		{"alias-missing.default.svc.cluster.local.", mdns.TypeAAAA},
		{"loop-a.default.svc.cluster.local.", mdns.TypeA},
	} {
		m := question(q.name, q.qtype)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
	}

	f.Fuzz(func(t *testing.T, raw []byte, udp bool) {
		var req mdns.Msg
		if err := req.Unpack(raw); err != nil {
			return // the miekg/dns server answers FORMERR itself and never calls the handler
		}
		w := &recorder{udp: udp}
		s.ServeDNS(w, &req)
		if req.Response {
			if len(w.replies) != 0 {
				t.Fatalf("answered a response")
			}
			return
		}
		if len(w.replies) != 1 {
			t.Fatalf("%d replies, want 1", len(w.replies))
		}
		reply := w.replies[0]
		var m mdns.Msg
		if err := m.Unpack(reply); err != nil {
			t.Fatalf("reply does not parse: %v\nquery: %v", err, &req)
		}
		if m.Id != req.Id || !m.Response {
			t.Fatalf("reply ID %d QR %v, query ID %d", m.Id, m.Response, req.Id)
		}
		limit := mdns.MaxMsgSize
		if udp {
			limit = mdns.MinMsgSize
			if o := req.IsEdns0(); o != nil {
				limit = min(max(int(o.UDPSize()), mdns.MinMsgSize), maxUDPSize)
			}
		}
		if len(reply) > limit {
			t.Fatalf("reply of %d bytes over a limit of %d", len(reply), limit)
		}
		if m.Rcode == mdns.RcodeSuccess || m.Rcode == mdns.RcodeNameError {
			if len(m.Question) != 1 || len(req.Question) != 1 ||
				!strings.EqualFold(m.Question[0].Name, req.Question[0].Name) ||
				m.Question[0].Qtype != req.Question[0].Qtype {
				t.Fatalf("reply question %v, query question %v", m.Question, req.Question)
			}
		}
	})
}
