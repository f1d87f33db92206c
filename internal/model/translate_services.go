package model

import (
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netutils "k8s.io/utils/net"
)

// WeightAnnotation on an EndpointSlice gives every endpoint in it that weight (a
// positive integer; 1 when unset or invalid).
const WeightAnnotation = "weir.dev/weight"

// DefaultAffinityTimeout is the ClientIP session affinity timeout when the Service sets
// none (the API server's default, 3 hours).
const DefaultAffinityTimeout = 10800 * time.Second

// translateService builds one Service with its ports and chosen endpoints. slices are
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

	if svc.Proxied() {
		svc.ExternalIPs = parseAddrs(spec.ExternalIPs, fams)
		if svc.Type == LoadBalancer {
			svc.LoadBalancerIPs = loadBalancerIPs(in.Status.LoadBalancer.Ingress, fams)
			svc.LoadBalancerSourceRanges = sourceRanges(spec.LoadBalancerSourceRanges, in.Annotations[corev1.AnnotationLoadBalancerSourceRangesKey])
		}
		if spec.SessionAffinity == corev1.ServiceAffinityClientIP {
			svc.AffinityTimeout = DefaultAffinityTimeout
			if c := spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil && *c.ClientIP.TimeoutSeconds > 0 {
				svc.AffinityTimeout = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
			}
		}
		svc.InternalTrafficLocal = spec.InternalTrafficPolicy != nil && *spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
		// apiservice.ExternalPolicyLocal: only NodePort and LoadBalancer Services
		// have an external traffic policy.
		svc.ExternalTrafficLocal = nodePorts && spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
		if svc.Type == LoadBalancer && svc.ExternalTrafficLocal {
			svc.HealthCheckNodePort = spec.HealthCheckNodePort
		}
	}

	if svc.Type == ExternalName {
		eps = nil
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
		pe := gatherEndpoints(eps, p.Name, corev1.Protocol(p.Protocol), fams, node, topo != topologyNone)
		p.Endpoints = pe.eps
		p.Cluster, p.External = chooseEndpoints(pe, svc, topo, node)
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

// topologyMode is the topology-aware routing a Service asks for.
type topologyMode uint8

const (
	topologyNone topologyMode = iota
	topologySameZone
	topologySameNode // falls back to the zone when node hints cannot be used
)

// wantedTopology reads spec.trafficDistribution (PreferClose, PreferSameZone,
// PreferSameNode) and, without it, the service.kubernetes.io/topology-mode annotation
// (or its deprecated predecessor topology-aware-hints) set to Auto.
func wantedTopology(in *corev1.Service) topologyMode {
	if td := in.Spec.TrafficDistribution; td != nil {
		switch *td {
		case corev1.ServiceTrafficDistributionPreferClose, corev1.ServiceTrafficDistributionPreferSameZone:
			return topologySameZone
		case corev1.ServiceTrafficDistributionPreferSameNode:
			return topologySameNode
		}
	}
	mode := in.Annotations[corev1.AnnotationTopologyMode]
	if mode == "" {
		mode = in.Annotations[corev1.DeprecatedAnnotationTopologyAwareHints]
	}
	if mode == "Auto" || mode == "auto" {
		return topologySameZone
	}
	return topologyNone
}

// portEndpoints are the endpoints of one Service port, sorted by address and port, with
// the topology hints of each: hints[i] belongs to eps[i]. hints is nil when the Service
// does not use topology-aware routing.
type portEndpoints struct {
	eps   []Endpoint
	hints []*discoveryv1.EndpointHints
}

func (pe portEndpoints) hint(i int) *discoveryv1.EndpointHints {
	if pe.hints == nil {
		return nil
	}
	return pe.hints[i]
}

// sub returns the endpoints [lo, hi).
func (pe portEndpoints) sub(lo, hi int) portEndpoints {
	out := portEndpoints{eps: pe.eps[lo:hi:hi]}
	if pe.hints != nil {
		out.hints = pe.hints[lo:hi:hi]
	}
	return out
}

// sort.Interface, for a stable sort by address, port and dedupe preference.
func (pe portEndpoints) Len() int { return len(pe.eps) }
func (pe portEndpoints) Swap(i, j int) {
	pe.eps[i], pe.eps[j] = pe.eps[j], pe.eps[i]
	if pe.hints != nil {
		pe.hints[i], pe.hints[j] = pe.hints[j], pe.hints[i]
	}
}
func (pe portEndpoints) Less(i, j int) bool {
	a, b := &pe.eps[i], &pe.eps[j]
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c < 0
	}
	if a.Port != b.Port {
		return a.Port < b.Port
	}
	return dedupeRank(a) < dedupeRank(b)
}

