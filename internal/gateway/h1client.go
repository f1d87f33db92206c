package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"weir.dev/weir/internal/http1"
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
	if err := http1.WriteRequest(c.bw, req); err != nil {
		return fail(err, true)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err, true)
	}
	if _, err := c.br.Peek(1); err != nil {
		return fail(err, true)
	}
	resp, body, err := readResponse(c.br, req)
	// Informational answers (100 Continue, 103 Early Hints) precede the real one:
	// skip them, as http.Transport does by default.
	for i := 0; err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols; i++ {
		if i == 5 {
			return fail(errors.New("too many informational responses"), false)
		}
		resp, body, err = readResponse(c.br, req)
	}
	if err != nil {
		return fail(err, false)
	}
	reusable := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	if body == nil {
		body = &h1Body{ReadCloser: resp.Body, eof: resp.Body == http.NoBody}
	}
	body.c, body.h, body.stop, body.reusable = c, h, stop, reusable
	resp.Body = body
	return resp, nil
}

// readResponse reads a response head. The common answer — HTTP/1.x, a final status
// with a body framed by one Content-Length, to a request other than HEAD, well-formed
// lines — is parsed by hand (parseResponseHead), and its body is read by the returned
// h1Body itself; anything else goes to http.ReadResponse (body nil), which also
// reports the errors.
func readResponse(br *bufio.Reader, req *http.Request) (*http.Response, *h1Body, error) {
	for {
		buf, _ := br.Peek(br.Buffered())
		end, bad := http1.HeadEnd(buf)
		if bad {
			break
		}
		if end > 0 {
			resp, n, ok := parseResponseHead(buf[:end], req)
			if !ok {
				break
			}
			_, _ = br.Discard(end)
			return resp, &h1Body{fixed: true, n: n, eof: n == 0}, nil
		}
		if len(buf) >= br.Size() {
			break
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			break
		}
	}
	resp, err := http.ReadResponse(br, req)
	return resp, nil, err
}

// parseResponseHead parses a response head as http.ReadResponse would when it is a
// plain one (see readResponse); ok is false otherwise.
func parseResponseHead(head []byte, req *http.Request) (resp *http.Response, contentLength int64, ok bool) {
	if req.Method == http.MethodHead {
		return nil, 0, false
	}
	resp, framing, n, ok := parseUpstreamHead(head, false)
	if !ok || framing != bodyLength || resp.StatusCode < 200 || resp.Trailer != nil {
		return nil, 0, false
	}
	resp.Request = req
	return resp, n, true
}

// bodyFraming is how an upstream response's body ends (RFC 9112, section 6.3).
type bodyFraming uint8

const (
	bodyNone       bodyFraming = iota // HEAD, 1xx, 204, 304
	bodyLength                        // Content-Length bytes
	bodyChunked                       // Transfer-Encoding: chunked
	bodyUntilClose                    // neither: the body ends when the backend closes
)

