package model

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	weirv1alpha1 "weir.dev/weir/api/v1alpha1"
)

// world is a changing object set, changed as a source changes it: a changed object is
// a new pointer, the old one is never modified.
type world struct {
	rng      *rand.Rand
	services map[string]*corev1.Service
	slices   map[string]*discoveryv1.EndpointSlice
	policies map[string]*weirv1alpha1.TrafficPolicy
	gateways map[string]*gatewayv1.Gateway
	routes   map[string]*gatewayv1.HTTPRoute
	node     Node
	seq      uint64
	shuffle  bool // hand the slices over in a random order
}

var worldNamespaces = []string{"a", "b"}

// randomService is a random Service named ns/name and its random slices.
func (w *world) randomService(ns, name string) (*corev1.Service, []*discoveryv1.EndpointSlice) {
	w.seq++
	objs := randomObjects(w.rng.Uint64())
	svc := objs.Services[0].DeepCopy()
	svc.Namespace, svc.Name = ns, name
	if w.rng.IntN(6) == 0 {
		svc.Spec.ClusterIP = corev1.ClusterIPNone
		svc.Spec.ClusterIPs = nil
	}
	var out []*discoveryv1.EndpointSlice
	for _, es := range objs.EndpointSlices {
		es = es.DeepCopy()
		es.Namespace = ns
		es.Name = name + "-" + es.Name
		es.Labels = map[string]string{discoveryv1.LabelServiceName: name}
		out = append(out, es)
	}
	return svc, out
}

func (w *world) key(m int) (string, string) {
	return worldNamespaces[w.rng.IntN(len(worldNamespaces))], fmt.Sprintf("svc-%d", w.rng.IntN(m))
}

// step makes one random change.
func (w *world) step() {
	ns, name := w.key(12)
	id := ns + "/" + name
	switch w.rng.IntN(12) {
	case 0, 1: // a Service added or replaced, with new slices
		svc, sl := w.randomService(ns, name)
		w.services[id] = svc
		for k, es := range w.slices {
			if es.Namespace == ns && es.Labels[discoveryv1.LabelServiceName] == name {
				delete(w.slices, k)
			}
		}
		for _, es := range sl {
			w.slices[es.Namespace+"/"+es.Name] = es
		}
	case 2: // a Service removed (its slices stay, orphaned)
		delete(w.services, id)
	case 3, 4, 5: // one slice replaced by a random one of the same Service
		_, sl := w.randomService(ns, name)
		if len(sl) > 0 {
			w.slices[sl[0].Namespace+"/"+sl[0].Name] = sl[0]
		}
	case 6: // a slice removed
		for _, k := range slices.Sorted(mapsKeys(w.slices)) {
			if w.rng.IntN(3) == 0 {
				delete(w.slices, k)
				break
			}
		}
	case 7: // a slice moved to another Service (its label changed)
		for _, k := range slices.Sorted(mapsKeys(w.slices)) {
			if w.rng.IntN(3) == 0 {
				es := w.slices[k].DeepCopy()
				_, other := w.key(12)
				es.Labels = map[string]string{discoveryv1.LabelServiceName: other}
				w.slices[k] = es
				break
			}
		}
	case 8: // a TrafficPolicy added, changed or removed
		pname := fmt.Sprintf("tp-%d", w.rng.IntN(3))
		if w.rng.IntN(3) == 0 {
			delete(w.policies, ns+"/"+pname)
			break
		}
		tp := &weirv1alpha1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pname}}
		tp.Spec.TargetRefs = []gatewayv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Group: "", Kind: "Service", Name: gatewayv1.ObjectName(name)}}}
		tp.Spec.LoadBalancer = &weirv1alpha1.LoadBalancer{Algorithm: []weirv1alpha1.Algorithm{"Random", "LeastRequest", "RoundRobin"}[w.rng.IntN(3)]}
		w.policies[ns+"/"+pname] = tp
	case 9: // a Gateway or route added, replaced or removed
		if w.rng.IntN(2) == 0 {
			if w.rng.IntN(3) == 0 {
				delete(w.gateways, "gw")
			} else {
				g := gw("gw", httpListener("http", 8080+int32(w.rng.IntN(2)), ""))
				g.Namespace = "a"
				w.gateways["gw"] = g
			}
			break
		}
		rname := fmt.Sprintf("r-%d", w.rng.IntN(2))
		if w.rng.IntN(3) == 0 {
			delete(w.routes, rname)
			break
		}
		r := route(rname, []string{"example.com"}, rule("r", pathMatch(gatewayv1.PathMatchPathPrefix, "/"+rname)))
		r.Spec.Rules[0].BackendRefs = []gatewayv1.HTTPBackendRef{backendRef(fmt.Sprintf("svc-%d", w.rng.IntN(12)), 80, 1)}
		r.Namespace = "a"
		w.routes[rname] = r
	case 10: // the node's zone changes, rarely
		if w.rng.IntN(4) == 0 {
			w.node.Zone = []string{"zone-a", "zone-b", ""}[w.rng.IntN(3)]
		}
	case 11: // nothing
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func sortedValues[V any](m map[string]V) []V {
	out := make([]V, 0, len(m))
	for _, k := range slices.Sorted(mapsKeys(m)) {
		out = append(out, m[k])
	}
	return out
}

