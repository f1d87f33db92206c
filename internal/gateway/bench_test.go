package gateway

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"testing"

	"weir.dev/weir/internal/model"
)

// BenchmarkProxyGET measures one small keep-alive GET through the gateway to a
// loopback backend (client, gateway and backend in one process), on each transport:
// the event loops, and net/http (its server, httputil.ReverseProxy, http.Transport).
func BenchmarkProxyGET(b *testing.B) {
	b.Run("event-loops", func(b *testing.B) { benchProxyGET(b, Options{}, 1) })
	b.Run("net-http", func(b *testing.B) { benchProxyGET(b, Options{DisableEventLoops: true}, 1) })
	// 64 clients on 2 cores, as bench/l7.sh's wrk -c64: the machine stays busy, so
	// ns/op measures CPU per request rather than the latency of one round trip.
	b.Run("event-loops-c64", func(b *testing.B) { benchProxyGET(b, Options{}, 64/max(runtime.GOMAXPROCS(0), 1)) })
	b.Run("net-http-c64", func(b *testing.B) {
		benchProxyGET(b, Options{DisableEventLoops: true}, 64/max(runtime.GOMAXPROCS(0), 1))
	})
}

func benchProxyGET(b *testing.B, opts Options, parallelism int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("hello\n")) })}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	ap := netip.MustParseAddrPort(ln.Addr().String())
	be := &model.Backend{ID: "b/b:80", PortID: "b/b:http", Weight: 1, Policy: model.DefaultPolicy(),
		Endpoints: []model.Endpoint{{Addr: ap.Addr(), Port: int32(ap.Port()), Ready: true, Weight: 1}}}
	addr := freeAddrB(b)
	g, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = g.Shutdown(b.Context()) }()
	if err := g.Sync(b.Context(), &model.Snapshot{Gateway: httpConfig(addr, prefixRule("r", "/", be))}); err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 128}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	url := "http://" + addr + "/"
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

func freeAddrB(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
