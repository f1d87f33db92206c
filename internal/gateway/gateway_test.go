package gateway

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"weir.dev/weir/internal/model"
)

func TestRoutingThroughGateway(t *testing.T) {
	a, b, c := startEcho(t, "a"), startEcho(t, "b"), startEcho(t, "c")
	exact := prefixRule("r/exact", "", backend("a", 1, a))
	exact.Path = model.PathMatch{Type: model.PathExact, Value: "/exact"}
	hdr := prefixRule("r/header", "/", backend("b", 1, b))
	hdr.Headers = []model.ValueMatch{{Name: "X-Canary", Value: "yes"}}
	regex := prefixRule("r/regex", "", backend("b", 1, b))
	regex.Path = model.PathMatch{Type: model.PathRegex, Value: "/items/[0-9]+"}
	addr := freeAddr(t)
	cfg := httpConfig(addr, exact, regex, hdr, prefixRule("r/root", "/", backend("c", 1, c)))
	// A second section for one host only.
	cfg.Listeners[0].Sections = append([]*model.Section{{Name: "host", Hostname: "only.example.com",
		Hosts: []*model.VirtualHost{{Hostname: "only.example.com", Matches: []*model.RouteMatch{prefixRule("r/only", "/", backend("a", 1, a))}}}}},
		cfg.Listeners[0].Sections...)
	tg := startGateway(t, Options{}, cfg)
	tests := []struct {
		name, path string
		hdr        map[string]string
		want       string
		code       int
	}{
		{"exact", "/exact", nil, "a", 200},
		{"regex", "/items/12", nil, "b", 200},
		{"header canary", "/x", map[string]string{"X-Canary": "yes"}, "b", 200},
		{"default", "/x", nil, "c", 200},
		{"section by host", "/x", map[string]string{"Host": "only.example.com"}, "a", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, rep := get(t, http.DefaultClient, "GET", tg.url+tc.path, tc.hdr)
			if resp.StatusCode != tc.code || rep == nil || rep.Name != tc.want {
				t.Fatalf("status %d reply %+v, want %s", resp.StatusCode, rep, tc.want)
			}
			if rep.Headers["X-Request-Id"] == nil || rep.Headers["X-Forwarded-For"][0] != "127.0.0.1" {
				t.Fatalf("forwarding headers: %v", rep.Headers)
			}
		})
	}
	// No route: 404.
	cfg2 := httpConfig(addr, exact)
	tg.sync(t, cfg2)
	if resp, _ := get(t, http.DefaultClient, "GET", tg.url+"/nothing", nil); resp.StatusCode != 404 {
		t.Fatalf("no route: %d", resp.StatusCode)
	}
}

func TestForwardedHeaders(t *testing.T) {
	a := startEcho(t, "a")
	tests := []struct {
		name    string
		trusted []netip.Prefix
		wantXFF string
		wantFwd string
	}{
		{"untrusted client replaced", nil, "127.0.0.1", "for=127.0.0.1;"},
		{"trusted proxy appended", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "203.0.113.9, 127.0.0.1", "for=203.0.113.9, for=127.0.0.1;"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := startGateway(t, Options{TrustedProxies: tc.trusted}, httpConfig(freeAddr(t), prefixRule("r", "/", backend("a", 1, a))))
			_, rep := get(t, http.DefaultClient, "GET", tg.url+"/", map[string]string{
				"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9", "Connection": "X-Hop", "X-Hop": "secret", "X-Request-Id": "given"})
			if got := strings.Join(rep.Headers["X-Forwarded-For"], ","); got != tc.wantXFF {
				t.Errorf("XFF %q, want %q", got, tc.wantXFF)
			}
			if got := rep.Headers["Forwarded"][0]; !strings.HasPrefix(got, tc.wantFwd) {
				t.Errorf("Forwarded %q, want prefix %q", got, tc.wantFwd)
			}
			if rep.Headers["X-Hop"] != nil {
				t.Error("hop-by-hop header forwarded")
			}
			if rep.Headers["X-Request-Id"][0] != "given" || rep.Headers["X-Forwarded-Proto"][0] != "http" {
				t.Errorf("headers %v", rep.Headers)
			}
		})
	}
}

