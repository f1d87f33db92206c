package dns

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// upstream is a second miekg/dns server on loopback playing the recursive resolver.
type upstream struct {
	addr    string
	queries atomic.Int64
}

// startUpstream serves (slow.example.org after 300 ms):
//   - a.example.org A 192.0.2.1, TTL ttl
//   - big.example.org TXT with 40 long strings (truncated over UDP)
//   - short.example.org A 192.0.2.2, TTL 1
//   - NXDOMAIN for the rest, SOA TTL 3600 and minimum 20
func startUpstream(t *testing.T, ttl uint32) *upstream {
	t.Helper()
	u := &upstream{}
	handler := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		u.queries.Add(1)
		m := new(mdns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		hdr := func(rrtype uint16, ttl uint32) mdns.RR_Header {
			return mdns.RR_Header{Name: q.Name, Rrtype: rrtype, Class: mdns.ClassINET, Ttl: ttl}
		}
		switch strings.ToLower(q.Name) {
		case "slow.example.org.":
			time.Sleep(300 * time.Millisecond)
			m.Answer = append(m.Answer, &mdns.A{Hdr: hdr(mdns.TypeA, ttl), A: net.IPv4(192, 0, 2, 3)})
		case "a.example.org.":
			m.Answer = append(m.Answer, &mdns.A{Hdr: hdr(mdns.TypeA, ttl), A: net.IPv4(192, 0, 2, 1)})
		case "short.example.org.":
			m.Answer = append(m.Answer, &mdns.A{Hdr: hdr(mdns.TypeA, 1), A: net.IPv4(192, 0, 2, 2)})
		case "big.example.org.":
			for range 40 {
				m.Answer = append(m.Answer, &mdns.TXT{Hdr: hdr(mdns.TypeTXT, ttl), Txt: []string{strings.Repeat("x", 100)}})
			}
		default:
			m.Rcode = mdns.RcodeNameError
			m.Ns = append(m.Ns, &mdns.SOA{
				Hdr: mdns.RR_Header{Name: "example.org.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 3600},
				Ns:  "ns.example.org.", Mbox: "h.example.org.", Serial: 1, Refresh: 1, Retry: 1, Expire: 1, Minttl: 20,
			})
		}
		if o := r.IsEdns0(); o != nil {
			m.SetEdns0(o.UDPSize(), false)
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			size := mdns.MinMsgSize
			if o := r.IsEdns0(); o != nil {
				size = int(o.UDPSize())
			}
			m.Truncate(size)
		}
		_ = w.WriteMsg(m)
	})
	// Borrow the pair of sockets a Server binds (TCP first, then UDP on its port).
	sockets, err := New(Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	pc, ln := sockets.pc, sockets.ln
	u.addr = sockets.Addr()
	udp := &mdns.Server{PacketConn: pc, Handler: handler}
	tcp := &mdns.Server{Listener: ln, Handler: handler}
	started := make(chan struct{}, 2)
	for _, srv := range []*mdns.Server{udp, tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { _ = srv.ActivateAndServe() }()
	}
	<-started
	<-started
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = udp.ShutdownContext(ctx)
		_ = tcp.ShutdownContext(ctx)
	})
	return u
}

// deadUpstream returns a loopback address where nothing answers DNS.
func deadUpstream(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() }) // bound but never read: queries time out
	return pc.LocalAddr().String()
}

