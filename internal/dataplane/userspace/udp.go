package userspace

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"weir.dev/weir/internal/model"
)

// flow is one UDP client's connected socket to its endpoint.
type flow struct {
	l       *listener
	client  netip.AddrPort
	backend netip.AddrPort
	index   int // in the target it was chosen from, for health reports
	t       *target
	m       *frontendMetrics
	up      *net.UDPConn
	last    atomic.Int64 // UnixNano of the last datagram from the client
	replied atomic.Bool
	once    sync.Once

	// Guarded by the flow table's lock.
	all, src link
	inTable  bool
}

const maxDatagram = 64 << 10

// datagramBuf is a buffer for one datagram, pooled so that an idle flow holds none.
type datagramBuf = [maxDatagram]byte

// serveUDP reads client datagrams until the socket is closed. A datagram from a new
// client starts a flow: a connected socket to the chosen endpoint, answered by a
// goroutine that relays replies until the flow is idle for the UDP idle timeout.
func (l *listener) serveUDP() {
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := l.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP errors and the like
		}
		f := l.flowFor(client)
		if f == nil {
			continue
		}
		f.last.Store(time.Now().UnixNano())
		if _, err := f.up.Write(buf[:n]); err != nil {
			l.flowFailed(f, err)
			continue
		}
		f.m.rx.Add(float64(n))
	}
}

// flowFor returns the client's flow, starting one if the verdict allows. A new flow
// may evict others (the flow table's bounds).
func (l *listener) flowFor(client netip.AddrPort) *flow {
	if f := l.p.flows.get(flowKey{l, client}); f != nil {
		return f
	}
	if !l.accepting.Load() {
		return nil
	}
	st := l.state.Load()
	t, m := l.target(st, client.Addr()), st.metrics
	if !st.spec.allowed(client.Addr()) {
		m.sourceRange.Inc()
		return nil
	}
	switch t.verdict {
	case model.Reject:
		m.reject.Inc() // userspace cannot send ICMP port unreachable: the datagram is dropped
		return nil
	case model.Drop:
		m.drop.Inc()
		return nil
	}
	now := time.Now()
	i := t.first(client, l.key.addr, now)
	n := len(t.backends)
	for a := range min(n, maxAttempts) {
		k := (i + a) % n
		b := t.backends[k]
		up, err := l.p.dialUDP(b.addr)
		if err != nil {
			m.connErrors.Inc()
			t.failed(k)
			continue
		}
		t.chosen(client, k, now)
		f := &flow{l: l, client: client, backend: b.addr, index: k, t: t, m: m, up: up}
		// Set before relay starts: relay's first deadline is last + idle, and a zero
		// last (1970) would end the flow before its first datagram is sent.
		f.last.Store(now.UnixNano())
		evicted, reasons := l.p.flows.add(f)
		for j, old := range evicted {
			l.p.metrics.evictions.WithLabelValues(reasons[j]).Inc()
			old.l.endFlow(old)
		}
		b.load.Begin()
		m.conns.Inc()
		m.active.Inc()
		if !l.accepting.Load() {
			// closeUDP ran since the check above and may not have seen this flow.
			l.endFlow(f)
			return nil
		}
		l.p.wg.Add(1)
		go func() {
			defer l.p.wg.Done()
			l.relay(f)
		}()
		return f
	}
	m.exhausted.Inc()
	return nil
}

// dialUDP opens a flow's connected socket. When the process is out of descriptors in
// spite of the reserve (TCP connections use them too), it evicts the least recently
// used flow and tries once more.
func (p *Proxy) dialUDP(to netip.AddrPort) (*net.UDPConn, error) {
	up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err == nil || !(errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)) {
		return up, err
	}
	if old := p.flows.oldest(); old != nil {
		p.metrics.evictions.WithLabelValues(evictLRU).Inc()
		old.l.endFlow(old)
	}
	return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
}

// relay sends the endpoint's replies to the client until the flow ends. It reads with
// the raw descriptor and takes a datagram buffer from the pool only once a reply is
// there, so that an idle flow holds a goroutine and a socket but no buffer.
func (l *listener) relay(f *flow) {
	defer l.endFlow(f)
	idle := f.t.udpIdleTimeout
	rc, err := f.up.SyscallConn()
	if err != nil {
		return
	}
	var n int
	var rerr error
	read := func(fd uintptr) bool {
		buf := l.p.datagrams.Get().(*datagramBuf)
		defer l.p.datagrams.Put(buf)
		n, rerr = unix.Read(int(fd), buf[:])
		if rerr == unix.EAGAIN || rerr == unix.EINTR {
			return false
		}
		if rerr != nil {
			return true
		}
		if !f.replied.Swap(true) {
			f.t.succeeded(f.index)
		}
		if _, err := l.udp.WriteToUDPAddrPort(buf[:n], f.client); err != nil && errors.Is(err, net.ErrClosed) {
			rerr = err
			return true
		}
		f.m.tx.Add(float64(n))
		return true
	}
	for {
		_ = f.up.SetReadDeadline(time.Unix(0, f.last.Load()).Add(idle))
		rerr = nil
		err := rc.Read(read)
		if err == nil {
			err = rerr
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, f.last.Load())) < idle {
				continue
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				l.flowFailed(f, err)
			}
			return
		}
	}
}

// flowFailed ends a flow whose endpoint refused it (ICMP port unreachable), so that
// the client's next datagram picks another endpoint, and tells health.
func (l *listener) flowFailed(f *flow, err error) {
	if errors.Is(err, syscall.ECONNREFUSED) {
		f.m.connErrors.Inc()
		f.t.failed(f.index)
	}
	l.endFlow(f)
}

// endFlow removes and closes a flow once.
func (l *listener) endFlow(f *flow) {
	f.once.Do(func() {
		l.p.flows.remove(f)
		_ = f.up.Close()
		f.t.backends[f.index].load.End()
		f.m.active.Dec()
	})
}

// pruneFlows ends the flows whose endpoint is no longer in st's targets, at once: the
// client's next datagram starts a flow to a live endpoint (kube-proxy's UDP conntrack
// cleanup).
func (l *listener) pruneFlows(st *listenerState) {
	for _, f := range l.p.flows.of(l, func(f *flow) bool { return !st.has(f.backend) }) {
		l.endFlow(f)
	}
}
