package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"weir.dev/weir/internal/model"
)

// echoReply is what the test echo backend answers.
type echoReply struct {
	Name    string              `json:"name"`
	Method  string              `json:"method"`
	Host    string              `json:"host"`
	Path    string              `json:"path"`
	Query   string              `json:"query"`
	Proto   string              `json:"proto"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

// echoBackend is a real HTTP server on loopback that reports what it received.
// Paths: /status/<code>, /delay/<duration>, /hang (until the test ends), /sse (three
// events, 300 ms apart), /ws (WebSocket echo). Everything else echoes.
type echoBackend struct {
	name  string
	addr  netip.AddrPort
	srv   *http.Server
	hits  atomic.Int64
	mu    sync.Mutex
	last  *echoReply
	got   chan *echoReply // every request, when not nil (buffered)
	block chan struct{}   // closed at cleanup: releases /hang
	// failAll answers 503 to everything while set.
	failAll atomic.Bool
	// reset closes connections without an answer while set.
	reset atomic.Bool
	// hangAll holds every request until the test ends while set.
	hangAll atomic.Bool
}

func startEcho(t *testing.T, name string) *echoBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoBackend{name: name, addr: netip.MustParseAddrPort(ln.Addr().String()), block: make(chan struct{}), got: make(chan *echoReply, 1024)}
	mux := http.NewServeMux()
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { _, _ = io.Copy(c, c) }))
	mux.HandleFunc("/", e.handle)
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = e.srv.Serve(ln) }()
	t.Cleanup(func() {
		close(e.block)
		_ = e.srv.Close()
	})
	return e
}

func (e *echoBackend) handle(w http.ResponseWriter, r *http.Request) {
	e.hits.Add(1)
	if e.hangAll.Load() {
		select {
		case <-e.block:
		case <-r.Context().Done():
		}
		return
	}
	if e.reset.Load() {
		if hj, ok := w.(http.Hijacker); ok {
			c, _, _ := hj.Hijack()
			_ = c.Close()
			return
		}
	}
	body, _ := io.ReadAll(r.Body)
	rep := &echoReply{Name: e.name, Method: r.Method, Host: r.Host, Path: r.URL.Path, Query: r.URL.RawQuery, Proto: r.Proto, Headers: r.Header, Body: string(body)}
	e.mu.Lock()
	e.last = rep
	e.mu.Unlock()
	select {
	case e.got <- rep:
	default:
	}
	w.Header().Set("X-Backend", e.name)
	if e.failAll.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	switch {
	case strings.HasPrefix(r.URL.Path, "/status/"):
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		w.WriteHeader(code)
		return
	case strings.HasPrefix(r.URL.Path, "/delay/"):
		d, _ := time.ParseDuration(strings.TrimPrefix(r.URL.Path, "/delay/"))
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	case r.URL.Path == "/hang":
		select {
		case <-e.block:
		case <-r.Context().Done():
		}
		return
	case r.URL.Path == "/stream":
		// One event, then nothing until the test ends: only a proxy that flushes at
		// once lets the client see the event.
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-e.block:
		case <-r.Context().Done():
		}
		return
	case r.URL.Path == "/sse":
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-time.After(300 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rep)
}

func (e *echoBackend) endpoint() model.Endpoint {
	return model.Endpoint{Addr: e.addr.Addr(), Port: int32(e.addr.Port()), Ready: true, Serving: true, Weight: 1}
}

// backend makes a model.Backend over echo servers.
func backend(name string, weight int32, eps ...*echoBackend) *model.Backend {
	b := &model.Backend{Service: model.ServiceKey{Namespace: "default", Name: name}, Port: 80, ID: "default/" + name + ":80",
		PortID: "default/" + name + ":http", Weight: weight, Policy: model.DefaultPolicy()}
	for _, e := range eps {
		b.Endpoints = append(b.Endpoints, e.endpoint())
	}
	return b
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// prefixRule is a rule matching a path prefix.
func prefixRule(id, prefix string, backends ...*model.Backend) *model.RouteMatch {
	return &model.RouteMatch{Path: model.PathMatch{Type: model.PathPrefix, Value: prefix},
		Rule: &model.Rule{ID: id, Backends: backends, Policy: model.DefaultPolicy(), Retry: model.DefaultPolicy().Retry}}
}

// httpConfig is one HTTP listener with one catch-all host holding matches in order.
func httpConfig(addr string, matches ...*model.RouteMatch) *model.GatewayConfig {
	return &model.GatewayConfig{Listeners: []*model.Listener{{Address: addr, Protocol: model.ProtocolHTTP,
		Sections: []*model.Section{{Name: "default/gw/http", Hosts: []*model.VirtualHost{{Matches: matches}}}}}}}
}

type testGateway struct {
	*Gateway
	addr string
	url  string
}

func startGateway(t *testing.T, opts Options, cfg *model.GatewayConfig) *testGateway {
	t.Helper()
	g, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	if err := g.Sync(context.Background(), snapshotOf(cfg)); err != nil {
		t.Fatal(err)
	}
	tg := &testGateway{Gateway: g}
	if len(cfg.Listeners) > 0 {
		tg.addr = cfg.Listeners[0].Address
		tg.url = "http://" + tg.addr
	}
	return tg
}

func (tg *testGateway) sync(t *testing.T, cfg *model.GatewayConfig) {
	t.Helper()
	if err := tg.Sync(context.Background(), snapshotOf(cfg)); err != nil {
		t.Fatal(err)
	}
}

// get sends a request and decodes the echo reply when there is one.
func get(t *testing.T, c *http.Client, method, url string, hdr map[string]string) (*http.Response, *echoReply) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var rep echoReply
	if json.Unmarshal(body, &rep) != nil || rep.Name == "" {
		return resp, nil
	}
	return resp, &rep
}

func noRedirectClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func certPEM(t *testing.T, host string) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal(msg)
}

// transports are the two ways a plaintext listener is served: the event loops first
// (handing to net/http what they do not serve), and net/http alone.
var transports = []struct {
	name  string
	loops bool
	opts  Options
}{
	{"event loops", true, Options{}},
	{"net/http", false, Options{DisableEventLoops: true}},
}

// snapshotOf is a Snapshot serving cfg, with a Service for each backend port, so that
// the health overlay tracks their endpoints as it does in production.
func snapshotOf(cfg *model.GatewayConfig) *model.Snapshot {
	snap := &model.Snapshot{Gateway: cfg}
	svcs := map[model.ServiceKey]*model.Service{}
	ports := map[string]bool{}
	add := func(b *model.Backend) {
		if b == nil || b.PortID == "" || ports[b.PortID] {
			return
		}
		ports[b.PortID] = true
		svc := svcs[b.Service]
		if svc == nil {
			svc = &model.Service{Key: b.Service, Policy: model.DefaultPolicy()}
			svcs[b.Service] = svc
			snap.Services = append(snap.Services, svc)
		}
		pol := b.Policy
		if pol == nil {
			pol = svc.Policy
		}
		_, name, _ := strings.Cut(strings.TrimPrefix(b.PortID, b.Service.String()), ":")
		svc.Ports = append(svc.Ports, &model.ServicePort{Name: name, Port: b.Port, Endpoints: b.Endpoints, Policy: pol})
	}
	if cfg == nil {
		return snap
	}
	for _, l := range cfg.Listeners {
		for _, sec := range l.Sections {
			for _, pr := range sec.Passthrough {
				for _, b := range pr.Backends {
					add(b)
				}
			}
			for _, vh := range sec.Hosts {
				for _, m := range vh.Matches {
					for _, b := range m.Rule.Backends {
						add(b)
					}
					for _, f := range m.Rule.Filters {
						if f.Mirror != nil {
							add(f.Mirror.Backend)
						}
					}
				}
			}
		}
	}
	return snap
}
