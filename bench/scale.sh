#!/usr/bin/env bash
# End-to-end scale benchmark: a real kube-apiserver + etcd, N Services × 10 endpoints
# created through the API, and `weir run --kubeconfig … --mode nftables` (with the
# gateway and cluster DNS, as the DaemonSet runs it) beside kube-proxy in nftables mode
# when hack/kube-binaries.sh built one. Everything runs in a network namespace made for
# the run and deleted at the end, so no rule touches the host. Needs root and the
# binaries of hack/kube-binaries.sh (it does not build them).
#
#   sudo bench/scale.sh                          # N = 1000,10000, 3 rounds × 5 changes
#   N=1000 ROUNDS=1 sudo bench/scale.sh
#   PROXIES=weir N=10000 sudo bench/scale.sh     # weir alone
#   MODE=iptables N=1000 sudo bench/scale.sh     # both proxies in iptables mode
#   JSON=/tmp/scale.json sudo bench/scale.sh     # every sample
#   WORK=/var/tmp/weir-scale sudo bench/scale.sh # keep etcd (the objects) and logs for the next run
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000,10000}
ROUNDS=${ROUNDS:-3}
CHANGES=${CHANGES:-5}
work=$(mktemp -d)
ns="weirscale-$$"
cleanup() {
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/weir" ./cmd/weir
go build -o "$work/kubescale" ./bench/cmd/kubescale
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
# A node address that is not loopback, for node ports and kube-proxy's node IP.
ip netns exec "$ns" ip link add weir0 type veth peer name weir1
ip netns exec "$ns" ip addr add 10.250.0.1/24 dev weir0
ip netns exec "$ns" ip link set weir0 up
ip netns exec "$ns" ip link set weir1 up
args=(-weir "$work/weir" -n "$N" -rounds "$ROUNDS" -changes "$CHANGES")
if [[ -n "${WORK:-}" ]]; then
	mkdir -p "$WORK"
	args+=(-work "$WORK")
fi
[[ -n "${JSON:-}" ]] && args+=(-json "$JSON")
[[ -n "${KUBE_PROXY:-}" ]] && args+=(-kube-proxy "$KUBE_PROXY")
[[ -n "${PROXIES:-}" ]] && args+=(-proxies "$PROXIES")
[[ -n "${MODE:-}" ]] && args+=(-mode "$MODE")
WEIR_SCALE_NETNS="$ns" timeout "${TIMEOUT:-3600}" ip netns exec "$ns" "$work/kubescale" "${args[@]}"
