package http1

import (
	"bufio"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestHeadEnd(t *testing.T) {
	for _, tc := range []struct {
		in   string
		end  int
		bad  bool
		name string
	}{
		{name: "complete", in: "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET", end: 27},
		{name: "incomplete", in: "GET / HTTP/1.1\r\nHost: x\r\n"},
		{name: "no line yet", in: "GET / HT"},
		{name: "bare LF", in: "GET / HTTP/1.1\nHost: x\n\n", bad: true},
		{name: "bare LF in a header", in: "GET / HTTP/1.1\r\nHost: x\n\r\n", bad: true},
		{name: "leading empty line", in: "\r\nGET / HTTP/1.1\r\n\r\n", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end, bad := HeadEnd([]byte(tc.in))
			if end != tc.end || bad != tc.bad {
				t.Fatalf("HeadEnd = %d, %v; want %d, %v", end, bad, tc.end, tc.bad)
			}
		})
	}
}

func TestParseRequest(t *testing.T) {
	type want struct {
		method, path, query, host, proto string
		close, keepAlive10               bool
		header                           http.Header
	}
	for _, tc := range []struct {
		name string
		in   string
		want *want // nil: handed to net/http
	}{
		{name: "simple GET", in: "GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n",
			want: &want{method: "GET", path: "/a/b", query: "x=1", host: "example.com", proto: "HTTP/1.1", header: http.Header{"User-Agent": {"t"}}}},
		{name: "keys canonicalized, duplicates kept in order, values trimmed", in: "GET / HTTP/1.1\r\nhost: h\r\nx-a: 1\r\nX-A:  2 \r\naccept:\t*/*\r\n\r\n",
			want: &want{method: "GET", path: "/", host: "h", proto: "HTTP/1.1", header: http.Header{"X-A": {"1", "2"}, "Accept": {"*/*"}}}},
		{name: "escaped path", in: "GET /a%20b HTTP/1.1\r\nHost: h\r\n\r\n",
			want: &want{method: "GET", path: "/a b", host: "h", proto: "HTTP/1.1", header: http.Header{}}},
		{name: "Connection close is taken out", in: "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
			want: &want{method: "GET", path: "/", host: "h", proto: "HTTP/1.1", close: true, header: http.Header{}}},
		{name: "HTTP/1.0 without Host closes", in: "GET / HTTP/1.0\r\n\r\n",
			want: &want{method: "GET", path: "/", proto: "HTTP/1.0", close: true, header: http.Header{}}},
		{name: "HTTP/1.0 keep-alive", in: "HEAD / HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n",
			want: &want{method: "HEAD", path: "/", host: "h", proto: "HTTP/1.0", keepAlive10: true, header: http.Header{"Connection": {"keep-alive"}}}},
		{name: "Content-Length 0", in: "DELETE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
			want: &want{method: "DELETE", path: "/x", host: "h", proto: "HTTP/1.1", header: http.Header{"Content-Length": {"0"}}}},
		{name: "Pragma no-cache", in: "GET / HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n",
			want: &want{method: "GET", path: "/", host: "h", proto: "HTTP/1.1", header: http.Header{"Pragma": {"no-cache"}, "Cache-Control": {"no-cache"}}}},

		{name: "body", in: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"},
		{name: "duplicate Content-Length", in: "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"},
		{name: "chunked", in: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{name: "upgrade", in: "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{name: "h2c upgrade", in: "GET / HTTP/1.1\r\nHost: h\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"},
		{name: "h2 preface", in: "PRI * HTTP/2.0\r\n\r\n"},
		{name: "expect", in: "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n"},
		{name: "CONNECT", in: "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"},
		{name: "absolute form", in: "GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "asterisk", in: "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "HTTP/1.2", in: "GET / HTTP/1.2\r\nHost: h\r\n\r\n"},
		{name: "lower-case version", in: "GET / http/1.1\r\nHost: h\r\n\r\n"},
		{name: "missing Host", in: "GET / HTTP/1.1\r\nX: y\r\n\r\n"},
		{name: "two Hosts", in: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
		{name: "bad Host", in: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"},
		{name: "obs-fold", in: "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"},
		{name: "space before colon", in: "GET / HTTP/1.1\r\nHost : h\r\n\r\n"},
		{name: "no colon", in: "GET / HTTP/1.1\r\nHost: h\r\nnocolon\r\n\r\n"},
		{name: "control byte in value", in: "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n"},
		{name: "bad method", in: "G(T / HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "space in target", in: "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "missing version", in: "GET /\r\nHost: h\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sr, ok := ParseRequest([]byte(tc.in), "192.0.2.1:1234", nil)
			if tc.want == nil {
				if ok {
					t.Fatalf("parsed %+v; want it handed to net/http", sr.Req)
				}
				return
			}
			if !ok {
				t.Fatal("not parsed")
			}
			r, w := sr.Req, tc.want
			if r.Method != w.method || r.URL.Path != w.path || r.URL.RawQuery != w.query || r.Host != w.host || r.Proto != w.proto ||
				r.Close != w.close || sr.WantsClose != w.close || sr.KeepAlive10 != w.keepAlive10 || r.RemoteAddr != "192.0.2.1:1234" ||
				r.Body != http.NoBody || r.ContentLength != 0 {
				t.Fatalf("got %s %s ?%s host %q %s close %v/%v ka10 %v", r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Proto, r.Close, sr.WantsClose, sr.KeepAlive10)
			}
			if !reflect.DeepEqual(r.Header, w.header) {
				t.Fatalf("header %v, want %v", r.Header, w.header)
			}
			// What net/http's own parser makes of the same bytes.
			nr, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tc.in)))
			if err != nil {
				t.Fatal(err)
			}
			delete(nr.Header, "Host")
			if nr.Close {
				delete(nr.Header, "Connection")
				delete(r.Header, "Connection")
			}
			if !reflect.DeepEqual(r.Header, nr.Header) || nr.Host != r.Host || nr.RequestURI != r.RequestURI || *nr.URL != *r.URL {
				t.Fatalf("net/http parses %v %q %v; we %v %q %v", nr.Header, nr.Host, nr.URL, r.Header, r.Host, r.URL)
			}
		})
	}
}