// gatherEndpoints collects the endpoints of every slice port that matches the Service
// port by name and protocol (kube-proxy's ServicePortName; the EndpointSlice controller
// already resolved targetPort, by name or number, into the slice port's number),
// deduplicated by address and port and sorted by them. A slice port without a name
// matches the unnamed Service port (kube-proxy ignores it; hand-written slices omit it).
// Slices are those labelled for the Service, sorted by name.
func gatherEndpoints(in []*discoveryv1.EndpointSlice, name string, proto corev1.Protocol, fams ipFamilies, node Node, withHints bool) portEndpoints {
	n := 0
	for _, s := range in {
		for j := range s.Ports {
			if portMatches(&s.Ports[j], name, proto) {
				n += len(s.Endpoints)
			}
		}
	}
	if n == 0 {
		return portEndpoints{}
	}
	pe := portEndpoints{eps: make([]Endpoint, 0, n)}
	if withHints {
		pe.hints = make([]*discoveryv1.EndpointHints, 0, n)
	}
	for _, s := range in {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices are not proxied, as in kube-proxy
		}
		var weight uint32
		for j := range s.Ports {
			sp := &s.Ports[j]
			if !portMatches(sp, name, proto) {
				continue
			}
			if weight == 0 {
				weight = sliceWeight(s.Annotations[WeightAnnotation])
			}
			for k := range s.Endpoints {
				e := &s.Endpoints[k]
				if len(e.Addresses) == 0 {
					continue
				}
				// kube-proxy uses the first address only.
				addr, ok := parseAddr(e.Addresses[0])
				if !ok || addr.Is4() != (s.AddressType == discoveryv1.AddressTypeIPv4) || !fams.has(addr) {
					continue
				}
				out := Endpoint{
					Addr: addr,
					Port: *sp.Port,
					// The API's nil semantics: ready nil = true, serving nil = true,
					// terminating nil = false (as kube-proxy's endpointslicecache reads them).
					Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
					Serving:     e.Conditions.Serving == nil || *e.Conditions.Serving,
					Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
					Hostname:    deref(e.Hostname),
					NodeName:    deref(e.NodeName),
					Zone:        deref(e.Zone),
					Weight:      weight,
				}
				out.Local = node.Name != "" && out.NodeName == node.Name
				pe.eps = append(pe.eps, out)
				if withHints {
					pe.hints = append(pe.hints, e.Hints)
				}
			}
		}
	}
	if len(pe.eps) == 0 {
		return portEndpoints{}
	}
	if !sort.IsSorted(pe) {
		sort.Stable(pe)
	}
	// Keep the first, most preferred, of each address:port.
	w := 1
	for i := 1; i < len(pe.eps); i++ {
		if pe.eps[i].Addr == pe.eps[w-1].Addr && pe.eps[i].Port == pe.eps[w-1].Port {
			continue
		}
		pe.eps[w] = pe.eps[i]
		if pe.hints != nil {
			pe.hints[w] = pe.hints[i]
		}
		w++
	}
	return pe.sub(0, w)
}

// dedupeRank orders duplicates of one address:port found in several slices (an
// endpoint moving between slices, or a pod IP reused before the old pod is gone): a
// ready one first, then one not terminating, then a serving one, then a local one; among
// equals the first slice by name.
func dedupeRank(e *Endpoint) uint8 {
	var r uint8
	if !e.Ready {
		r |= 8
	}
	if e.Terminating {
		r |= 4
	}
	if !e.Serving {
		r |= 2
	}
	if !e.Local {
		r |= 1
	}
	return r
}

