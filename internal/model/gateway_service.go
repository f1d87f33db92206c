package model

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// In a cluster every Gateway of weir's classes gets a Service of its own, as Envoy
// Gateway gives each Gateway one: the status-writing replica makes it in weir's namespace,
// selecting the gateway Pods, with one port per distinct listener port (port = the
// listener's port, targetPort = a container port weir allocates, unique across Gateways).
// Every gateway replica binds each Gateway's listeners on those targetPorts, so two
// Gateways never compete for a port, and the Gateway's status addresses are the
// Service's. These names mark such a Service.
const (
	// GatewayServiceManagedByLabel with value GatewayServiceManagedBy marks every Service
	// weir made for a Gateway.
	GatewayServiceManagedByLabel = "app.kubernetes.io/managed-by"
	GatewayServiceManagedBy      = "weir"
	// GatewayOwnerNamespaceLabel and GatewayOwnerNameLabel name the owning Gateway (the
	// name shortened with a hash when it is longer than a label value may be).
	GatewayOwnerNamespaceLabel = "gateway.weir.dev/owning-gateway-namespace"
	GatewayOwnerNameLabel      = "gateway.weir.dev/owning-gateway-name"
	// GatewayOwnerAnnotation holds "namespace/name" of the owning Gateway, whole: the
	// model matches a Service to its Gateway by it.
	GatewayOwnerAnnotation = "gateway.weir.dev/owning-gateway"
)

// GatewayServiceOwner is the "namespace/name" of the Gateway a Service was made for, or
// false when it names none.
func GatewayServiceOwner(svc *corev1.Service) (string, bool) {
	if svc == nil || svc.Labels[GatewayServiceManagedByLabel] != GatewayServiceManagedBy {
		return "", false
	}
	owner := svc.Annotations[GatewayOwnerAnnotation]
	ns, name, ok := strings.Cut(owner, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", false
	}
	return owner, true
}

// GatewayPorts is a Gateway that needs a Service and the ports it must have.
type GatewayPorts struct {
	Namespace, Name string
	// Ports are the distinct ports of the Gateway's listeners whose protocol weir serves,
	// ascending.
	Ports []int32
}

// GatewaysNeedingServices lists, sorted by namespace and name, the Gateways that get a
// Service: those of weir's GatewayClasses that are not refused for their own settings
// (infrastructure parameters, spec.addresses) and have a listener weir can serve.
func GatewaysNeedingServices(objs *Objects) []GatewayPorts {
	classes := map[string]bool{}
	for _, gc := range objs.GatewayClasses {
		if string(gc.Spec.ControllerName) == GatewayControllerName {
			classes[gc.Name] = true
		}
	}
	var out []GatewayPorts
	for _, gw := range objs.Gateways {
		if gw == nil || !classes[string(gw.Spec.GatewayClassName)] || len(gw.Spec.Addresses) > 0 {
			continue
		}
		if _, p := gatewayAddress(gw); p != nil {
			continue
		}
		var ports []int32
		for _, l := range gw.Spec.Listeners {
			switch l.Protocol {
			case gatewayv1.HTTPProtocolType, gatewayv1.HTTPSProtocolType, gatewayv1.TLSProtocolType:
				if l.Port > 0 && l.Port <= 65535 {
					ports = append(ports, int32(l.Port))
				}
			}
		}
		if len(ports) == 0 {
			continue
		}
		slices.Sort(ports)
		out = append(out, GatewayPorts{Namespace: gw.Namespace, Name: gw.Name, Ports: slices.Compact(ports)})
	}
	slices.SortFunc(out, func(a, b GatewayPorts) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

// indexGatewayServices maps "namespace/name" of a Gateway to its Service. Of two Services
// naming one Gateway, the one first by name wins.
func indexGatewayServices(in []*corev1.Service) map[string]*corev1.Service {
	out := map[string]*corev1.Service{}
	for _, svc := range in {
		owner, ok := GatewayServiceOwner(svc)
		if !ok {
			continue
		}
		if prev := out[owner]; prev == nil || svc.Name < prev.Name {
			out[owner] = svc
		}
	}
	return out
}

// gatewayService is the Service of a Gateway in a cluster, or why the Gateway has no
// usable address yet (pending) or cannot have one.
func (t *gwTranslator) gatewayService(gw *gatewayv1.Gateway) (*corev1.Service, *gatewayProblem) {
	if len(gw.Spec.Addresses) > 0 {
		return nil, &gatewayProblem{accepted: true, reason: string(gatewayv1.GatewayReasonAddressNotUsable),
			msg: "spec.addresses: weir gives each Gateway the address of a Service of its own and cannot take requested addresses"}
	}
	svc := t.gwServices[gw.Namespace+"/"+gw.Name]
	if svc == nil {
		return nil, &gatewayProblem{accepted: true, pending: true, reason: string(gatewayv1.GatewayReasonAddressNotAssigned),
			msg: "waiting for the Gateway's Service"}
	}
	if len(serviceAddresses(svc)) == 0 {
		return nil, &gatewayProblem{accepted: true, pending: true, reason: string(gatewayv1.GatewayReasonAddressNotAssigned),
			msg: fmt.Sprintf("Service %s/%s has no address yet", svc.Namespace, svc.Name)}
	}
	return svc, nil
}

// serviceListenerPort is the container port a Gateway's Service sends its port to: the
// targetPort of its TCP port equal to port, or 0 when it has none (yet).
func serviceListenerPort(svc *corev1.Service, port int32) int32 {
	for _, p := range svc.Spec.Ports {
		if p.Port != port || (p.Protocol != "" && p.Protocol != corev1.ProtocolTCP) {
			continue
		}
		if tp := p.TargetPort.IntValue(); tp > 0 && tp <= 65535 && p.TargetPort.StrVal == "" {
			return int32(tp)
		}
	}
	return 0
}

// serviceAddresses are a Gateway's status addresses from its Service: the load
// balancer's ingress IPs and hostnames once assigned, else the ClusterIPs.
func serviceAddresses(svc *corev1.Service) []gatewayv1.GatewayStatusAddress {
	var out []gatewayv1.GatewayStatusAddress
	add := func(t gatewayv1.AddressType, v string) {
		if slices.ContainsFunc(out, func(a gatewayv1.GatewayStatusAddress) bool { return a.Value == v }) {
			return
		}
		out = append(out, gatewayv1.GatewayStatusAddress{Type: &t, Value: v})
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		switch {
		case in.IP != "":
			if ip, err := netip.ParseAddr(in.IP); err == nil {
				add(gatewayv1.IPAddressType, ip.String())
			}
		case in.Hostname != "":
			add(gatewayv1.HostnameAddressType, in.Hostname)
		}
	}
	if len(out) > 0 {
		return out
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, s := range ips {
		if ip, err := netip.ParseAddr(s); err == nil {
			add(gatewayv1.IPAddressType, ip.String())
		}
	}
	return out
}
