package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"reflect"
	"strings"
	"testing"
)

// The differential fuzz targets: each feeds the same bytes to the codec and to
// net/http's own parser and fails on any disagreement on accept/reject or on the
// parsed fields. The codec is stricter than net/http only in the cases each target
// names (the exceptions), and never looser.

// smuggling seeds: request heads with hostile framing.
var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nx-a: 1\r\nX-A:  2 \r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nPragma: no-cache\r\n\r\n",
	"DELETE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"GET / HTTP/1.1\nHost: h\n\n",
	"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
	"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\n\x00X: y\r\n\r\n",
	"GET /a%20b HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
}

// FuzzRequest compares ParseRequest (what the event loops serve themselves) and
// CheckRequestFraming (what weir refuses on every transport) with http.ReadRequest.
//
// ParseRequest takes a head only if http.ReadRequest takes it, with the same method,
// target, URL, version, Host, header fields, length, transfer coding and close
// semantics. What it does not take is left to net/http (no exception needed: it is
// served by net/http's parser). CheckRequestFraming refuses a head net/http takes only
// for the four reasons it documents, each checked here from the raw bytes.
func FuzzRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		nr, nerr := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		end, bad := HeadEnd(data)
		if end > 0 && !bad {
			if sr, ok := ParseRequest(data[:end], "192.0.2.1:1", nil); ok {
				if nerr != nil {
					t.Fatalf("ParseRequest took %q; net/http: %v", data[:end], nerr)
				}
				compareRequest(t, data[:end], sr, nr)
				// What the loops serve themselves, the guard never refuses.
				if err := CheckRequestFraming(data[:end]); err != nil {
					t.Fatalf("ParseRequest took %q, CheckRequestFraming refuses it: %v", data[:end], err)
				}
			}
		}
		if nerr != nil {
			return
		}
		err := CheckRequestFraming(data)
		if err == nil || errors.Is(err, errIncompleteHead) {
			return
		}
		// net/http took it; weir refuses it: only for the reason said.
		head := rawHead(data)
		switch err {
		case ErrLengthAndChunked:
			if !hasField(head, "Transfer-Encoding") || !hasField(head, "Content-Length") {
				t.Fatalf("%q: %v, but it has not both", data, err)
			}
		case ErrTransferEncoding10:
			if !hasField(head, "Transfer-Encoding") || nr.ProtoAtLeast(1, 1) {
				t.Fatalf("%q: %v, but it is %s", data, err, nr.Proto)
			}
		case ErrObsFold:
			if !bytes.Contains(head, []byte("\n ")) && !bytes.Contains(head, []byte("\n\t")) {
				t.Fatalf("%q: %v, but no line is folded", data, err)
			}
		case ErrSpaceBeforeColon:
			if !bytes.Contains(head, []byte(" :")) && !bytes.Contains(head, []byte("\t:")) {
				t.Fatalf("%q: %v, but no name ends in a space", data, err)
			}
		default:
			t.Fatalf("%q: net/http takes it, weir refuses: %v", data, err)
		}
	})
}

// rawHead is data up to its first empty line, as net/http's line reader finds it.
func rawHead(data []byte) []byte {
	for i := 0; i < len(data); {
		j := bytes.IndexByte(data[i:], '\n')
		if j < 0 {
			return data
		}
		line := data[i : i+j]
		i += j + 1
		if i > j+1 && (len(line) == 0 || string(line) == "\r") {
			return data[:i]
		}
	}
	return data
}

// hasField reports whether a raw head has a line naming the field (any case).
func hasField(head []byte, name string) bool {
	for line := range strings.SplitSeq(string(head), "\n") {
		k, _, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimRight(k, " \t"), name) {
			return true
		}
	}
	return false
}

func compareRequest(t *testing.T, head []byte, sr Request, nr *http.Request) {
	t.Helper()
	r := sr.Req
	want := nr.Header.Clone()
	delete(want, "Host") // net/http's server moves it to Request.Host
	got := r.Header.Clone()
	if nr.Close && nr.ProtoAtLeast(1, 1) {
		delete(want, "Connection") // and drops "Connection: close"
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: header %v, net/http %v", head, got, want)
	}
	if r.Method != nr.Method || r.RequestURI != nr.RequestURI || r.URL.String() != nr.URL.String() || *r.URL != *nr.URL ||
		r.Proto != nr.Proto || r.ProtoMajor != nr.ProtoMajor || r.ProtoMinor != nr.ProtoMinor || r.Host != nr.Host ||
		r.ContentLength != nr.ContentLength || len(nr.TransferEncoding) != 0 || r.Close != nr.Close || sr.WantsClose != nr.Close {
		t.Fatalf("%q: got %s %q %v %s host %q cl %d close %v; net/http %s %q %v %s host %q cl %d te %v close %v", head,
			r.Method, r.RequestURI, r.URL, r.Proto, r.Host, r.ContentLength, r.Close,
			nr.Method, nr.RequestURI, nr.URL, nr.Proto, nr.Host, nr.ContentLength, nr.TransferEncoding, nr.Close)
	}
	if b, _ := io.ReadAll(nr.Body); len(b) != 0 {
		t.Fatalf("%q: net/http reads a body of %d bytes", head, len(b))
	}
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 599 Odd\r\nContent-Length: 0\r\nDate: x\r\n\r\n",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.0 200 OK\r\n\r\nbody",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 01\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: -0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nEtag: x\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: close\r\nProxy-Authenticate: x\r\nKeep-Alive: 5\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
	"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n Transfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
}

// FuzzResponse compares ScanResponse and AppendRelayedHead (the loops' relay of a
// plain response head) with http.ReadResponse, for a GET and a HEAD. ScanResponse
// takes a head only if http.ReadResponse takes it, with the same status, framing,
// length and close semantics, and the head it relays reads, to net/http, as the same
// status and header fields less the hop-by-hop ones. Heads it does not take go to
// ParseResponse, which is http.ReadResponse.
func FuzzResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	date := []byte("Mon, 07 Dec 2026 01:00:00 GMT")
	f.Fuzz(func(t *testing.T, data []byte, isHEAD bool) {
		end, bad := HeadEnd(data)
		if end == 0 || bad {
			return
		}
		head := data[:end]
		h, ok := ScanResponse(head, isHEAD)
		if !ok {
			return
		}
		method := http.MethodGet
		if isHEAD {
			method = http.MethodHead
		}
		nr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("ScanResponse took %q; net/http: %v", head, err)
		}
		var framing Framing
		switch {
		case isHEAD || !BodyAllowedForStatus(nr.StatusCode):
			framing = BodyNone
		case len(nr.TransferEncoding) > 0:
			framing = BodyChunked
		case nr.ContentLength >= 0:
			framing = BodyLength
		default:
			framing = BodyUntilClose
		}
		_, hasDate := nr.Header["Date"]
		if h.Code != nr.StatusCode || h.Framing != framing || (framing == BodyLength && h.Length != nr.ContentLength) ||
			h.Close != nr.Close || h.Date != hasDate {
			t.Fatalf("%q: scanned %+v; net/http %d framing %d cl %d close %v date %v", head, h, nr.StatusCode, framing, nr.ContentLength, nr.Close, hasDate)
		}
		if h.Code < 200 {
			return // informational heads are parsed by ParseResponse, never relayed line by line
		}
		relayed := AppendRelayedHead(nil, head, h, h.Close, date)
		rr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(relayed)), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%q relayed as %q: %v", head, relayed, err)
		}
		want := nr.Header.Clone()
		for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Transfer-Encoding", "Upgrade", "Date"} {
			delete(want, k)
		}
		if framing == BodyChunked || nr.StatusCode == http.StatusNoContent || nr.StatusCode == http.StatusNotModified || nr.StatusCode < 200 {
			delete(want, "Content-Length")
		}
		if nr.StatusCode == http.StatusNotModified {
			delete(want, "Content-Type")
		}
		got := rr.Header.Clone()
		delete(got, "Date")
		delete(got, "Connection")
		if framing != BodyChunked {
			delete(got, "Transfer-Encoding")
		}
		if rr.StatusCode != nr.StatusCode || !reflect.DeepEqual(got, want) || (framing == BodyChunked) != (len(rr.TransferEncoding) > 0) {
			t.Fatalf("%q relayed as %q: %d %v te %v; want %d %v", head, relayed, rr.StatusCode, got, rr.TransferEncoding, nr.StatusCode, want)
		}
	})
}

var chunkSeeds = []string{
	"5\r\nhello\r\n0\r\n\r\n",
	"3;x=1\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n",
	"4\r\nbody\r\n0\r\nX-Sum: 42\r\nX-Other: 1\r\n\r\n",
	"0\r\n\r\n",
	"5 \r\nhello\r\n0\r\n\r\n",
	"5 ;a\r\nhello\r\n0\r\n\r\n",
	"5\t;x\r\nhello\r\n0\r\n\r\n",
	"5;a\x01b\r\nhello\r\n0\r\n\r\n",
	"5\nhello\n0\n\n",
	"5\r\nhello\n0\r\n\r\n",
	"5\r\nhelloXX0\r\n\r\n",
	"0x5\r\nhello\r\n0\r\n\r\n",
	"+5\r\nhello\r\n0\r\n\r\n",
	"-1\r\n\r\n",
	"00000000000000005\r\nhello\r\n0\r\n\r\n",
	"fffffffffffffff\r\n",
	"ffffffffffffffff\r\n",
	"10000000000000000\r\n",
	"g\r\nx\r\n0\r\n\r\n",
	"\r\n",
	"5\r\nhello\r\n0\r\nX: a\n\r\n",
	"5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n",
	"5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
	"1;" + strings.Repeat("x", 5000) + "\r\na\r\n0\r\n\r\n",
	strings.Repeat("1;"+strings.Repeat("e", 300)+"\r\na\r\n", 60) + "0\r\n\r\n",
}

// FuzzChunked compares ChunkScanner with httputil.NewChunkedReader followed by the
// trailer read of net/http's body reader (on the same 4 KiB bufio.Reader net/http
// uses): the scanner ends a body exactly where net/http ends it, with the same data,
// whether it is given all the bytes at once or one by one; it refuses what net/http
// refuses. Exceptions (weir refuses, net/http takes): a chunk size over 2^62, and a
// trailer line that ends in a bare LF, is folded or has a name that is not a token.
func FuzzChunked(f *testing.F) {
	for _, s := range chunkSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// weir, all at once.
		var s ChunkScanner
		n, end, err := s.Scan(data)
		// weir, byte by byte, collecting the data.
		var s1 ChunkScanner
		var got []byte
		n1, end1 := 0, false
		var err1 error
		for i := 0; i < len(data) && !end1 && err1 == nil; i++ {
			inData := s1.state == chunkData
			var k int
			k, end1, err1 = s1.Scan(data[i : i+1])
			if inData && k == 1 {
				got = append(got, data[i])
			}
			n1 += k
		}
		if (err == nil) != (err1 == nil) || end != end1 || (end && n != n1) {
			t.Fatalf("%q: at once %d %v %v, byte by byte %d %v %v", data, n, end, err, n1, end1, err1)
		}
		// net/http.
		rd := bytes.NewReader(data)
		br := bufio.NewReader(rd)
		want, nerr := io.ReadAll(httputil.NewChunkedReader(br))
		if nerr == nil {
			nerr = readTrailer(br)
		}
		nend := len(data) - rd.Len() - br.Buffered()
		switch {
		case end:
			if nerr != nil {
				t.Fatalf("%q: weir ends it at %d; net/http: %v", data, n, nerr)
			}
			if nend != n || !bytes.Equal(got, want) {
				t.Fatalf("%q: weir ends it at %d with %q; net/http at %d with %q", data, n, got, nend, want)
			}
		case err == nil:
			if nerr == nil {
				t.Fatalf("%q: weir wants more; net/http ends it at %d", data, nend)
			}
		default: // weir refuses
			if nerr == nil && !chunkException(data) {
				t.Fatalf("%q: weir refuses it (%v); net/http takes %q", data, err, want)
			}
		}
	})
}

