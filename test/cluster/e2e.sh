#!/usr/bin/env bash
# Run the Kubernetes e2e suite's [sig-network] Service, DNS, EndpointSlice and Conntrack
# tests (e2e.test of k8s.io/kubernetes at the version hack/kube-binaries.sh builds) against
# the cluster of test/cluster/up.sh, where weir is the only service proxy and DNS server.
# JUnit and the log go to $OUT (default $WEIR_CLUSTER_DIR/e2e).
#
#   test/cluster/e2e.sh                         # the selection below
#   FOCUS='\[sig-network\] DNS should provide DNS for services' test/cluster/e2e.sh
#   # NetworkPolicy (47 specs; weir runs with --network-policy; no SCTP in this kernel):
#   FOCUS='\[sig-network\] Netpol' SKIP='\[Feature:SCTPConnectivity\]|\[Serial\]|\[Disruptive\]|\[Slow\]' test/cluster/e2e.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
"$repo/hack/kube-binaries.sh" e2e >/dev/null
OUT="${OUT:-$WEIR_CLUSTER_DIR/e2e}"
mkdir -p "$OUT"
[[ -f "$KUBECONFIG" ]] || { echo "no cluster: test/cluster/up.sh first" >&2; exit 1; }

# What a one-node cluster without a cloud can run. Skipped: tests that need several nodes
# say so themselves (SkipUnlessNodeCountIsAtLeast); LoadBalancer and ESIPP need a cloud
# load balancer; IPv6/DualStack need an IPv6 pod network (this one is IPv4); [Serial],
# [Disruptive] and [Slow] restart or load components; [Feature:*] are opt-in features.
FOCUS="${FOCUS:-\[sig-network\] (Services|DNS|EndpointSlice|EndpointSliceMirroring|Conntrack|Service endpoints latency)}"
SKIP="${SKIP:-\[Serial\]|\[Disruptive\]|\[Slow\]|\[Flaky\]|\[Feature:[^]]*\]|LoadBalancer|ESIPP|IPv6|DualStack|\[Alpha\]|\[Beta\]}"
start=$SECONDS
set +e
"$KBIN/ginkgo" --nodes="${NODES:-1}" --timeout="${TIMEOUT:-3h}" --no-color \
	--focus="$FOCUS" --skip="$SKIP" --junit-report=junit.xml --output-dir="$OUT" \
	"$KBIN/e2e.test" -- \
	--kubeconfig="$KUBECONFIG" --provider=local --num-nodes=1 \
	--dns-domain="$CLUSTER_DOMAIN" --report-dir="$OUT" --disable-log-dump \
	--minStartupPods=0 --e2e-verify-service-account=false \
	>"$OUT/e2e.log" 2>&1
rc=$?
set -e
echo "e2e: exit $rc after $((SECONDS - start)) s; log $OUT/e2e.log; junit $OUT/junit.xml" >&2
grep -E '^(Ran [0-9]+ of|PASS|FAIL)|Passed \| [0-9]+ Failed' "$OUT/e2e.log" | tail -3 >&2 || true
exit $rc
