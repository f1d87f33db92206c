package model

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

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

// chooseEndpoints is kube-proxy's CategorizeEndpoints (pkg/proxy/topology.go) and its
// use by the proxiers, run for each IP family: the Cluster set honours
// internalTrafficPolicy, the External set externalTrafficPolicy.
//
// shortCircuit is the set of policy Cluster, for the traffic from the node and its pods
// to external addresses that kube-proxy sends there whatever the policies say.
func chooseEndpoints(pe portEndpoints, svc *Service, topo topologyMode, node Node) (cluster, external, shortCircuit EndpointSet) {
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
	if !svc.ExternalTrafficLocal {
		return cluster, external, external
	}
	shortCircuit = EndpointSet{
		Endpoints:   concat(fam[0].clusterEps, fam[1].clusterEps),
		IPv4Verdict: fam[0].verdict(fam[0].clusterEps),
		IPv6Verdict: fam[1].verdict(fam[1].clusterEps),
	}
	shortCircuit.Verdict = combinedVerdict(shortCircuit)
	return cluster, external, shortCircuit
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
