package model

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netutils "k8s.io/utils/net"
)

// DefaultAffinityTimeout is the ClientIP session affinity timeout when the Service sets
// none (the API server's default, 3 hours).
const DefaultAffinityTimeout = 10800 * time.Second

// LabelServiceProxyName on a Service names the proxy that serves it; the default
// proxy (kube-proxy, and weir) leaves such Services alone.
const LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"

// LabelHeadless on a Service (corev1.IsHeadlessService) marks it headless whatever its
// ClusterIP: kube-proxy's informers select only Services with neither label, so the
// default proxy leaves it alone too.
const LabelHeadless = corev1.IsHeadlessService

// ServiceLabels are the labels of Services and EndpointSlices that Translate reads
// besides kubernetes.io/service-name: either one leaves the object to another proxy. A
// source may drop the other labels.
var ServiceLabels = []string{LabelServiceProxyName, LabelHeadless}

// translateService builds one Service with its ports and chosen endpoints. eps are
// the EndpointSlices labelled for it, sorted by name.
func translateService(in *corev1.Service, eps []*discoveryv1.EndpointSlice, node Node, pols servicePolicies) *Service {
	spec := &in.Spec
	svc := &Service{
		Key:                      ServiceKey{Namespace: in.Namespace, Name: in.Name},
		Type:                     ServiceType(spec.Type),
		PublishNotReadyAddresses: spec.PublishNotReadyAddresses,
		Policy:                   pols.service,
	}
	if svc.Type == "" {
		svc.Type = ClusterIP
	}
	nodePorts := svc.Type == NodePort || svc.Type == LoadBalancer

	if svc.Type == ExternalName {
		svc.ExternalName = spec.ExternalName
	} else {
		svc.Headless = spec.ClusterIP == corev1.ClusterIPNone
		if !svc.Headless {
			ips := spec.ClusterIPs
			if len(ips) == 0 && spec.ClusterIP != "" {
				ips = []string{spec.ClusterIP}
			}
			svc.ClusterIPs = parseAddrs(ips, allFamilies)
		}
	}
	fams := serviceFamilies(svc.ClusterIPs, spec.IPFamilies)
	_, proxyName := in.Labels[LabelServiceProxyName]
	_, headlessLabel := in.Labels[LabelHeadless]
	svc.ProxiedElsewhere = proxyName || headlessLabel

	if svc.Proxied() {
		svc.ExternalIPs = parseAddrs(spec.ExternalIPs, fams)
		if svc.Type == LoadBalancer {
			svc.LoadBalancerIPs = loadBalancerIPs(in.Status.LoadBalancer.Ingress, fams)
			ranges := sourceRanges(spec.LoadBalancerSourceRanges, in.Annotations[corev1.AnnotationLoadBalancerSourceRangesKey])
			svc.LoadBalancerSourceRanges = enforcedSourceRanges(ranges, svc.LoadBalancerIPs, node)
		}
		if spec.SessionAffinity == corev1.ServiceAffinityClientIP {
			svc.AffinityTimeout = DefaultAffinityTimeout
			if c := spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
				svc.AffinityTimeout = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
			}
		}
		svc.InternalTrafficLocal = spec.InternalTrafficPolicy != nil && *spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
		// apiservice.ExternalPolicyLocal: the policy applies to every Service that is
		// reachable from outside: NodePort, LoadBalancer, and a ClusterIP Service with
		// externalIPs (the API server keeps the field there, and kube-proxy honours it
		// for the external IPs).
		externallyAccessible := nodePorts || (svc.Type == ClusterIP && len(spec.ExternalIPs) > 0)
		svc.ExternalTrafficLocal = externallyAccessible && spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
		if svc.Type == LoadBalancer && svc.ExternalTrafficLocal {
			svc.HealthCheckNodePort = spec.HealthCheckNodePort
		}
	}

	if svc.Type == ExternalName {
		eps = nil
	}
	// A proxied Service takes no endpoints from slices labelled service-proxy-name or
	// headless: kube-proxy's EndpointSlice informer selects neither label. DNS reads
	// every slice (the EndpointSlice controller labels all of a headless Service's
	// slices headless).
	portEps := eps
	if svc.Proxied() {
		portEps = slices.DeleteFunc(slices.Clone(eps), func(es *discoveryv1.EndpointSlice) bool {
			return slices.ContainsFunc(ServiceLabels, func(l string) bool { _, ok := es.Labels[l]; return ok })
		})
	}
	topo := wantedTopology(in)

	svc.Ports = make([]*ServicePort, 0, len(spec.Ports))
	var localReady []netip.Addr
	for i := range spec.Ports {
		sp := &spec.Ports[i]
		p := &ServicePort{
			Name:     sp.Name,
			Protocol: Protocol(sp.Protocol),
			Port:     sp.Port,
			Policy:   pols.port(sp.Name),
		}
		if p.Protocol == "" {
			p.Protocol = TCP
		}
		if nodePorts {
			p.NodePort = sp.NodePort
		}
		if sp.AppProtocol != nil {
			p.AppProtocol = *sp.AppProtocol
		}
		pe := gatherEndpoints(portEps, p.Name, corev1.Protocol(p.Protocol), fams, node, topo != topologyNone)
		p.Endpoints = pe.eps
		p.Cluster, p.External, p.ShortCircuit = chooseEndpoints(pe, svc, topo, node)
		for _, e := range p.Endpoints {
			if e.Local && e.Ready {
				localReady = append(localReady, e.Addr)
			}
		}
		svc.Ports = append(svc.Ports, p)
	}
	// kube-proxy's LocalReadyEndpoints counts addresses, not address:port pairs.
	slices.SortFunc(localReady, netip.Addr.Compare)
	svc.LocalEndpoints = len(slices.Compact(localReady))

	if svc.Headless {
		svc.DNSEndpoints = dnsEndpoints(eps, fams, svc.PublishNotReadyAddresses)
	}
	return svc
}

