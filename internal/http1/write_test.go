package http1

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"reflect"
	"testing"
)

// TestWriteRequestMatchesRequestWrite checks that the fast request writer sends what
// http.Request.Write sends, header order aside.
func TestWriteRequestMatchesRequestWrite(t *testing.T) {
	mk := func(method, target string, h http.Header, mod func(*http.Request)) *http.Request {
		u, err := url.Parse(target)
		if err != nil {
			t.Fatal(err)
		}
		r := &http.Request{Method: method, URL: u, Host: u.Host, Header: h, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		if mod != nil {
			mod(r)
		}
		return r
	}
	tests := []struct {
		name string
		req  *http.Request
	}{
		{"plain GET", mk("GET", "http://example.com/a/b?x=1&y=2", http.Header{"Accept": {"*/*"}, "X-Many": {"1", "2"}}, nil)},
		{"empty method", mk("", "http://example.com/", http.Header{}, nil)},
		{"no user agent header", mk("GET", "http://h:8080/p", http.Header{"X-A": {"b"}}, nil)},
		{"empty user agent", mk("GET", "http://h/p", http.Header{"User-Agent": {""}}, nil)},
		{"user agent kept", mk("GET", "http://h/p", http.Header{"User-Agent": {" curl/8 ", "second"}}, nil)},
		{"POST without body", mk("POST", "http://h/p", http.Header{}, nil)},
		{"PUT without body", mk("PUT", "http://h/p", http.Header{}, nil)},
		{"DELETE without body", mk("DELETE", "http://h/p", http.Header{}, nil)},
		{"close", mk("GET", "http://h/p", http.Header{}, func(r *http.Request) { r.Close = true })},
		{"close already listed", mk("GET", "http://h/p", http.Header{"Connection": {"Close"}}, func(r *http.Request) { r.Close = true })},
		{"newlines and spaces in values", mk("GET", "http://h/p", http.Header{"X-A": {" a\r\nb "}, "X-B": {"\tc\t"}}, nil)},
		{"invalid name skipped", mk("GET", "http://h/p", http.Header{"Bad Name": {"x"}, "X-Ok": {"y"}}, nil)},
		{"excluded headers", mk("GET", "http://h/p", http.Header{"Host": {"other"}, "Content-Length": {"5"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"X"}}, nil)},
		{"host from URL", mk("GET", "http://h2:81/p", http.Header{}, func(r *http.Request) { r.Host = "" })},
		{"escaped path", mk("GET", "http://h/a%2Fb/c%20d", http.Header{}, nil)},
		{"unicode host falls back", mk("GET", "http://h/p", http.Header{}, func(r *http.Request) { r.Host = "bücher.example" })},
		{"zone host falls back", mk("GET", "http://h/p", http.Header{}, func(r *http.Request) { r.Host = "[fe80::1%25eth0]:80" })},
		{"CONNECT falls back", mk("CONNECT", "http://h:443", http.Header{}, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want, got bytes.Buffer
			if err := tt.req.Write(&want); err != nil {
				t.Fatal(err)
			}
			bw := bufio.NewWriter(&got)
			if err := WriteRequest(bw, tt.req); err != nil {
				t.Fatal(err)
			}
			if err := bw.Flush(); err != nil {
				t.Fatal(err)
			}
			wr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(want.Bytes())))
			if err != nil {
				t.Fatalf("Request.Write output: %v\n%s", err, want.String())
			}
			gr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(got.Bytes())))
			if err != nil {
				t.Fatalf("WriteRequest output: %v\n%s", err, got.String())
			}
			if wr.Method != gr.Method || wr.RequestURI != gr.RequestURI || wr.Host != gr.Host || wr.ContentLength != gr.ContentLength ||
				wr.Close != gr.Close || !reflect.DeepEqual(wr.Header, gr.Header) || want.Len() != got.Len() {
				t.Errorf("differs:\nRequest.Write:\n%s\nWriteRequest:\n%s", want.String(), got.String())
			}
		})
	}
	bad := mk("GET", "http://h/p", http.Header{}, nil)
	bad.URL.Opaque = "/a\x01b"
	if err := bad.Write(&bytes.Buffer{}); err == nil {
		t.Fatal("Request.Write took a control byte in the URL")
	}
	if err := WriteRequest(bufio.NewWriter(&bytes.Buffer{}), bad); err == nil {
		t.Error("a control byte in the URL was written")
	}
}
