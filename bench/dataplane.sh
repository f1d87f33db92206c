#!/usr/bin/env bash
# Measures weir's L4 data planes (nftables, iptables, userspace, ebpf) at N Services × 10
# endpoints inside throw-away network namespaces: full sync, one-endpoint-change sync,
# kernel objects, RSS and first-packet connect latency to the last-added Service.
# Needs root. Bounded: a mode skips the next N when its full sync, extrapolated from
# the last N with the growth measured between the last two (at least linear), would
# exceed MAX_FULL_SYNC (iptables does, at the upper end). Writes the table to stdout
# and docs/dataplanes-bench.{json,svg}.
#
#   sudo bench/dataplane.sh                      # N = 100,1000,5000,10000
#   N=100,1000 MODES=nftables bench/dataplane.sh
#   VM=1 sudo bench/dataplane.sh                 # in the test VM (test/vm/vm.sh, a kernel with
#                                                # IP_VS): ipvs, nftables, iptables at N = 100,1000;
#                                                # writes docs/dataplanes-vm-bench.{json,svg}
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${VM:-}" = 1 ]; then
	N=${N:-100,1000}
	MODES=${MODES:-ipvs,nftables,iptables}
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	CGO_ENABLED=0 go build -o "$work/dpbench" ./bench/cmd/dpbench
	test/vm/vm.sh -t 3000 -o "$work/share" "$work/dpbench" -modes "$MODES" -n "$N" -connects 100 \
		-max-full-sync "${MAX_FULL_SYNC:-60s}" -json /share/out/dataplanes-vm-bench.json -svg /share/out/dataplanes-vm-bench.svg
	cp "$work"/share/out/dataplanes-vm-bench.* docs/
	exit
fi
N=${N:-100,1000,5000,10000}
MODES=${MODES:-nftables,iptables,userspace,ebpf}
MAX_FULL_SYNC=${MAX_FULL_SYNC:-30s}
bin=$(mktemp -d)/dpbench
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./bench/cmd/dpbench
timeout 600 "$bin" -modes "$MODES" -n "$N" -max-full-sync "$MAX_FULL_SYNC" \
	-json docs/dataplanes-bench.json -svg docs/dataplanes-bench.svg
