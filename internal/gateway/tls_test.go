package gateway

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"weir.dev/weir/internal/model"
)

// TestTLSIntermediateProfile: HTTPS and TLS Terminate listeners accept TLS 1.2 with
// ECDHE AEAD suites and TLS 1.3, and refuse TLS 1.1, CBC suites (with SHA-1 or not) and
// static RSA key exchange.
func TestTLSIntermediateProfile(t *testing.T) {
	a := startEcho(t, "a")
	crt, key := certPEM(t, "a.example.com")
	certs := []model.Certificate{{Source: "default/a", CertPEM: crt, KeyPEM: key}}
	httpsAddr, termAddr := freeAddr(t), freeAddr(t)
	cfg := &model.GatewayConfig{Listeners: []*model.Listener{
		{Address: httpsAddr, Protocol: model.ProtocolHTTPS, Sections: []*model.Section{{Name: "https", Certificates: certs,
			Hosts: []*model.VirtualHost{{Matches: []*model.RouteMatch{prefixRule("a", "/", backend("a", 1, a))}}}}}},
		{Address: termAddr, Protocol: model.ProtocolTLS, Sections: []*model.Section{{Name: "term", Terminate: true, Certificates: certs,
			Passthrough: []*model.PassthroughRoute{tlsRoute("t", []string{""}, tcpBackend("t", 1, startTCPEcho(t, "t")))}}}},
	}}
	startGateway(t, Options{}, cfg)
	for _, tc := range []struct {
		name     string
		min, max uint16
		suites   []uint16
		ok       bool
	}{
		{"TLS 1.3", tls.VersionTLS13, tls.VersionTLS13, nil, true},
		{"TLS 1.2 default suites", tls.VersionTLS12, tls.VersionTLS12, nil, true},
		{"TLS 1.2 ECDHE-ECDSA-AES128-GCM-SHA256", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, true},
		{"TLS 1.2 ECDHE-ECDSA-CHACHA20-POLY1305", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305}, true},
		{"TLS 1.2 ECDHE-ECDSA-AES128-SHA (CBC, SHA-1)", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}, false},
		{"TLS 1.2 ECDHE-ECDSA-AES256-SHA (CBC, SHA-1)", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}, false},
		{"TLS 1.2 ECDHE-ECDSA-AES128-SHA256 (CBC)", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}, false},
		{"TLS 1.2 AES128-GCM-SHA256 (static RSA)", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}, false},
		{"TLS 1.1", tls.VersionTLS10, tls.VersionTLS11, nil, false},
	} {
		for _, addr := range []string{httpsAddr, termAddr} {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
				InsecureSkipVerify: true, ServerName: "a.example.com", MinVersion: tc.min, MaxVersion: tc.max, CipherSuites: tc.suites,
			})
			if (err == nil) != tc.ok {
				t.Errorf("%s on %s: handshake error %v, want success %v", tc.name, addr, err, tc.ok)
			}
			if err != nil {
				continue
			}
			st := c.ConnectionState()
			if st.Version == tls.VersionTLS12 && !slices.Contains(intermediateSuites, st.CipherSuite) {
				t.Errorf("%s on %s: negotiated %s", tc.name, addr, tls.CipherSuiteName(st.CipherSuite))
			}
			_ = c.Close()
		}
	}
}

// TestMisdirectedRequests follows Gateway API's
// HTTPRouteHTTPSListenerDetectMisdirectedRequests: four HTTPS listeners on one port
// (no hostname, second-example.org, *.wildcard.org, fourth-example.wildcard.org); a
// request whose Host another listener serves than its TLS server name's gets 421, over
// HTTP/2 and HTTP/1.1.
func TestMisdirectedRequests(t *testing.T) {
	v1, v2, v3 := startEcho(t, "v1"), startEcho(t, "v2"), startEcho(t, "v3")
	crt, key := certPEM(t, "example.org")
	certs := []model.Certificate{{Source: "default/c", CertPEM: crt, KeyPEM: key}}
	sec := func(name, hostname, vhost string, be *echoBackend) *model.Section {
		return &model.Section{Name: name, Hostname: hostname, Certificates: certs, Hosts: []*model.VirtualHost{{Hostname: vhost,
			Matches: []*model.RouteMatch{prefixRule(name, "/detect-misdirected-requests", backend(be.name, 1, be))}}}}
	}
	addr := freeAddr(t)
	// Sections in the model's order: exact hostnames, wildcards by length, none.
	startGateway(t, Options{}, &model.GatewayConfig{Listeners: []*model.Listener{{Address: addr, Protocol: model.ProtocolHTTPS, Sections: []*model.Section{
		sec("https-with-hostname", "second-example.org", "second-example.org", v2),
		sec("https-with-hostname-matching-wildcard", "fourth-example.wildcard.org", "fourth-example.wildcard.org", v1),
		sec("https-with-wildcard-hostname", "*.wildcard.org", "*.wildcard.org", v3),
		sec("https", "", "example.org", v1),
	}}}})
	cases := []struct {
		serverName, host string
		code             int
		backend          string
	}{
		{"example.org", "example.org", 200, "v1"},
		{"example.org", "second-example.org", 421, ""},
		{"example.org", "unknown-example.org", 404, ""},
		{"second-example.org", "second-example.org", 200, "v2"},
		{"second-example.org", "example.org", 421, ""},
		{"second-example.org", "unknown-example.org", 421, ""},
		{"third-example.wildcard.org", "third-example.wildcard.org", 200, "v3"},
		{"third-example.wildcard.org", "fith-example.wildcard.org", 200, "v3"},
		{"third-example.wildcard.org", "fourth-example.wildcard.org", 421, ""},
		{"third-example.wildcard.org", "second-example.org", 421, ""},
		{"third-example.wildcard.org", "unknown-example.org", 421, ""},
		{"fourth-example.wildcard.org", "fourth-example.wildcard.org", 200, "v1"},
		{"fourth-example.wildcard.org", "fith-example.wildcard.org", 421, ""},
		{"unknown-example.org", "example.org", 200, "v1"},
		{"unknown-example.org", "unknown-example.org", 404, ""},
	}
	for _, h2 := range []bool{true, false} {
		for _, tc := range cases {
			tr := &http.Transport{
				TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, ServerName: tc.serverName},
				ForceAttemptHTTP2: h2,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				},
			}
			if !h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			resp, rep := get(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, "GET", "https://"+tc.host+"/detect-misdirected-requests", nil)
			tr.CloseIdleConnections()
			name := ""
			if rep != nil {
				name = rep.Name
			}
			if resp.StatusCode != tc.code || name != tc.backend || (h2 && resp.ProtoMajor != 2) {
				t.Errorf("%s SNI %s Host %s: %d from %q, want %d from %q", resp.Proto, tc.serverName, tc.host, resp.StatusCode, name, tc.code, tc.backend)
			}
		}
	}
}
