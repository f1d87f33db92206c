package model

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Translate derives the Snapshot every data plane reads from the decoded objects, as
// seen from node. It is pure and deterministic: the same objects give the same Snapshot,
// Services sorted by namespace and name, endpoints by address and port. It never fails:
// the objects were validated before, and anything odd left (an unparsable address, a
// slice without a Service) is skipped, as kube-proxy skips it.
//
// The Snapshot may share backing arrays between its endpoint lists (Cluster and External
// are often the same list); it is immutable, so nobody may write to them.
//
// Version is left zero; the sync runner numbers the Snapshots it hands out.
func Translate(objs *Objects, node Node) *Snapshot {
	snap := &Snapshot{}
	if objs == nil {
		objs = &Objects{}
	}
	slicesBySvc := indexSlices(objs.EndpointSlices)
	policies := indexPolicies(objs.Policies)
	defaults := DefaultPolicy()

	order := serviceOrder(objs.Services)
	snap.Services = make([]*Service, len(order))
	for i, e := range order {
		snap.Services[i] = translateService(objs.Services[e.pos], slicesBySvc[e.key], node, policies.forService(e.key, defaults))
	}

	translateGateways(objs, snap)
	snap.NetworkPolicy = translateNetworkPolicies(objs, node)
	return snap
}

// serviceEntry is a Service's key and its position in Objects.Services.
type serviceEntry struct {
	key ServiceKey
	pos int
}

// serviceOrder sorts the Services by key and then by input position, so that of two
// objects with one name the first given wins, and drops the later duplicates and the
// unnamed.
func serviceOrder(in []*corev1.Service) []serviceEntry {
	order := make([]serviceEntry, 0, len(in))
	for i, svc := range in {
		if svc == nil || svc.Name == "" {
			continue
		}
		order = append(order, serviceEntry{ServiceKey{Namespace: svc.Namespace, Name: svc.Name}, i})
	}
	slices.SortFunc(order, func(a, b serviceEntry) int {
		if c := a.key.Compare(b.key); c != 0 {
			return c
		}
		return a.pos - b.pos
	})
	return slices.CompactFunc(order, func(a, b serviceEntry) bool { return a.key == b.key })
}

// indexSlices groups EndpointSlices by the Service named in their
// kubernetes.io/service-name label, sorted by slice name so that duplicates resolve the
// same way every time. Slices without the label belong to no Service and are skipped.
func indexSlices(in []*discoveryv1.EndpointSlice) map[ServiceKey][]*discoveryv1.EndpointSlice {
	out := make(map[ServiceKey][]*discoveryv1.EndpointSlice, len(in))
	for _, s := range in {
		if key, ok := sliceService(s); ok {
			out[key] = append(out[key], s)
		}
	}
	for _, list := range out {
		sortSlices(list)
	}
	return out
}
