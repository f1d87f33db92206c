#!/usr/bin/env bash
# Both upstream judges against a fresh one-node cluster, then tear it down: what CI runs.
#   1. the Kubernetes e2e [sig-network] [Conformance] tests (Services, DNS, EndpointSlice,
#      EndpointSliceMirroring, Conntrack) with two ginkgo processes;
#   2. the Gateway API conformance suite (profiles GATEWAY-HTTP, GATEWAY-GRPC, GATEWAY-TLS).
# Installs the Debian packages the cluster needs when missing and builds what is not cached
# (hack/kube-binaries.sh all, test/cluster/images.sh, the conformance test binary). Exits
# non-zero when a judge fails or the cluster does not come up; the cluster is always torn
# down, and a rule or a KUBE chain left behind is a failure too.
#
#   test/cluster/ci.sh
#   KEEP_STATE=1 test/cluster/ci.sh        # keep logs under $WEIR_CLUSTER_DIR for a look
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
step() { printf '\n=== cluster ci: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
OUT="${OUT:-$(mktemp -d /tmp/weir-cluster-ci.XXXXXX)}" # survives down.sh

need=()
for b in containerd:containerd runc:runc openssl:openssl nft:nftables; do
	command -v "${b%%:*}" >/dev/null || need+=("${b##*:}")
done
[[ -x "$CNI_BIN/bridge" ]] || need+=(containernetworking-plugins)
if [[ ${#need[@]} -gt 0 ]]; then
	step "Debian packages: ${need[*]}"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || exit 1
fi

step "binaries and images (cached under \$HOME/.cache/weir)"
nice -n 10 "$repo/hack/kube-binaries.sh" all >/dev/null || exit 1
nice -n 10 "$here/images.sh" >/dev/null || exit 1

fail=()
step "up"
trap '"$here/down.sh" >/dev/null 2>&1' EXIT
if [[ -f "$RUN/up" ]]; then
	echo "a cluster is already up: test/cluster/down.sh first" >&2
	exit 1
fi
if ! "$here/up.sh"; then
	KEEP_STATE=1 "$here/down.sh" >/dev/null 2>&1
	tail -20 "$LOGS"/*.log >&2
	exit 1
fi

step "Kubernetes e2e [sig-network] [Conformance]"
FOCUS='\[sig-network\] (Services|DNS|EndpointSlice|EndpointSliceMirroring|Conntrack).*\[Conformance\]' \
	NODES="${NODES:-2}" TIMEOUT="${E2E_TIMEOUT:-30m}" OUT="$OUT/e2e" "$here/e2e.sh" || fail+=(e2e)

step "Gateway API conformance"
REPORT="$OUT/gateway-api-report.yaml" LOG="$OUT/gateway-conformance.log" \
	TIMEOUT="${GATEWAY_TIMEOUT:-40m}" "$here/gateway-conformance.sh" || fail+=(gateway-api)
grep -E '^\s*--- FAIL' "$OUT/gateway-conformance.log" | head -40 >&2

step "down"
trap - EXIT
"$here/down.sh"
left="$(nft list tables 2>/dev/null | grep -E "weir|$GUARD_TABLE" || true)"
kube="$(iptables-save 2>/dev/null | grep -c KUBE || true)"
if [[ -n "$left" || "$kube" != 0 ]]; then
	echo "left behind by the cluster: tables [$left], $kube KUBE lines in iptables-save" >&2
	fail+=(teardown)
fi

echo "results in $OUT"
if [[ ${#fail[@]} -gt 0 ]]; then
	echo "cluster ci: FAILED: ${fail[*]}" >&2
	exit 1
fi
echo "cluster ci: both judges pass"
