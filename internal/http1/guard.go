package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
)

// refusedHead is what a guarded connection gives net/http's server in place of a
// request head CheckRequestFraming refuses: a request line net/http cannot parse, which
// it answers "400 Bad Request" with Connection: close, in its turn (after the answers to
// the requests before it), like any malformed request.
const refusedHead = "refused-request-framing\r\n\r\n"

// ErrBadRequestBody is the read error of a guarded connection at a chunked request
// body that ChunkScanner refuses.
var ErrBadRequestBody = errors.New("malformed chunked request body")

// Guard follows the requests a client sends on a connection net/http's server reads,
// and applies weir's framing rules (CheckRequestFraming) to each request head before
// net/http sees it: a refused head reaches net/http as a malformed request, which it
// answers 400 and closes. It delimits heads and bodies as net/http does — each head is
// parsed by http.ReadRequest itself, bodies are followed by their Content-Length or by
// ChunkScanner — so its idea of where a request starts is net/http's. A head it cannot
// delimit (longer than maxHead, or one net/http refuses) and everything after an
// HTTP/2 preface, or after the server agreed to an upgrade or a CONNECT (a 101, or a
// 2xx to CONNECT, written through the guard), is passed through unread.
type Guard struct {
	net.Conn
	maxHead int
	buf     []byte // read from Conn; buf[:ready] is checked and may be given out
	ready   int
	state   uint8
	left    int64 // guardLength: body bytes still to come
	chunks  ChunkScanner
	err     error // returned once buf[:ready] is given out
	rd      bytes.Reader
	br      *bufio.Reader // reads a head for http.ReadRequest
	// upgrade: a request asked to switch protocols (or CONNECT); switched: the server
	// answered 101 (or 2xx to CONNECT), and what follows is no longer HTTP/1.
	upgrade, connect, switched atomic.Bool
	watcher                    atomic.Value // Watcher of the request in flight (Watch)
}

// Watcher hears how the client's stream of a guarded connection ended: cleanly (EOF:
// a half-close), or not (aborted: reset, cut).
type Watcher interface{ ClientEnded(aborted bool) }

const (
	guardHead uint8 = iota
	guardLength
	guardChunked
	guardPass
	guardRefused
)

// NewGuard guards c; maxHead bounds the head it waits for (net/http's own bound is
// Server.MaxHeaderBytes plus 4096).
func NewGuard(c net.Conn, maxHead int) *Guard {
	return &Guard{Conn: c, maxHead: maxHead}
}

// Read gives out what the client sent once it is checked.
func (g *Guard) Read(p []byte) (int, error) {
	for {
		if g.switched.Load() && g.state != guardPass && g.state != guardRefused {
			g.state, g.ready = guardPass, len(g.buf)
		}
		if g.ready > 0 {
			n := copy(p, g.buf[:g.ready])
			g.buf = g.buf[:copy(g.buf, g.buf[n:])]
			g.ready -= n
			return n, nil
		}
		if g.err != nil {
			return 0, g.err
		}
		if len(g.buf) > 0 && g.advance() {
			continue
		}
		if g.state == guardPass && len(g.buf) == 0 {
			return g.read(p) // no copy once nothing is checked
		}
		if cap(g.buf)-len(g.buf) < 4096 {
			g.buf = append(g.buf, make([]byte, 4096)...)[:len(g.buf)]
		}
		n, err := g.read(g.buf[len(g.buf):cap(g.buf)])
		g.buf = g.buf[:len(g.buf)+n]
		if err != nil && n == 0 && isTimeout(err) {
			// A deadline: net/http's server sets a past one to stop its background
			// read, then reads on.
			return 0, err
		}
		if err != nil {
			// What came before the error goes out as it is: net/http reads it with
			// the error, as from an unguarded connection.
			g.ready, g.err = len(g.buf), err
			if g.state == guardRefused {
				g.ready = 0
			}
		}
	}
}

// read reads the connection, noting a failure that is not the client's clean end.
func (g *Guard) read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if err != nil && !isTimeout(err) {
		if w, _ := g.watcher.Load().(Watcher); w != nil {
			w.ClientEnded(err != io.EOF)
		}
	}
	return n, err
}

