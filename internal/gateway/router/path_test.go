package router

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"weir.dev/weir/internal/model"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "/"},
		{"", "/"},
		{"/public/x", "/public/x"},
		{"/public/../admin", "/admin"},
		{"/public/%2e%2e/admin", "/admin"},
		{"/public/%2E%2E/admin", "/admin"},
		{"/public/.%2e/admin", "/admin"},
		{"/%70ublic/../admin", "/admin"},
		{"/%70ublic/x", "/public/x"},
		{"/public%2F..%2Fadmin", "/public%2F..%2Fadmin"},
		{"/public%2f..%2fadmin", "/public%2F..%2Fadmin"},
		{"/public/%2e%2e%2fadmin", "/public/..%2Fadmin"},
		{"/a/./b/.", "/a/b/"},
		{"/a/b/..", "/a/"},
		{"/..", "/"},
		{"/../../etc/passwd", "/etc/passwd"},
		{"/a//../b", "/a/b"},
		{"/a/.../b", "/a/.../b"},
		{"/a/..b/c", "/a/..b/c"},
		{"/caf%c3%a9", "/caf%C3%A9"},
		{"/%7Euser/%41%5a%30-%5F.", "/~user/AZ0-_."},
		{"/a%20b", "/a%20b"},
		{"/a b", "/a%20b"},
		{"/q?x", "/q%3Fx"},
		{"/a%00b", "/a%00b"},
		{"/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;="},
		{"/a\\..\\b", "/a%5C..%5Cb"},
		{"/\xff", "/%FF"},
	}
	for _, tc := range tests {
		got, err := NormalizePath(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"/a%", "/a%2", "/a%zz", "/%g0/x"} {
		if got, err := NormalizePath(bad); err == nil {
			t.Errorf("NormalizePath(%q) = %q, want an error", bad, got)
		}
	}
}

// TestNormalizeRequestPath checks the path a request is matched and forwarded with, from
// the request target as net/http parses it.
func TestNormalizeRequestPath(t *testing.T) {
	tests := []struct{ target, path, escaped string }{
		{"/public/x?q=1", "/public/x", "/public/x"},
		{"/public/../admin", "/admin", "/admin"},
		{"/public/%2e%2e/admin", "/admin", "/admin"},
		{"/%70ublic/../admin", "/admin", "/admin"},
		{"/public%2F..%2Fadmin", "/public/../admin", "/public%2F..%2Fadmin"},
		{"/caf%c3%a9", "/café", "/caf%C3%A9"},
		{"*", "*", "*"},
	}
	for _, tc := range tests {
		u, err := url.ParseRequestURI(tc.target)
		if err != nil {
			t.Fatal(err)
		}
		if err := NormalizeRequestPath(u); err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		if u.Path != tc.path || u.EscapedPath() != tc.escaped {
			t.Errorf("%s: Path %q, escaped %q; want %q, %q", tc.target, u.Path, u.EscapedPath(), tc.path, tc.escaped)
		}
	}
}

// TestMatchAfterNormalizing: a route exposing only /public is not reached by dot
// segments, escaped letters or encoded slashes; escaped route values match their
// normalised requests.
func TestMatchAfterNormalizing(t *testing.T) {
	tbl, err := Compile(&model.Listener{Sections: []*model.Section{{Name: "s", Hosts: []*model.VirtualHost{{Matches: []*model.RouteMatch{
		m("public", model.PathPrefix, "/public", nil),
		m("cafe", model.PathExact, "/caf%c3%a9", nil),
	}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ target, want string }{
		{"/public", "public"},
		{"/public/x", "public"},
		{"/%70ublic/x", "public"},
		{"/public/x/../y", "public"},
		{"/public/../admin", ""},
		{"/public/%2e%2e/admin", ""},
		{"/%70ublic/../admin", ""},
		{"/public%2F..%2Fadmin", ""},
		{"/public%2fx", ""},
		{"/caf%C3%A9", "cafe"},
		{"/caf%c3%a9", "cafe"},
	}
	for _, tc := range tests {
		u, err := url.ParseRequestURI(tc.target)
		if err != nil {
			t.Fatal(err)
		}
		if err := NormalizeRequestPath(u); err != nil {
			t.Fatal(err)
		}
		r := &http.Request{Method: "GET", URL: u, Header: http.Header{}}
		res, ok := tbl.Match(r, "")
		got := ""
		if ok {
			got = res.Match.Rule.ID
		}
		if got != tc.want {
			t.Errorf("%s: matched %q, want %q", tc.target, got, tc.want)
		}
	}
}

// FuzzNormalizePath: the normal form is idempotent, absolute, has no dot segment, keeps
// every encoded slash encoded and adds no slash, and only valid, upper-case escapes of
// reserved bytes.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/public/../admin", "/public/%2e%2e/admin", "/%70ublic/../admin",
		"/public%2F..%2Fadmin", "/a/./b/", "/caf%c3%a9", "", "/..", "a/b", "/%2e%2E%2f%2F"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := NormalizePath(in)
		if err != nil {
			return
		}
		again, err := NormalizePath(out)
		if err != nil || again != out {
			t.Fatalf("not idempotent: %q → %q → %q (%v)", in, out, again, err)
		}
		if !strings.HasPrefix(out, "/") {
			t.Fatalf("%q → %q: not absolute", in, out)
		}
		for seg := range strings.SplitSeq(out, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q → %q: dot segment", in, out)
			}
		}
		encodedSlashes := strings.Count(strings.ToUpper(in), "%2F")
		if got := strings.Count(out, "%2F"); got > encodedSlashes {
			t.Fatalf("%q → %q: more encoded slashes", in, out)
		}
		if strings.Count(out, "/")-strings.Count(in, "/") > 1 {
			t.Fatalf("%q → %q: slashes added", in, out)
		}
		for i := 0; i < len(out); i++ {
			if out[i] != '%' {
				if out[i] != '/' && !pchar(out[i]) {
					t.Fatalf("%q → %q: unencoded %q", in, out, out[i])
				}
				continue
			}
			if i+2 >= len(out) || strings.ToUpper(out[i+1:i+3]) != out[i+1:i+3] {
				t.Fatalf("%q → %q: escape not upper-case", in, out)
			}
			if d := unhex(out[i+1])<<4 | unhex(out[i+2]); unreserved(d) {
				t.Fatalf("%q → %q: unreserved %q still escaped", in, out, d)
			}
		}
		if _, err := url.PathUnescape(out); err != nil {
			t.Fatalf("%q → %q: %v", in, out, err)
		}
	})
}
