#!/usr/bin/env bash
# Tear down what test/cluster/up.sh started: every pod's containers, the components (by the
# pids up.sh recorded), the bridge, the guard table, weir's nftables tables, and the state.
#   test/cluster/down.sh            # stop and remove the state
#   KEEP_STATE=1 test/cluster/down.sh   # stop, keep logs and state for a look
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
log() { printf '%s down: %s\n' "$(date -u +%T)" "$*" >&2; }

stop() { # stop NAME: SIGTERM the process group up.sh started, then SIGKILL after 10 s
	local f="$RUN/$1.pid" pid
	[[ -f "$f" ]] || return 0
	pid="$(cat "$f")"
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
		for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
		kill -KILL -- "-$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

log "kubelet"
stop kubelet
# Pods: remove them through the CRI so containerd's shims and the CNI plugin clean up.
if [[ -S "$CONTAINERD_SOCK" ]]; then
	ctr="ctr --address $CONTAINERD_SOCK -n k8s.io"
	for t in $($ctr tasks ls -q 2>/dev/null); do $ctr tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
	sleep 1
	for t in $($ctr tasks ls -q 2>/dev/null); do $ctr tasks delete -f "$t" >/dev/null 2>&1; done
	for c in $($ctr containers ls -q 2>/dev/null); do $ctr containers delete "$c" >/dev/null 2>&1; done
fi
log "control plane, containerd"
for c in kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do stop "$c"; done
# Shims (containerd-shim-runc-v2) live in their own groups; end the ones of this cluster.
for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
log "network"
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-'); do ip netns delete "$ns" 2>/dev/null; done
ip link delete "$BRIDGE" 2>/dev/null
nft delete table inet "$GUARD_TABLE" 2>/dev/null
# weir's own tables (nftables mode), as `weir cleanup` would remove them.
for t in $(nft list tables 2>/dev/null | awk '$3 ~ /^weir/ && $3 != "'"$GUARD_TABLE"'" {print $2 " " $3}' | tr ' ' ':'); do
	nft delete table "${t%%:*}" "${t##*:}" 2>/dev/null
done
# The kubelet's own iptables chains (KUBE-FIREWALL and its canaries).
if command -v iptables >/dev/null; then
	for ipt in iptables ip6tables; do
		$ipt -t filter -D INPUT -j KUBE-FIREWALL 2>/dev/null
		$ipt -t filter -D OUTPUT -j KUBE-FIREWALL 2>/dev/null
		for t in filter nat mangle; do
			for c in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
				$ipt -t $t -F $c 2>/dev/null && $ipt -t $t -X $c 2>/dev/null
			done
		done
	done
fi
# Mounts left under the kubelet's and containerd's directories.
grep -E " ($WEIR_CLUSTER_DIR|$RUN)/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
rm -rf "$RUN"
if [[ -z "${KEEP_STATE:-}" ]]; then
	rm -rf "$WEIR_CLUSTER_DIR"
fi
log "done"
