package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"weir.dev/weir/internal/gateway/router"
	"weir.dev/weir/internal/http1"
	"weir.dev/weir/internal/model"
)

// misdirected reports whether an HTTPS request's Host (host, as router.Host gives it)
// is served by another section (Gateway listener) of its port than the TLS server name
// it connected with: it is answered 421 Misdirected Request (RFC 9110 §15.5.20), as
// Gateway API asks (HTTPRouteHTTPSListenerDetectMisdirectedRequests), so that a client
// reusing a connection for another name (HTTP/2 coalescing) retries on a new one and
// no request reaches a listener whose certificate and policy it did not negotiate. A
// connection without a server name is never misdirected.
func misdirected(t *router.Table, serverName, host string) bool {
	if serverName == "" {
		return false
	}
	sni := strings.ToLower(strings.TrimSuffix(serverName, "."))
	if sni == host {
		return false
	}
	return t.Section(sni) != t.Section(host)
}

// serverTLS is the TLS configuration of every listener that terminates TLS (HTTPS, and
// TLS in mode Terminate), after Mozilla's "intermediate" profile (server side TLS
// guidelines 5.7): TLS 1.2 and 1.3; in TLS 1.2 only ECDHE key exchange with AEAD
// ciphers (AES-GCM, ChaCha20-Poly1305), so no CBC mode, no SHA-1 MAC and no static RSA
// key exchange (Go's TLS has no finite-field DHE, which the profile also lists); the
// TLS 1.3 suites are all AEAD and not configurable in Go; groups X25519MLKEM768,
// X25519, P-256, P-384. get picks the certificate by SNI.
func serverTLS(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		CipherSuites:     intermediateSuites,
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384},
		GetCertificate:   get,
	}
}

// intermediateSuites are the TLS 1.2 suites of the intermediate profile that Go
// implements, in its order. HTTP/2 requires the first two (RFC 9113 §9.2.2).
var intermediateSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// certTable selects a certificate by SNI (HTTPS listeners, and TLS listeners in mode
// Terminate): an exact name of a certificate, then a wildcard name, then the
// certificate of the section that serves the name, then the first certificate.
type certTable struct {
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate // by suffix ".example.com"
	sections []sectionCert
	first    *tls.Certificate
}

type sectionCert struct {
	hostname string
	cert     *tls.Certificate
}

func newCertTable(l *model.Listener) (*certTable, error) {
	t := &certTable{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	for _, sec := range l.Sections {
		for i, c := range sec.Certificates {
			cert, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
			if err != nil {
				return nil, fmt.Errorf("certificate %s: %w", c.Source, err)
			}
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				return nil, fmt.Errorf("certificate %s: %w", c.Source, err)
			}
			cert.Leaf = leaf
			names := leaf.DNSNames
			if len(names) == 0 && leaf.Subject.CommonName != "" {
				names = []string{leaf.Subject.CommonName}
			}
			for _, n := range names {
				n = strings.ToLower(n)
				if suffix, ok := strings.CutPrefix(n, "*"); ok {
					if _, dup := t.wildcard[suffix]; !dup {
						t.wildcard[suffix] = &cert
					}
				} else if _, dup := t.exact[n]; !dup {
					t.exact[n] = &cert
				}
			}
			if i == 0 {
				t.sections = append(t.sections, sectionCert{hostname: sec.Hostname, cert: &cert})
			}
			if t.first == nil {
				t.first = &cert
			}
		}
	}
	if t.first == nil {
		return nil, errors.New("no certificate to terminate TLS with")
	}
	return t, nil
}

func (t *certTable) get(sni string) (*tls.Certificate, error) {
	sni = strings.ToLower(strings.TrimSuffix(sni, "."))
	if c := t.exact[sni]; c != nil {
		return c, nil
	}
	if i := strings.IndexByte(sni, '.'); i > 0 {
		if c := t.wildcard[sni[i:]]; c != nil {
			return c, nil
		}
	}
	for _, s := range t.sections {
		if s.hostname == "" || s.hostname == sni || (strings.HasPrefix(s.hostname, "*.") && strings.HasSuffix(sni, s.hostname[1:])) {
			return s.cert, nil
		}
	}
	return t.first, nil
}

// tlsListener is what an HTTPS listener's net/http server accepts from: it completes
// each connection's TLS handshake itself (within ReadHeaderTimeout, as net/http bounds
// it) and hands over a connection that negotiated h2 as the *tls.Conn, which net/http
// serves with HTTP/2, and one that speaks HTTP/1 through an http1.Guard, so that
// weir's framing rules apply to it as on plaintext listeners.
type tlsListener struct {
	net.Listener
	cfg     *tls.Config
	timeout time.Duration
	maxHead int
	ready   chan net.Conn
	done    chan struct{} // closed when the listener stopped accepting
	err     error         // why, once done is closed
	shaking connSet       // connections in their handshake
}

func (g *Gateway) newTLSListener(ln net.Listener, cfg *tls.Config) *tlsListener {
	cfg.NextProtos = []string{"h2", "http/1.1"}
	l := &tlsListener{Listener: ln, cfg: cfg, timeout: g.opts.ReadHeaderTimeout, maxHead: g.opts.MaxHeaderBytes + 4096,
		ready: make(chan net.Conn), done: make(chan struct{})}
	g.wg.Go(func() {
		defer close(l.done)
		defer l.shaking.closeAll()
		for {
			c, err := ln.Accept()
			if err != nil && !errors.Is(err, net.ErrClosed) {
				time.Sleep(10 * time.Millisecond) // out of descriptors, say: net/http waits too
				continue
			}
			if err != nil {
				l.err = err
				return
			}
			l.shaking.add(c)
			g.wg.Go(func() { l.handshake(c) })
		}
	})
	return l
}

func (l *tlsListener) handshake(c net.Conn) {
	defer l.shaking.remove(c)
	tc := tls.Server(c, l.cfg)
	_ = c.SetDeadline(time.Now().Add(l.timeout))
	if err := tc.Handshake(); err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	var out net.Conn = tc
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		out = tlsGuard{http1.NewGuard(tc, l.maxHead), tc}
	}
	select {
	case l.ready <- out:
	case <-l.done:
		_ = out.Close()
	}
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// tlsGuard is an HTTP/1 connection over TLS, guarded; net/http reads its TLS state
// (Request.TLS) through ConnectionState.
type tlsGuard struct {
	*http1.Guard
	tc *tls.Conn
}

func (c tlsGuard) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }
