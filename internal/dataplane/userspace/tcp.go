package userspace

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"weir.dev/weir/internal/model"
)

// serveTCP accepts until the listener stops accepting.
func (l *listener) serveTCP() {
	var backoff time.Duration
	for {
		c, err := l.tcp.AcceptTCP()
		if err != nil {
			if !l.accepting.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.p.log.Warn("accept", "frontend", l.key.String(), "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		l.p.wg.Add(1)
		go func() {
			defer l.p.wg.Done()
			l.handleTCP(c)
		}()
	}
}

// handleTCP forwards one accepted connection, or refuses it by the target's verdict.
func (l *listener) handleTCP(c *net.TCPConn) {
	st := l.state.Load()
	t, m := st.target, st.metrics
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	l.p.open.Add(1)
	defer l.p.open.Add(-1)
	l.p.track(c)
	defer l.p.untrack(c)

	if !st.spec.allowed(client.Addr()) {
		m.sourceRange.Inc()
		hold(c, t.connectTimeout)
		return
	}
	switch t.verdict {
	case model.Reject:
		m.reject.Inc()
		reset(c)
		return
	case model.Drop:
		m.drop.Inc()
		hold(c, t.connectTimeout)
		return
	}

	now := time.Now()
	i := t.first(client, l.key.addr, now)
	n := len(t.backends)
	attempts := min(n, maxAttempts)
	var up *net.TCPConn
	var b backend
	for a := range attempts {
		k := (i + a) % n
		b = t.backends[k]
		b.load.Begin()
		start := time.Now()
		conn, err := dial(t.connectTimeout, b.addr)
		if err != nil {
			b.load.End()
			m.connErrors.Inc()
			t.failed(k)
			l.p.log.Debug("connect failed", "service_port", t.servicePort, "endpoint", b.addr.String(), "err", err)
			continue
		}
		b.load.Observe(time.Since(start))
		t.succeeded(k)
		t.chosen(client, k, now)
		up = conn
		break
	}
	if up == nil {
		m.exhausted.Inc()
		reset(c)
		return
	}
	defer b.load.End()
	l.p.track(up)
	defer l.p.untrack(up)
	m.conns.Inc()
	m.active.Inc()
	defer m.active.Dec()
	rx, tx := splice(&l.p.buffers, c, up, t.idleTimeout)
	m.rx.Add(float64(rx))
	m.tx.Add(float64(tx))
}

func dial(timeout time.Duration, addr netip.AddrPort) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := net.Dialer{KeepAlive: -1}
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// reset closes c with a TCP RST: kube-proxy's reject, as close to an ICMP refusal as a
// userspace proxy can get (the client's connect succeeded; its first read fails).
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// hold is the userspace form of a drop: the connection gets no data and no answer
// until the client gives up or d passes, then a reset.
func hold(c *net.TCPConn, d time.Duration) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, _ = io.Copy(io.Discard, c)
	reset(c)
}

// copyBufferSize is the buffer of a direction that has not yet switched to splice.
const copyBufferSize = 16 << 10

// halfConn is one direction of a proxied connection.
type halfConn struct {
	src, dst *net.TCPConn
	buf      []byte      // nil once the direction splices
	quiet    atomic.Bool // the last idle period passed without data
	poked    atomic.Bool // the other direction asked for a re-check
	done     atomic.Bool // reached EOF
}

var errIdle = errors.New("idle timeout")

// splice copies both directions between client and upstream (zero-copy: ReadFrom
// between two *net.TCPConn uses splice(2)), honours half-close, and closes both when
// both directions ended or when neither carried data for the idle timeout. It returns
// the bytes copied client→upstream and upstream→client.
func splice(buffers *sync.Pool, client, upstream *net.TCPConn, idle time.Duration) (rx, tx int64) {
	ub, db := buffers.Get().(*[copyBufferSize]byte), buffers.Get().(*[copyBufferSize]byte)
	defer buffers.Put(ub)
	defer buffers.Put(db)
	up := &halfConn{src: client, dst: upstream, buf: ub[:]}
	down := &halfConn{src: upstream, dst: client, buf: db[:]}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		rx, err = copyHalf(up, down, idle)
		if err != nil {
			_ = client.Close()
			_ = upstream.Close()
		}
	}()
	tx, err := copyHalf(down, up, idle)
	if err != nil {
		_ = client.Close()
		_ = upstream.Close()
	}
	<-done
	_ = client.Close()
	_ = upstream.Close()
	return rx, tx
}

// copyHalf copies h.src to h.dst until EOF (then half-closes h.dst) or an error. With
// an idle timeout, it wakes every idle period: a period with data clears its quiet
// flag; a quiet period sets it and, when the other direction is quiet too, pokes the
// other (sets its read deadline to now) so that it confirms. A poked direction that
// is still quiet ends the connection: both carried nothing for at least one period.
// The connection therefore closes between one and two idle timeouts after its last
// byte.
func copyHalf(h, other *halfConn, idle time.Duration) (int64, error) {
	var total int64
	for {
		if idle > 0 {
			_ = h.src.SetReadDeadline(time.Now().Add(idle))
		}
		n, err := h.copy()
		total += n
		if err == nil {
			h.done.Store(true)
			h.quiet.Store(true)
			if !other.done.Load() {
				// Half-close; when the other direction is done too, the full close
				// that follows sends the FIN.
				_ = h.dst.CloseWrite()
			}
			return total, nil
		}
		if idle <= 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		if n > 0 {
			h.quiet.Store(false)
			h.poked.Store(false)
			continue
		}
		if h.poked.Swap(false) && h.quiet.Load() && other.quiet.Load() {
			return total, errIdle
		}
		h.quiet.Store(true)
		if other.done.Load() {
			return total, errIdle
		}
		if other.quiet.Load() {
			other.poked.Store(true)
			_ = other.src.SetReadDeadline(time.Now())
		}
	}
}

// copy copies from src to dst until EOF (nil error) or an error, through the buffer
// while reads are small, and with splice(2) (ReadFrom between two *net.TCPConn) from
// the first read that fills the buffer on. Short request/response exchanges thus cost
// one read and one write each, and bulk transfers move zero-copy.
func (h *halfConn) copy() (int64, error) {
	var total int64
	for h.buf != nil {
		n, err := h.src.Read(h.buf)
		if n > 0 {
			if _, werr := h.dst.Write(h.buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			return total, err
		}
		if n == len(h.buf) {
			h.buf = nil
		}
	}
	n, err := h.dst.ReadFrom(h.src)
	return total + n, err
}
