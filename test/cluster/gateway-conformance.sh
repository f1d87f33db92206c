#!/usr/bin/env bash
# Run the Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance at the
# version in weir's go.mod) against the cluster of test/cluster/up.sh, with GatewayClass
# "weir", the profiles GATEWAY-HTTP, GATEWAY-GRPC and GATEWAY-TLS, and every Extended
# feature weir claims. Writes the ConformanceReport to $REPORT (default
# docs/conformance/gateway-api-<version>-report.yaml) and the log to $LOG.
#
#   test/cluster/gateway-conformance.sh
#   RUN_TEST=HTTPRouteSimpleSameNamespace test/cluster/gateway-conformance.sh   # one test
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
CACHE="${WEIR_CACHE:-$HOME/.cache/weir}"
VERSION="$(cd "$repo" && go list -m -f '{{.Version}}' sigs.k8s.io/gateway-api)"
REPORT="${REPORT:-$repo/docs/conformance/gateway-api-$VERSION-report.yaml}"
LOG="${LOG:-$WEIR_CLUSTER_DIR/logs/gateway-conformance.log}"
PROFILES="${PROFILES:-GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS}"
# The Extended features weir implements (docs/gateway.md, "What is served").
FEATURES="${FEATURES:-$(tr -s ' \n' ',' <"$here/gateway-features.txt" | sed 's/^,//; s/,$//')}"

gw="$CACHE/build/gateway-conformance-$VERSION"
[[ -f "$gw/go.mod" ]] || "$here/images.sh" >/dev/null # sets up the module
# The suite's test binary, built once and kept (its manifests are embedded in it).
BIN="$CACHE/bin/gateway-conformance-$VERSION.test"
if [[ ! -x "$BIN" ]]; then
	(cd "$gw" && GOFLAGS=-mod=mod GOWORK=off nice -n 10 \
		go test -c -o "$BIN.new" sigs.k8s.io/gateway-api/conformance) && mv "$BIN.new" "$BIN"
fi
[[ -f "$KUBECONFIG" ]] || { echo "no cluster: test/cluster/up.sh first" >&2; exit 1; }
mkdir -p "$(dirname "$REPORT")" "$(dirname "$LOG")"

args=(
	--gateway-class=weir
	--conformance-profiles="$PROFILES"
	--supported-features="$FEATURES"
	--organization=weir --project=weir --url=https://weir.dev --contact=weir-maintainers
	--version="$(cd "$repo" && git describe --always --dirty 2>/dev/null || echo dev)"
	--mode=default
	--report-output="$REPORT"
	--cleanup-base-resources=false
)
[[ -n "${RUN_TEST:-}" ]] && args+=(--run-test="$RUN_TEST")
[[ -n "${SKIP_TESTS:-}" ]] && args+=(--skip-tests="$SKIP_TESTS")
start=$SECONDS
set +e
"$BIN" -test.timeout "${TIMEOUT:-60m}" -test.run '^TestConformance$' -test.v "${args[@]}" >"$LOG" 2>&1
rc=$?
set -e
echo "gateway conformance: exit $rc after $((SECONDS - start)) s; log $LOG; report $REPORT" >&2
grep -E '^\s*--- (PASS|FAIL|SKIP)' "$LOG" | sed 's/ (.*//' | awk '{print $2}' | sort | uniq -c >&2 || true
exit $rc
