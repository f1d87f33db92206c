// Package crds holds the CustomResourceDefinitions weir serves: weir's TrafficPolicy and
// the Gateway API's standard channel (sigs.k8s.io/gateway-api, Apache-2.0, copied as
// released). weir validates manifests of these kinds against the schemas and CEL rules
// here, as the API server does once they are installed.
package crds

import "embed"

// FS holds the CRD files: weir.dev_trafficpolicies.yaml and gateway-api/*.yaml.
//
//go:embed weir.dev_trafficpolicies.yaml gateway-api/*.yaml
var FS embed.FS
