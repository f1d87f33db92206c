package gateway

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"weir.dev/weir/internal/balance"
	"weir.dev/weir/internal/health"
	"weir.dev/weir/internal/model"
)

// ptTable routes the TLS connections of a TLS listener by SNI to TLSRoutes. Routes of
// a Passthrough section get the connection untouched; routes of a Terminate section
// get the decrypted byte stream after weir completes the handshake with certs.
type ptTable struct {
	routes []*ptRoute // most specific hostname first
	// certs selects a Terminate section's certificate by SNI, as for HTTPS; nil when
	// no section terminates.
	certs *certTable
}

type ptRoute struct {
	hostname  string // exact, "*.suffix" or "" (any)
	backends  []*backendRuntime
	split     balance.Split
	terminate bool
}

func (b *builder) passthrough(ml *model.Listener) *ptTable {
	t := &ptTable{}
	terminate := false
	for _, sec := range ml.Sections {
		terminate = terminate || sec.Terminate
		for _, pr := range sec.Passthrough {
			var bes []*backendRuntime
			for _, be := range pr.Backends {
				bes = append(bes, &backendRuntime{b: be, cl: b.cluster(be)})
			}
			for _, h := range pr.Hostnames {
				t.routes = append(t.routes, &ptRoute{hostname: strings.ToLower(h), backends: bes, terminate: sec.Terminate})
			}
		}
	}
	if terminate {
		// The model resolved and parsed the certificates already; a failure here
		// leaves the Terminate routes closing their connections.
		ct, err := newCertTable(terminating(ml))
		if err != nil {
			b.g.log.Error("gateway: TLS listener cannot terminate", "address", ml.Address, "err", err)
		}
		t.certs = ct
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
	slices.SortStableFunc(t.routes, func(a, b *ptRoute) int {
		return cmp.Or(cmp.Compare(rank(a.hostname), rank(b.hostname)), cmp.Compare(len(b.hostname), len(a.hostname)))
	})
	return t
}

// terminating is the listener with only its Terminate sections: the certificates
// of Passthrough sections (ignored by the spec) never answer a handshake.
func terminating(ml *model.Listener) *model.Listener {
	out := &model.Listener{Address: ml.Address, Protocol: ml.Protocol}
	for _, sec := range ml.Sections {
		if sec.Terminate {
			out.Sections = append(out.Sections, sec)
		}
	}
	return out
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
		if err != nil && !errors.Is(err, net.ErrClosed) {
			time.Sleep(10 * time.Millisecond) // out of descriptors, say
			continue
		}
		if err != nil {
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
	r := t.match(sni)
	if r == nil {
		return
	}
	if r.terminate {
		g.terminateConn(c, t.certs, hello, r)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	up, done := g.dialRoute(c, r)
	if up == nil {
		return
	}
	defer done()
	if _, err := up.Write(hello); err != nil {
		return
	}
	g.splice(c, up)
}

// terminateConn completes the TLS handshake whose ClientHello was already read (hello)
// with the listener's certificates, then proxies the decrypted stream to r's backends.
func (g *Gateway) terminateConn(c net.Conn, certs *certTable, hello []byte, r *ptRoute) {
	if certs == nil {
		return
	}
	tc := tls.Server(replayConn{r: io.MultiReader(bytes.NewReader(hello), c), Conn: c}, serverTLS(func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return certs.get(h.ServerName)
	}))
	// The read deadline set for the ClientHello bounds the whole handshake.
	if err := tc.Handshake(); err != nil {
		g.log.Debug("gateway: TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	up, done := g.dialRoute(c, r)
	if up == nil {
		return
	}
	defer done()
	g.splice(tlsConn{Conn: tc, raw: c}, up)
}

// tlsConn half-closes a terminated connection with close_notify, then a TCP FIN.
type tlsConn struct {
	*tls.Conn
	raw net.Conn
}

func (c tlsConn) CloseWrite() error {
	err := c.Conn.CloseWrite()
	if cw, ok := c.raw.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
	return err
}

// replayConn reads r (the recorded ClientHello, then the connection) and writes to the
// connection.
type replayConn struct {
	r io.Reader
	net.Conn
}

func (c replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// dialRoute picks one of r's backends by weight, then one of its endpoints (healthy,
// hashed on the client address), and connects, trying up to three endpoints. done
// ends the endpoint's load count and closes the connection; up is nil on failure.
func (g *Gateway) dialRoute(c net.Conn, r *ptRoute) (up net.Conn, done func()) {
	i := r.split.Pick(len(r.backends), func(i int) int64 {
		if r.backends[i].cl == nil {
			return 0
		}
		return int64(r.backends[i].b.Weight)
	})
	if i < 0 {
		return nil, nil
	}
	br := r.backends[i]
	cs := br.cl.current(time.Now())
	var key uint64
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		key = balance.HashAddr(ap.Addr())
	}
	var tried []*endpoint
	for range 3 {
		ep := br.cl.pick(cs, key, 0, tried, g.health)
		if ep == nil {
			return nil, nil
		}
		tried = append(tried, ep)
		// The connection counts against the backend's maxConnections, as HTTP's do.
		if !br.cl.takeConn() {
			g.metrics.overflows.WithLabelValues(br.b.ID).Inc()
			return nil, nil
		}
		up, err := g.up.dialer.DialContext(g.ctx, "tcp", ep.host)
		if err == nil {
			g.health.ReportSuccess(cs.portID, ep.ap)
			ep.load.Begin()
			up = &countedConn{Conn: up, n: &br.cl.conns}
			return up, func() {
				ep.load.End()
				_ = up.Close()
			}
		}
		br.cl.conns.Add(-1)
		g.health.ReportFailure(cs.portID, ep.ap, health.ConnectFailure)
	}
	return nil, nil
}

// closeWriter is a connection whose write side closes alone: *net.TCPConn (FIN) and
// *tls.Conn (close_notify).
type closeWriter interface{ CloseWrite() error }

// splice copies both ways between the client c and the backend up until both are done.
// Each side's end is passed on as a half-close.
func (g *Gateway) splice(c, up net.Conn) {
	done := make(chan struct{})
	g.wg.Go(func() {
		defer close(done)
		_, _ = io.Copy(up, c)
		if cw, ok := up.(closeWriter); ok {
			_ = cw.CloseWrite()
		}
	})
	_, _ = io.Copy(c, up)
	if cw, ok := c.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
	// The backend is done; give the client a grace period to finish its side.
	_ = c.SetReadDeadline(time.Now().Add(g.opts.ShutdownGrace))
	<-done
}
