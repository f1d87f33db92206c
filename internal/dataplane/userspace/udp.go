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

	"weir.dev/weir/internal/model"
)

// flow is one UDP client's connected socket to its endpoint.
type flow struct {
	client  netip.AddrPort
	backend netip.AddrPort
	index   int // in the target it was chosen from, for health reports
	t       *target
	m       *frontendMetrics
	up      *net.UDPConn
	last    atomic.Int64 // UnixNano of the last datagram from the client
	replied atomic.Bool
	once    sync.Once
}

const maxDatagram = 64 << 10

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

// flowFor returns the client's flow, starting one if the verdict allows.
func (l *listener) flowFor(client netip.AddrPort) *flow {
	l.flowMu.Lock()
	f := l.flows[client]
	l.flowMu.Unlock()
	if f != nil {
		return f
	}
	if !l.accepting.Load() {
		return nil
	}
	st := l.state.Load()
	t, m := st.target, st.metrics
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
		up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(b.addr))
		if err != nil {
			m.connErrors.Inc()
			t.failed(k)
			continue
		}
		t.chosen(client, k, now)
		f = &flow{client: client, backend: b.addr, index: k, t: t, m: m, up: up}
		// Set before relay starts: relay's first deadline is last + idle, and a zero
		// last (1970) would end the flow before its first datagram is sent.
		f.last.Store(now.UnixNano())
		l.flowMu.Lock()
		if l.udp == nil || !l.accepting.Load() {
			l.flowMu.Unlock()
			_ = up.Close()
			return nil
		}
		l.flows[client] = f
		l.flowMu.Unlock()
		b.load.Begin()
		m.conns.Inc()
		m.active.Inc()
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

// relay sends the endpoint's replies to the client until the flow ends.
func (l *listener) relay(f *flow) {
	defer l.endFlow(f)
	idle := f.t.udpIdleTimeout
	buf := make([]byte, maxDatagram)
	for {
		_ = f.up.SetReadDeadline(time.Unix(0, f.last.Load()).Add(idle))
		n, err := f.up.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, f.last.Load())) < idle {
				continue
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				l.flowFailed(f, err)
			}
			return
		}
		if !f.replied.Swap(true) {
			f.t.succeeded(f.index)
		}
		if _, err := l.udp.WriteToUDPAddrPort(buf[:n], f.client); err != nil && errors.Is(err, net.ErrClosed) {
			return
		}
		f.m.tx.Add(float64(n))
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
		l.flowMu.Lock()
		if l.flows[f.client] == f {
			delete(l.flows, f.client)
		}
		l.flowMu.Unlock()
		_ = f.up.Close()
		f.t.backends[f.index].load.End()
		f.m.active.Dec()
	})
}

// pruneFlows ends the flows whose endpoint is no longer in t, at once: the client's
// next datagram starts a flow to a live endpoint (kube-proxy's UDP conntrack cleanup).
func (l *listener) pruneFlows(t *target) {
	l.flowMu.Lock()
	var stale []*flow
	for _, f := range l.flows {
		if !t.has(f.backend) {
			stale = append(stale, f)
		}
	}
	l.flowMu.Unlock()
	for _, f := range stale {
		l.endFlow(f)
	}
}
