package manifest

import (
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// setGatewayDefaults applies the defaults of the Gateway API CRDs' schemas (which the
// API server applies on create) to the fields the gateway reads.
func setGatewayDefaults(obj runtime.Object) {
	switch o := obj.(type) {
	case *gatewayv1.Gateway:
		for i := range o.Spec.Listeners {
			l := &o.Spec.Listeners[i]
			if l.AllowedRoutes == nil {
				l.AllowedRoutes = &gatewayv1.AllowedRoutes{}
			}
			if l.AllowedRoutes.Namespaces == nil {
				l.AllowedRoutes.Namespaces = &gatewayv1.RouteNamespaces{}
			}
			if l.AllowedRoutes.Namespaces.From == nil {
				l.AllowedRoutes.Namespaces.From = ptrTo(gatewayv1.NamespacesFromSame)
			}
			if l.TLS != nil {
				if l.TLS.Mode == nil {
					l.TLS.Mode = ptrTo(gatewayv1.TLSModeTerminate)
				}
				for j := range l.TLS.CertificateRefs {
					ref := &l.TLS.CertificateRefs[j]
					if ref.Group == nil {
						ref.Group = ptrTo(gatewayv1.Group(""))
					}
					if ref.Kind == nil {
						ref.Kind = ptrTo(gatewayv1.Kind("Secret"))
					}
				}
			}
		}
	case *gatewayv1.HTTPRoute:
		defaultParentRefs(o.Spec.ParentRefs)
		if len(o.Spec.Rules) == 0 {
			o.Spec.Rules = []gatewayv1.HTTPRouteRule{{}}
		}
		for i := range o.Spec.Rules {
			r := &o.Spec.Rules[i]
			if len(r.Matches) == 0 {
				r.Matches = []gatewayv1.HTTPRouteMatch{{}}
			}
			for j := range r.Matches {
				m := &r.Matches[j]
				if m.Path == nil {
					m.Path = &gatewayv1.HTTPPathMatch{}
				}
				if m.Path.Type == nil {
					m.Path.Type = ptrTo(gatewayv1.PathMatchPathPrefix)
				}
				if m.Path.Value == nil {
					m.Path.Value = ptrTo("/")
				}
				for k := range m.Headers {
					if m.Headers[k].Type == nil {
						m.Headers[k].Type = ptrTo(gatewayv1.HeaderMatchExact)
					}
				}
				for k := range m.QueryParams {
					if m.QueryParams[k].Type == nil {
						m.QueryParams[k].Type = ptrTo(gatewayv1.QueryParamMatchExact)
					}
				}
			}
			for j := range r.BackendRefs {
				defaultBackendRef(&r.BackendRefs[j].BackendRef)
			}
		}
	case *gatewayv1.GRPCRoute:
		defaultParentRefs(o.Spec.ParentRefs)
		for i := range o.Spec.Rules {
			r := &o.Spec.Rules[i]
			for j := range r.Matches {
				m := &r.Matches[j]
				if m.Method != nil && m.Method.Type == nil {
					m.Method.Type = ptrTo(gatewayv1.GRPCMethodMatchExact)
				}
				for k := range m.Headers {
					if m.Headers[k].Type == nil {
						m.Headers[k].Type = ptrTo(gatewayv1.GRPCHeaderMatchExact)
					}
				}
			}
			for j := range r.BackendRefs {
				defaultBackendRef(&r.BackendRefs[j].BackendRef)
			}
		}
	case *gatewayv1.TLSRoute:
		defaultParentRefs(o.Spec.ParentRefs)
		for i := range o.Spec.Rules {
			for j := range o.Spec.Rules[i].BackendRefs {
				defaultBackendRef(&o.Spec.Rules[i].BackendRefs[j])
			}
		}
	}
}

func defaultParentRefs(refs []gatewayv1.ParentReference) {
	for i := range refs {
		if refs[i].Group == nil {
			refs[i].Group = ptrTo(gatewayv1.Group(gatewayv1.GroupName))
		}
		if refs[i].Kind == nil {
			refs[i].Kind = ptrTo(gatewayv1.Kind("Gateway"))
		}
	}
}

func defaultBackendRef(ref *gatewayv1.BackendRef) {
	if ref.Group == nil {
		ref.Group = ptrTo(gatewayv1.Group(""))
	}
	if ref.Kind == nil {
		ref.Kind = ptrTo(gatewayv1.Kind("Service"))
	}
	if ref.Weight == nil {
		ref.Weight = ptrTo(int32(1))
	}
}
