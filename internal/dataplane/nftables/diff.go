package nftables

import (
	"hash/maphash"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/knftables"

	"weir.dev/weir/internal/model"
)

// owners records which Service owns each map or set element written, so that two
// Services never fight over a key. It is keyed by a 64-bit hash of the element's id
// rather than the id's text, and points at the Service's owner record rather than
// holding its key: at 100,000 elements that is ~4 MB instead of ~20. Two ids colliding
// (odds ~10^-9 at that size, with a seed an outsider cannot know) would only make the
// later Service's element look taken.
type owners map[uint64]*owner

// owner stands for one Service in owners; its serviceStates hand it on from one to
// the next, so that the elements a Service keeps stay its own.
type owner struct{ key model.ServiceKey }

var ownerSeed = maphash.MakeSeed()

func (o owners) get(id string) (*owner, bool) {
	k, ok := o[maphash.String(ownerSeed, id)]
	return k, ok
}

func (o owners) set(id string, who *owner) { o[maphash.String(ownerSeed, id)] = who }

func (o owners) del(id string) { delete(o, maphash.String(ownerSeed, id)) }

// writer collects the operations of one table's transaction in an order the kernel
// accepts: new sets and chains first (rules refer to them), then chain contents, then
// map elements, and last the chains and sets nothing refers to any more.
type writer struct {
	addSets     []knftables.Object
	addChains   []knftables.Object
	rules       []knftables.Object // flushes and rules, in order
	flushes     map[int]bool       // indexes in rules that are flushes
	delElements []knftables.Object
	addElements []element
	delChains   []knftables.Object
	delSets     []knftables.Object
	// initial holds the reference count, before this sync, of every shared object
	// (hairpin element "h|key" or shared chain "c|name") a change touched.
	initial map[string]int
}

func newWriter() *writer {
	return &writer{flushes: map[int]bool{}, initial: map[string]int{}}
}

func (w *writer) ref(refs map[string]int, key string, delta int) {
	if _, ok := w.initial[key]; !ok {
		w.initial[key] = refs[key]
	}
	refs[key] += delta
	if refs[key] == 0 {
		delete(refs, key)
	}
}

// diff records what turns old into new for the Service key. Either may be nil.
func (w *writer) diff(log *slog.Logger, who *owner, old, new *serviceObjects, owners owners, refs map[string]int) {
	if old == nil {
		old = &serviceObjects{}
	}
	if new == nil {
		new = &serviceObjects{}
	}
	for _, name := range slices.Sorted(maps.Keys(new.sets)) {
		if timeout, ok := old.sets[name]; !ok || timeout != new.sets[name] {
			w.addSets = append(w.addSets, affinitySet(name, new.sets[name]))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(new.chains)) {
		rules := new.chains[name]
		oldRules, existed := old.chains[name]
		if existed && slices.Equal(oldRules, rules) {
			continue
		}
		if existed {
			w.flushes[len(w.rules)] = true
			w.rules = append(w.rules, &knftables.Chain{Name: name})
		} else {
			w.addChains = append(w.addChains, &knftables.Chain{Name: name})
		}
		for _, r := range rules {
			w.rules = append(w.rules, &knftables.Rule{Chain: name, Rule: r})
		}
	}
	for _, e := range old.elements {
		if ne, ok := new.element(e.id); ok && ne.value == e.value {
			continue
		}
		if owner, _ := owners.get(e.id); owner != who {
			continue // another Service owns it
		}
		owners.del(e.id)
		w.delElements = append(w.delElements, e.object(false))
	}
	for _, e := range new.elements {
		owner, taken := owners.get(e.id)
		if oe, ok := old.element(e.id); ok && oe.value == e.value && owner == who {
			continue
		}
		if taken && owner != who {
			log.Warn("two Services claim the same frontend; keeping the first", "frontend", e.key, "kept", owner.key, "ignored", who.key)
			continue
		}
		owners.set(e.id, who)
		w.addElements = append(w.addElements, e)
	}
	for _, k := range new.hairpin {
		w.ref(refs, "h|"+k, 1)
	}
	for _, k := range old.hairpin {
		w.ref(refs, "h|"+k, -1)
	}
	for _, name := range new.shared {
		w.ref(refs, "c|"+name, 1)
	}
	for _, name := range old.shared {
		w.ref(refs, "c|"+name, -1)
	}
	for _, name := range slices.Sorted(maps.Keys(old.chains)) {
		if _, ok := new.chains[name]; !ok {
			w.delChains = append(w.delChains, &knftables.Chain{Name: name})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(old.sets)) {
		if timeout, ok := new.sets[name]; !ok || timeout != old.sets[name] {
			w.delSets = append(w.delSets, &knftables.Set{Name: name})
		}
	}
}

func affinitySet(name string, timeout time.Duration) *knftables.Set {
	return &knftables.Set{
		Name:    name,
		Type:    "", // filled by the caller's family
		Flags:   []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag},
		Timeout: ptr(timeout),
	}
}

// write appends the collected operations to tx; refs are the reference counts after
// this sync.
func (w *writer) write(tx *knftables.Transaction, f ipFamily, refs map[string]int) {
	var addShared, delShared, addHairpin, delHairpin []string
	for _, k := range slices.Sorted(maps.Keys(w.initial)) {
		before, after := w.initial[k], refs[k]
		kind, name, _ := strings.Cut(k, "|")
		switch {
		case before == 0 && after > 0 && kind == "c":
			addShared = append(addShared, name)
		case before > 0 && after == 0 && kind == "c":
			delShared = append(delShared, name)
		case before == 0 && after > 0:
			addHairpin = append(addHairpin, name)
		case before > 0 && after == 0:
			delHairpin = append(delHairpin, name)
		}
	}
	for _, s := range w.addSets {
		s.(*knftables.Set).Type = f.addrType
		tx.Add(s)
	}
	for _, name := range addShared {
		tx.Add(&knftables.Chain{Name: name})
	}
	for _, c := range w.addChains {
		tx.Add(c)
	}
	for _, name := range addShared {
		for _, r := range sharedChainRules(f, name) {
			tx.Add(&knftables.Rule{Chain: name, Rule: r})
		}
	}
	for i, r := range w.rules {
		if w.flushes[i] {
			tx.Flush(r)
		} else {
			tx.Add(r)
		}
	}
	for _, e := range w.delElements {
		tx.Delete(e)
	}
	for _, k := range delHairpin {
		tx.Delete(newElement(setHairpin, k, "").object(false))
	}
	for _, e := range w.addElements {
		tx.Add(e.object(true))
	}
	for _, k := range addHairpin {
		tx.Add(newElement(setHairpin, k, "").object(false))
	}
	for _, c := range w.delChains {
		tx.Delete(c)
	}
	// Shared chains go last, the ext- ones first: they jump to the plain ones.
	slices.SortFunc(delShared, func(a, b string) int {
		ea, eb := strings.HasPrefix(a, "ext-"), strings.HasPrefix(b, "ext-")
		if ea != eb {
			if ea {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, name := range delShared {
		tx.Delete(&knftables.Chain{Name: name})
	}
	for _, s := range w.delSets {
		tx.Delete(s)
	}
}
