// Package dns is weir's cluster DNS server: the Kubernetes DNS-Based Service Discovery
// specification (schema 1.1.0) served from the same Snapshot as the proxies, with
// forwarding of other zones to upstream resolvers.
//
// Each Update builds an immutable index in which every answer is already packed, and
// swaps it in atomically; a query looks its name up in a map and copies the packed
// answer, patching the ID, a few flag bits and the client's spelling of the name.
package dns

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"weir.dev/weir/internal/model"
)

// Defaults, as in CoreDNS.
const (
	DefaultDomain = "cluster.local"
	DefaultTTL    = 5 * time.Second
	// MaxTTL is the largest TTL CoreDNS's kubernetes plugin accepts.
	MaxTTL = 3600 * time.Second
)

// Sizes of UDP messages.
const (
	// advertisedUDPSize is the EDNS0 payload size weir announces (DNS flag day 2020).
	advertisedUDPSize = 1232
	// maxUDPSize caps the client's EDNS0 payload size for answers weir sends over UDP.
	maxUDPSize = 4096
	// readUDPSize is the largest query weir reads over UDP.
	readUDPSize = 4096
)

// Options configure a Server.
type Options struct {
	// Addr is where to listen, on UDP and TCP both (host:port; port 0 picks a free port,
	// see Server.Addr).
	Addr string
	// Domain is the cluster zone; DefaultDomain when empty.
	Domain string
	// TTL of the records in the cluster zone, whole seconds; DefaultTTL when zero.
	TTL time.Duration
	// Upstreams are the resolvers for every other zone (host or host:port, port 53 by
	// default), tried in turn. With none, queries outside the cluster zone are refused.
	Upstreams []string
	// UpstreamTimeout bounds one exchange with one upstream; 2 s when zero.
	UpstreamTimeout time.Duration
	// CacheSize bounds the number of upstream answers kept; 10000 when zero, negative
	// disables the cache.
	CacheSize int
	// NameserverIPs are the addresses published for ns.dns.<zone>. When empty, the
	// listening address is used unless it is unspecified, in which case 127.0.0.1.
	NameserverIPs []netip.Addr
	// Logger; discarded when nil.
	Logger *slog.Logger
	// Registerer for the weir_dns_* metrics; none are registered when nil.
	Registerer prometheus.Registerer
}

// Server answers DNS queries over UDP and TCP. Create it with New, feed it with Update,
// and serve with Run.
type Server struct {
	cfg   indexConfig
	log   *slog.Logger
	pc    net.PacketConn
	ln    net.Listener
	addr  string
	index atomic.Pointer[index]
	// updateMu serialises Updates, each of which reuses the records of the last.
	updateMu sync.Mutex
	fwd      *forwarder // nil: no upstream
	metrics  *metrics
	bufs     sync.Pool // *[]byte
	// runCtx is the lifetime of Run, for upstream exchanges; set before serving starts.
	runCtx context.Context
	ran    atomic.Bool
}

