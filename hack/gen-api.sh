#!/usr/bin/env bash
# Regenerates api/v1alpha1's deepcopy functions and deploy/crds from the Go types.
# TestCRDMatchesGoTypes (api/v1alpha1) fails when the committed CRD drifts from the types.
set -euo pipefail
cd "$(dirname "$0")/.."
CONTROLLER_GEN="go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0"
$CONTROLLER_GEN object paths=./api/...
$CONTROLLER_GEN crd paths=./api/... output:crd:artifacts:config=deploy/crds
