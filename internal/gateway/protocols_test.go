package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"weir.dev/weir/internal/model"
)

func TestTLSBySNIAndHTTP2(t *testing.T) {
	a := startEcho(t, "a")
	crtA, keyA := certPEM(t, "a.example.com")
	crtB, keyB := certPEM(t, "b.example.com")
	addr := freeAddr(t)
	cfg := &model.GatewayConfig{Listeners: []*model.Listener{{Address: addr, Protocol: model.ProtocolHTTPS, Sections: []*model.Section{
		{Name: "a", Hostname: "a.example.com", Certificates: []model.Certificate{{Source: "default/a", CertPEM: crtA, KeyPEM: keyA}},
			Hosts: []*model.VirtualHost{{Hostname: "a.example.com", Matches: []*model.RouteMatch{prefixRule("a", "/", backend("a", 1, a))}}}},
		{Name: "b", Hostname: "b.example.com", Certificates: []model.Certificate{{Source: "default/b", CertPEM: crtB, KeyPEM: keyB}},
			Hosts: []*model.VirtualHost{{Hostname: "b.example.com", Matches: []*model.RouteMatch{prefixRule("b", "/", backend("a", 1, a))}}}},
	}}}}
	startGateway(t, Options{}, cfg)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(crtA)
	pool.AppendCertsFromPEM(crtB)
	for _, host := range []string{"a.example.com", "b.example.com"} {
		t.Run(host, func(t *testing.T) {
			tr := &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: host},
				ForceAttemptHTTP2: true,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				},
			}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			resp, rep := get(t, c, "GET", "https://"+host+"/x", nil)
			if resp.StatusCode != 200 || rep == nil {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != host {
				t.Fatalf("certificate %s for SNI %s", cn, host)
			}
			if resp.Proto != "HTTP/2.0" {
				t.Fatalf("downstream protocol %s, want HTTP/2.0 by ALPN", resp.Proto)
			}
			if rep.Headers["X-Forwarded-Proto"][0] != "https" {
				t.Fatalf("X-Forwarded-Proto %v", rep.Headers["X-Forwarded-Proto"])
			}
		})
	}
}

func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestH2CDownstreamAndUpstream(t *testing.T) {
	// Upstream h2c: a backend that only speaks cleartext HTTP/2.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream-Proto", r.Proto)
	}), Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ap := netip.MustParseAddrPort(ln.Addr().String())
	be := &model.Backend{ID: "default/h2:80", PortID: "default/h2:grpc", Weight: 1, H2C: true, Policy: model.DefaultPolicy(),
		Endpoints: []model.Endpoint{{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Weight: 1}}}
	tg := startGateway(t, Options{H2C: true}, httpConfig(freeAddr(t), prefixRule("h2", "/", be)))
	resp, _ := get(t, h2cClient(), "GET", tg.url+"/", nil)
	if resp.Proto != "HTTP/2.0" || resp.Header.Get("X-Upstream-Proto") != "HTTP/2.0" {
		t.Fatalf("downstream %s upstream %s", resp.Proto, resp.Header.Get("X-Upstream-Proto"))
	}
}

func TestWebSocket(t *testing.T) {
	a := startEcho(t, "a")
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), prefixRule("ws", "/", backend("a", 1, a))))
	ws, err := websocket.Dial("ws://"+tg.addr+"/ws", "", "http://"+tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	wsEcho(t, ws, "hello")
}

