package manifest

//lint:file-ignore SA1019 weir accepts core/v1 Endpoints on purpose and mirrors them into EndpointSlices.

import (
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Port and range limits, as the API server has them.
const (
	minPort         = 1
	maxPort         = 65535
	minNodePort     = 30000 // the API server's default --service-node-port-range
	maxNodePort     = 32767
	maxAffinity     = 86400
	maxSliceEPs     = 1000
	maxSlicePorts   = 100
	maxAddresses    = 100
	maxWeight       = 1000000
	minMaglevTable  = 251
	maxMaglevTable  = 131071
	maxPolicyTarget = 16
)

// WeightAnnotation on an EndpointSlice gives every endpoint in it that weight (default 1).
const WeightAnnotation = "weir.dev/weight"

// ServiceNameLabel ties an EndpointSlice to its Service.
const ServiceNameLabel = discoveryv1.LabelServiceName

// checker reports problems on one object.
type checker struct {
	l *loader
	o *object
}

// written reports whether the field is in the manifest (not defaulted).
func (c checker) written(path string) bool {
	if !contains(presenceQueries, path) {
		panic("manifest: written(" + path + ") is not in presenceQueries") // a programming error
	}
	return c.o.doc.present[path]
}

func (c checker) errorf(path, format string, args ...any) { c.l.errorf(c.o, path, format, args...) }

// check reports each message a k8s.io/apimachinery validation function returned.
func (c checker) check(path, value string, msgs []string) bool {
	if len(msgs) == 0 {
		return true
	}
	c.errorf(path, "%q is not valid: %s", value, strings.Join(msgs, "; "))
	return false
}

func (c checker) portRange(path string, v int32) {
	if len(validation.IsValidPortNum(int(v))) > 0 {
		c.errorf(path, "%d is not in %d..%d", v, minPort, maxPort)
	}
}

func (c checker) oneOf(path, v string, allowed ...string) bool {
	if contains(allowed, v) {
		return true
	}
	c.errorf(path, "%q is not one of %s", v, strings.Join(allowed, ", "))
	return false
}

func (c checker) ip(path, v string) (netip.Addr, bool) {
	if len(validation.IsValidIP(field.NewPath(path), v)) > 0 {
		c.errorf(path, "%q is not a valid IP address", v)
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(v)
	return a.Unmap(), err == nil
}

func (c checker) protocol(path string, p corev1.Protocol) {
	c.oneOf(path, string(p), "TCP", "UDP", "SCTP")
}

func (c checker) nonNegative(path string, v int32) {
	if v < 0 {
		c.errorf(path, "%d must not be negative", v)
	}
}

func (c checker) percent(path string, v int32) {
	if v < 0 || v > 100 {
		c.errorf(path, "%d is not in 0..100", v)
	}
}

func (c checker) positive(path string, d *metav1.Duration) {
	if d != nil && d.Duration <= 0 {
		c.errorf(path, "%s must be positive", d.Duration)
	}
}

// metadata checks the name and namespace formats. nameRule is the API server's rule
// for the kind's names.
func (c checker) metadata(m metav1.Object, nameRule func(string) []string) {
	if m.GetName() == "" {
		if m.GetGenerateName() != "" {
			c.errorf("metadata.name", "is required (generateName is not supported in manifests)")
		} else {
			c.errorf("metadata.name", "is required")
		}
	} else {
		c.check("metadata.name", m.GetName(), nameRule(m.GetName()))
	}
	if ns := m.GetNamespace(); ns != "" {
		c.check("metadata.namespace", ns, validation.IsDNS1123Label(ns))
	}
	for _, k := range sortedMapKeys(m.GetLabels()) {
		path := "metadata.labels." + k
		if c.check(path, k, validation.IsQualifiedName(k)) {
			v := m.GetLabels()[k]
			c.check(path, v, validation.IsValidLabelValue(v))
		}
	}
	for _, k := range sortedMapKeys(m.GetAnnotations()) {
		c.check("metadata.annotations."+k, k, validation.IsQualifiedName(strings.ToLower(k)))
	}
}

func sortedMapKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func ipFamilyOf(a netip.Addr) corev1.IPFamily {
	if a.Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

func (c checker) service(s *corev1.Service) {
	c.metadata(s, validation.IsDNS1035Label)
	spec := &s.Spec
	if !c.oneOf("spec.type", string(spec.Type), "ClusterIP", "NodePort", "LoadBalancer", "ExternalName") {
		return
	}
	external := spec.Type == corev1.ServiceTypeExternalName
	headless := spec.ClusterIP == corev1.ClusterIPNone
	nodePorts := spec.Type == corev1.ServiceTypeNodePort || spec.Type == corev1.ServiceTypeLoadBalancer

	if external {
		name := strings.TrimSuffix(spec.ExternalName, ".")
		if spec.ExternalName == "" {
			c.errorf("spec.externalName", "is required when type is ExternalName")
		} else {
			c.check("spec.externalName", spec.ExternalName, validation.IsDNS1123Subdomain(name))
		}
		if spec.ClusterIP != "" || len(spec.ClusterIPs) > 0 {
			c.errorf("spec.clusterIP", "must be empty when type is ExternalName")
		}
	} else if len(spec.Ports) == 0 && !headless {
		c.errorf("spec.ports", "at least one port is required")
	}

	c.clusterIPs(spec, headless, external)
	if headless && nodePorts {
		c.errorf("spec.clusterIP", `"None" (headless) is only allowed for type ClusterIP`)
	}

	names := map[string]int{}
	ports := map[string]int{}
	nps := map[string]int{}
	for i := range spec.Ports {
		p := &spec.Ports[i]
		path := fmt.Sprintf("spec.ports[%d]", i)
		switch {
		case p.Name == "" && len(spec.Ports) > 1:
			c.errorf(path+".name", "is required when the Service has more than one port")
		case p.Name != "":
			if c.check(path+".name", p.Name, validation.IsDNS1123Label(p.Name)) {
				if j, dup := names[p.Name]; dup {
					c.errorf(path+".name", "%q is already used by spec.ports[%d]", p.Name, j)
				}
				names[p.Name] = i
			}
		}
		c.portRange(path+".port", p.Port)
		c.protocol(path+".protocol", p.Protocol)
		if p.AppProtocol != nil {
			c.check(path+".appProtocol", *p.AppProtocol, validation.IsQualifiedName(*p.AppProtocol))
		}
		key := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if j, dup := ports[key]; dup {
			c.errorf(path+".port", "%s is already used by spec.ports[%d]", key, j)
		}
		ports[key] = i
		if p.TargetPort.Type == intstr.String {
			c.check(path+".targetPort", p.TargetPort.StrVal, validation.IsValidPortName(p.TargetPort.StrVal))
		} else {
			if p.TargetPort.IntVal != p.Port { // else defaulted from port, reported there
				c.portRange(path+".targetPort", p.TargetPort.IntVal)
			}
		}
		if p.NodePort != 0 {
			switch {
			case !nodePorts:
				c.errorf(path+".nodePort", "may only be set when type is NodePort or LoadBalancer")
			case p.NodePort < minNodePort || p.NodePort > maxNodePort:
				c.errorf(path+".nodePort", "%d is not in %d..%d (the node port range)", p.NodePort, minNodePort, maxNodePort)
			default:
				key := fmt.Sprintf("%d/%s", p.NodePort, p.Protocol)
				if j, dup := nps[key]; dup {
					c.errorf(path+".nodePort", "%s is already used by spec.ports[%d]", key, j)
				}
				nps[key] = i
			}
		}
	}

	if c.oneOf("spec.sessionAffinity", string(spec.SessionAffinity), "None", "ClientIP") {
		cfg := spec.SessionAffinityConfig
		switch {
		case spec.SessionAffinity == corev1.ServiceAffinityNone && cfg != nil && cfg.ClientIP != nil:
			c.errorf("spec.sessionAffinityConfig", "must not be set when sessionAffinity is None")
		case spec.SessionAffinity == corev1.ServiceAffinityClientIP:
			if t := *cfg.ClientIP.TimeoutSeconds; t < 1 || t > maxAffinity {
				c.errorf("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "%d is not in 1..%d", t, maxAffinity)
			}
		}
	}
	if spec.InternalTrafficPolicy != nil {
		c.oneOf("spec.internalTrafficPolicy", string(*spec.InternalTrafficPolicy), "Cluster", "Local")
	}
	if spec.ExternalTrafficPolicy != "" {
		if c.oneOf("spec.externalTrafficPolicy", string(spec.ExternalTrafficPolicy), "Cluster", "Local") &&
			!nodePorts && len(spec.ExternalIPs) == 0 {
			c.errorf("spec.externalTrafficPolicy", "may only be set for NodePort and LoadBalancer Services or with externalIPs")
		}
	}
	if spec.HealthCheckNodePort != 0 {
		switch {
		case spec.Type != corev1.ServiceTypeLoadBalancer || spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal:
			c.errorf("spec.healthCheckNodePort", "may only be set when type is LoadBalancer and externalTrafficPolicy is Local")
		case spec.HealthCheckNodePort < minNodePort || spec.HealthCheckNodePort > maxNodePort:
			c.errorf("spec.healthCheckNodePort", "%d is not in %d..%d (the node port range)", spec.HealthCheckNodePort, minNodePort, maxNodePort)
		}
	}
	if spec.TrafficDistribution != nil {
		c.oneOf("spec.trafficDistribution", *spec.TrafficDistribution, "PreferClose", "PreferSameZone", "PreferSameNode")
	}
	for i, ip := range spec.ExternalIPs {
		if a, ok := c.ip(fmt.Sprintf("spec.externalIPs[%d]", i), ip); ok && a.IsUnspecified() {
			c.errorf(fmt.Sprintf("spec.externalIPs[%d]", i), "%q is the unspecified address", ip)
		}
	}
	for i, r := range spec.LoadBalancerSourceRanges {
		path := fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i)
		if spec.Type != corev1.ServiceTypeLoadBalancer {
			c.errorf(path, "may only be set when type is LoadBalancer")
			break
		}
		if len(validation.IsValidCIDR(field.NewPath(path), strings.TrimSpace(r))) > 0 {
			c.errorf(path, "%q is not a valid CIDR", r)
		}
	}
	if spec.LoadBalancerIP != "" {
		c.ip("spec.loadBalancerIP", spec.LoadBalancerIP)
	}
	for i, ing := range s.Status.LoadBalancer.Ingress {
		if ing.IP != "" {
			c.ip(fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), ing.IP)
		}
	}
}

// clusterIPs checks clusterIP, clusterIPs, ipFamilies and ipFamilyPolicy together.
func (c checker) clusterIPs(spec *corev1.ServiceSpec, headless, external bool) {
	if external {
		return
	}
	if spec.ClusterIP != "" && len(spec.ClusterIPs) > 0 && spec.ClusterIPs[0] != spec.ClusterIP {
		c.errorf("spec.clusterIPs[0]", "%q must equal spec.clusterIP %q", spec.ClusterIPs[0], spec.ClusterIP)
		return
	}
	if len(spec.ClusterIPs) > 2 {
		c.errorf("spec.clusterIPs", "at most two addresses (one IPv4 and one IPv6) are allowed, found %d", len(spec.ClusterIPs))
		return
	}
	var fams []corev1.IPFamily
	for i, ip := range spec.ClusterIPs {
		path := fmt.Sprintf("spec.clusterIPs[%d]", i)
		if i == 0 && !c.written("spec.clusterIPs") {
			path = "spec.clusterIP"
		}
		if ip == corev1.ClusterIPNone {
			if len(spec.ClusterIPs) > 1 {
				c.errorf(path, `"None" must be the only address`)
			}
			continue
		}
		a, ok := c.ip(path, ip)
		if !ok {
			return
		}
		if a.IsUnspecified() {
			c.errorf(path, "%q is the unspecified address", ip)
		}
		fams = append(fams, ipFamilyOf(a))
	}
	if len(fams) == 2 && fams[0] == fams[1] {
		c.errorf("spec.clusterIPs[1]", "%q is %s like spec.clusterIPs[0]; a dual-stack Service has one address of each family", spec.ClusterIPs[1], fams[1])
	}
	if len(spec.IPFamilies) > 2 {
		c.errorf("spec.ipFamilies", "at most two families are allowed, found %d", len(spec.IPFamilies))
	}
	if c.written("spec.ipFamilies") { // else derived from clusterIPs
		for i, f := range spec.IPFamilies {
			path := fmt.Sprintf("spec.ipFamilies[%d]", i)
			if !c.oneOf(path, string(f), "IPv4", "IPv6") {
				continue
			}
			if i == 1 && spec.IPFamilies[0] == f {
				c.errorf(path, "%s is listed twice", f)
			}
			if i < len(fams) && fams[i] != f {
				c.errorf(path, "%s does not match spec.clusterIPs[%d] %q (%s)", f, i, spec.ClusterIPs[i], fams[i])
			}
		}
	}
	if spec.IPFamilyPolicy != nil {
		pol := *spec.IPFamilyPolicy
		if c.oneOf("spec.ipFamilyPolicy", string(pol), "SingleStack", "PreferDualStack", "RequireDualStack") {
			n := max(len(fams), len(spec.IPFamilies))
			if pol == corev1.IPFamilyPolicySingleStack && n > 1 {
				c.errorf("spec.ipFamilyPolicy", "SingleStack allows one IP family, the Service has %d", n)
			}
		}
	}
}

func (c checker) endpointSlice(s *discoveryv1.EndpointSlice) {
	c.metadata(s, validation.IsDNS1123Subdomain)
	if v, ok := s.Annotations[WeightAnnotation]; ok {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > maxWeight {
			c.errorf("metadata.annotations."+WeightAnnotation, "%q is not an integer in 1..%d", v, maxWeight)
		}
	}
	if name, ok := s.Labels[ServiceNameLabel]; ok {
		c.check("metadata.labels."+ServiceNameLabel, name, validation.IsDNS1035Label(name))
	}
	if !c.oneOf("addressType", string(s.AddressType), "IPv4", "IPv6", "FQDN") {
		return
	}
	if len(s.Endpoints) > maxSliceEPs {
		c.errorf("endpoints", "%d endpoints is more than the %d allowed", len(s.Endpoints), maxSliceEPs)
	}
	for i, ep := range s.Endpoints {
		path := fmt.Sprintf("endpoints[%d]", i)
		if len(ep.Addresses) == 0 || len(ep.Addresses) > maxAddresses {
			c.errorf(path+".addresses", "must hold 1..%d addresses, found %d", maxAddresses, len(ep.Addresses))
		}
		for j, a := range ep.Addresses {
			c.sliceAddress(fmt.Sprintf("%s.addresses[%d]", path, j), s.AddressType, a)
		}
		if ep.NodeName != nil {
			c.check(path+".nodeName", *ep.NodeName, validation.IsDNS1123Subdomain(*ep.NodeName))
		}
		if ep.Hostname != nil {
			c.check(path+".hostname", *ep.Hostname, validation.IsDNS1123Label(*ep.Hostname))
		}
	}
	if len(s.Ports) > maxSlicePorts {
		c.errorf("ports", "%d ports is more than the %d allowed", len(s.Ports), maxSlicePorts)
	}
	names := map[string]int{}
	for i, p := range s.Ports {
		path := fmt.Sprintf("ports[%d]", i)
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if name != "" {
			c.check(path+".name", name, validation.IsDNS1123Label(name))
		}
		if j, dup := names[name]; dup {
			c.errorf(path+".name", "%q is already used by ports[%d]", name, j)
		}
		names[name] = i
		if p.Port != nil {
			c.portRange(path+".port", *p.Port)
		}
		c.protocol(path+".protocol", *p.Protocol)
	}
}

func (c checker) sliceAddress(path string, t discoveryv1.AddressType, a string) {
	switch t {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		ip, err := netip.ParseAddr(a)
		if len(validation.IsValidIP(field.NewPath(path), a)) > 0 || err != nil ||
			ip.Is4() != (t == discoveryv1.AddressTypeIPv4) {
			c.errorf(path, "%q is not a valid %s address", a, t)
		}
	case discoveryv1.AddressTypeFQDN:
		c.check(path, a, validation.IsDNS1123Subdomain(a))
	}
}

func (c checker) endpoints(e *corev1.Endpoints) {
	c.metadata(e, validation.IsDNS1035Label)
	for i, ss := range e.Subsets {
		path := fmt.Sprintf("subsets[%d]", i)
		for _, group := range []struct {
			name  string
			addrs []corev1.EndpointAddress
		}{{"addresses", ss.Addresses}, {"notReadyAddresses", ss.NotReadyAddresses}} {
			for j, a := range group.addrs {
				ap := fmt.Sprintf("%s.%s[%d]", path, group.name, j)
				c.ip(ap+".ip", a.IP)
				if a.Hostname != "" {
					c.check(ap+".hostname", a.Hostname, validation.IsDNS1123Label(a.Hostname))
				}
				if a.NodeName != nil {
					c.check(ap+".nodeName", *a.NodeName, validation.IsDNS1123Subdomain(*a.NodeName))
				}
			}
		}
		names := map[string]int{}
		for j, p := range ss.Ports {
			pp := fmt.Sprintf("%s.ports[%d]", path, j)
			if p.Name != "" {
				c.check(pp+".name", p.Name, validation.IsDNS1123Label(p.Name))
			} else if len(ss.Ports) > 1 {
				c.errorf(pp+".name", "is required when the subset has more than one port")
			}
			if k, dup := names[p.Name]; dup {
				c.errorf(pp+".name", "%q is already used by %s.ports[%d]", p.Name, path, k)
			}
			names[p.Name] = j
			c.portRange(pp+".port", p.Port)
			c.protocol(pp+".protocol", p.Protocol)
		}
	}
}

func (c checker) secret(s *corev1.Secret) {
	c.metadata(s, validation.IsDNS1123Subdomain)
	if s.Type == corev1.SecretTypeTLS {
		for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
			if len(s.Data[k]) == 0 {
				where := "data"
				if !c.written("data") && c.written("stringData") {
					where = "stringData"
				}
				c.errorf(where+"["+k+"]", "is required in a %s Secret", corev1.SecretTypeTLS)
			}
		}
	}
}

func isPrime(n int32) bool { return n > 1 && big.NewInt(int64(n)).ProbablyPrime(0) }