// ipFamilies is the set of IP families a Service has.
type ipFamilies struct{ v4, v6 bool }

var allFamilies = ipFamilies{v4: true, v6: true}

func (f ipFamilies) has(a netip.Addr) bool {
	if a.Is4() {
		return f.v4
	}
	return f.v6
}

// serviceFamilies are the families of the ClusterIPs; without any (a hand-written
// manifest may leave them to the API server) those of spec.ipFamilies; else both.
// kube-proxy runs a proxier per family and a Service only exists in the proxiers of its
// ClusterIPs' families, so endpoints, external IPs and LoadBalancer IPs of another family
// are ignored.
func serviceFamilies(clusterIPs []netip.Addr, specFamilies []corev1.IPFamily) ipFamilies {
	var f ipFamilies
	for _, ip := range clusterIPs {
		if ip.Is4() {
			f.v4 = true
		} else {
			f.v6 = true
		}
	}
	if f.v4 || f.v6 {
		return f
	}
	for _, fam := range specFamilies {
		switch fam {
		case corev1.IPv4Protocol:
			f.v4 = true
		case corev1.IPv6Protocol:
			f.v6 = true
		}
	}
	if f.v4 || f.v6 {
		return f
	}
	return allFamilies
}

// parseAddr parses an IP address as the API server accepts it (ParseIPSloppy allows
// IPv4 octets with leading zeros). IPv4-mapped IPv6 addresses become IPv4.
func parseAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), a.Zone() == ""
	}
	ip := netutils.ParseIPSloppy(s)
	if ip == nil {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// parseAddrs parses the addresses of the given families, in order, without duplicates.
func parseAddrs(in []string, fams ipFamilies) []netip.Addr {
	var out []netip.Addr
	for _, s := range in {
		a, ok := parseAddr(s)
		if !ok || !fams.has(a) || slices.Contains(out, a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// loadBalancerIPs are the ingress IPs that kube-proxy programs: those with an IP and in
// VIP mode (ipMode Proxy means the load balancer proxies to node ports itself).
func loadBalancerIPs(ingress []corev1.LoadBalancerIngress, fams ipFamilies) []netip.Addr {
	var out []netip.Addr
	for _, ing := range ingress {
		if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode != corev1.LoadBalancerIPModeVIP) {
			continue
		}
		a, ok := parseAddr(ing.IP)
		if !ok || !fams.has(a) || slices.Contains(out, a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// sourceRanges parses spec.loadBalancerSourceRanges or, when that is empty, the
// comma-separated service.beta.kubernetes.io/load-balancer-source-ranges annotation
// (the precedence of k8s.io/kubernetes pkg/api/v1/service GetLoadBalancerSourceRanges).
// Whitespace around entries is allowed, as the API server allows it; the prefixes are
// masked.
func sourceRanges(spec []string, annotation string) []netip.Prefix {
	in := spec
	if len(in) == 0 && strings.TrimSpace(annotation) != "" {
		in = strings.Split(annotation, ",")
	}
	var out []netip.Prefix
	for _, s := range in {
		s = strings.TrimSpace(s)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			_, n, err := netutils.ParseCIDRSloppy(s)
			if err != nil {
				continue
			}
			a, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			ones, _ := n.Mask.Size()
			p = netip.PrefixFrom(a.Unmap(), ones)
		}
		p = p.Masked()
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// enforcedSourceRanges is what kube-proxy makes of loadBalancerSourceRanges, family by
// family (newBaseServiceInfo and the firewall chains of its proxiers): a family whose
// ranges include a /0 is not restricted, so its ranges are left out; and when a range
// holds the node's IP of the family, the family's LoadBalancer IPs are allowed as
// sources too, since a node reaching a VIP bound to itself sends from the VIP.
func enforcedSourceRanges(ranges []netip.Prefix, lbIPs []netip.Addr, node Node) []netip.Prefix {
	var out []netip.Prefix
	for _, ipv6 := range []bool{false, true} {
		var fam []netip.Prefix
		open, hasNode := false, false
		for _, p := range ranges {
			if p.Addr().Is6() != ipv6 {
				continue
			}
			open = open || p.Bits() == 0
			hasNode = hasNode || p.Contains(node.IP(ipv6))
			fam = append(fam, p)
		}
		if open {
			continue
		}
		out = append(out, fam...)
		if !hasNode {
			continue
		}
		for _, a := range lbIPs {
			if a.Is6() != ipv6 {
				continue
			}
			if p := netip.PrefixFrom(a, a.BitLen()); !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}
