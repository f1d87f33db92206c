package kube

import (
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"weir.dev/weir/internal/model"
)

// ModelStatuses computes the statuses with the gateway's own rules: model.Translate's
// GatewayConfig.Status (listener conflicts, hostnames, certificate and backend refs,
// ReferenceGrants, allowedRoutes). EndpointSlices are left out of the translation, since
// no status depends on them. Gateways get the addresses of their own Services when they
// have them (Options.GatewayServices), opts.Addresses otherwise; the Ingresses weir serves
// get opts.Addresses.
// opts.Served, when set, then corrects them with the data plane's view.
func ModelStatuses(objs *model.Objects, opts StatusOptions) *Statuses {
	in := *objs
	in.EndpointSlices = nil
	snap := model.Translate(&in, model.Node{})
	if opts.Served != nil {
		snap = opts.Served(snap)
	}
	return StatusesFromSnapshot(snap, opts)
}

// StatusesFromSnapshot turns a Snapshot's computed statuses into what WriteStatus
// patches.
func StatusesFromSnapshot(snap *model.Snapshot, opts StatusOptions) *Statuses {
	st := &Statuses{
		GatewayClasses: map[string][]metav1.Condition{},
		Gateways:       map[types.NamespacedName]gatewayv1.GatewayStatus{},
		HTTPRoutes:     map[types.NamespacedName][]gatewayv1.RouteParentStatus{},
		GRPCRoutes:     map[types.NamespacedName][]gatewayv1.RouteParentStatus{},
		TLSRoutes:      map[types.NamespacedName][]gatewayv1.RouteParentStatus{},
		Ingresses:      map[types.NamespacedName][]networkingv1.IngressLoadBalancerIngress{},
	}
	if snap == nil || snap.Gateway == nil {
		return st
	}
	ctrl := gatewayv1.GatewayController(opts.GatewayControllerName)
	for _, os := range snap.Gateway.Status {
		key := types.NamespacedName{Namespace: os.Namespace, Name: os.Name}
		parents := func() []gatewayv1.RouteParentStatus {
			out := make([]gatewayv1.RouteParentStatus, 0, len(os.Parents))
			for _, p := range os.Parents {
				out = append(out, gatewayv1.RouteParentStatus{ParentRef: p.ParentRef, ControllerName: ctrl, Conditions: p.Conditions})
			}
			return out
		}
		switch os.Kind {
		case "GatewayClass":
			st.GatewayClasses[os.Name] = os.Conditions
		case "Gateway":
			gs := gatewayv1.GatewayStatus{Addresses: gatewayAddresses(opts.Addresses), Conditions: os.Conditions}
			if snap.Gateway.ServiceAddresses {
				gs.Addresses = os.Addresses // the Gateway's own Service's
			}
			for _, l := range os.Listeners {
				gs.Listeners = append(gs.Listeners, gatewayv1.ListenerStatus{Name: gatewayv1.SectionName(l.Name), SupportedKinds: l.SupportedKinds,
					AttachedRoutes: l.AttachedRoutes, Conditions: l.Conditions})
			}
			st.Gateways[key] = gs
		case "HTTPRoute":
			st.HTTPRoutes[key] = parents()
		case "GRPCRoute":
			st.GRPCRoutes[key] = parents()
		case "TLSRoute":
			st.TLSRoutes[key] = parents()
		case "Ingress":
			st.Ingresses[key] = ingressAddresses(opts.Addresses)
		}
	}
	return st
}
