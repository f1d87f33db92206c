package main

import (
	"fmt"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"

	"weir.dev/weir/internal/manifest"
)

// registerMaxManifestSize adds --max-manifest-size, shared by run, demo and validate.
func registerMaxManifestSize(fl *pflag.FlagSet, v *string) {
	def := resource.NewQuantity(manifest.DefaultMaxFileBytes, resource.BinarySI).String()
	fl.StringVar(v, "max-manifest-size", def, "largest manifest file read, as a Kubernetes quantity (64Mi, 1Gi); a larger file is an error and is never read into memory")
}

// parseMaxManifestSize is --max-manifest-size in bytes; empty is the default (0).
func parseMaxManifestSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("--max-manifest-size %q: %w", s, err)
	}
	n, ok := q.AsInt64()
	if !ok || n <= 0 {
		return 0, fmt.Errorf("--max-manifest-size %q: want a positive size in bytes, such as 16Mi", s)
	}
	return n, nil
}