// New validates opts and binds the UDP and TCP sockets, so that Addr is known at once.
// Call Run to serve; until the first Update, queries in the cluster zone are answered
// SERVFAIL.
func New(opts Options) (*Server, error) {
	domain := opts.Domain
	if domain == "" {
		domain = DefaultDomain
	}
	origin := strings.ToLower(mdns.Fqdn(domain))
	if _, ok := mdns.IsDomainName(origin); !ok || origin == "." {
		return nil, fmt.Errorf("dns: invalid cluster domain %q", domain)
	}
	ttl := opts.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < 0 || ttl > MaxTTL || ttl%time.Second != 0 {
		return nil, fmt.Errorf("dns: TTL %s: must be whole seconds between 0 and %s", ttl, MaxTTL)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	upstreams := make([]string, 0, len(opts.Upstreams))
	for _, u := range opts.Upstreams {
		a, err := upstreamAddr(u)
		if err != nil {
			return nil, err
		}
		upstreams = append(upstreams, a)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}

	s := &Server{
		log:     log,
		metrics: m,
		cfg: indexConfig{
			origin:    origin,
			ttl:       uint32(ttl / time.Second),
			recursion: len(upstreams) > 0,
			seed:      maphash.MakeSeed(),
		},
	}
	s.bufs.New = func() any { b := make([]byte, 0, 1024); return &b }
	if len(upstreams) > 0 {
		s.fwd = newForwarder(upstreams, opts.UpstreamTimeout, opts.CacheSize, m)
	}

	if err := s.listen(opts.Addr); err != nil {
		return nil, err
	}
	s.cfg.nameservers = opts.NameserverIPs
	if len(s.cfg.nameservers) == 0 {
		ip := netip.MustParseAddr("127.0.0.1")
		if ap, err := netip.ParseAddrPort(s.addr); err == nil && !ap.Addr().IsUnspecified() {
			ip = ap.Addr().Unmap()
		}
		s.cfg.nameservers = []netip.Addr{ip}
	}
	return s, nil
}

func upstreamAddr(u string) (string, error) {
	if _, _, err := net.SplitHostPort(u); err == nil {
		return u, nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(u, "["), "]")
	if host == "" {
		return "", fmt.Errorf("dns: empty upstream address")
	}
	return net.JoinHostPort(host, "53"), nil
}

// listen binds TCP first, then UDP on the port TCP got (TCP ports are the scarcer:
// client connections hold them too), retrying when port 0 handed out a TCP port whose
// UDP twin is taken.
func (s *Server) listen(addr string) error {
	if addr == "" {
		return errors.New("dns: no listen address")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("dns: listen address %q: %w", addr, err)
	}
	var lastErr error
	for range 20 {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("dns: listen tcp %s: %w", addr, err)
		}
		bound := net.JoinHostPort(host, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
		pc, err := net.ListenPacket("udp", bound)
		if err != nil {
			ln.Close()
			lastErr = fmt.Errorf("dns: listen udp %s: %w", bound, err)
			if port != "0" {
				return lastErr
			}
			continue
		}
		if c, ok := pc.(*net.UDPConn); ok {
			_ = c.SetReadBuffer(4 << 20) // best effort: absorbs bursts
		}
		s.pc, s.ln, s.addr = pc, ln, bound
		return nil
	}
	return lastErr
}

// Addr is the address the server listens on, UDP and TCP, as host:port.
func (s *Server) Addr() string { return s.addr }

// Update builds the records of snap and makes them visible to the next query. It is
// safe to call concurrently with queries and with itself (the last call wins).
func (s *Server) Update(snap *model.Snapshot) {
	if snap == nil {
		return
	}
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	idx := buildIndex(snap, s.cfg, s.index.Load(), time.Now(), s.log)
	s.index.Store(idx)
	s.metrics.setRecords(idx.records)
}

// Run serves until ctx ends, then shuts the listeners down and returns. It returns an
// error if serving fails; Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("dns: Run called twice")
	}
	s.runCtx = ctx
	udp := &mdns.Server{
		PacketConn:     s.pc,
		Handler:        s,
		UDPSize:        readUDPSize,
		MsgAcceptFunc:  acceptQuery,
		MsgInvalidFunc: s.metrics.invalid,
	}
	tcp := &mdns.Server{
		Listener:       s.ln,
		Handler:        s,
		MsgAcceptFunc:  acceptQuery,
		MsgInvalidFunc: s.metrics.invalid,
		ReadTimeout:    2 * time.Second,
		IdleTimeout:    func() time.Duration { return 8 * time.Second },
	}
	servers := []*mdns.Server{udp, tcp}
	started := make(chan struct{}, len(servers))
	errs := make(chan error, len(servers))
	var wg sync.WaitGroup
	for _, srv := range servers {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		wg.Go(func() { errs <- srv.ActivateAndServe() })
	}
	s.log.Info("dns: serving", "addr", s.addr, "zone", s.cfg.origin, "upstreams", s.fwd != nil)

	// Wait for both to start (or fail), so that shutting down cannot race the start.
	var runErr error
	for range servers {
		select {
		case <-started:
		case err := <-errs:
			runErr = fmt.Errorf("dns: serve: %w", err)
		}
	}
	if runErr == nil {
		select {
		case <-ctx.Done():
		case err := <-errs:
			runErr = fmt.Errorf("dns: serve: %w", err)
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.ShutdownContext(shutdownCtx) // an already failed server reports "not started"
	}
	wg.Wait()
	s.pc.Close()
	s.ln.Close()
	return runErr
}

// acceptQuery is miekg/dns's default accept function, except that only the QUERY
// opcode is accepted (NOTIFY, UPDATE and the rest get NOTIMP). Queries without exactly
// one question get FORMERR.
func acceptQuery(dh mdns.Header) mdns.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		return mdns.MsgIgnore
	}
	if opcode := int(dh.Bits>>11) & 0xF; opcode != mdns.OpcodeQuery {
		return mdns.MsgRejectNotImplemented
	}
	if dh.Qdcount != 1 || dh.Ancount > 0 || dh.Nscount > 0 || dh.Arcount > 2 {
		return mdns.MsgReject
	}
	return mdns.MsgAccept
}