// isTimeout reports whether err is a deadline's (its net.Error is not allocated on
// the path without an error).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Watch makes w hear the end of the client's stream while its request is in flight;
// a nil of w's type ends that (always the same type: atomic.Value's rule).
func (g *Guard) Watch(w Watcher) { g.watcher.Store(w) }

// advance checks what it can of the unchecked bytes; false when it needs more.
func (g *Guard) advance() bool {
	start := g.ready
	for g.ready < len(g.buf) && g.err == nil {
		rest := g.buf[g.ready:]
		switch g.state {
		case guardPass:
			g.ready = len(g.buf)
		case guardRefused:
			g.buf = g.buf[:g.ready] // the client's bytes go nowhere
		case guardLength:
			take := min(int64(len(rest)), g.left)
			g.ready += int(take)
			if g.left -= take; g.left == 0 {
				g.state = guardHead
			}
		case guardChunked:
			n, end, err := g.chunks.Scan(rest)
			g.ready += n
			switch {
			case err != nil:
				g.err = ErrBadRequestBody
			case end:
				g.state = guardHead
			}
		case guardHead:
			end := LineHeadEnd(rest)
			if end == 0 {
				if len(rest) > g.maxHead {
					g.state = guardPass // net/http answers 431
					continue
				}
				return g.ready > start
			}
			g.head(rest[:end])
		}
	}
	return g.ready > start || g.err != nil
}

// head checks one complete request head, the first bytes of g.buf[g.ready:].
func (g *Guard) head(head []byte) {
	if err := CheckRequestFraming(head); err != nil {
		g.buf = append(g.buf[:g.ready], refusedHead...)
		g.ready = len(g.buf)
		g.state = guardRefused
		g.err = io.EOF
		return
	}
	g.ready += len(head)
	g.rd.Reset(head)
	if g.br == nil {
		g.br = bufio.NewReaderSize(&g.rd, 512)
	} else {
		g.br.Reset(&g.rd)
	}
	req, err := http.ReadRequest(g.br)
	if err == nil && (req.Method == http.MethodConnect || req.Header.Get("Upgrade") != "") {
		// What follows is a tunnel if the server agrees (Write sees it), and the
		// next request otherwise.
		g.upgrade.Store(true)
		g.connect.Store(req.Method == http.MethodConnect)
	}
	switch {
	case err != nil, req.ProtoMajor != 1:
		// net/http refuses it, or what follows is HTTP/2.
		g.state = guardPass
	case len(req.TransferEncoding) > 0:
		g.state, g.chunks = guardChunked, ChunkScanner{}
	case req.ContentLength > 0:
		g.state, g.left = guardLength, req.ContentLength
	default:
		g.state = guardHead
	}
}

// LineHeadEnd finds the end of a head as net/http's line reader finds it: lines end in
// LF (a CR before it is dropped), the head with the first empty line after the start
// line. 0: not all of it is there. (HeadEnd is the strict form: CRLF only.)
func LineHeadEnd(b []byte) int {
	first := true
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		line := b[i : i+j]
		i += j + 1
		if !first && (len(line) == 0 || (len(line) == 1 && line[0] == '\r')) {
			return i
		}
		first = false
	}
	return 0
}

// Write writes p, noting a switch of protocols the server answers to an upgrade or a
// CONNECT: what the client sends after it is passed through unread.
func (g *Guard) Write(p []byte) (int, error) {
	if g.upgrade.Load() && !g.switched.Load() &&
		(bytes.HasPrefix(p, []byte("HTTP/1.1 101 ")) || (g.connect.Load() && bytes.HasPrefix(p, []byte("HTTP/1.1 2")))) {
		g.switched.Store(true)
	}
	return g.Conn.Write(p)
}

// CloseWrite half-closes the connection when it can, for net/http's server after an
// error answer, as on a *net.TCPConn.
func (g *Guard) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// GuardListener guards every connection l accepts (NewGuard).
func GuardListener(l net.Listener, maxHead int) net.Listener {
	return &guardListener{Listener: l, maxHead: maxHead}
}

type guardListener struct {
	net.Listener
	maxHead int
}

func (l *guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewGuard(c, l.maxHead), nil
}
