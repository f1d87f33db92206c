package model

import (
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// WeightAnnotation on an EndpointSlice gives every endpoint in it that weight (a
// positive integer; 1 when unset or invalid).
const WeightAnnotation = "weir.dev/weight"

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
