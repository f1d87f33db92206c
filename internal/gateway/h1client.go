package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// h1Client is the upstream fast path for plain HTTP/1.1 requests without a body: it
// writes the request and reads the response on the calling goroutine over a pooled
// keep-alive connection, avoiding http.Transport's per-connection reader and writer
// goroutines and their hand-offs. Upgrades, requests with bodies and h2c go through
// http.Transport.
type h1Client struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]*h1Conn
	closed bool
}

type h1Conn struct {
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	host     string
	lastUsed time.Time
}

func newH1Client(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *h1Client {
	return &h1Client{dial: dial, maxIdle: 1024, idleTimeout: 90 * time.Second, idle: map[string][]*h1Conn{}}
}

func (h *h1Client) get(host string, now time.Time) *h1Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		list := h.idle[host]
		if len(list) == 0 {
			return nil
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		h.idle[host] = list[:len(list)-1]
		if now.Sub(c.lastUsed) < h.idleTimeout {
			return c
		}
		_ = c.c.Close()
	}
}

func (h *h1Client) put(c *h1Conn) {
	c.lastUsed = time.Now()
	h.mu.Lock()
	if !h.closed && len(h.idle[c.host]) < h.maxIdle {
		h.idle[c.host] = append(h.idle[c.host], c)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	_ = c.c.Close()
}

func (h *h1Client) dialConn(ctx context.Context, host string) (*h1Conn, error) {
	c, err := h.dial(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	return &h1Conn{c: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 8<<10), host: host}, nil
}

func (h *h1Client) closeIdle() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for host, list := range h.idle {
		for _, c := range list {
			_ = c.c.Close()
		}
		delete(h.idle, host)
	}
}

// errStaleConn marks a failure on a reused connection before any answer arrived: the
// backend had closed it while idle, and the request may be sent again on a new one.
var errStaleConn = errors.New("reused connection closed by the backend")

func (h *h1Client) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	host := req.URL.Host
	for range 2 {
		c := h.get(host, time.Now())
		reused := c != nil
		if c == nil {
			var err error
			if c, err = h.dialConn(ctx, host); err != nil {
				return nil, err
			}
		}
		resp, err := h.exchange(ctx, c, req, reused)
		if errors.Is(err, errStaleConn) {
			continue
		}
		return resp, err
	}
	return nil, errStaleConn
}

func (h *h1Client) exchange(ctx context.Context, c *h1Conn, req *http.Request, reused bool) (*http.Response, error) {
	var cancelled atomic.Bool
	stop := context.AfterFunc(ctx, func() {
		cancelled.Store(true)
		_ = c.c.SetDeadline(time.Unix(1, 0)) // unblock reads and writes at once
	})
	fail := func(err error, stale bool) (*http.Response, error) {
		stop()
		_ = c.c.Close()
		if cancelled.Load() {
			return nil, ctx.Err()
		}
		if stale && reused {
			return nil, errStaleConn
		}
		return nil, err
	}
	if err := writeRequest(c.bw, req); err != nil {
		return fail(err, true)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err, true)
	}
	if _, err := c.br.Peek(1); err != nil {
		return fail(err, true)
	}
	resp, err := http.ReadResponse(c.br, req)
	// Informational answers (100 Continue, 103 Early Hints) precede the real one:
	// skip them, as http.Transport does by default.
	for i := 0; err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols; i++ {
		if i == 5 {
			return fail(errors.New("too many informational responses"), false)
		}
		resp, err = http.ReadResponse(c.br, req)
	}
	if err != nil {
		return fail(err, false)
	}
	reusable := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	resp.Body = &h1Body{ReadCloser: resp.Body, c: c, h: h, stop: stop, reusable: reusable, eof: resp.Body == http.NoBody}
	return resp, nil
}

// h1Body returns the connection to the pool once the body was read to its end, and
// closes it otherwise.
type h1Body struct {
	io.ReadCloser
	c        *h1Conn
	h        *h1Client
	stop     func() bool
	reusable bool
	eof      bool
	done     bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
		b.release()
	} else if err != nil {
		b.reusable = false
	}
	return n, err
}

func (b *h1Body) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

func (b *h1Body) release() {
	if b.done {
		return
	}
	b.done = true
	if !b.stop() || !b.eof || !b.reusable {
		_ = b.c.c.Close()
		return
	}
	b.h.put(b.c)
}