// objects is the world as a source hands it over.
func (w *world) objects() *Objects {
	objs := &Objects{
		Services:       sortedValues(w.services),
		EndpointSlices: sortedValues(w.slices),
		Policies:       sortedValues(w.policies),
		Gateways:       sortedValues(w.gateways),
		HTTPRoutes:     sortedValues(w.routes),
	}
	if len(objs.Gateways) > 0 {
		objs.GatewayClasses = []*gatewayv1.GatewayClass{worldClass}
	}
	if !w.shuffle {
		return objs // a kube source's lists are sorted by namespace and name
	}
	w.rng.Shuffle(len(objs.EndpointSlices), func(i, j int) {
		objs.EndpointSlices[i], objs.EndpointSlices[j] = objs.EndpointSlices[j], objs.EndpointSlices[i]
	})
	return objs
}

var worldClass = gwClass()

// TestTranslatorEqualsTranslate applies random change sequences (seeded) and checks that
// the Translator's result is, after every change, exactly what a full Translate gives,
// and that its Delta names every Service whose entry is not the previous pointer.
func TestTranslatorEqualsTranslate(t *testing.T) {
	for seed := range uint64(60) {
		w := &world{rng: rand.New(rand.NewPCG(seed, 7)), services: map[string]*corev1.Service{},
			slices: map[string]*discoveryv1.EndpointSlice{}, policies: map[string]*weirv1alpha1.TrafficPolicy{},
			gateways: map[string]*gatewayv1.Gateway{}, routes: map[string]*gatewayv1.HTTPRoute{}, node: thisNode,
			shuffle: seed%2 == 1}
		tr := NewTranslator()
		var prev *Snapshot
		reused := 0
		for step := range 150 {
			for range 1 + w.rng.IntN(3) {
				w.step()
			}
			objs := w.objects()
			got := tr.Translate(objs, w.node)
			want := Translate(objs, w.node)
			delta := got.Delta
			got.Delta = nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d: incremental and full Translate differ", seed, step)
			}
			got.Delta = delta
			if delta == nil || delta.Base != uint64(step) {
				t.Fatalf("seed %d step %d: delta %+v, want base %d", seed, step, delta, step)
			}
			if prev != nil {
				listed := map[ServiceKey]bool{}
				for _, k := range delta.Services {
					listed[k] = true
				}
				if !slices.IsSortedFunc(delta.Services, ServiceKey.Compare) {
					t.Fatalf("seed %d step %d: delta not sorted: %v", seed, step, delta.Services)
				}
				for _, s := range got.Services {
					old := prev.Service(s.Key)
					if old != s && !listed[s.Key] {
						t.Fatalf("seed %d step %d: %s changed but is not in the delta", seed, step, s.Key)
					}
					if old == s {
						reused++
					}
				}
				for _, s := range prev.Services {
					if got.Service(s.Key) == nil && !listed[s.Key] {
						t.Fatalf("seed %d step %d: %s removed but is not in the delta", seed, step, s.Key)
					}
				}
				if !delta.Gateway && got.Gateway != prev.Gateway {
					t.Fatalf("seed %d step %d: gateway changed but the delta says not", seed, step)
				}
			}
			got.Version = uint64(step + 1)
			prev = got
		}
		if reused == 0 {
			t.Fatalf("seed %d: no Service was ever reused", seed)
		}
	}
}

// TestTranslatorReset makes the next Translate a full one without a base.
func TestTranslatorReset(t *testing.T) {
	tr := NewTranslator()
	objs := randomObjects(3)
	first := tr.Translate(objs, thisNode)
	first.Version = 9
	second := tr.Translate(objs, thisNode)
	if second.Delta.Base != 9 || len(second.Delta.Services) != 0 || second.Services[0] != first.Services[0] {
		t.Fatalf("unchanged objects: delta %+v", second.Delta)
	}
	if second.DeltaFrom(9) == nil || second.DeltaFrom(8) != nil || second.DeltaFrom(0) != nil {
		t.Fatal("DeltaFrom")
	}
	tr.Reset()
	third := tr.Translate(objs, thisNode)
	if third.Delta.Base != 0 || third.DeltaFrom(9) != nil || third.Services[0] == first.Services[0] {
		t.Fatalf("after Reset: delta %+v", third.Delta)
	}
}
