package gateway

import (
	"net/http"
	"strings"
	"testing"

	"weir.dev/weir/internal/model"
)

// TestCORSConformance runs the cases of Gateway API's HTTPRouteCORS conformance test
// (v1.6, routes of tests/httproute-cors.yaml) over both transports. Preflights are
// answered by the gateway, never forwarded; other requests reach the backend.
func TestCORSConformance(t *testing.T) {
	cors := func(id, prefix string, c model.CORS, be *model.Backend) *model.RouteMatch {
		rm := prefixRule(id, prefix, be)
		rm.Rule.Filters = []model.Filter{{Type: model.FilterCORS, CORS: &c}}
		return rm
	}
	type want struct {
		codes  []int
		valid  map[string][]string // header → acceptable values (whitespace ignored)
		absent []string
	}
	ok := []int{200, 204}
	cases := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		forward bool
		want    want
	}{
		{"preflight exact origin", "OPTIONS", "/cors-1", map[string]string{"Origin": "https://www.foo.com", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-header-1, x-header-2"}, false,
			want{ok, map[string][]string{"Access-Control-Allow-Origin": {"https://www.foo.com"}, "Access-Control-Allow-Methods": {"GET,OPTIONS", "OPTIONS,GET"},
				"Access-Control-Allow-Headers": {"x-header-1,x-header-2", "x-header-2,x-header-1"}, "Access-Control-Expose-Headers": {"x-header-3,x-header-4", "x-header-4,x-header-3"},
				"Access-Control-Max-Age": {"3600"}, "Access-Control-Allow-Credentials": {"true"}}, nil}},
		{"preflight wildcard origin", "OPTIONS", "/cors-1", map[string]string{"Origin": "https://www.bar.com", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-header-1, x-header-2"}, false,
			want{ok, map[string][]string{"Access-Control-Allow-Origin": {"https://www.bar.com"}, "Access-Control-Expose-Headers": {"x-header-3,x-header-4"}, "Access-Control-Allow-Credentials": {"true"}}, nil}},
		{"preflight wildcard origin, many labels", "OPTIONS", "/cors-1", map[string]string{"Origin": "https://xpto.www.bar.com", "Access-Control-Request-Method": "GET"}, false,
			want{ok, map[string][]string{"Access-Control-Allow-Origin": {"https://xpto.www.bar.com"}, "Access-Control-Expose-Headers": {"x-header-3,x-header-4"}}, nil}},
		{"preflight disallowed origin", "OPTIONS", "/cors-1", map[string]string{"Origin": "https://foobar.com", "Access-Control-Request-Method": "GET"}, false,
			want{[]int{200, 204, 403}, nil, []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers"}}},
		{"simple exact origin", "GET", "/cors-1", map[string]string{"Origin": "https://www.foo.com"}, true,
			want{[]int{200}, map[string][]string{"Access-Control-Allow-Origin": {"https://www.foo.com"}}, nil}},
		{"simple wildcard origin", "GET", "/cors-1", map[string]string{"Origin": "https://www.bar.com"}, true,
			want{[]int{200}, map[string][]string{"Access-Control-Allow-Origin": {"https://www.bar.com"}}, nil}},
		{"simple disallowed origin", "GET", "/cors-1", map[string]string{"Origin": "https://foobar.com"}, true,
			want{[]int{200}, nil, []string{"Access-Control-Allow-Origin"}}},
		{"preflight POST with allowMethods *", "OPTIONS", "/cors-2", map[string]string{"Origin": "https://www.foo.com", "Access-Control-Request-Method": "POST"}, false,
			want{ok, map[string][]string{"Access-Control-Allow-Methods": {"POST", "*"}, "Access-Control-Allow-Origin": {"https://www.foo.com"}}, []string{"Access-Control-Allow-Credentials"}}},
		{"preflight wildcard origin", "OPTIONS", "/cors-wildcard-origin", map[string]string{"Origin": "https://foobar.com", "Access-Control-Request-Method": "PUT"}, false,
			want{ok, map[string][]string{"Access-Control-Allow-Origin": {"https://foobar.com", "*"}, "Access-Control-Allow-Methods": {"PUT"}}, []string{"Access-Control-Allow-Credentials"}}},
		{"preflight wildcard origin with port", "OPTIONS", "/cors-wildcard-origin", map[string]string{"Origin": "https://foobar.com:12345", "Access-Control-Request-Method": "PUT"}, false,
			want{ok, map[string][]string{"Access-Control-Allow-Origin": {"https://foobar.com:12345", "*"}, "Access-Control-Allow-Methods": {"PUT"}}, []string{"Access-Control-Allow-Credentials"}}},
		{"request wildcard origin with port", "PUT", "/cors-wildcard-origin", map[string]string{"Origin": "https://foobar.com:12345"}, true,
			want{[]int{200}, map[string][]string{"Access-Control-Allow-Origin": {"https://foobar.com:12345", "*"}}, nil}},
		{"request wildcard origin", "PUT", "/cors-wildcard-origin", map[string]string{"Origin": "https://foobar.com"}, true,
			want{[]int{200}, map[string][]string{"Access-Control-Allow-Origin": {"https://foobar.com", "*"}}, []string{"Access-Control-Allow-Credentials"}}},
		{"preflight * methods and headers, credentials", "OPTIONS", "/cors-wildcard-methods-headers", map[string]string{"Origin": "https://other.foo.com", "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-header-1, x-header-2"}, false,
			want{ok, map[string][]string{"Access-Control-Allow-Origin": {"https://other.foo.com"}, "Access-Control-Allow-Methods": {"PUT"},
				"Access-Control-Allow-Headers": {"x-header-1,x-header-2", "x-header-2,x-header-1"}, "Access-Control-Allow-Credentials": {"true"}}, nil}},
		{"preflight * methods and headers, no credentials", "OPTIONS", "/cors-wildcard-methods-headers-unauth", map[string]string{"Origin": "https://other.foo.com", "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-header-1, x-header-2"}, false,
			want{ok, map[string][]string{"Access-Control-Allow-Origin": {"https://other.foo.com", "*"}, "Access-Control-Allow-Methods": {"PUT", "*"},
				"Access-Control-Allow-Headers": {"x-header-1,x-header-2", "x-header-2,x-header-1", "*"}}, []string{"Access-Control-Allow-Credentials"}}},
		{"request with credentials", "GET", "/cors-wildcard-methods-headers", map[string]string{"Origin": "https://other.foo.com"}, true,
			want{[]int{200}, map[string][]string{"Access-Control-Allow-Origin": {"https://other.foo.com"}, "Access-Control-Allow-Credentials": {"true"}}, nil}},
		{"request without credentials", "GET", "/cors-wildcard-methods-headers-unauth", map[string]string{"Origin": "https://other.foo.com"}, true,
			want{[]int{200}, map[string][]string{"Access-Control-Allow-Origin": {"https://other.foo.com", "*"}}, []string{"Access-Control-Allow-Credentials"}}},
	}
	forEdgeTransport(t, func(t *testing.T, opts Options) {
		tb := startTargetBackend(t)
		be := tb.backend("v1")
		// Longest prefix first, as the model orders PathPrefix matches.
		tg := startGateway(t, opts, httpConfig(freeAddr(t),
			cors("unauth", "/cors-wildcard-methods-headers-unauth", model.CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, MaxAge: 5}, be),
			cors("auth", "/cors-wildcard-methods-headers", model.CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, AllowCredentials: true, MaxAge: 5}, be),
			cors("origin", "/cors-wildcard-origin", model.CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"PUT"}, MaxAge: 5}, be),
			cors("1", "/cors-1", model.CORS{AllowOrigins: []string{"https://www.foo.com", "https://*.bar.com"}, AllowMethods: []string{"GET", "OPTIONS"},
				AllowHeaders: []string{"x-header-1", "x-header-2"}, ExposeHeaders: []string{"x-header-3", "x-header-4"}, AllowCredentials: true, MaxAge: 3600}, be),
			cors("2", "/cors-2", model.CORS{AllowOrigins: []string{"https://www.foo.com"}, AllowMethods: []string{"*"}, MaxAge: 5}, be),
		))
		for _, tc := range cases {
			before := tb.count()
			resp, _ := get(t, http.DefaultClient, tc.method, tg.url+tc.path, tc.headers)
			if forwarded := tb.count() > before; forwarded != tc.forward {
				t.Errorf("%s: forwarded %v, want %v", tc.name, forwarded, tc.forward)
			}
			if !containsInt(tc.want.codes, resp.StatusCode) {
				t.Errorf("%s: status %d, want one of %v", tc.name, resp.StatusCode, tc.want.codes)
			}
			for h, vals := range tc.want.valid {
				got := strings.ReplaceAll(strings.Join(resp.Header.Values(h), ","), " ", "")
				found := false
				for _, v := range vals {
					found = found || got == strings.ReplaceAll(v, " ", "")
				}
				if !found {
					t.Errorf("%s: %s %q, want one of %q", tc.name, h, got, vals)
				}
			}
			for _, h := range tc.want.absent {
				if v := resp.Header.Values(h); v != nil {
					t.Errorf("%s: %s %q, want none", tc.name, h, v)
				}
			}
		}
	})
}

func containsInt(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
