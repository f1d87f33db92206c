package model

import (
	"slices"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
)

// rulePolicy resolves the TrafficPolicy attached to a route (group
// gateway.networking.k8s.io, kind HTTPRoute or GRPCRoute, in the route's namespace) or to
// one of its named rules (sectionName). A rule policy wins over a route policy; among
// policies for the same target the oldest wins, then namespace/name.
func (t *gwTranslator) rulePolicy(ref RouteRef, ruleName string) *Policy {
	ordered := slices.Clone(t.objs.Policies)
	ordered = slices.DeleteFunc(ordered, func(p *weirv1alpha1.TrafficPolicy) bool { return p == nil || p.Namespace != ref.Namespace })
	slices.SortStableFunc(ordered, policyPrecedence)
	var route *weirv1alpha1.TrafficPolicy
	for _, tp := range ordered {
		for _, tr := range tp.Spec.TargetRefs {
			if string(tr.Group) != gatewayGroup || string(tr.Kind) != ref.Kind || string(tr.Name) != ref.Name {
				continue
			}
			if tr.SectionName != nil && *tr.SectionName != "" {
				if ruleName != "" && string(*tr.SectionName) == ruleName {
					return ResolvePolicy(&tp.Spec, tp.Namespace+"/"+tp.Name)
				}
				continue
			}
			if route == nil {
				route = tp
			}
		}
	}
	if route != nil {
		return ResolvePolicy(&route.Spec, route.Namespace+"/"+route.Name)
	}
	return DefaultPolicy()
}

// gwDefaultPolicy is the policy of a backend whose Service carries none.
func gwDefaultPolicy() *Policy { return DefaultPolicy() }