func sliceWeight(s string) uint32 {
	if s == "" {
		return 1
	}
	w, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil || w == 0 {
		return 1
	}
	return uint32(w)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func portMatches(sp *discoveryv1.EndpointPort, name string, proto corev1.Protocol) bool {
	if deref(sp.Name) != name || sp.Port == nil || *sp.Port <= 0 || *sp.Port > 65535 {
		return false
	}
	slicePortProto := corev1.ProtocolTCP
	if sp.Protocol != nil {
		slicePortProto = *sp.Protocol
	}
	return slicePortProto == proto
}

// chooseEndpoints is kube-proxy's CategorizeEndpoints (pkg/proxy/topology.go) and its
// use by the proxiers, run for each IP family: the Cluster set honours
// internalTrafficPolicy, the External set externalTrafficPolicy.
func chooseEndpoints(pe portEndpoints, svc *Service, topo topologyMode, node Node) (cluster, external EndpointSet) {
	// Endpoints are sorted by address; IPv4 comes first.
	split := len(pe.eps)
	for i := range pe.eps {
		if !pe.eps[i].Addr.Is4() {
			split = i
			break
		}
	}
	var fam [2]familyChoice
	fam[0] = categorize(pe.sub(0, split), topo, node)
	fam[1] = categorize(pe.sub(split, len(pe.eps)), topo, node)

	for i := range fam {
		f := &fam[i]
		f.cluster = f.clusterEps
		if svc.InternalTrafficLocal {
			f.cluster = f.localEps
		}
		f.external = f.clusterEps
		if svc.ExternalTrafficLocal {
			f.external = f.localEps
		}
	}
	cluster = EndpointSet{
		Endpoints:   concat(fam[0].cluster, fam[1].cluster),
		IPv4Verdict: fam[0].verdict(fam[0].cluster),
		IPv6Verdict: fam[1].verdict(fam[1].cluster),
	}
	cluster.Verdict = combinedVerdict(cluster)
	external = EndpointSet{
		Endpoints:   concat(fam[0].external, fam[1].external),
		IPv4Verdict: fam[0].verdict(fam[0].external),
		IPv6Verdict: fam[1].verdict(fam[1].external),
	}
	external.Verdict = combinedVerdict(external)
	return cluster, external
}

// familyChoice is the endpoint choice for one IP family.
type familyChoice struct {
	clusterEps, localEps []Endpoint
	hasAny               bool // some endpoint is usable anywhere in the cluster
	cluster, external    []Endpoint
}

func (f *familyChoice) verdict(set []Endpoint) Verdict {
	switch {
	case len(set) > 0:
		return Forward
	case !f.hasAny:
		// No usable endpoint anywhere: reject, so clients fail fast.
		return Reject
	default:
		// Traffic policy Local and no usable endpoint on this node.
		return Drop
	}
}

func combinedVerdict(s EndpointSet) Verdict {
	switch {
	case len(s.Endpoints) > 0:
		return Forward
	case s.IPv4Verdict == Drop || s.IPv6Verdict == Drop:
		return Drop
	default:
		return Reject
	}
}

// categorize is CategorizeEndpoints for one family: clusterEps are the ready endpoints
// (narrowed by topology hints when they apply), or, when none is ready anywhere, the
// serving and terminating ones; localEps are the ready endpoints on this node, or, when
// none is, the serving and terminating ones on this node. Endpoints that are not
// serving are never used.
func categorize(pe portEndpoints, topo topologyMode, node Node) familyChoice {
	var f familyChoice
	eps := pe.eps
	if len(eps) == 0 {
		return f
	}
	mode := topologyFromHints(pe, topo, node)
	f.clusterEps = filterEndpoints(eps, func(i int) bool {
		return eps[i].Ready && availableForTopology(pe.hint(i), mode, node)
	})
	if len(f.clusterEps) == 0 {
		f.clusterEps = filterEndpoints(eps, func(i int) bool { return servingTerminating(&eps[i]) })
	}

	var localReady, localServingTerminating bool
	for i := range eps {
		e := &eps[i]
		switch {
		case e.Ready:
			f.hasAny = true
			localReady = localReady || e.Local
		case servingTerminating(e):
			f.hasAny = true
			localServingTerminating = localServingTerminating || e.Local
		}
	}
	switch {
	case localReady:
		f.localEps = filterEndpoints(eps, func(i int) bool { return eps[i].Local && eps[i].Ready })
	case localServingTerminating:
		f.localEps = filterEndpoints(eps, func(i int) bool { return eps[i].Local && servingTerminating(&eps[i]) })
	}
	return f
}

func servingTerminating(e *Endpoint) bool { return e.Serving && e.Terminating }

// topologyFromHints is kube-proxy's topologyModeFromHints, asked only when the Service
// wants topology-aware routing: node hints when every ready endpoint has one and one
// names this node (PreferSameNode only); else zone hints when every ready endpoint has
// one and one names this node's zone; else none (every endpoint).
func topologyFromHints(pe portEndpoints, want topologyMode, node Node) topologyMode {
	if want == topologyNone || pe.hints == nil {
		return topologyNone
	}
	var anyReady, forNode, forZone bool
	allNodeHints, allZoneHints := true, true
	for i := range pe.eps {
		if !pe.eps[i].Ready {
			continue
		}
		anyReady = true
		h := pe.hints[i]
		if h == nil || len(h.ForNodes) == 0 {
			allNodeHints = false
		} else if hasNode(h, node.Name) {
			forNode = true
		}
		if h == nil || len(h.ForZones) == 0 {
			allZoneHints = false
		} else if hasZone(h, node.Zone) {
			forZone = true
		}
	}
	switch {
	case !anyReady:
		return topologyNone
	case want == topologySameNode && allNodeHints && forNode:
		return topologySameNode
	case allZoneHints && forZone:
		return topologySameZone
	}
	return topologyNone
}

func availableForTopology(h *discoveryv1.EndpointHints, mode topologyMode, node Node) bool {
	switch mode {
	case topologySameNode:
		return h != nil && hasNode(h, node.Name)
	case topologySameZone:
		return h != nil && hasZone(h, node.Zone)
	}
	return true
}

func hasNode(h *discoveryv1.EndpointHints, name string) bool {
	if name == "" {
		return false
	}
	for _, n := range h.ForNodes {
		if n.Name == name {
			return true
		}
	}
	return false
}

func hasZone(h *discoveryv1.EndpointHints, zone string) bool {
	if zone == "" {
		return false
	}
	for _, z := range h.ForZones {
		if z.Name == zone {
			return true
		}
	}
	return false
}

// filterEndpoints returns the endpoints whose index passes keep. When all pass it
// returns eps itself (capacity clipped), so that an unfiltered set costs no memory.
func filterEndpoints(eps []Endpoint, keep func(i int) bool) []Endpoint {
	n := 0
	for i := range eps {
		if keep(i) {
			n++
		}
	}
	switch n {
	case 0:
		return nil
	case len(eps):
		return eps[:n:n]
	}
	out := make([]Endpoint, 0, n)
	for i := range eps {
		if keep(i) {
			out = append(out, eps[i])
		}
	}
	return out
}

func concat(a, b []Endpoint) []Endpoint {
	switch {
	case len(a) == 0 && len(b) == 0:
		return nil
	case len(b) == 0:
		return a
	case len(a) == 0:
		return b
	}
	out := make([]Endpoint, 0, len(a)+len(b))
	return append(append(out, a...), b...)
}

// dnsEndpoints are the addresses a headless Service publishes: every address of every
// endpoint in its slices that is ready, or all of them with publishNotReadyAddresses;
// one entry per address (a ready one, and one with a hostname, preferred), sorted.
func dnsEndpoints(in []*discoveryv1.EndpointSlice, fams ipFamilies, publishNotReady bool) []DNSEndpoint {
	var out []DNSEndpoint
	for _, s := range in {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			if !ready && !publishNotReady {
				continue
			}
			for _, a := range e.Addresses {
				addr, ok := parseAddr(a)
				if !ok || !fams.has(addr) {
					continue
				}
				out = append(out, DNSEndpoint{Addr: addr, Hostname: deref(e.Hostname), Ready: ready})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b DNSEndpoint) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		if a.Ready != b.Ready {
			if a.Ready {
				return -1
			}
			return 1
		}
		if (a.Hostname == "") != (b.Hostname == "") {
			if a.Hostname != "" {
				return -1
			}
			return 1
		}
		return 0
	})
	return slices.CompactFunc(out, func(a, b DNSEndpoint) bool { return a.Addr == b.Addr })
}
