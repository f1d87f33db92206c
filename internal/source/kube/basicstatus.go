package kube

import (
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weir.dev/weir/internal/model"
)

// legacyIngressClassAnnotation names an Ingress's class before spec.ingressClassName.
const legacyIngressClassAnnotation = "kubernetes.io/ingress.class"

// BasicStatuses computes the statuses weir can tell without the gateway's own checks:
//   - GatewayClasses whose controllerName is weir's: Accepted.
//   - Ingresses of weir's IngressClass (by spec.ingressClassName, the legacy
//     kubernetes.io/ingress.class annotation, or weir's default class): the addresses.
//   - Gateways of weir's classes: Accepted and Programmed, the addresses, and per listener
//     Accepted, Programmed, ResolvedRefs, the supported kinds and the attached routes.
//   - Routes whose parentRefs name one of those Gateways: Accepted (NotAllowedByListeners
//     when the sectionName names no listener), ResolvedRefs (BackendNotFound when a
//     backend Service does not exist).
//
// Listener hostnames and allowedRoutes namespace selectors are not checked here; the
// gateway's model conditions, when present, replace these through StatusOptions.Compute.
func BasicStatuses(objs *model.Objects, opts StatusOptions) *Statuses {
	st := &Statuses{
		GatewayClasses: map[string][]metav1.Condition{},
		Gateways:       map[types.NamespacedName]gatewayv1.GatewayStatus{},
		HTTPRoutes:     map[types.NamespacedName][]gatewayv1.RouteParentStatus{},
		GRPCRoutes:     map[types.NamespacedName][]gatewayv1.RouteParentStatus{},
		TLSRoutes:      map[types.NamespacedName][]gatewayv1.RouteParentStatus{},
	}
	classes := map[string]bool{}
	for _, gc := range objs.GatewayClasses {
		if string(gc.Spec.ControllerName) != opts.GatewayControllerName {
			continue
		}
		classes[gc.Name] = true
		st.GatewayClasses[gc.Name] = []metav1.Condition{{
			Type:               string(gatewayv1.GatewayClassConditionStatusAccepted),
			Status:             metav1.ConditionTrue,
			Reason:             string(gatewayv1.GatewayClassReasonAccepted),
			Message:            "handled by weir",
			ObservedGeneration: gc.Generation,
		}}
	}

	services := map[types.NamespacedName]bool{}
	for _, svc := range objs.Services {
		services[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}] = true
	}
	gateways := map[types.NamespacedName]*gatewayv1.Gateway{}
	for _, gw := range objs.Gateways {
		if classes[string(gw.Spec.GatewayClassName)] {
			gateways[types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}] = gw
		}
	}
	attached := map[types.NamespacedName]map[gatewayv1.SectionName]int32{}

	// route computes one Route's parent statuses and counts its attachments.
	route := func(kind gatewayv1.Kind, om metav1.ObjectMeta, parents []gatewayv1.ParentReference, backends []types.NamespacedName) []gatewayv1.RouteParentStatus {
		var out []gatewayv1.RouteParentStatus
		resolved := metav1.Condition{Type: string(gatewayv1.RouteConditionResolvedRefs), Status: metav1.ConditionTrue,
			Reason: string(gatewayv1.RouteReasonResolvedRefs), Message: "all backends resolved", ObservedGeneration: om.Generation}
		for _, b := range backends {
			if !services[b] {
				resolved.Status, resolved.Reason = metav1.ConditionFalse, string(gatewayv1.RouteReasonBackendNotFound)
				resolved.Message = "Service " + b.String() + " not found"
				break
			}
		}
		for _, p := range parents {
			if (p.Group != nil && *p.Group != gatewayv1.GroupName) || (p.Kind != nil && *p.Kind != "Gateway") {
				continue
			}
			key := types.NamespacedName{Namespace: om.Namespace, Name: string(p.Name)}
			if p.Namespace != nil {
				key.Namespace = string(*p.Namespace)
			}
			gw := gateways[key]
			if gw == nil {
				continue
			}
			accepted := metav1.Condition{Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionTrue,
				Reason: string(gatewayv1.RouteReasonAccepted), Message: "accepted by weir", ObservedGeneration: om.Generation}
			n := 0
			for _, l := range gw.Spec.Listeners {
				if p.SectionName != nil && *p.SectionName != l.Name {
					continue
				}
				if !listenerAllows(gw, l, kind, om.Namespace) {
					continue
				}
				if attached[key] == nil {
					attached[key] = map[gatewayv1.SectionName]int32{}
				}
				attached[key][l.Name]++
				n++
			}
			if n == 0 {
				accepted.Status, accepted.Reason = metav1.ConditionFalse, string(gatewayv1.RouteReasonNotAllowedByListeners)
				accepted.Message = "no listener of the Gateway accepts this route"
			}
			out = append(out, gatewayv1.RouteParentStatus{
				ParentRef:      p,
				ControllerName: gatewayv1.GatewayController(opts.GatewayControllerName),
				Conditions:     []metav1.Condition{accepted, resolved},
			})
		}
		return out
	}
	backendKeys := func(ns string, refs []gatewayv1.BackendRef) []types.NamespacedName {
		var out []types.NamespacedName
		for _, b := range refs {
			if (b.Group != nil && *b.Group != "") || (b.Kind != nil && *b.Kind != "Service") {
				continue
			}
			key := types.NamespacedName{Namespace: ns, Name: string(b.Name)}
			if b.Namespace != nil {
				key.Namespace = string(*b.Namespace)
			}
			out = append(out, key)
		}
		return out
	}
	for _, r := range objs.HTTPRoutes {
		var refs []gatewayv1.BackendRef
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				refs = append(refs, b.BackendRef)
			}
		}
		if ps := route("HTTPRoute", r.ObjectMeta, r.Spec.ParentRefs, backendKeys(r.Namespace, refs)); len(ps) > 0 {
			st.HTTPRoutes[types.NamespacedName{Namespace: r.Namespace, Name: r.Name}] = ps
		}
	}
	for _, r := range objs.GRPCRoutes {
		var refs []gatewayv1.BackendRef
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				refs = append(refs, b.BackendRef)
			}
		}
		if ps := route("GRPCRoute", r.ObjectMeta, r.Spec.ParentRefs, backendKeys(r.Namespace, refs)); len(ps) > 0 {
			st.GRPCRoutes[types.NamespacedName{Namespace: r.Namespace, Name: r.Name}] = ps
		}
	}
	for _, r := range objs.TLSRoutes {
		var refs []gatewayv1.BackendRef
		for _, rule := range r.Spec.Rules {
			refs = append(refs, rule.BackendRefs...)
		}
		if ps := route("TLSRoute", r.ObjectMeta, r.Spec.ParentRefs, backendKeys(r.Namespace, refs)); len(ps) > 0 {
			st.TLSRoutes[types.NamespacedName{Namespace: r.Namespace, Name: r.Name}] = ps
		}
	}

	for key, gw := range gateways {
		gs := gatewayv1.GatewayStatus{
			Addresses: gatewayAddresses(opts.Addresses),
			Conditions: []metav1.Condition{
				{Type: string(gatewayv1.GatewayConditionAccepted), Status: metav1.ConditionTrue, Reason: string(gatewayv1.GatewayReasonAccepted), Message: "accepted by weir", ObservedGeneration: gw.Generation},
				{Type: string(gatewayv1.GatewayConditionProgrammed), Status: metav1.ConditionTrue, Reason: string(gatewayv1.GatewayReasonProgrammed), Message: "programmed by weir", ObservedGeneration: gw.Generation},
			},
		}
		for _, l := range gw.Spec.Listeners {
			gs.Listeners = append(gs.Listeners, gatewayv1.ListenerStatus{
				Name:           l.Name,
				SupportedKinds: supportedKinds(l.Protocol),
				AttachedRoutes: attached[key][l.Name],
				Conditions: []metav1.Condition{
					{Type: string(gatewayv1.ListenerConditionAccepted), Status: metav1.ConditionTrue, Reason: string(gatewayv1.ListenerReasonAccepted), Message: "accepted", ObservedGeneration: gw.Generation},
					{Type: string(gatewayv1.ListenerConditionProgrammed), Status: metav1.ConditionTrue, Reason: string(gatewayv1.ListenerReasonProgrammed), Message: "programmed", ObservedGeneration: gw.Generation},
					{Type: string(gatewayv1.ListenerConditionResolvedRefs), Status: metav1.ConditionTrue, Reason: string(gatewayv1.ListenerReasonResolvedRefs), Message: "resolved", ObservedGeneration: gw.Generation},
				},
			})
		}
		st.Gateways[key] = gs
	}

	st.Ingresses = ingressStatuses(objs, opts)
	return st
}

