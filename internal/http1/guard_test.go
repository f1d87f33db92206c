package http1

import (
	"errors"
	"io"
	"net"
	"testing"
)

// pieceConn is a connection that reads src n bytes at a time (a unit-test fake; the
// gateway's tests run the guard on real sockets).
type pieceConn struct {
	net.Conn
	src string
	n   int
}

func (c *pieceConn) Read(p []byte) (int, error) {
	if c.src == "" {
		return 0, io.EOF
	}
	k := min(len(p), c.n, len(c.src))
	copy(p, c.src[:k])
	c.src = c.src[k:]
	return k, nil
}

func guardRead(t *testing.T, in string, piece, readSize int) (string, error) {
	t.Helper()
	g := NewGuard(&pieceConn{src: in, n: piece}, 64<<10)
	var out []byte
	buf := make([]byte, readSize)
	for {
		n, err := g.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return string(out), err
		}
	}
}

// TestGuardPassesWellFramedStreams: requests net/http reads as they are — pipelined,
// with bodies by length and chunked (with trailers), bare LF heads, an upgrade and
// what follows it — pass the guard unchanged, however the reads fall.
func TestGuardPassesWellFramedStreams(t *testing.T) {
	streams := []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET / HTTP/1.1\nHost: h\n\nPOST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nok",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
	}
	for _, in := range streams {
		for _, piece := range []int{1, 3, 7, 4096} {
			for _, rs := range []int{1, 5, 4096} {
				out, err := guardRead(t, in, piece, rs)
				if out != in || err != io.EOF {
					t.Fatalf("%q in pieces of %d, reads of %d: got %q, %v", in, piece, rs, out, err)
				}
			}
		}
	}
}

// TestGuardRefuses: a head weir refuses reaches net/http as a malformed request line,
// after the requests before it, and nothing the client sent after it is read; a chunked
// body ChunkScanner refuses ends in ErrBadRequestBody.
func TestGuardRefuses(t *testing.T) {
	ok := "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
	for _, bad := range []string{
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
	} {
		for _, piece := range []int{1, 4096} {
			out, err := guardRead(t, ok+bad+ok, piece, 4096)
			if out != ok+refusedHead || err != io.EOF {
				t.Fatalf("%q: got %q, %v", bad, out, err)
			}
		}
	}
	in := "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX"
	out, err := guardRead(t, in+ok, 4096, 4096)
	if out != in[:len(in)-2] || !errors.Is(err, ErrBadRequestBody) {
		t.Fatalf("bad chunk: got %q, %v", out, err)
	}
}

func (c *pieceConn) Write(p []byte) (int, error) { return len(p), nil }

// TestGuardUpgrade: after an upgrade request, what follows is a tunnel once the server
// writes 101, and requests checked as any others when it does not.
func TestGuardUpgrade(t *testing.T) {
	up := "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
	hostile := "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	for _, answer := range []string{"HTTP/1.1 101 Switching Protocols\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"} {
		g := NewGuard(&pieceConn{src: up + hostile, n: len(up)}, 64<<10)
		buf := make([]byte, 4096)
		n, err := g.Read(buf)
		if string(buf[:n]) != up || err != nil {
			t.Fatalf("upgrade head: %q, %v", buf[:n], err)
		}
		_, _ = g.Write([]byte(answer))
		rest, err := io.ReadAll(g)
		want := hostile // tunnelled
		if answer[9:12] != "101" {
			want = refusedHead
		}
		if string(rest) != want || err != nil {
			t.Fatalf("after %q: %q, %v; want %q", answer, rest, err, want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// deadlineConn times out once, then reads src.
type deadlineConn struct {
	net.Conn
	timedOut bool
	src      string
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if !c.timedOut {
		c.timedOut = true
		return 0, timeoutErr{}
	}
	if c.src == "" {
		return 0, io.EOF
	}
	n := copy(p, c.src)
	c.src = c.src[n:]
	return n, nil
}

// TestGuardTimeoutIsNotTheEnd: a read deadline (net/http's server sets a past one to
// stop its background read) is returned once; reading goes on after it.
func TestGuardTimeoutIsNotTheEnd(t *testing.T) {
	in := "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
	g := NewGuard(&deadlineConn{src: in}, 64<<10)
	var ne net.Error
	if _, err := g.Read(make([]byte, 10)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("first read: %v, want the timeout", err)
	}
	b, err := io.ReadAll(g)
	if string(b) != in || err != nil {
		t.Fatalf("after the timeout: %q, %v", b, err)
	}
}
