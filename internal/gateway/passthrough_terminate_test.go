package gateway

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"weir.dev/weir/internal/model"
)

// startTCPEcho serves plain TCP on loopback: each connection gets "name\n", then its
// own bytes back; the backend half-closes once the client has.
func startTCPEcho(t *testing.T, name string) model.Endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_, _ = io.WriteString(c, name+"\n")
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	ap := netip.MustParseAddrPort(ln.Addr().String())
	return model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}
}

// closedEndpoint is a loopback port nothing listens on: connections are refused.
func closedEndpoint(t *testing.T) model.Endpoint {
	ap := netip.MustParseAddrPort(freeAddr(t))
	return model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true, Weight: 1}
}

func tcpBackend(name string, weight int32, eps ...model.Endpoint) *model.Backend {
	return &model.Backend{Service: model.ServiceKey{Namespace: "default", Name: name}, Port: 9000, ID: "default/" + name + ":9000",
		PortID: "default/" + name + ":tcp", Weight: weight, Policy: model.DefaultPolicy(), Endpoints: eps}
}

func tlsRoute(name string, hosts []string, backends ...*model.Backend) *model.PassthroughRoute {
	return &model.PassthroughRoute{Route: model.RouteRef{Kind: "TLSRoute", Namespace: "default", Name: name}, Hostnames: hosts, Backends: backends}
}

// terminateDial opens a TLS connection to addr with sni, checks the certificate against
// pool, and reads the backend's greeting.
func terminateDial(t *testing.T, addr, sni string, pool *x509.CertPool) (*tls.Conn, *bufio.Reader, string, error) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: sni})
	if err != nil {
		return nil, nil, "", err
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	greeting, err := br.ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, nil, "", err
	}
	return conn, br, strings.TrimSuffix(greeting, "\n"), nil
}

// TestTLSTerminate serves a TLS listener with two Terminate sections (a certificate
// each, chosen by SNI) and a Passthrough section on the same port, in front of plain
// TCP echo backends.
func TestTLSTerminate(t *testing.T) {
	crtA, keyA := certPEM(t, "a.example.com")
	crtB, keyB := certPEM(t, "b.example.com")
	passEP, passCrt := startTLSEcho(t, "pass", "x.pass.example.com")
	a1, a2 := startTCPEcho(t, "a1"), startTCPEcho(t, "a2")
	b := startTCPEcho(t, "b")
	off := startTCPEcho(t, "off")
	addr := freeAddr(t)
	config := func(certA []byte, keyA []byte) *model.GatewayConfig {
		return &model.GatewayConfig{Listeners: []*model.Listener{{Address: addr, Protocol: model.ProtocolTLS, Sections: []*model.Section{
			{Name: "default/gw/a", Hostname: "a.example.com", Terminate: true,
				Certificates: []model.Certificate{{Source: "default/a", CertPEM: certA, KeyPEM: keyA}},
				// Weight 0 is never picked; a refused endpoint is skipped for the next.
				Passthrough: []*model.PassthroughRoute{tlsRoute("a", []string{"a.example.com"},
					tcpBackend("a", 1, closedEndpoint(t), a1, a2), tcpBackend("off", 0, off))}},
			{Name: "default/gw/b", Hostname: "b.example.com", Terminate: true,
				Certificates: []model.Certificate{{Source: "default/b", CertPEM: crtB, KeyPEM: keyB}},
				Passthrough:  []*model.PassthroughRoute{tlsRoute("b", []string{"b.example.com"}, tcpBackend("b", 1, b))}},
			{Name: "default/gw/pass", Hostname: "*.pass.example.com",
				Passthrough: []*model.PassthroughRoute{tlsRoute("pass", []string{"*.pass.example.com"},
					&model.Backend{ID: "default/pass:443", PortID: "default/pass:https", Weight: 1, Policy: model.DefaultPolicy(), Endpoints: []model.Endpoint{passEP}})}},
		}}}}
	}
	tg := startGateway(t, Options{}, config(crtA, keyA))
	pool := x509.NewCertPool()
	for _, c := range [][]byte{crtA, crtB, passCrt} {
		pool.AppendCertsFromPEM(c)
	}

	t.Run("certificate and backend by SNI", func(t *testing.T) {
		tests := []struct {
			sni      string
			backends []string
		}{
			{"a.example.com", []string{"a1", "a2"}},
			{"b.example.com", []string{"b"}},
			{"A.Example.COM", []string{"a1", "a2"}},
		}
		for _, tc := range tests {
			seen := map[string]int{}
			for i := range 12 {
				conn, br, greeting, err := terminateDial(t, addr, tc.sni, pool)
				if err != nil {
					t.Fatalf("%s: %v", tc.sni, err)
				}
				if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; !strings.EqualFold(cn, tc.sni) {
					t.Errorf("%s: certificate for %s", tc.sni, cn)
				}
				seen[greeting]++
				msg := "hello " + strings.Repeat("x", i) + "\n"
				if _, err := io.WriteString(conn, msg); err != nil {
					t.Fatal(err)
				}
				if got, err := br.ReadString('\n'); err != nil || got != msg {
					t.Fatalf("%s: echo %q, %v", tc.sni, got, err)
				}
				conn.Close()
			}
			for name := range seen {
				if !strings.Contains(strings.Join(tc.backends, " "), name) {
					t.Errorf("%s reached backend %q, want one of %v (weight 0 and refused endpoints never serve)", tc.sni, name, tc.backends)
				}
			}
			// The client address hash may pin all 12 connections to one endpoint:
			// seeing each endpoint is not required, only the right ones.
			if len(seen) == 0 {
				t.Errorf("%s: no backend reached", tc.sni)
			}
		}
	})

	t.Run("passthrough on the same port is untouched", func(t *testing.T) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "x.pass.example.com"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "x.pass.example.com" {
			t.Fatalf("passthrough answered with %s's certificate, want the backend's", cn)
		}
	})

	t.Run("unrouted SNI is closed", func(t *testing.T) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "c.example.com", InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			t.Fatal("handshake succeeded for an unrouted SNI")
		}
	})

	t.Run("a megabyte each way and half-close", func(t *testing.T) {
		conn, br, _, err := terminateDial(t, addr, "b.example.com", pool)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		payload := make([]byte, 1<<20)
		_, _ = rand.Read(payload)
		errc := make(chan error, 1)
		go func() {
			_, err := conn.Write(payload)
			if err == nil {
				err = conn.CloseWrite() // close_notify: the backend sees EOF
			}
			errc <- err
		}()
		got, err := io.ReadAll(br) // ends when the backend half-closes in turn
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("echo: %d bytes back, want %d identical", len(got), len(payload))
		}
	})

	t.Run("certificate reload keeps the socket", func(t *testing.T) {
		crtA2, keyA2 := certPEM(t, "a.example.com")
		tg.sync(t, config(crtA2, keyA2))
		pool2 := x509.NewCertPool()
		pool2.AppendCertsFromPEM(crtA2)
		conn, _, greeting, err := terminateDial(t, addr, "a.example.com", pool2)
		if err != nil {
			t.Fatalf("handshake with the new certificate: %v", err)
		}
		conn.Close()
		if greeting != "a1" && greeting != "a2" {
			t.Fatalf("backend %q", greeting)
		}
		if got := tg.Addresses()[addr]; got != addr {
			t.Fatalf("listener rebound: %s", got)
		}
	})
}