func wsEcho(t *testing.T, ws *websocket.Conn, msg string) {
	t.Helper()
	_ = ws.SetDeadline(time.Now().Add(5 * time.Second))
	if err := websocket.Message.Send(ws, msg); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := websocket.Message.Receive(ws, &got); err != nil {
		t.Fatal(err)
	}
	if got != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

func TestGRPCUnaryAndStreaming(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("weir.test", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	ap := netip.MustParseAddrPort(ln.Addr().String())
	be := &model.Backend{ID: "default/grpc:50051", PortID: "default/grpc:grpc", Weight: 1, H2C: true, Policy: model.DefaultPolicy(),
		Endpoints: []model.Endpoint{{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Weight: 1}}}
	rm := prefixRule("grpc", "", be)
	rm.Path = model.PathMatch{Type: model.PathPrefix, Value: "/grpc.health.v1.Health"}
	tg := startGateway(t, Options{H2C: true}, httpConfig(freeAddr(t), rm))

	conn, err := grpc.NewClient(tg.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "weir.test"})
	if err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary Check: %v %v", res, err)
	}
	// A gRPC error status travels in trailers.
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"}); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("want NotFound through trailers, got %v", err)
	}
	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "weir.test"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first stream message %v %v", first, err)
	}
	// Reloads (here: the same route with a new rule added) keep the stream open.
	extra := prefixRule("extra", "/extra", be)
	for range 10 {
		tg.sync(t, httpConfig(tg.addr, extra, rm))
	}
	hs.SetServingStatus("weir.test", healthpb.HealthCheckResponse_NOT_SERVING)
	second, err := stream.Recv()
	if err != nil || second.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("second stream message %v %v", second, err)
	}
}

func TestStreamedResponseFlushedAtOnce(t *testing.T) {
	a := startEcho(t, "a")
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), prefixRule("sse", "/", backend("a", 1, a))))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", tg.url+"/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The backend sends one event and then holds the response open until the test
	// ends: the event can only arrive if the gateway flushed it at once.
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first event %q %v", line, err)
	}
}

