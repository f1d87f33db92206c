package router

import (
	"net/http/httptest"
	"testing"

	"weir.dev/weir/internal/model"
)

func m(id string, pt model.PathMatchType, path string, mod func(*model.RouteMatch)) *model.RouteMatch {
	rm := &model.RouteMatch{Path: model.PathMatch{Type: pt, Value: path}, Rule: &model.Rule{ID: id}}
	if mod != nil {
		mod(rm)
	}
	return rm
}

func testTable(t *testing.T) *Table {
	t.Helper()
	ln := &model.Listener{Sections: []*model.Section{
		{Name: "exact-listener", Hostname: "only.example.com", Hosts: []*model.VirtualHost{
			{Hostname: "only.example.com", Matches: []*model.RouteMatch{m("only", model.PathPrefix, "/", nil)}},
		}},
		{Name: "wild-listener", Hostname: "*.example.com", Hosts: []*model.VirtualHost{
			{Hostname: "a.example.com", Matches: []*model.RouteMatch{m("a-api", model.PathPrefix, "/api", nil)}},
			{Hostname: "*.example.com", Matches: []*model.RouteMatch{m("wild", model.PathPrefix, "/", nil)}},
		}},
		{Name: "any", Hostname: "", Hosts: []*model.VirtualHost{{Hostname: "", Matches: []*model.RouteMatch{
			m("exact", model.PathExact, "/exact", nil),
			m("regex", model.PathRegex, "/items/[0-9]+", nil),
			m("method", model.PathPrefix, "/m", func(r *model.RouteMatch) { r.Method = "POST" }),
			m("header", model.PathPrefix, "/h", func(r *model.RouteMatch) {
				r.Headers = []model.ValueMatch{{Name: "x-version", Value: "v2"}}
			}),
			m("header-re", model.PathPrefix, "/h", func(r *model.RouteMatch) {
				r.Headers = []model.ValueMatch{{Name: "X-Canary", Value: "^(yes|true)$", Regex: true}}
			}),
			m("query", model.PathPrefix, "/q", func(r *model.RouteMatch) {
				r.Query = []model.ValueMatch{{Name: "debug", Value: "1"}}
			}),
			m("query-re", model.PathPrefix, "/q", func(r *model.RouteMatch) {
				r.Query = []model.ValueMatch{{Name: "id", Value: "^[a-f]+$", Regex: true}}
			}),
			m("prefix", model.PathPrefix, "/abc", nil),
			m("root", model.PathPrefix, "/", nil),
		}}}},
	}}
	tbl, err := Compile(ln)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func TestMatch(t *testing.T) {
	tbl := testTable(t)
	tests := []struct {
		name, method, url string
		headers           map[string]string
		want              string // rule ID, "" for no match
	}{
		{"exact", "GET", "http://x/exact", nil, "exact"},
		{"exact is not prefix", "GET", "http://x/exact/more", nil, "root"},
		{"regex", "GET", "http://x/items/42", nil, "regex"},
		{"regex anchored", "GET", "http://x/items/42/x", nil, "root"},
		{"method match", "POST", "http://x/m", nil, "method"},
		{"method mismatch", "GET", "http://x/m", nil, "root"},
		{"header exact", "GET", "http://x/h", map[string]string{"X-Version": "v2"}, "header"},
		{"header name case-insensitive", "GET", "http://x/h", map[string]string{"x-version": "v2"}, "header"},
		{"header value case-sensitive", "GET", "http://x/h", map[string]string{"X-Version": "V2"}, "root"},
		{"header regex", "GET", "http://x/h", map[string]string{"X-Canary": "true"}, "header-re"},
		{"query exact", "GET", "http://x/q?debug=1", nil, "query"},
		{"query regex", "GET", "http://x/q?id=abc", nil, "query-re"},
		{"query mismatch", "GET", "http://x/q?id=xyz", nil, "root"},
		{"prefix element", "GET", "http://x/abc/d", nil, "prefix"},
		{"prefix exact", "GET", "http://x/abc", nil, "prefix"},
		{"prefix not partial element", "GET", "http://x/abcd", nil, "root"},
		{"section exact host", "GET", "http://only.example.com/x", nil, "only"},
		{"host port ignored", "GET", "http://only.example.com:8080/x", nil, "only"},
		{"host case-insensitive", "GET", "http://ONLY.example.com/x", nil, "only"},
		{"vhost exact in wildcard section", "GET", "http://a.example.com/api/x", nil, "a-api"},
		{"fall through to wildcard vhost", "GET", "http://a.example.com/other", nil, "wild"},
		{"wildcard section", "GET", "http://b.example.com/", nil, "wild"},
		{"wildcard covers several labels", "GET", "http://c.b.example.com/", nil, "wild"},
		{"apex not covered by wildcard", "GET", "http://example.com/exact", nil, "exact"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.url, nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			res, ok := tbl.Match(r, Host(r))
			got := ""
			if ok {
				got = res.Match.Rule.ID
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNoSection(t *testing.T) {
	tbl, err := Compile(&model.Listener{Sections: []*model.Section{{Hostname: "a.example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "http://b.example.com/", nil)
	if _, ok := tbl.Match(r, Host(r)); ok {
		t.Fatal("matched a host no section serves")
	}
}

func TestPrefixMatches(t *testing.T) {
	tests := []struct {
		prefix, path string
		want         bool
	}{
		{"/", "/anything", true},
		{"/abc", "/abc", true},
		{"/abc", "/abc/", true},
		{"/abc/", "/abc", true},
		{"/abc", "/abcd", false},
		{"/abc/def", "/abc/def/g", true},
		{"/abc/def", "/abc/de", false},
	}
	for _, tc := range tests {
		if got := PrefixMatches(tc.prefix, tc.path); got != tc.want {
			t.Errorf("PrefixMatches(%q, %q) = %v", tc.prefix, tc.path, got)
		}
	}
}

func TestCompileBadRegex(t *testing.T) {
	_, err := Compile(&model.Listener{Sections: []*model.Section{{Hosts: []*model.VirtualHost{{Matches: []*model.RouteMatch{m("bad", model.PathRegex, "(", nil)}}}}}})
	if err == nil {
		t.Fatal("want error for a bad regex")
	}
}
