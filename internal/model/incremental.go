package model

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
)

// Translator is Translate with memory: it keeps what each Service of its last result was
// made from, and translates again only the Services whose inputs changed: its Service
// object, the EndpointSlices that name it, the TrafficPolicies or the node. The others
// are the previous Snapshot's entries, shared. This is kube-proxy's change tracking
// (ServiceChangeTracker, EndpointsChangeTracker) done by identity: sources hand over
// objects that are never modified (a changed object is a new pointer, as in client-go's
// informer caches), so an input that is the same pointer as last time is the same input.
//
// When the object lists have the same length as last time (objects updated, none added
// or removed: the common case), the work is a pointer comparison of the lists plus the
// changed Services; otherwise the lists are indexed again and every Service's inputs
// compared.
//
// Each result carries a Delta against the previous one (its Base is the Version the
// caller gave the previous result). The result is always the Snapshot Translate would
// make of the same objects (TestTranslatorEqualsTranslate).
//
// A Translator is not safe for concurrent use; the sync runner owns one.
type Translator struct {
	prev     *Snapshot
	node     Node
	policies []*weirv1alpha1.TrafficPolicy
	index    policyIndex
	defaults *Policy
	gateway  gatewayInputs
	netpol   networkPolicyInputs

	// The object lists of the last call, the Services' order and inputs (parallel to
	// prev.Services), and the slices by Service.
	services  []*corev1.Service
	slices    []*discoveryv1.EndpointSlice
	order     []serviceEntry
	inputs    []serviceInputs
	bySvc     map[ServiceKey][]*discoveryv1.EndpointSlice
	positions map[ServiceKey]int // index in order, for the fast path
}

type serviceInputs struct {
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
}

// gatewayInputs are the object lists translateGateways reads besides the Services.
type gatewayInputs struct {
	lists [][]any
}

func gatewayInputsOf(objs *Objects) gatewayInputs {
	return gatewayInputs{lists: [][]any{
		anys(objs.GatewayClasses), anys(objs.Gateways), anys(objs.HTTPRoutes), anys(objs.GRPCRoutes),
		anys(objs.TLSRoutes), anys(objs.ReferenceGrants), anys(objs.BackendTLSPolicies),
		anys(objs.Ingresses), anys(objs.IngressClasses), anys(objs.Secrets), anys(objs.Namespaces),
		anys(objs.Policies),
	}}
}

func anys[T any](in []*T) []any {
	out := make([]any, len(in))
	for i, v := range in {
		out[i] = v
	}
	return out
}

func (g gatewayInputs) equal(o gatewayInputs) bool {
	if len(g.lists) != len(o.lists) {
		return false
	}
	for i := range g.lists {
		if !slices.Equal(g.lists[i], o.lists[i]) {
			return false
		}
	}
	return true
}

// NewTranslator returns a Translator whose first Translate is a full one.
func NewTranslator() *Translator { return &Translator{} }

// Reset forgets the previous result: the next Translate is a full one (periodic resync).
func (t *Translator) Reset() { *t = Translator{} }

// Translate is Translate(objs, node), reusing the previous result's Services whose
// inputs did not change. The previous result must not have been modified, except for
// its Version, which the caller sets.
func (t *Translator) Translate(objs *Objects, node Node) *Snapshot {
	if objs == nil {
		objs = &Objects{}
	}
	full := t.prev == nil || node != t.node || !slices.Equal(objs.Policies, t.policies)
	if full {
		if t.defaults == nil {
			t.defaults = DefaultPolicy()
		}
		t.index = indexPolicies(objs.Policies)
		t.policies = slices.Clone(objs.Policies)
	}
	var snap *Snapshot
	var changed []ServiceKey
	if s, c, ok := t.updated(objs, node, full); ok {
		snap, changed = s, c
	} else {
		snap, changed = t.reindexed(objs, node, full)
	}

	gw := gatewayInputsOf(objs)
	delta := &Delta{Services: changed}
	switch {
	case !full && gw.equal(t.gateway) && (t.prev.Gateway == nil || len(changed) == 0):
		// Nothing the gateway reads changed. Without any Gateway or Ingress of weir's,
		// the Services alone never make a GatewayConfig.
		snap.Gateway = t.prev.Gateway
	default:
		translateGateways(objs, snap)
		delta.Gateway = t.prev == nil || snap.Gateway != nil || t.prev.Gateway != nil
	}
	np := networkPolicyInputsOf(objs)
	if t.prev != nil && node == t.node && np.equal(t.netpol) {
		snap.NetworkPolicy = t.prev.NetworkPolicy
	} else {
		snap.NetworkPolicy = translateNetworkPolicies(objs, node)
		delta.NetworkPolicy = true
	}
	if t.prev != nil {
		delta.Base = t.prev.Version
	}
	snap.Delta = delta
	t.prev, t.node, t.gateway, t.netpol = snap, node, gw, np
	t.services, t.slices = objs.Services, objs.EndpointSlices
	return snap
}

