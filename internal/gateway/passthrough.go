package gateway

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/model"
)

// ptTable routes TLS connections by SNI without terminating them (TLSRoute on a TLS
// listener in Passthrough mode).
type ptTable struct {
	routes []*ptRoute // most specific hostname first
}

type ptRoute struct {
	hostname string // exact, "*.suffix" or "" (any)
	backends []*backendRuntime
}

func (b *builder) passthrough(ml *model.Listener) *ptTable {
	t := &ptTable{}
	for _, sec := range ml.Sections {
		for _, pr := range sec.Passthrough {
			var bes []*backendRuntime
			for _, be := range pr.Backends {
				bes = append(bes, &backendRuntime{b: be, cl: b.cluster(be)})
			}
			for _, h := range pr.Hostnames {
				t.routes = append(t.routes, &ptRoute{hostname: strings.ToLower(h), backends: bes})
			}
		}
	}
	// Exact names first, then wildcards by length, then the catch-all.
	rank := func(h string) int {
		switch {
		case h == "":
			return 2
		case strings.HasPrefix(h, "*."):
			return 1
		}
		return 0
	}
	for i := 1; i < len(t.routes); i++ {
		for j := i; j > 0; j-- {
			a, b := t.routes[j-1], t.routes[j]
			if rank(b.hostname) < rank(a.hostname) || (rank(b.hostname) == rank(a.hostname) && len(b.hostname) > len(a.hostname)) {
				t.routes[j-1], t.routes[j] = b, a
			}
		}
	}
	return t
}

func (t *ptTable) match(sni string) *ptRoute {
	sni = strings.ToLower(sni)
	for _, r := range t.routes {
		if r.hostname == "" || r.hostname == sni {
			return r
		}
		if suffix, ok := strings.CutPrefix(r.hostname, "*"); ok && len(sni) > len(suffix) && strings.HasSuffix(sni, suffix) {
			return r
		}
	}
	return nil
}

// errHelloRead stops the TLS handshake once the ClientHello is read.
var errHelloRead = errors.New("client hello read")

// readOnlyConn lets crypto/tls parse a ClientHello from recorded bytes; it refuses
// writes so that nothing reaches the client.
type readOnlyConn struct {
	r io.Reader
	net.Conn
}

func (c readOnlyConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c readOnlyConn) Write(p []byte) (int, error) { return 0, io.ErrClosedPipe }

// peekSNI reads the ClientHello from c and returns its server name and the bytes
// read, which must be replayed to the backend.
func peekSNI(c net.Conn) (string, []byte, error) {
	var buf bytes.Buffer
	var sni string
	err := tls.Server(readOnlyConn{r: io.TeeReader(c, &buf), Conn: c}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni = h.ServerName
			return nil, errHelloRead
		},
	}).Handshake()
	if sni == "" && !errors.Is(err, errHelloRead) {
		return "", nil, err
	}
	return sni, buf.Bytes(), nil
}

// connSet tracks a passthrough listener's open connections so that they can be
// closed when the listener goes away.
type connSet struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
}

// acceptPassthrough serves a TLS passthrough listener until it is closed.
func (g *Gateway) acceptPassthrough(l *listener) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		l.conns.add(c)
		g.wg.Go(func() {
			defer l.conns.remove(c)
			defer c.Close()
			g.passthroughConn(c, l.pt.Load())
		})
	}
}

func (g *Gateway) passthroughConn(c net.Conn, t *ptTable) {
	_ = c.SetReadDeadline(time.Now().Add(g.opts.ReadHeaderTimeout))
	sni, hello, err := peekSNI(c)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	r := t.match(sni)
	if r == nil {
		return
	}
	var total int64
	for _, br := range r.backends {
		if br.cl != nil {
			total += int64(max(br.b.Weight, 0))
		}
	}
	if total == 0 {
		return
	}
	n := rand.Int64N(total)
	var br *backendRuntime
	for _, x := range r.backends {
		if x.cl == nil {
			continue
		}
		n -= int64(max(x.b.Weight, 0))
		if n < 0 {
			br = x
			break
		}
	}
	cs := br.cl.current(time.Now())
	var key uint64
	if ap, err := netipAddrPort(c.RemoteAddr()); err == nil {
		key = balance.HashAddr(ap.Addr())
	}
	healthy := func(ep *endpoint) bool { return g.health.Healthy(cs.portID, ep.ap) }
	var tried []*endpoint
	var up net.Conn
	for range 3 {
		ep := br.cl.pick(cs, key, 0, tried, healthy)
		if ep == nil {
			return
		}
		tried = append(tried, ep)
		up, err = g.up.dialer.DialContext(g.ctx, "tcp", ep.host)
		if err == nil {
			g.health.ReportSuccess(cs.portID, ep.ap)
			ep.load.Begin()
			defer ep.load.End()
			break
		}
		g.health.ReportFailure(cs.portID, ep.ap, 0)
	}
	if up == nil {
		return
	}
	defer up.Close()
	if _, err := up.Write(hello); err != nil {
		return
	}
	done := make(chan struct{})
	g.wg.Go(func() {
		defer close(done)
		_, _ = io.Copy(up, c)
		if tc, ok := up.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	})
	_, _ = io.Copy(c, up)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	// The backend is done; give the client a grace period to finish its side.
	_ = c.SetReadDeadline(time.Now().Add(g.opts.ShutdownGrace))
	<-done
}

func netipAddrPort(a net.Addr) (netip.AddrPort, error) {
	return netip.ParseAddrPort(a.String())
}