func TestForwarding(t *testing.T) {
	up := startUpstream(t, 300)
	s := startServer(t, Options{Upstreams: []string{up.addr}})
	s.Update(testSnapshot())

	t.Run("answer from upstream, RA set", func(t *testing.T) {
		r := exchange(t, s.Addr(), "udp", question("a.example.org.", mdns.TypeA))
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "192.0.2.1" {
			t.Fatalf("answer %v", r)
		}
		if !r.RecursionAvailable || r.Authoritative {
			t.Errorf("RA %v AA %v, want RA and not AA", r.RecursionAvailable, r.Authoritative)
		}
		// The TTL is capped at 30 s: the cache keeps it no longer, so it tells no more.
		if ttl := r.Answer[0].Header().Ttl; ttl > 300 {
			t.Errorf("TTL %d", ttl)
		}
	})
	t.Run("cached: upstream not asked again", func(t *testing.T) {
		before := up.queries.Load()
		for range 5 {
			r := exchange(t, s.Addr(), "udp", question("A.EXAMPLE.org.", mdns.TypeA))
			if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("answer %v", r)
			}
			if r.Question[0].Name != "A.EXAMPLE.org." {
				t.Errorf("question %v: the client's spelling is not kept", r.Question[0])
			}
		}
		if n := up.queries.Load() - before; n != 0 {
			t.Errorf("upstream asked %d more times", n)
		}
	})
	t.Run("NXDOMAIN forwarded and cached", func(t *testing.T) {
		before := up.queries.Load()
		for range 3 {
			r := exchange(t, s.Addr(), "udp", question("nope.example.org.", mdns.TypeA))
			if r.Rcode != mdns.RcodeNameError || len(r.Ns) != 1 {
				t.Fatalf("answer %v", r)
			}
		}
		if n := up.queries.Load() - before; n != 1 {
			t.Errorf("upstream asked %d times, want 1", n)
		}
	})
	t.Run("truncated over UDP upstream: retried over TCP, truncated to the client", func(t *testing.T) {
		r := exchange(t, s.Addr(), "udp", question("big.example.org.", mdns.TypeTXT))
		if r.Rcode != mdns.RcodeSuccess || !r.Truncated || len(r.Answer) >= 40 {
			t.Fatalf("UDP: rcode %s TC %v answers %d", mdns.RcodeToString[r.Rcode], r.Truncated, len(r.Answer))
		}
		r = exchange(t, s.Addr(), "tcp", question("big.example.org.", mdns.TypeTXT))
		if r.Rcode != mdns.RcodeSuccess || r.Truncated || len(r.Answer) != 40 {
			t.Fatalf("TCP: rcode %s TC %v answers %d", mdns.RcodeToString[r.Rcode], r.Truncated, len(r.Answer))
		}
	})
	t.Run("concurrent misses share one upstream query", func(t *testing.T) {
		before := up.queries.Load()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				c := &mdns.Client{Net: "tcp", Timeout: 5 * time.Second}
				r, _, err := c.Exchange(question("slow.example.org.", mdns.TypeA), s.Addr())
				if err != nil || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
					t.Errorf("answer %v, err %v", r, err)
				}
			})
		}
		wg.Wait()
		if n := up.queries.Load() - before; n != 1 {
			t.Errorf("upstream asked %d times, want 1", n)
		}
	})
	t.Run("unknown reverse names are forwarded", func(t *testing.T) {
		r := exchange(t, s.Addr(), "udp", question("4.3.2.1.in-addr.arpa.", mdns.TypePTR))
		if r.Rcode != mdns.RcodeNameError || r.Authoritative {
			t.Fatalf("answer %v", r)
		}
	})
	t.Run("cluster zone is not forwarded", func(t *testing.T) {
		before := up.queries.Load()
		r := exchange(t, s.Addr(), "udp", question("nope.default.svc.cluster.local.", mdns.TypeA))
		if r.Rcode != mdns.RcodeNameError || !r.Authoritative || !r.RecursionAvailable {
			t.Fatalf("answer %v", r)
		}
		if up.queries.Load() != before {
			t.Errorf("cluster zone query reached upstream")
		}
	})
}

// TestForwardingFailover: a dead first upstream costs one timeout, then the second one
// answers.
func TestForwardingFailover(t *testing.T) {
	up := startUpstream(t, 300)
	s := startServer(t, Options{Upstreams: []string{deadUpstream(t), up.addr}, UpstreamTimeout: time.Second})
	s.Update(testSnapshot())
	r := exchange(t, s.Addr(), "udp", question("a.example.org.", mdns.TypeA))
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("answer %v", r)
	}
	if up.queries.Load() != 1 {
		t.Errorf("second upstream asked %d times, want 1", up.queries.Load())
	}
}

