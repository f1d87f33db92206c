package router

import (
	"net/http/httptest"
	"testing"

	"weir.dev/weir/internal/model"
)

// An Ingress host "*.foo.com" covers exactly one DNS label (ingress-controller-conformance's
// wildcard scenario); a Gateway API hostname "*.foo.com" covers one or more.
func TestWildcardLabels(t *testing.T) {
	for _, tc := range []struct {
		oneLabel bool
		host     string
		want     bool
	}{
		{true, "bar.foo.com", true},
		{true, "baz.bar.foo.com", false},
		{true, "foo.com", false},
		{false, "bar.foo.com", true},
		{false, "baz.bar.foo.com", true},
		{false, "foo.com", false},
	} {
		tbl, err := Compile(&model.Listener{Sections: []*model.Section{{Name: "s", Hosts: []*model.VirtualHost{
			{Hostname: "*.foo.com", OneLabel: tc.oneLabel, Matches: []*model.RouteMatch{m("wild", model.PathPrefix, "/", nil)}},
		}}}})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("GET", "http://"+tc.host+"/", nil)
		if _, ok := tbl.Match(r, Host(r)); ok != tc.want {
			t.Errorf("oneLabel %v, host %s: matched %v, want %v", tc.oneLabel, tc.host, ok, tc.want)
		}
	}
}