// listenerAllows applies a listener's allowedRoutes: kinds, and namespaces From Same or
// All (a Selector is treated as All here).
func listenerAllows(gw *gatewayv1.Gateway, l gatewayv1.Listener, kind gatewayv1.Kind, routeNS string) bool {
	kinds := supportedKinds(l.Protocol)
	if l.AllowedRoutes != nil && len(l.AllowedRoutes.Kinds) > 0 {
		kinds = l.AllowedRoutes.Kinds
	}
	ok := false
	for _, k := range kinds {
		if k.Kind == kind {
			ok = true
		}
	}
	if !ok {
		return false
	}
	from := gatewayv1.NamespacesFromSame
	if l.AllowedRoutes != nil && l.AllowedRoutes.Namespaces != nil && l.AllowedRoutes.Namespaces.From != nil {
		from = *l.AllowedRoutes.Namespaces.From
	}
	return from != gatewayv1.NamespacesFromSame || routeNS == gw.Namespace
}

// supportedKinds are the route kinds a listener protocol carries.
func supportedKinds(p gatewayv1.ProtocolType) []gatewayv1.RouteGroupKind {
	group := gatewayv1.Group(gatewayv1.GroupName)
	switch p {
	case gatewayv1.HTTPProtocolType, gatewayv1.HTTPSProtocolType:
		return []gatewayv1.RouteGroupKind{{Group: &group, Kind: "HTTPRoute"}, {Group: &group, Kind: "GRPCRoute"}}
	case gatewayv1.TLSProtocolType:
		return []gatewayv1.RouteGroupKind{{Group: &group, Kind: "TLSRoute"}}
	}
	return nil
}

// ingressStatuses gives every Ingress of weir's classes the configured addresses.
func ingressStatuses(objs *model.Objects, opts StatusOptions) map[types.NamespacedName][]networkingv1.IngressLoadBalancerIngress {
	ours := map[string]bool{}
	defaultOurs := false
	for _, ic := range objs.IngressClasses {
		if ic.Spec.Controller != opts.IngressControllerName {
			continue
		}
		ours[ic.Name] = true
		if ic.Annotations[networkingv1.AnnotationIsDefaultIngressClass] == "true" {
			defaultOurs = true
		}
	}
	out := map[types.NamespacedName][]networkingv1.IngressLoadBalancerIngress{}
	lb := ingressAddresses(opts.Addresses)
	for _, ing := range objs.Ingresses {
		var mine bool
		switch {
		case ing.Spec.IngressClassName != nil:
			mine = ours[*ing.Spec.IngressClassName]
		case ing.Annotations[legacyIngressClassAnnotation] != "":
			mine = ours[ing.Annotations[legacyIngressClassAnnotation]]
		default:
			mine = defaultOurs
		}
		if mine {
			out[types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}] = lb
		}
	}
	return out
}
