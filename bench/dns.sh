#!/usr/bin/env bash
# bench/dns.sh: weir's cluster DNS against CoreDNS, with dnsperf sending A lookups spread
# over 10,000 Services.
#
# Both servers hold the same records: weir serves a generated Snapshot of ClusterIP
# Services (bench/cmd/dnsbench); CoreDNS serves the same names from its `file` plugin with
# a zone file written by the same program. Each server in turn is pinned to one CPU
# (SERVER_CPU) and dnsperf to another (CLIENT_CPU), on loopback only:
#   1. saturation: dnsperf as fast as it can for DURATION s -> QPS, average latency
#   2. fixed rate: LAT_QPS queries/s for LAT_DURATION s, every latency recorded -> p50, p99
#   3. RSS (VmRSS) and peak RSS (VmHWM) of the server after the runs
#
# Environment: SERVICES (10000) DURATION (15) LAT_QPS (5000) LAT_DURATION (10)
# SERVER_CPU (0) CLIENT_CPU (1) COREDNS_VERSION (v1.15.0) WEIR_PORT (5391) COREDNS_PORT (5392)
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICES=${SERVICES:-10000}
DURATION=${DURATION:-15}
LAT_QPS=${LAT_QPS:-5000}
LAT_DURATION=${LAT_DURATION:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
WEIR_PORT=${WEIR_PORT:-5391}
COREDNS_PORT=${COREDNS_PORT:-5392}
BIN="$HOME/.cache/weir/bin"

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if ! command -v dnsperf >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf >/dev/null
fi

coredns="$BIN/coredns"
coredns_note=""
if [ ! -x "$coredns" ]; then
  echo "building CoreDNS $COREDNS_VERSION into $BIN (once) ..." >&2
  mkdir -p "$BIN"
  if ! (cd "$work" && GOFLAGS= GOBIN="$BIN" go install "github.com/coredns/coredns@$COREDNS_VERSION") >"$work/coredns-build.log" 2>&1; then
    coredns_note="CoreDNS $COREDNS_VERSION could not be built: $(tail -3 "$work/coredns-build.log" | tr '\n' ' ')"
    coredns=""
  fi
fi

go build -o "$work/dnsbench" ./bench/cmd/dnsbench
"$work/dnsbench" -services "$SERVICES" -write-zone "$work/cluster.local.zone" -write-queries "$work/queries.txt"
cat >"$work/Corefile" <<EOF
cluster.local:$COREDNS_PORT {
    bind 127.0.0.1
    file $work/cluster.local.zone
}
EOF

# percentile P FILE: the P-th percentile of the latencies (last field) of dnsperf -v lines.
percentile() {
  grep '^> ' "$2" | awk '{print $NF}' | sort -g | awk -v p="$1" '{v[NR]=$1} END {i=int(NR*p/100+0.999); if (i<1) i=1; printf "%.3f", v[i]*1000}'
}

# measure NAME PORT CMD...: start the server pinned to SERVER_CPU, run dnsperf pinned to
# CLIENT_CPU, and print one result line: name qps avg_ms p50_ms p99_ms rss_mb hwm_mb lost.
measure() {
  local name=$1 port=$2
  shift 2
  taskset -c "$SERVER_CPU" "$@" >"$work/$name.log" 2>&1 &
  server_pid=$!
  "$work/dnsbench" -wait "127.0.0.1:$port"
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -l 2 >/dev/null 2>&1 # warm-up
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -l "$DURATION" -c 8 -q 256 >"$work/$name.sat" 2>&1
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -l "$LAT_DURATION" -Q "$LAT_QPS" -v >"$work/$name.lat" 2>&1
  local rss hwm qps avg lost p50 p99
  rss=$(awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$server_pid/status")
  hwm=$(awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/$server_pid/status")
  qps=$(awk '/Queries per second/{printf "%.0f", $4}' "$work/$name.sat")
  avg=$(awk '/Average Latency/{printf "%.3f", $4*1000}' "$work/$name.sat")
  lost=$(awk '/Queries lost/{print $3}' "$work/$name.sat")
  p50=$(percentile 50 "$work/$name.lat")
  p99=$(percentile 99 "$work/$name.lat")
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  echo "$name $qps $avg $p50 $p99 $rss $hwm $lost"
}

echo "weir DNS vs CoreDNS: A lookups over $SERVICES Services, server on CPU $SERVER_CPU, dnsperf on CPU $CLIENT_CPU"
echo "saturation ${DURATION}s (-c 8 -q 256); latency at ${LAT_QPS} QPS for ${LAT_DURATION}s; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
weir=$(measure weir "$WEIR_PORT" "$work/dnsbench" -services "$SERVICES" -addr "127.0.0.1:$WEIR_PORT")
core=""
if [ -n "$coredns" ]; then
  core=$(measure coredns "$COREDNS_PORT" "$coredns" -conf "$work/Corefile")
fi

printf '\n| server | QPS (saturated) | avg latency ms (saturated) | p50 ms @ %s QPS | p99 ms @ %s QPS | RSS MiB | peak RSS MiB | lost |\n' "$LAT_QPS" "$LAT_QPS"
printf '|---|---|---|---|---|---|---|---|\n'
read -r _ wq wa w50 w99 wr wh wl <<<"$weir"
printf '| weir (dnsbench, %s Services) | %s | %s | %s | %s | %s | %s | %s |\n' "$SERVICES" "$wq" "$wa" "$w50" "$w99" "$wr" "$wh" "$wl"
if [ -n "$core" ]; then
  read -r _ cq ca c50 c99 cr ch cl <<<"$core"
  ver=$("$coredns" -version 2>/dev/null | head -1 || true)
  printf '| %s, file plugin, same records | %s | %s | %s | %s | %s | %s | %s |\n' "${ver:-CoreDNS $COREDNS_VERSION}" "$cq" "$ca" "$c50" "$c99" "$cr" "$ch" "$cl"
  awk -v wq="$wq" -v cq="$cq" -v w99="$w99" -v c99="$c99" -v wr="$wr" -v cr="$cr" 'BEGIN {
    printf "\nweir/CoreDNS: QPS %.2fx (target >= 1.2), p99 %.2fx (target <= 1), RSS %.2fx (target <= 1)\n", wq/cq, w99/c99, wr/cr }'
else
  echo
  echo "${coredns_note:-CoreDNS not available}"
fi