// TestTLSTerminateHandshakeFailures: a client that does not trust the certificate, or
// that speaks no TLS, is closed without reaching a backend.
func TestTLSTerminateHandshakeFailures(t *testing.T) {
	crt, key := certPEM(t, "a.example.com")
	ep := startTCPEcho(t, "a")
	addr := freeAddr(t)
	startGateway(t, Options{ReadHeaderTimeout: time.Second}, &model.GatewayConfig{Listeners: []*model.Listener{{Address: addr, Protocol: model.ProtocolTLS,
		Sections: []*model.Section{{Name: "default/gw/a", Terminate: true, Certificates: []model.Certificate{{Source: "default/a", CertPEM: crt, KeyPEM: key}},
			Passthrough: []*model.PassthroughRoute{tlsRoute("a", []string{""}, tcpBackend("a", 1, ep))}}}}}})
	tests := []struct {
		name string
		run  func() error
	}{
		{"untrusted certificate", func() error {
			c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "a.example.com", RootCAs: x509.NewCertPool()})
			if err == nil {
				c.Close()
				return errors.New("handshake succeeded")
			}
			return nil
		}},
		{"plain text", func() error {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			b, _ := io.ReadAll(c)
			if bytes.Contains(b, []byte("a\n")) {
				return errors.New("plain text reached the backend")
			}
			return nil
		}},
		{"silent client times out", func() error {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != io.EOF {
				return errors.New("want the gateway to close an idle handshake, got " + errString(err))
			}
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The listener still serves afterwards (no certificate pinned: the SNI-less
	// catch-all route and the section's only certificate).
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(crt)
	conn, _, greeting, err := terminateDial(t, addr, "a.example.com", pool)
	if err != nil || greeting != "a" {
		t.Fatalf("after failures: %q, %v", greeting, err)
	}
	conn.Close()
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}
