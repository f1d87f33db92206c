package kube

import (
	"fmt"
	"math/rand/v2"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weir.dev/weir/internal/model"
)

// BenchmarkRebuildFill is one rebuild's own cost at 10,000 Services: listing both kinds
// out of the informer caches (given here in cache order, unsorted) into model.Objects,
// when objects were only updated (keys unchanged) and when one was added.
//
//	go test -run '^$' -bench RebuildFill -benchmem ./internal/source/kube/
func BenchmarkRebuildFill(b *testing.B) {
	for _, added := range []bool{false, true} {
		b.Run(fmt.Sprintf("added=%v", added), func(b *testing.B) { benchmarkFill(b, added) })
	}
}

func benchmarkFill(b *testing.B, added bool) {
	const n = 10000
	svcs := make([]any, n)
	slices := make([]any, n)
	for i, j := range rand.Perm(n) {
		name := fmt.Sprintf("svc-%05d", j)
		svcs[i] = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name}}
		slices[i] = &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name + "-1"}}
	}
	fillSvc := fillInto[corev1.Service](func(o *model.Objects) *[]*corev1.Service { return &o.Services })
	fillES := fillInto[discoveryv1.EndpointSlice](func(o *model.Objects) *[]*discoveryv1.EndpointSlice { return &o.EndpointSlices })
	var objs model.Objects
	fillSvc(&objs, svcs)
	fillES(&objs, slices)
	extra := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "new"}}
	for i := 0; b.Loop(); i++ {
		items := svcs
		if added && i%2 == 0 {
			items = append(svcs[:len(svcs):len(svcs)], extra)
		}
		fillSvc(&objs, items)
		fillES(&objs, slices)
	}
	if objs.Services[0].Name != "svc-00000" || objs.EndpointSlices[n-1].Name != "svc-09999-1" {
		b.Fatal("not sorted")
	}
}

func TestFillIntoKeepsOrder(t *testing.T) {
	svc := func(ns, name string) any {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	steps := []struct {
		name  string
		items []any
		want  []string
	}{
		{"first", []any{svc("b", "x"), svc("a", "z"), svc("a", "y")}, []string{"a/y", "a/z", "b/x"}},
		{"same keys, other order", []any{svc("a", "y"), svc("b", "x"), svc("a", "z")}, []string{"a/y", "a/z", "b/x"}},
		{"one added", []any{svc("a", "y"), svc("b", "x"), svc("a", "z"), svc("a", "a")}, []string{"a/a", "a/y", "a/z", "b/x"}},
		{"one swapped for another, same count", []any{svc("a", "y"), svc("c", "c"), svc("a", "z"), svc("a", "a")}, []string{"a/a", "a/y", "a/z", "c/c"}},
		{"duplicate key, same count", []any{svc("a", "y"), svc("a", "y"), svc("a", "z"), svc("a", "a")}, []string{"a/a", "a/y", "a/y", "a/z"}},
		{"empty", nil, []string{}},
	}
	fill := fillInto[corev1.Service](func(o *model.Objects) *[]*corev1.Service { return &o.Services })
	var objs model.Objects
	for _, st := range steps {
		prev := objs.Services
		fill(&objs, st.items)
		got := []string{}
		for _, s := range objs.Services {
			got = append(got, s.Namespace+"/"+s.Name)
		}
		if fmt.Sprint(got) != fmt.Sprint(st.want) {
			t.Errorf("%s: got %v, want %v", st.name, got, st.want)
		}
		if len(prev) > 0 && len(objs.Services) > 0 && &prev[0] == &objs.Services[0] {
			t.Errorf("%s: the previous slice was reused", st.name)
		}
	}
}
