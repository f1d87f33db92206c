package model

import (
	"slices"

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
// Each result carries a Delta against the previous one (its Base is the Version the
// caller gave the previous result). The result is always the Snapshot Translate would
// make of the same objects (TestTranslatorEqualsTranslate).
//
// A Translator is not safe for concurrent use; the sync runner owns one.
type Translator struct {
	prev     *Snapshot
	node     Node
	inputs   map[ServiceKey]serviceInputs // what each Service of prev was made from
	policies []*weirv1alpha1.TrafficPolicy
	index    policyIndex
	defaults *Policy
	gateway  gatewayInputs
}

type serviceInputs struct {
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
	out    *Service
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
	slicesBySvc := indexSlices(objs.EndpointSlices)

	order := serviceOrder(objs.Services)
	snap := &Snapshot{Services: make([]*Service, len(order))}
	inputs := make(map[ServiceKey]serviceInputs, len(order))
	var changed []ServiceKey
	for i, e := range order {
		in := serviceInputs{svc: objs.Services[e.pos], slices: slicesBySvc[e.key]}
		prev, had := t.inputs[e.key]
		if !full && had && prev.svc == in.svc && slices.Equal(prev.slices, in.slices) {
			in.out = prev.out
		} else {
			in.out = translateService(in.svc, in.slices, node, t.index.forService(e.key, t.defaults))
		}
		if !had || prev.out != in.out {
			changed = append(changed, e.key)
		}
		snap.Services[i] = in.out
		inputs[e.key] = in
	}
	removed := false
	for key := range t.inputs {
		if _, ok := inputs[key]; !ok {
			changed = append(changed, key)
			removed = true
		}
	}
	if removed {
		slices.SortFunc(changed, ServiceKey.Compare)
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
	if t.prev != nil {
		delta.Base = t.prev.Version
	}
	snap.Delta = delta

	t.prev, t.node, t.inputs, t.gateway = snap, node, inputs, gw
	return snap
}