// readTrailer is what net/http's body reader does after the last chunk
// (net/http/transfer.go, body.readTrailer).
func readTrailer(br *bufio.Reader) error {
	buf, err := br.Peek(2)
	if bytes.Equal(buf, []byte("\r\n")) {
		_, _ = br.Discard(2)
		return nil
	}
	if len(buf) < 2 {
		return io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	seen := false
	for peek := 4; ; peek++ {
		b, err := br.Peek(peek)
		if bytes.HasSuffix(b, []byte("\r\n\r\n")) {
			seen = true
			break
		}
		if err != nil {
			break
		}
	}
	if !seen {
		return errors.New("suspiciously long trailer")
	}
	_, err = textproto.NewReader(br).ReadMIMEHeader()
	return err
}

// chunkException reports whether data holds what ChunkScanner refuses on purpose: a
// chunk size over 2^62 or a trailer line net/http's textproto reader would take
// loosely (bare LF, obs-fold, a name with characters outside a token).
func chunkException(data []byte) bool {
	// Find the trailer section as net/http finds it, and the chunk sizes.
	rd := bytes.NewReader(data)
	br := bufio.NewReader(rd)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return false
		}
		size := bytes.TrimRight(line, "\r\n \t")
		size, _, _ = bytes.Cut(size, []byte(";"))
		var n uint64
		for _, c := range size {
			v, _ := unhex(c)
			n = n<<4 | uint64(v)
		}
		if len(size) > 15 && n > maxChunkSize {
			return true
		}
		if n == 0 {
			break
		}
		if _, err := br.Discard(int(n) + 2); err != nil {
			return false
		}
	}
	trailer, _ := br.Peek(br.Buffered())
	end := bytes.Index(trailer, []byte("\r\n\r\n"))
	if end < 0 {
		return false
	}
	lines := bytes.Split(trailer[:end+2], []byte("\n"))
	for _, line := range lines[:len(lines)-1] { // the last is what follows the last LF
		if len(line) == 0 || line[len(line)-1] != '\r' || line[0] == ' ' || line[0] == '\t' {
			return true // bare LF, or folded
		}
		k, _, _ := bytes.Cut(line, []byte(":"))
		if !validToken(k) {
			return true
		}
	}
	return false
}

// FuzzGuard compares Guard with net/http's server reading the same stream: it follows
// requests where http.ReadRequest and net/http's body readers delimit them. Reading
// the stream with net/http, request after request: the guard gives out every byte
// unchanged up to the first head CheckRequestFraming refuses, and then only
// refusedHead; up to a body net/http fails to read, it gives out a prefix of the
// stream; after a head net/http refuses, an HTTP/2 preface or an upgrade request,
// everything.
func FuzzGuard(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s+"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"), uint8(7))
	}
	f.Add([]byte("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\nX: y\r\n\r\nPOST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: h\r\n\r\n"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, piece uint8) {
		g := NewGuard(&pieceConn{src: string(data), n: int(piece%16) + 1}, 1<<20)
		out, gerr := io.ReadAll(g)
		// net/http, request after request.
		rd := bytes.NewReader(data)
		br := bufio.NewReader(rd)
		at := func() int { return len(data) - rd.Len() - br.Buffered() }
		for {
			off := at()
			rest := data[off:]
			if len(rest) == 0 {
				break
			}
			end := LineHeadEnd(rest)
			if end == 0 {
				break // an incomplete head: given out as it is
			}
			if CheckRequestFraming(rest[:end]) != nil {
				want := string(data[:off]) + refusedHead
				if string(out) != want {
					t.Fatalf("%q: guard gave %q, want %q", data, out, want)
				}
				return
			}
			req, err := http.ReadRequest(br)
			if err != nil || req.ProtoMajor != 1 {
				break // net/http refuses it, or HTTP/2 follows: passed through
			}
			// An upgrade the server does not answer with 101 (nothing is written
			// here: TestGuardUpgrade has the other case) is followed like any request.
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				goto prefix
			}
		}
		if errors.Is(gerr, ErrBadRequestBody) {
			goto prefix // a chunked body it refuses and net/http takes: FuzzChunked's exceptions
		}
		if string(out) != string(data) || gerr != nil {
			t.Fatalf("%q: guard gave %q (%v), want it all", data, out, gerr)
		}
		return
	prefix: // net/http fails the body; the guard stops at or before the same byte
		if !bytes.HasPrefix(data, out) {
			t.Fatalf("%q: guard gave %q, not a prefix", data, out)
		}
	})
}