func TestFilters(t *testing.T) {
	a, m := startEcho(t, "a"), startEcho(t, "mirror")
	rule := func(id, prefix string, fs ...model.Filter) *model.RouteMatch {
		rm := prefixRule(id, prefix, backend("a", 1, a))
		rm.Rule.Filters = fs
		return rm
	}
	mirror := backend("mirror", 1, m)
	cfg := httpConfig(freeAddr(t),
		rule("reqhdr", "/reqhdr", model.Filter{Type: model.FilterRequestHeaders, Headers: &model.HeaderModifier{
			Set: []model.Header{{Name: "X-Set", Value: "s"}}, Add: []model.Header{{Name: "X-Add", Value: "a2"}}, Remove: []string{"X-Remove"}}}),
		rule("resphdr", "/resphdr", model.Filter{Type: model.FilterResponseHeaders, Headers: &model.HeaderModifier{
			Set: []model.Header{{Name: "X-Resp", Value: "r"}}, Remove: []string{"X-Backend"}}}),
		rule("redirect", "/old", model.Filter{Type: model.FilterRedirect, Redirect: &model.Redirect{Scheme: "https", Hostname: "new.example.com",
			Path: &model.PathModifier{Type: model.ReplacePrefixMatch, Value: "/new"}, StatusCode: 301}}),
		rule("rewrite-prefix", "/api", model.Filter{Type: model.FilterRewrite, Rewrite: &model.Rewrite{Hostname: "internal.example",
			Path: &model.PathModifier{Type: model.ReplacePrefixMatch, Value: "/v2"}}}),
		rule("rewrite-full", "/full", model.Filter{Type: model.FilterRewrite, Rewrite: &model.Rewrite{Path: &model.PathModifier{Type: model.ReplaceFullPath, Value: "/replaced"}}}),
		rule("mirror", "/mirror", model.Filter{Type: model.FilterMirror, Mirror: &model.Mirror{Backend: mirror, Percent: 100}}),
		rule("cors", "/cors", model.Filter{Type: model.FilterCORS, CORS: &model.CORS{AllowOrigins: []string{"https://*.example.com"},
			AllowMethods: []string{"GET", "PUT"}, AllowHeaders: []string{"X-Token"}, ExposeHeaders: []string{"X-Backend"}, AllowCredentials: true, MaxAge: 60}}),
	)
	tg := startGateway(t, Options{}, cfg)
	c := noRedirectClient()

	t.Run("RequestHeaderModifier", func(t *testing.T) {
		_, rep := get(t, c, "GET", tg.url+"/reqhdr", map[string]string{"X-Remove": "x", "X-Add": "a1", "X-Set": "old"})
		if rep.Headers["X-Set"][0] != "s" || len(rep.Headers["X-Add"]) != 2 || rep.Headers["X-Remove"] != nil {
			t.Fatalf("headers %v", rep.Headers)
		}
	})
	t.Run("ResponseHeaderModifier", func(t *testing.T) {
		resp, _ := get(t, c, "GET", tg.url+"/resphdr", nil)
		if resp.Header.Get("X-Resp") != "r" || resp.Header.Get("X-Backend") != "" {
			t.Fatalf("response headers %v", resp.Header)
		}
	})
	t.Run("RequestRedirect", func(t *testing.T) {
		resp, _ := get(t, c, "GET", tg.url+"/old/page?q=1", nil)
		if resp.StatusCode != 301 || resp.Header.Get("Location") != "https://new.example.com/new/page?q=1" {
			t.Fatalf("redirect %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("URLRewrite prefix", func(t *testing.T) {
		_, rep := get(t, c, "GET", tg.url+"/api/users", nil)
		if rep.Path != "/v2/users" || rep.Host != "internal.example" {
			t.Fatalf("rewrite %q %q", rep.Path, rep.Host)
		}
	})
	t.Run("URLRewrite full", func(t *testing.T) {
		_, rep := get(t, c, "GET", tg.url+"/full/x/y", nil)
		if rep.Path != "/replaced" {
			t.Fatalf("rewrite %q", rep.Path)
		}
	})
	t.Run("RequestMirror", func(t *testing.T) {
		resp, rep := get(t, c, "GET", tg.url+"/mirror/copy", nil)
		if resp.StatusCode != 200 || rep.Name != "a" {
			t.Fatalf("primary %d %+v", resp.StatusCode, rep)
		}
		select {
		case got := <-m.got:
			if got.Path != "/mirror/copy" {
				t.Fatalf("mirror got %q", got.Path)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("mirror got nothing")
		}
		// A body is copied to the mirror whole, and reaches the primary too.
		resp, err := c.Post(tg.url+"/mirror/body", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		var primary echoReply
		_ = json.NewDecoder(resp.Body).Decode(&primary)
		resp.Body.Close()
		if primary.Body != "payload" {
			t.Fatalf("primary got body %q", primary.Body)
		}
		select {
		case got := <-m.got:
			if got.Path != "/mirror/body" || got.Body != "payload" {
				t.Fatalf("mirror got %q with body %q", got.Path, got.Body)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("mirror got nothing")
		}
	})
	t.Run("CORS preflight", func(t *testing.T) {
		hits := a.hits.Load()
		resp, _ := get(t, c, "OPTIONS", tg.url+"/cors", map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "PUT"})
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
			resp.Header.Get("Access-Control-Allow-Methods") != "GET, PUT" || resp.Header.Get("Access-Control-Max-Age") != "60" ||
			resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Fatalf("preflight %d %v", resp.StatusCode, resp.Header)
		}
		if a.hits.Load() != hits {
			t.Fatal("preflight reached the backend")
		}
	})
	t.Run("CORS simple", func(t *testing.T) {
		resp, _ := get(t, c, "GET", tg.url+"/cors", map[string]string{"Origin": "https://app.example.com"})
		if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || resp.Header.Get("Access-Control-Expose-Headers") != "X-Backend" {
			t.Fatalf("cors %v", resp.Header)
		}
		resp, _ = get(t, c, "GET", tg.url+"/cors", map[string]string{"Origin": "https://evil.test"})
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatal("disallowed origin got CORS headers")
		}
	})
}

func TestBackendFiltersAndInvalid(t *testing.T) {
	a := startEcho(t, "a")
	be := backend("a", 1, a)
	be.Filters = []model.Filter{{Type: model.FilterRequestHeaders, Headers: &model.HeaderModifier{Set: []model.Header{{Name: "X-Backend-Filter", Value: "yes"}}}}}
	invalid := &model.Backend{ID: "default/missing:80", Weight: 1, Invalid: true}
	empty := backend("empty", 1)
	zero := backend("a", 0, a)
	badRule := prefixRule("bad", "/bad", backend("a", 1, a))
	badRule.Rule.Invalid = true
	cfg := httpConfig(freeAddr(t), prefixRule("filtered", "/f", be), prefixRule("invalid", "/invalid", invalid),
		prefixRule("empty", "/empty", empty), prefixRule("zero", "/zero", zero), badRule)
	tg := startGateway(t, Options{}, cfg)
	tests := []struct {
		path string
		code int
	}{{"/f", 200}, {"/invalid", 500}, {"/empty", 503}, {"/zero", 500}, {"/bad", 500}}
	for _, tc := range tests {
		resp, rep := get(t, http.DefaultClient, "GET", tg.url+tc.path, nil)
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %d, want %d", tc.path, resp.StatusCode, tc.code)
		}
		if tc.path == "/f" && (rep == nil || rep.Headers["X-Backend-Filter"] == nil) {
			t.Errorf("backend filter not applied: %+v", rep)
		}
	}
}

func TestWeights(t *testing.T) {
	a, b, c := startEcho(t, "a"), startEcho(t, "b"), startEcho(t, "c")
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), prefixRule("w", "/", backend("a", 70, a), backend("b", 30, b), backend("c", 0, c))))
	counts := map[string]int{}
	for range 500 {
		_, rep := get(t, http.DefaultClient, "GET", tg.url+"/", nil)
		counts[rep.Name]++
	}
	// ±5 % of 500 is ±25 requests.
	if counts["a"] < 350-25 || counts["a"] > 350+25 || counts["b"] < 150-25 || counts["b"] > 150+25 || counts["c"] != 0 {
		t.Fatalf("split %v, want 350/150/0 ±25", counts)
	}
}

func TestCanaryPrecision(t *testing.T) {
	// 1:9999 must be representable: the canary gets a share, not zero or 50 %.
	a, b := startEcho(t, "a"), startEcho(t, "b")
	rm := prefixRule("p", "/", backend("a", 9999, a), backend("b", 1, b))
	tg := startGateway(t, Options{}, httpConfig(freeAddr(t), rm))
	rr := tg.listeners[tg.addr].table.Load().rules[rm.Rule]
	n := 0
	st := &reqState{rule: rr}
	r, _ := http.NewRequest("GET", "/", nil)
	for range 200000 {
		if tg.chooseBackend(r, st).b.Service.Name == "b" {
			n++
		}
	}
	if n < 5 || n > 60 { // expectation 20
		t.Fatalf("canary got %d of 200000, want about 20", n)
	}
}
