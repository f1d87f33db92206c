package file

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weir.dev/weir/internal/manifest"
	"weir.dev/weir/internal/model"
)

// maxNames is how many names of each kind of change one log line lists.
const maxNames = 5

// describeChanges says in one line what changed from old to new: the objects added (+),
// removed (-) and changed (~) of each kind, then, for each Service whose endpoints
// changed, the endpoint addresses added, removed and changed (conditions, node, zone).
// It is "" when nothing changed.
func describeChanges(old, new *model.Objects) string {
	var parts []string
	ov, nv := reflect.ValueOf(old).Elem(), reflect.ValueOf(new).Elem()
	for i := range nv.NumField() {
		if nv.Field(i).Kind() != reflect.Slice {
			continue
		}
		kind := nv.Type().Field(i).Type.Elem().Elem().Name()
		if kind == "EndpointSlice" {
			continue // described per Service below
		}
		if p := describeKind(kind, objectsOf(ov.Field(i)), objectsOf(nv.Field(i))); p != "" {
			parts = append(parts, p)
		}
	}
	if p := describeEndpoints(old.EndpointSlices, new.EndpointSlices); p != "" {
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

// objectsOf indexes a slice of API objects by namespace/name.
func objectsOf(v reflect.Value) map[string]any {
	out := make(map[string]any, v.Len())
	for i := range v.Len() {
		o, ok := v.Index(i).Interface().(metav1.Object)
		if !ok {
			continue
		}
		out[name(o.GetNamespace(), o.GetName())] = o
	}
	return out
}

func name(namespace, n string) string {
	if namespace == "" {
		return n
	}
	return namespace + "/" + n
}

func describeKind(kind string, old, new map[string]any) string {
	var added, removed, changed []string
	for k, o := range new {
		prev, ok := old[k]
		switch {
		case !ok:
			added = append(added, k)
		case !equality.Semantic.DeepEqual(prev, o):
			changed = append(changed, k)
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok {
			removed = append(removed, k)
		}
	}
	if len(added)+len(removed)+len(changed) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(kind)
	for _, g := range []struct {
		sign  string
		names []string
	}{{"+", added}, {"-", removed}, {"~", changed}} {
		if len(g.names) == 0 {
			continue
		}
		slices.Sort(g.names)
		b.WriteString(" " + g.sign)
		if len(g.names) > maxNames {
			fmt.Fprintf(&b, "%d (%s, …)", len(g.names), strings.Join(g.names[:maxNames], ", "))
		} else {
			b.WriteString(strings.Join(g.names, ", "+g.sign))
		}
	}
	return b.String()
}

// endpointState is what describeEndpoints compares for one endpoint address.
type endpointState struct {
	ready, serving, terminating bool
	node, zone                  string
	ports                       string
}

// endpointsByService gathers each Service's endpoint addresses from its slices.
func endpointsByService(ss []*discoveryv1.EndpointSlice) map[string]map[string]endpointState {
	out := map[string]map[string]endpointState{}
	for _, s := range ss {
		svc := s.Labels[manifest.ServiceNameLabel]
		if svc == "" {
			continue
		}
		key := name(s.Namespace, svc)
		if out[key] == nil {
			out[key] = map[string]endpointState{}
		}
		var ports []string
		for _, p := range s.Ports {
			if p.Port != nil {
				ports = append(ports, fmt.Sprint(*p.Port))
			}
		}
		for _, ep := range s.Endpoints {
			st := endpointState{
				ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				serving:     ep.Conditions.Serving == nil || *ep.Conditions.Serving,
				terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
				ports:       strings.Join(ports, ","),
			}
			if ep.NodeName != nil {
				st.node = *ep.NodeName
			}
			if ep.Zone != nil {
				st.zone = *ep.Zone
			}
			for _, a := range ep.Addresses {
				out[key][a] = st
			}
		}
	}
	return out
}

// describeEndpoints lists, per Service, the endpoint addresses added, removed and
// changed: "endpoints default/web +1 -2 ~1, default/db +3".
func describeEndpoints(old, new []*discoveryv1.EndpointSlice) string {
	o, n := endpointsByService(old), endpointsByService(new)
	keys := map[string]bool{}
	for k := range o {
		keys[k] = true
	}
	for k := range n {
		keys[k] = true
	}
	var svcs []string
	for k := range keys {
		var added, removed, changed int
		for a, st := range n[k] {
			prev, ok := o[k][a]
			switch {
			case !ok:
				added++
			case prev != st:
				changed++
			}
		}
		for a := range o[k] {
			if _, ok := n[k][a]; !ok {
				removed++
			}
		}
		if added+removed+changed == 0 {
			continue
		}
		d := k
		if added > 0 {
			d += fmt.Sprintf(" +%d", added)
		}
		if removed > 0 {
			d += fmt.Sprintf(" -%d", removed)
		}
		if changed > 0 {
			d += fmt.Sprintf(" ~%d", changed)
		}
		svcs = append(svcs, d)
	}
	if len(svcs) == 0 {
		return ""
	}
	slices.Sort(svcs)
	if len(svcs) > maxNames {
		return fmt.Sprintf("endpoints of %d Services: %s, …", len(svcs), strings.Join(svcs[:maxNames], ", "))
	}
	return "endpoints " + strings.Join(svcs, ", ")
}