// updated is the fast path: the Service and slice lists have the lengths of last time
// and every changed Service object kept its name, so the order of the Services and the
// slices' positions hold. Only the Services whose object or slices changed are
// translated. ok is false when the fast path does not apply.
func (t *Translator) updated(objs *Objects, node Node, full bool) (*Snapshot, []ServiceKey, bool) {
	if full || t.positions == nil || len(objs.Services) != len(t.services) || len(objs.EndpointSlices) != len(t.slices) {
		return nil, nil, false
	}
	dirty := map[ServiceKey]bool{}
	for i, svc := range objs.Services {
		old := t.services[i]
		if svc == old {
			continue
		}
		if svc == nil || old == nil || svc.Namespace != old.Namespace || svc.Name != old.Name {
			return nil, nil, false // renamed in place: the order may change
		}
		dirty[ServiceKey{Namespace: svc.Namespace, Name: svc.Name}] = true
	}
	// Slices that changed: their lists are rebuilt, copied (the previous lists are the
	// previous inputs).
	var moved []int
	for i, es := range objs.EndpointSlices {
		if es != t.slices[i] {
			moved = append(moved, i)
		}
	}
	if len(moved) > 0 {
		touched := map[ServiceKey]bool{}
		for _, i := range moved {
			for _, es := range []*discoveryv1.EndpointSlice{t.slices[i], objs.EndpointSlices[i]} {
				if key, ok := sliceService(es); ok {
					touched[key] = true
				}
			}
		}
		// Remove the old pointers, add the new ones, sort again.
		lists := make(map[ServiceKey][]*discoveryv1.EndpointSlice, len(touched))
		for key := range touched {
			lists[key] = slices.Clone(t.bySvc[key])
		}
		for _, i := range moved {
			if key, ok := sliceService(t.slices[i]); ok {
				old := t.slices[i]
				lists[key] = slices.DeleteFunc(lists[key], func(es *discoveryv1.EndpointSlice) bool { return es == old })
			}
		}
		for _, i := range moved {
			if key, ok := sliceService(objs.EndpointSlices[i]); ok {
				lists[key] = append(lists[key], objs.EndpointSlices[i])
			}
		}
		for key, list := range lists {
			sortSlices(list)
			if len(list) == 0 {
				delete(t.bySvc, key)
			} else {
				t.bySvc[key] = list
			}
			dirty[key] = true
		}
	}

	snap := &Snapshot{Services: slices.Clone(t.prev.Services)}
	var changed []ServiceKey
	for key := range dirty {
		i, ok := t.positions[key]
		if !ok {
			continue // slices of a Service that does not exist
		}
		e := t.order[i]
		in := serviceInputs{svc: objs.Services[e.pos], slices: t.bySvc[key]}
		if in.svc == t.inputs[i].svc && slices.Equal(in.slices, t.inputs[i].slices) {
			continue
		}
		t.inputs[i] = in
		snap.Services[i] = translateService(in.svc, in.slices, node, t.index.forService(key, t.defaults))
		changed = append(changed, key)
	}
	slices.SortFunc(changed, ServiceKey.Compare)
	return snap, changed, true
}

// reindexed is the general path: the lists are indexed again and each Service's inputs
// compared with last time's.
func (t *Translator) reindexed(objs *Objects, node Node, full bool) (*Snapshot, []ServiceKey) {
	t.bySvc = indexSlices(objs.EndpointSlices)
	order := serviceOrder(objs.Services)
	snap := &Snapshot{Services: make([]*Service, len(order))}
	inputs := make([]serviceInputs, len(order))
	positions := make(map[ServiceKey]int, len(order))
	var changed []ServiceKey
	j := 0 // walks the previous order, sorted by key too
	for i, e := range order {
		in := serviceInputs{svc: objs.Services[e.pos], slices: t.bySvc[e.key]}
		for j < len(t.order) && t.order[j].key.Compare(e.key) < 0 {
			changed = append(changed, t.order[j].key) // removed
			j++
		}
		had := j < len(t.order) && t.order[j].key == e.key
		if !full && had && t.inputs[j].svc == in.svc && slices.Equal(t.inputs[j].slices, in.slices) {
			snap.Services[i] = t.prev.Services[j]
		} else {
			snap.Services[i] = translateService(in.svc, in.slices, node, t.index.forService(e.key, t.defaults))
			changed = append(changed, e.key)
		}
		if had {
			j++
		}
		inputs[i] = in
		positions[e.key] = i
	}
	for ; j < len(t.order); j++ {
		changed = append(changed, t.order[j].key)
	}
	t.order, t.inputs, t.positions = order, inputs, positions
	return snap, changed
}

// sliceService is the Service a slice belongs to (its kubernetes.io/service-name label).
func sliceService(es *discoveryv1.EndpointSlice) (ServiceKey, bool) {
	if es == nil {
		return ServiceKey{}, false
	}
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return ServiceKey{}, false
	}
	return ServiceKey{Namespace: es.Namespace, Name: name}, true
}

// sortSlices orders one Service's slices by name, as indexSlices does.
func sortSlices(list []*discoveryv1.EndpointSlice) {
	if len(list) > 1 {
		slices.SortFunc(list, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	}
}
