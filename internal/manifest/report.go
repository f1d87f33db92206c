package manifest

import (
	"fmt"
	"strings"
)

// Report says what Load read.
type Report struct {
	// Files is the number of manifest files read.
	Files int
	// Loaded counts the objects weir uses, by kind (Endpoints counted as read, before
	// they are mirrored into EndpointSlices).
	Loaded map[string]int
	// Skipped counts the objects of kinds weir does not use, by kind.
	Skipped map[string]int
	// Mirrored is the number of EndpointSlices made from core/v1 Endpoints.
	Mirrored int
	// NotMirrored counts Endpoints not mirrored because their Service has a selector
	// and EndpointSlices of its own in the files (Kubernetes mirrors only Endpoints of
	// Services without a selector).
	NotMirrored int
	// Warnings are valid manifests that probably do not do what was meant, e.g. an
	// EndpointSlice without the kubernetes.io/service-name label. They do not stop a load.
	Warnings Errors
}

func newReport() *Report {
	return &Report{Loaded: map[string]int{}, Skipped: map[string]int{}}
}

// Summary is one line for logs and the CLI, e.g.
// "3 files: 2 Service, 2 EndpointSlice; skipped 2 Deployment, 1 ConfigMap (kinds weir does not use)".
func (r *Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", r.Files, plural(r.Files, "file", "files"))
	b.WriteString(": ")
	b.WriteString(counts(r.Loaded, "no objects"))
	if r.Mirrored > 0 {
		fmt.Fprintf(&b, " (%d %s mirrored from Endpoints)", r.Mirrored, plural(r.Mirrored, "EndpointSlice", "EndpointSlices"))
	}
	if r.NotMirrored > 0 {
		fmt.Fprintf(&b, " (%d Endpoints not mirrored: their Services have selectors and EndpointSlices)", r.NotMirrored)
	}
	if n := len(r.Warnings); n > 0 {
		fmt.Fprintf(&b, "; %d %s", n, plural(n, "warning", "warnings"))
	}
	if len(r.Skipped) > 0 {
		b.WriteString("; skipped ")
		b.WriteString(counts(r.Skipped, ""))
		b.WriteString(" (kinds weir does not use)")
	}
	return b.String()
}

func counts(m map[string]int, none string) string {
	if len(m) == 0 {
		return none
	}
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
