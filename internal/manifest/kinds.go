package manifest

import (
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/runtime/schema"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
)

// knownKinds lists, for every API group Kubernetes or weir's CRDs define, the kinds in
// it: client-go's scheme (every built-in group), the Gateway API's Go types and the
// CRDs weir serves.
var knownKinds = sync.OnceValue(func() map[string][]string {
	kinds := map[string][]string{}
	add := func(group, kind string) {
		if !slices.Contains(kinds[group], kind) {
			kinds[group] = append(kinds[group], kind)
		}
	}
	for gvk := range clientscheme.Scheme.AllKnownTypes() {
		add(gvk.Group, gvk.Kind)
	}
	for gvk := range newLoader().scheme.AllKnownTypes() {
		add(gvk.Group, gvk.Kind)
	}
	if set, err := crdSchemas(); err == nil {
		for group, ks := range set.kinds {
			for _, k := range ks {
				add(group, k)
			}
		}
	}
	for _, ks := range kinds {
		slices.Sort(ks)
	}
	return kinds
})

// unknownKind reports whether gk names a kind its group does not have (a typo such as
// "Sevrice" or "HTTPRoutes"), with the closest kind of the group as a suggestion. A
// group nobody here knows (a third party's CRDs) is not unknown: such kinds are skipped.
func unknownKind(gk schema.GroupKind) (suggestion string, unknown bool) {
	kinds, known := knownKinds()[gk.Group]
	if !known || slices.Contains(kinds, gk.Kind) {
		return "", false
	}
	best, bestDist := "", len(gk.Kind)/2+1
	for _, k := range kinds {
		if strings.HasSuffix(k, "List") || strings.HasSuffix(k, "Options") {
			continue
		}
		d := editDistance(strings.ToLower(gk.Kind), strings.ToLower(k))
		if d < bestDist || (d == bestDist && best != "" && len(k) < len(best)) {
			best, bestDist = k, d
		}
	}
	if bestDist > 3 {
		best = ""
	}
	return best, true
}

// groupName names an API group in messages.
func groupName(group string) string {
	if group == "" {
		return "the core API group (apiVersion v1)"
	}
	return "API group " + group
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
