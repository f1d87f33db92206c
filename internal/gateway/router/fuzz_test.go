package router

import (
	"net/http"
	"net/url"
	"testing"
)

// FuzzMatch feeds arbitrary hosts, paths, queries and header values to a table with
// every match type: Match must never panic, and a match must be for a rule that exists.
func FuzzMatch(f *testing.F) {
	f.Add("a.example.com", "/api/x", "debug=1", "v2")
	f.Add("", "/items/12", "id=abc", "yes")
	f.Add("ONLY.example.com:8080", "//", "%zz", "")
	f.Fuzz(func(t *testing.T, host, path, query, header string) {
		tbl := testTable(t)
		r := &http.Request{Method: "GET", Host: host, URL: &url.URL{Path: path, RawQuery: query}, Header: http.Header{}}
		r.Header.Set("X-Version", header)
		r.Header.Set("X-Canary", header)
		res, ok := tbl.Match(r, Host(r))
		if ok && (res.Match == nil || res.Match.Rule == nil || res.Section == nil) {
			t.Fatalf("match without a rule: %+v", res)
		}
	})
}