func TestForwardingAllUpstreamsDown(t *testing.T) {
	s := startServer(t, Options{Upstreams: []string{deadUpstream(t)}, UpstreamTimeout: 100 * time.Millisecond})
	s.Update(testSnapshot())
	r := exchange(t, s.Addr(), "udp", question("a.example.org.", mdns.TypeA))
	if r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("rcode %s, want SERVFAIL", mdns.RcodeToString[r.Rcode])
	}
}

func TestRefusedWithoutUpstreams(t *testing.T) {
	s := startServer(t, Options{})
	s.Update(testSnapshot())
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"a.example.org.", mdns.TypeA}, {"4.3.2.1.in-addr.arpa.", mdns.TypePTR}, {"org.", mdns.TypeNS}} {
		r := exchange(t, s.Addr(), "udp", question(q.name, q.qtype))
		if r.Rcode != mdns.RcodeRefused {
			t.Errorf("%s: rcode %s, want REFUSED", q.name, mdns.RcodeToString[r.Rcode])
		}
		if r.RecursionAvailable {
			t.Errorf("%s: RA set without upstreams", q.name)
		}
	}
}

func TestCacheTTL(t *testing.T) {
	a := func(ttl uint32) mdns.RR {
		return &mdns.A{Hdr: mdns.RR_Header{Name: "a.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: ttl}, A: net.IPv4(1, 2, 3, 4)}
	}
	soa := func(ttl, minttl uint32) mdns.RR {
		return &mdns.SOA{Hdr: mdns.RR_Header{Name: "a.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: ttl}, Ns: "n.", Mbox: "m.", Minttl: minttl}
	}
	tests := []struct {
		name string
		msg  *mdns.Msg
		want time.Duration
	}{
		{"smallest answer TTL", &mdns.Msg{Answer: []mdns.RR{a(20), a(10)}}, 10 * time.Second},
		{"capped at 30 s", &mdns.Msg{Answer: []mdns.RR{a(3600)}}, 30 * time.Second},
		{"zero TTL: not cached", &mdns.Msg{Answer: []mdns.RR{a(0)}}, 0},
		{"NXDOMAIN: SOA minimum", &mdns.Msg{MsgHdr: mdns.MsgHdr{Rcode: mdns.RcodeNameError}, Ns: []mdns.RR{soa(3600, 7)}}, 7 * time.Second},
		{"NODATA: SOA TTL below minimum", &mdns.Msg{Ns: []mdns.RR{soa(4, 60)}}, 4 * time.Second},
		{"no SOA: not cached", &mdns.Msg{MsgHdr: mdns.MsgHdr{Rcode: mdns.RcodeNameError}}, 0},
		{"SERVFAIL: not cached", &mdns.Msg{MsgHdr: mdns.MsgHdr{Rcode: mdns.RcodeServerFailure}, Answer: []mdns.RR{a(10)}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cacheTTL(tt.msg); got != tt.want {
				t.Errorf("cacheTTL = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestCacheBoundsAndAging checks that the cache holds at most its size, ages TTLs and
// expires entries.
func TestCacheBoundsAndAging(t *testing.T) {
	c := newCache(3)
	now := time.Now()
	msg := func(ttl uint32) *mdns.Msg {
		return &mdns.Msg{Answer: []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: "a.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: ttl}, A: net.IPv4(1, 2, 3, 4)}}}
	}
	for i := range 10 {
		c.put(cacheKey{name: string(rune('a' + i)), qtype: 1}, msg(20), now)
		if c.len() > 3 {
			t.Fatalf("cache holds %d entries, bound 3", c.len())
		}
	}
	key := cacheKey{name: "x", qtype: 1}
	c.put(key, msg(20), now)
	got := c.get(key, now.Add(5*time.Second))
	if got == nil || got.Answer[0].Header().Ttl != 15 {
		t.Fatalf("after 5 s: %v, want TTL 15", got)
	}
	if got := c.get(key, now.Add(20*time.Second)); got != nil {
		t.Fatalf("after 20 s: %v, want expired", got)
	}
}