// parseUpstreamHead parses a response head (status line and header lines ending with
// an empty line, well-formed as net/http's client requires) into the response
// http.ReadResponse would make of it — Transfer-Encoding and Trailer moved out of the
// header, "Connection: close" turned into Close, Pragma: no-cache also as
// Cache-Control — with how its body is framed and, for bodyLength, its length. isHEAD:
// the response answers a HEAD request. ok is false for a head weir does not take: not
// HTTP/1.0 or 1.1, a malformed line, a transfer coding other than chunked alone, or
// conflicting Content-Lengths.
func parseUpstreamHead(head []byte, isHEAD bool) (resp *http.Response, framing bodyFraming, contentLength int64, ok bool) {
	s := string(head)
	eol := strings.Index(s, "\r\n")
	if eol < len("HTTP/1.1 200") {
		return nil, 0, 0, false
	}
	line := s[:eol]
	minor := 1
	switch line[:9] {
	case "HTTP/1.1 ":
	case "HTTP/1.0 ":
		minor = 0
	default:
		return nil, 0, 0, false
	}
	status := line[9:]
	code, err := strconv.Atoi(status[:3])
	if err != nil || code < 100 || (len(status) > 3 && status[3] != ' ') || status[0] < '1' {
		return nil, 0, 0, false
	}
	fields := strings.Count(s[eol+2:], "\r\n") - 1
	h := make(http.Header, fields)
	vals := make([]string, fields)
	contentLength = -1
	lengthText := ""
	chunked := false
	var trailer http.Header
	pos := eol + 2
	for i := 0; ; i++ {
		e := strings.Index(s[pos:], "\r\n")
		if e < 0 {
			return nil, 0, 0, false
		}
		line := s[pos : pos+e]
		pos += e + 2
		if line == "" {
			break
		}
		colon := strings.IndexByte(line, ':')
		if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
			return nil, 0, 0, false
		}
		k, v := line[:colon], textproto.TrimString(line[colon+1:])
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
			return nil, 0, 0, false
		}
		k = http.CanonicalHeaderKey(k)
		switch k {
		case "Content-Length":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || v[0] == '+' || (contentLength >= 0 && n != contentLength) {
				return nil, 0, 0, false
			}
			contentLength, lengthText = n, v
			continue
		case "Transfer-Encoding":
			if chunked || !strings.EqualFold(v, "chunked") || minor == 0 {
				return nil, 0, 0, false
			}
			chunked = true
			continue
		case "Trailer":
			if trailer == nil {
				trailer = http.Header{}
			}
			for f := range strings.SplitSeq(v, ",") {
				if f = http.CanonicalHeaderKey(textproto.TrimString(f)); f != "" {
					trailer[f] = nil
				}
			}
			continue
		}
		if cur, dup := h[k]; dup {
			h[k] = append(cur, v)
		} else {
			vals[i] = v
			h[k] = vals[i : i+1 : i+1]
		}
	}
	if p := h["Pragma"]; len(p) > 0 && p[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	conn := h["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conn, "close")
	closes := hasClose
	if minor == 0 {
		closes = hasClose || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	} else if hasClose {
		delete(h, "Connection")
	}
	sentLength := contentLength >= 0
	switch {
	case isHEAD || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified:
		framing = bodyNone
		if code == http.StatusNoContent || code < 200 {
			contentLength, sentLength = 0, false
		} else if code == http.StatusNotModified && !isHEAD {
			contentLength = 0 // the header stays: it describes the entity
		}
	case chunked:
		framing, contentLength = bodyChunked, -1
	case contentLength >= 0:
		framing = bodyLength
	default:
		framing, closes = bodyUntilClose, true
	}
	resp = &http.Response{
		Status: status, StatusCode: code, Proto: line[:8], ProtoMajor: 1, ProtoMinor: minor,
		Header: h, ContentLength: contentLength, Close: closes, Trailer: trailer,
	}
	if chunked {
		resp.TransferEncoding = []string{"chunked"}
	}
	if framing == bodyLength || (framing == bodyNone && sentLength) {
		h["Content-Length"] = []string{lengthText}
	}
	return resp, framing, contentLength, true
}

// h1Body returns the connection to the pool once the body was read to its end, and
// closes it otherwise. It reads a body of fixed length itself (fixed: n bytes left)
// or through the io.ReadCloser http.ReadResponse made.
type h1Body struct {
	io.ReadCloser
	fixed    bool
	n        int64
	c        *h1Conn
	h        *h1Client
	stop     func() bool
	reusable bool
	eof      bool
	done     bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.fixed {
		return b.readFixed(p)
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
		b.release()
	} else if err != nil {
		b.reusable = false
	}
	return n, err
}

// readFixed reads what is left of a body of known length, and reports io.EOF with
// its last bytes, so that the connection goes back to the pool at once.
func (b *h1Body) readFixed(p []byte) (int, error) {
	if b.n <= 0 {
		b.eof = true
		b.release()
		return 0, io.EOF
	}
	if b.done {
		return 0, errors.New("read on a closed response body")
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.c.br.Read(p)
	b.n -= int64(n)
	switch {
	case b.n == 0:
		b.eof = true
		b.release()
		return n, io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
		fallthrough
	case err != nil:
		b.reusable = false
	}
	return n, err
}

func (b *h1Body) Close() error {
	var err error
	if !b.fixed {
		err = b.ReadCloser.Close()
	}
	b.release()
	return err
}

func (b *h1Body) release() {
	if b.done {
		return
	}
	b.done = true
	// Bytes past the body (a backend that sent more than it announced) would be read
	// as the next request's answer: such a connection is not reused.
	if !b.stop() || !b.eof || !b.reusable || b.c.br.Buffered() > 0 {
		_ = b.c.c.Close()
		return
	}
	b.h.put(b.c)
}
