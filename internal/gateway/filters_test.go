package gateway

import (
	"net/http/httptest"
	"testing"

	"weir.dev/weir/internal/model"
)

// TestModifyPath follows the Gateway API conformance cases for ReplacePrefixMatch.
func TestModifyPath(t *testing.T) {
	tests := []struct {
		prefix, path, repl, want string
	}{
		{"/prefix/one", "/prefix/one/two", "/one", "/one/two"},
		{"/prefix/one", "/prefix/one", "/one", "/one"},
		{"/prefix/one", "/prefix/one/", "/one", "/one/"},
		{"/strip-prefix", "/strip-prefix/three", "/", "/three"},
		{"/strip-prefix", "/strip-prefix", "/", "/"},
		{"/strip-prefix/", "/strip-prefix/three", "/", "/three"},
		{"/full", "/full/path", "/xyz/", "/xyz/path"},
		{"/", "/anything", "/new", "/new/anything"},
	}
	for _, tc := range tests {
		m := &model.RouteMatch{Path: model.PathMatch{Type: model.PathPrefix, Value: tc.prefix}}
		got := modifyPath(tc.path, m, &model.PathModifier{Type: model.ReplacePrefixMatch, Value: tc.repl})
		if got != tc.want {
			t.Errorf("prefix %q path %q → %q: got %q, want %q", tc.prefix, tc.path, tc.repl, got, tc.want)
		}
	}
	full := modifyPath("/a/b", &model.RouteMatch{Path: model.PathMatch{Type: model.PathPrefix, Value: "/a"}}, &model.PathModifier{Type: model.ReplaceFullPath, Value: "/x"})
	if full != "/x" {
		t.Errorf("ReplaceFullPath: %q", full)
	}
}

func TestRedirectLocation(t *testing.T) {
	m := &model.RouteMatch{Path: model.PathMatch{Type: model.PathPrefix, Value: "/"}}
	tests := []struct {
		name, url string
		https     bool
		rd        model.Redirect
		code      int
		want      string
	}{
		{"scheme to https drops port", "http://example.com:8080/a?q=1", false, model.Redirect{Scheme: "https"}, 302, "https://example.com/a?q=1"},
		{"keeps listener port", "http://example.com:8080/a", false, model.Redirect{Hostname: "other.com"}, 302, "http://other.com:8080/a"},
		{"explicit port", "http://example.com/a", false, model.Redirect{Port: 8443, Scheme: "https", StatusCode: 301}, 301, "https://example.com:8443/a"},
		{"well-known port omitted", "http://example.com/a", false, model.Redirect{Port: 443, Scheme: "https"}, 302, "https://example.com/a"},
		{"https to http", "https://example.com/a", true, model.Redirect{Scheme: "http", StatusCode: 308}, 308, "http://example.com/a"},
		{"full path", "http://example.com/a/b", false, model.Redirect{Path: &model.PathModifier{Type: model.ReplaceFullPath, Value: "/new"}, StatusCode: 307}, 307, "http://example.com/new"},
		{"303", "http://example.com/a", false, model.Redirect{StatusCode: 303}, 303, "http://example.com/a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.url, nil)
			w := httptest.NewRecorder()
			redirect(w, r, m, &tc.rd, tc.https)
			if w.Code != tc.code || w.Header().Get("Location") != tc.want {
				t.Fatalf("%d %q, want %d %q", w.Code, w.Header().Get("Location"), tc.code, tc.want)
			}
		})
	}
}

func TestCORSOrigins(t *testing.T) {
	c := &model.CORS{AllowOrigins: []string{"https://exact.test", "https://*.wild.test", "http://*.wild.test:8080"}}
	tests := []struct {
		origin string
		want   bool
	}{
		{"https://exact.test", true},
		{"https://a.wild.test", true},
		{"https://a.b.wild.test", true},
		{"https://wild.test", false},
		{"http://a.wild.test", false},
		{"http://a.wild.test:8080", true},
		{"https://evil.test", false},
	}
	for _, tc := range tests {
		if got := corsAllowed(c, tc.origin); got != tc.want {
			t.Errorf("%s: %v", tc.origin, got)
		}
	}
	if corsOrigin(&model.CORS{AllowOrigins: []string{"*"}}, "https://x") != "*" {
		t.Error("wildcard origin without credentials answers *")
	}
	if corsOrigin(&model.CORS{AllowOrigins: []string{"*"}, AllowCredentials: true}, "https://x") != "https://x" {
		t.Error("credentials require the origin itself")
	}
}
