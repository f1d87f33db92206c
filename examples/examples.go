// Package examples holds weir's example manifests, embedded so that `weir demo` works
// from any directory.
package examples

import "embed"

// Quickstart is examples/quickstart: the manifests `weir demo` runs.
//
//go:embed quickstart/*.yaml
var Quickstart embed.FS