// TestHotReload reloads the route table 50 times under continuous load: no request
// fails, an open WebSocket keeps working, and the listener is never rebound.
func TestHotReload(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	addr := freeAddr(t)
	cfgs := []*model.GatewayConfig{
		httpConfig(addr, prefixRule("x", "/", backend("a", 1, a))),
		httpConfig(addr, prefixRule("other", "/other", backend("a", 1, a)), prefixRule("y", "/", backend("b", 1, a, b))),
	}
	tg := startGateway(t, Options{}, cfgs[0])
	ln := tg.listeners[addr].ln
	ws, err := websocket.Dial("ws://"+addr+"/ws", "", "http://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for range 4 {
		wg.Go(func() {
			c := &http.Client{Timeout: 10 * time.Second}
			for ctx.Err() == nil {
				resp, err := c.Get(tg.url + "/")
				if err != nil {
					failed.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	for i := range 50 {
		tg.sync(t, cfgs[i%2])
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d requests failed, %d succeeded during reloads", failed.Load(), ok.Load())
	}
	if tg.listeners[addr].ln != ln {
		t.Fatal("listener was rebound")
	}
	wsEcho(t, ws, "still here")
}

func TestListenerChanges(t *testing.T) {
	a := startEcho(t, "a")
	addr1, addr2 := freeAddr(t), freeAddr(t)
	one := httpConfig(addr1, prefixRule("x", "/", backend("a", 1, a)))
	both := httpConfig(addr1, prefixRule("x", "/", backend("a", 1, a)))
	both.Listeners = append(both.Listeners, httpConfig(addr2, prefixRule("y", "/", backend("a", 1, a))).Listeners...)
	tg := startGateway(t, Options{}, one)
	tg.sync(t, both)
	if resp, _ := get(t, http.DefaultClient, "GET", "http://"+addr2+"/", nil); resp.StatusCode != 200 {
		t.Fatalf("new listener: %d", resp.StatusCode)
	}
	tg.sync(t, httpConfig(addr2, prefixRule("y", "/", backend("a", 1, a))))
	eventually(t, 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr1, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, "removed listener still accepts")
	// A port another process holds: Sync reports it and serves the rest.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	bad := httpConfig(addr2, prefixRule("y", "/", backend("a", 1, a)))
	bad.Listeners = append(bad.Listeners, httpConfig(busy.Addr().String(), prefixRule("z", "/", backend("a", 1, a))).Listeners...)
	if err := tg.Sync(context.Background(), &model.Snapshot{Gateway: bad}); err == nil {
		t.Fatal("want an error for a busy port")
	}
	if resp, _ := get(t, http.DefaultClient, "GET", "http://"+addr2+"/", nil); resp.StatusCode != 200 {
		t.Fatal("a bad listener broke the good one")
	}
}

// startTLSEcho serves HTTPS on loopback with a certificate for host; it answers its name.
func startTLSEcho(t *testing.T, name, host string) (model.Endpoint, []byte) {
	t.Helper()
	crt, key := certPEM(t, host)
	cert, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Backend", name) })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ap := netip.MustParseAddrPort(ln.Addr().String())
	return model.Endpoint{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Weight: 1}, crt
}

func TestTLSPassthroughBySNI(t *testing.T) {
	epA, crtA := startTLSEcho(t, "a", "a.example.com")
	epB, crtB := startTLSEcho(t, "b", "b.example.com")
	mk := func(name string, ep model.Endpoint) *model.Backend {
		return &model.Backend{ID: "default/" + name + ":443", PortID: "default/" + name + ":https", Weight: 1, Policy: model.DefaultPolicy(), Endpoints: []model.Endpoint{ep}}
	}
	addr := freeAddr(t)
	cfg := &model.GatewayConfig{Listeners: []*model.Listener{{Address: addr, Protocol: model.ProtocolTLS, Sections: []*model.Section{{Name: "default/gw/tls",
		Passthrough: []*model.PassthroughRoute{
			{Route: model.RouteRef{Kind: "TLSRoute", Namespace: "default", Name: "a"}, Hostnames: []string{"a.example.com"}, Backends: []*model.Backend{mk("a", epA)}},
			{Route: model.RouteRef{Kind: "TLSRoute", Namespace: "default", Name: "b"}, Hostnames: []string{"*.example.com"}, Backends: []*model.Backend{mk("b", epB)}},
		}}}}}}
	startGateway(t, Options{}, cfg)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(crtA)
	pool.AppendCertsFromPEM(crtB)
	tests := []struct{ sni, want, cn string }{
		{"a.example.com", "a", "a.example.com"},
		{"b.example.com", "b", "b.example.com"},
	}
	for _, tc := range tests {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: tc.sni},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + tc.sni + "/")
		if err != nil {
			t.Fatalf("%s: %v", tc.sni, err)
		}
		resp.Body.Close()
		tr.CloseIdleConnections()
		if resp.Header.Get("X-Backend") != tc.want || resp.TLS.PeerCertificates[0].Subject.CommonName != tc.cn {
			t.Fatalf("%s: backend %q cert %q", tc.sni, resp.Header.Get("X-Backend"), resp.TLS.PeerCertificates[0].Subject.CommonName)
		}
	}
	// An SNI no route serves gets its connection closed.
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "other.test", InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		t.Fatal("handshake succeeded for an unrouted SNI")
	}
}

func TestIngressHTTPS(t *testing.T) {
	a := startEcho(t, "a")
	crt, key := certPEM(t, "shop.example.com")
	httpsAddr := freeAddr(t)
	sec := &model.Section{Name: "ingress", Certificates: []model.Certificate{{Source: "default/shop-tls", CertPEM: crt, KeyPEM: key}},
		Hosts: []*model.VirtualHost{{Hostname: "shop.example.com", Matches: []*model.RouteMatch{prefixRule("default/ing/0-0", "/", backend("a", 1, a))}}}}
	cfg := &model.GatewayConfig{Listeners: []*model.Listener{{Ingress: "https", Protocol: model.ProtocolHTTPS, Sections: []*model.Section{sec}}}}
	startGateway(t, Options{IngressHTTPSAddr: httpsAddr}, cfg)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(crt)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "shop.example.com"}, ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsAddr)
		}}
	defer tr.CloseIdleConnections()
	resp, rep := get(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, "GET", "https://shop.example.com/", nil)
	if resp.StatusCode != 200 || rep == nil || rep.Name != "a" || resp.Proto != "HTTP/2.0" {
		t.Fatalf("status %d proto %s reply %+v", resp.StatusCode, resp.Proto, rep)
	}
}
