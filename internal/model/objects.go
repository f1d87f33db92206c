// Package model is weir's view of the world: the Kubernetes objects a source delivers
// (Objects) and the immutable Snapshot that Translate derives from them for every data
// plane. Every Kubernetes semantic rule (endpoint selection, traffic policies, terminating
// fallback, Gateway API precedence) lives here once. The package does no network I/O.
package model

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
)

// Objects is the set of objects weir acts on, as decoded from manifests or watched in
// the Kubernetes API. Sources fill it; Translate reads it and never modifies it.
// core/v1 Endpoints are mirrored into EndpointSlices by the source, so Objects holds
// EndpointSlices only.
type Objects struct {
	Services        []*corev1.Service
	EndpointSlices  []*discoveryv1.EndpointSlice
	Secrets         []*corev1.Secret
	Ingresses       []*networkingv1.Ingress
	IngressClasses  []*networkingv1.IngressClass
	GatewayClasses  []*gatewayv1.GatewayClass
	Gateways        []*gatewayv1.Gateway
	HTTPRoutes      []*gatewayv1.HTTPRoute
	GRPCRoutes      []*gatewayv1.GRPCRoute
	TLSRoutes       []*gatewayv1.TLSRoute
	ReferenceGrants []*gatewayv1.ReferenceGrant
	Policies        []*weirv1alpha1.TrafficPolicy
	// BackendTLSPolicies configure TLS from the gateway to backends (Gateway API).
	BackendTLSPolicies []*gatewayv1.BackendTLSPolicy
	// Namespaces give their labels to Gateway listeners' allowedRoutes.namespaces
	// selectors. A namespace without an object here has only the label the API server
	// always sets, kubernetes.io/metadata.name: <name>.
	Namespaces []*corev1.Namespace
	// Pods and NetworkPolicies feed network policy: the pods' IPs, labels, node and
	// named ports, and the policies that select them.
	Pods            []*corev1.Pod
	NetworkPolicies []*networkingv1.NetworkPolicy

	// GatewayServicesManaged says that every Gateway gets its address from a Service of
	// its own, made by weir (the Kubernetes source sets it): the Gateway's listeners bind
	// that Service's targetPorts on every address, and the Gateway is not Programmed until
	// its Service exists. Unset (file mode), every Gateway binds the shared address, or
	// the IP of its spec.addresses.
	GatewayServicesManaged bool
	// GatewayServices are the Services weir made for Gateways, in weir's own namespace,
	// each naming its Gateway in the GatewayOwnerAnnotation (see GatewayServiceOwner). Read
	// only when GatewayServicesManaged is set.
	GatewayServices []*corev1.Service
}

// Node is what weir knows of the node it runs on. It decides which endpoints are
// local (traffic policy Local) and which zone hints apply (trafficDistribution).
type Node struct {
	Name string
	Zone string
	// IPs are the node's primary IPv4 (IPs[0]) and IPv6 (IPs[1]) addresses, kube-proxy's
	// nodeIPs: from the Node object's addresses, overridden by --bind-address. A zero
	// address is unknown and counts as the family's loopback address, as in kube-proxy.
	IPs [2]netip.Addr
}

// IP is the node's primary address of one family, loopback when unknown.
func (n Node) IP(ipv6 bool) netip.Addr {
	if ipv6 {
		if n.IPs[1].IsValid() {
			return n.IPs[1]
		}
		return netip.IPv6Loopback()
	}
	if n.IPs[0].IsValid() {
		return n.IPs[0]
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}
