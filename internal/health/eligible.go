package health

import (
	"net/netip"

	"weir.dev/weir/internal/model"
)

// Eligible returns the endpoints of eps that should take new traffic: the healthy ones,
// or all of them in panic mode, which applies when no endpoint is healthy or when the
// healthy share is below panicPercent (Envoy's panic threshold). healthy reports an
// endpoint's state. The result is eps itself when every endpoint is eligible, so the
// common case does not allocate; callers must not modify it. Every data plane applies
// this one rule.
func Eligible(eps []model.Endpoint, healthy func(netip.AddrPort) bool, panicPercent int) []model.Endpoint {
	n := 0
	for _, ep := range eps {
		if healthy(ep.AddrPort()) {
			n++
		}
	}
	if n == len(eps) || panics(n, len(eps), panicPercent) {
		return eps
	}
	out := make([]model.Endpoint, 0, n)
	for _, ep := range eps {
		if healthy(ep.AddrPort()) {
			out = append(out, ep)
		}
	}
	return out
}

// panics reports whether healthy of total endpoints is too few to be trusted.
func panics(healthy, total, panicPercent int) bool {
	if total == 0 {
		return false
	}
	return healthy == 0 || healthy*100 < panicPercent*total
}
