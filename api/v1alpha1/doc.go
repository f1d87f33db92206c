// Package v1alpha1 holds weir's own policy kind, TrafficPolicy (weir.dev/v1alpha1).
//
// A TrafficPolicy carries the settings that neither Kubernetes nor Gateway API has a
// standard field for: the scheduler, health checks, outlier detection, retries, the
// circuit breaker, slow start, rate limits and canary analysis. It attaches to Services
// (and, for L7 settings, HTTPRoutes) by targetRefs, as Gateway API policy attachment does.
// The same YAML works standalone and in a cluster, where deploy/crds holds its CRD.
//
// +kubebuilder:object:generate=true
// +groupName=weir.dev
package v1alpha1
