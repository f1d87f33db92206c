package manifest

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in the manifests, with where it is:
//
//	web.yaml:14: Service default/web: spec.ports[0].port: 70000 is not in 1..65535
//
// Line is the line of the field when it is in the file, else the line the document
// starts on (zero when the problem is not in a document, e.g. an unreadable file).
// Object is "Kind namespace/name" (or "Kind name" for cluster-scoped kinds) and may be
// empty when the document could not be decoded far enough to name it. Field is the JSON
// path of the field ("spec.ports[0].port") and may be empty.
type Error struct {
	File    string
	Line    int
	Object  string
	Field   string
	Message string
}

func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	for _, part := range []string{e.Object, e.Field, e.Message} {
		if part != "" {
			b.WriteString(": ")
			b.WriteString(part)
		}
	}
	return b.String()
}

// Errors is every problem Load found, sorted by file and line.
type Errors []Error

// Error joins the errors, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (es Errors) sort() {
	slices.SortStableFunc(es, func(a, b Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
}
