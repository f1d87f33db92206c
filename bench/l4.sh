#!/usr/bin/env bash
# bench/l4.sh: TCP throughput and short-connection rate through weir's userspace data
# plane, through HAProxy in TCP mode, and direct, in the same run, on loopback only.
#
#   bench/l4.sh                      # 1 GiB, 5 s of short connections, 3 rounds
#   BYTES=268435456 DURATION=2s ROUNDS=1 WORKERS=16 bench/l4.sh
#   WEIR=l4proxy bench/l4.sh         # the standalone data plane instead of `weir run`
#   PIN=1 bench/l4.sh                # both proxies pinned to the same CPUs (taskset -c 1)
#   BASE=HEAD~3 bench/l4.sh          # also weir built from that revision ("weir-base"), A/B
#
# Each figure is the median of ROUNDS runs; the order of the targets rotates every
# round. Prints a table and the weir/HAProxy ratios (target: ≥ 0.9), and the
# CPU time each proxy process spent per short connection (user+system from /proc),
# which is steadier than rates on a shared machine, and the context switches (voluntary +
# involuntary, all threads) each proxy made per short connection. Both proxies get the
# same CPUs: all of them by default, or taskset -c $PIN for both when PIN is set; the
# load generator and the backends are never pinned.
set -euo pipefail
cd "$(dirname "$0")/.."

BYTES=${BYTES:-1073741824}
DURATION=${DURATION:-5s}
WORKERS=${WORKERS:-32}
ROUNDS=${ROUNDS:-3}
WEIR=${WEIR:-cli}
PIN=${PIN:-}
pin=(); [ -n "$PIN" ] && pin=(taskset -c "$PIN")

SINK=127.0.0.1:9101 ECHO=127.0.0.1:9102
WEIR_IP=127.0.20.1 HAPROXY_IP=127.0.20.2 BASE_IP=127.0.20.3
BASE=${BASE:-}

if ! command -v haproxy >/dev/null; then
	echo "installing haproxy" >&2
	apt-get update -qq >/dev/null && apt-get install -y -qq haproxy >/dev/null
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/l4load" ./bench/cmd/l4load
"$tmp/l4load" serve -sink $SINK -echo $ECHO & pids+=($!)

# start_weir SRC IP NAME: builds weir (or l4proxy) from the tree SRC and runs it with
# frontends IP:9001 (sink) and IP:9002 (echo); sets started_pid and started_is.
start_weir() {
	local src=$1 ip=$2 name=$3 dir="$tmp/$3"
	mkdir -p "$dir/manifests"
	if [ "$WEIR" = cli ] && (cd "$src" && go build -o "$dir/weir" ./cmd/weir 2>/dev/null); then
		cat >"$dir/manifests/bench.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec:
  clusterIP: $ip
  ports:
  - {name: sink, port: 9001, protocol: TCP}
  - {name: echo, port: 9002, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bench-1
  namespace: default
  labels: {kubernetes.io/service-name: bench}
addressType: IPv4
ports:
- {name: sink, port: ${SINK##*:}, protocol: TCP}
- {name: echo, port: ${ECHO##*:}, protocol: TCP}
endpoints:
- addresses: ["${SINK%%:*}"]
  conditions: {ready: true}
YAML
		"${pin[@]}" "$dir/weir" run --config "$dir/manifests" --mode userspace --admin-addr "" --log-level warn \
			>"$tmp/$name.log" 2>&1 &
		started_pid=$!
		started_is="weir run (userspace mode)"
	else
		(cd "$src" && go build -o "$dir/l4proxy" ./bench/cmd/l4proxy)
		"${pin[@]}" "$dir/l4proxy" -map "$ip:9001=$SINK" -map "$ip:9002=$ECHO" >"$tmp/$name.log" 2>&1 &
		started_pid=$!
		started_is="bench/cmd/l4proxy (userspace data plane, hand-built Snapshot)"
	fi
	pids+=("$started_pid")
}

start_weir . $WEIR_IP weir
weir_pid=$started_pid weir_is=$started_is
targets=(direct weir haproxy)
if [ -n "$BASE" ]; then
	rev=$(git rev-parse --short "$BASE")
	mkdir -p "$tmp/base-src"
	git archive "$rev" | tar -x -C "$tmp/base-src"
	start_weir "$tmp/base-src" $BASE_IP weir-base
	base_pid=$started_pid
	targets+=(weir-base)
	weir_is+="; weir-base: $rev, $started_is"
fi

cat >"$tmp/haproxy.cfg" <<CFG
global
	maxconn 8000
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend sink
	bind $HAPROXY_IP:9001
	default_backend sink
frontend echo
	bind $HAPROXY_IP:9002
	default_backend echo
backend sink
	server s1 $SINK
backend echo
	server e1 $ECHO
CFG
"${pin[@]}" haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 & pids+=($!)
haproxy_pid=$!

declare -A sink=([direct]=$SINK [weir]=$WEIR_IP:9001 [haproxy]=$HAPROXY_IP:9001 [weir-base]=$BASE_IP:9001)
declare -A echo=([direct]=$ECHO [weir]=$WEIR_IP:9002 [haproxy]=$HAPROXY_IP:9002 [weir-base]=$BASE_IP:9002)
declare -A tput rate errs cpu csw
declare -A pid=([direct]="" [weir]=$weir_pid [haproxy]=$haproxy_pid [weir-base]=${base_pid:-})
for t in "${targets[@]}"; do
	for a in "${sink[$t]}" "${echo[$t]}"; do
		"$tmp/l4load" wait -addr "$a" -timeout 20s || { cat "$tmp"/*.log >&2; exit 1; }
	done
done
tck=$(getconf CLK_TCK)
# cpu_ticks PID: user+system CPU ticks of a process so far (0 without a process).
cpu_ticks() { if [ -n "$1" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }

# ctx_switches PID: voluntary + involuntary context switches of all its threads so far.
ctx_switches() {
	if [ -n "$1" ]; then cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; else echo 0; fi
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "weir: $weir_is; $(nproc) cores; proxies pinned: ${PIN:-no}; $BYTES bytes per transfer; $WORKERS workers × $DURATION; $ROUNDS rounds" >&2
n_t=${#targets[@]}
for ((r = 0; r < ROUNDS; r++)); do
	for ((i = 0; i < n_t; i++)); do
		t=${targets[$(((i + r) % n_t))]}
		out=$("$tmp/l4load" throughput -addr "${sink[$t]}" -bytes "$BYTES")
		tput[$t]+=" $(sed -n 's/.*mibps=\([0-9.]*\).*/\1/p' <<<"$out")"
		echo "round $((r + 1)) throughput $t: $out" >&2
	done
	for ((i = 0; i < n_t; i++)); do
		t=${targets[$(((i + r) % n_t))]}
		c0=$(cpu_ticks "${pid[$t]}") s0=$(ctx_switches "${pid[$t]}")
		out=$("$tmp/l4load" rate -addr "${echo[$t]}" -workers "$WORKERS" -duration "$DURATION")
		c1=$(cpu_ticks "${pid[$t]}") s1=$(ctx_switches "${pid[$t]}")
		rate[$t]+=" $(sed -n 's/.*rate=\([0-9.]*\).*/\1/p' <<<"$out")"
		n=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$out")
		cpu[$t]+=" $(((c1 - c0) * 1000000 / tck / (n > 0 ? n : 1)))"
		csw[$t]+=" $(awk -v s=$((s1 - s0)) -v n="$n" 'BEGIN {printf "%.2f", (n > 0 ? s / n : 0)}')"
		errs[$t]=$((${errs[$t]:-0} + $(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$out")))
		echo "round $((r + 1)) rate $t: $out" >&2
	done
done

T=() R=()
printf '\n%-9s %18s %18s %22s %20s %8s\n' target "throughput MiB/s" "short conns/s" "proxy CPU µs per conn" "ctx switches/conn" errors
for t in "${targets[@]}"; do
	T+=("$(median <<<"${tput[$t]}")")
	R+=("$(median <<<"${rate[$t]}")")
	c="-" w="-"; [ -n "${pid[$t]}" ] && c=$(median <<<"${cpu[$t]}") w=$(median <<<"${csw[$t]}")
	printf '%-9s %18s %18s %22s %20s %8s\n' "$t" "${T[-1]}" "${R[-1]}" "$c" "$w" "${errs[$t]}"
done
awk -v wt="${T[1]}" -v ht="${T[2]}" -v wr="${R[1]}" -v hr="${R[2]}" 'BEGIN {
	printf "\nweir/HAProxy: throughput %.2f×, short-connection rate %.2f× (target ≥ 0.90×)\n", wt/ht, wr/hr }'
if [ -n "$BASE" ]; then
	awk -v bt="${T[3]}" -v ht="${T[2]}" -v br="${R[3]}" -v hr="${R[2]}" 'BEGIN {
	printf "weir-base/HAProxy: throughput %.2f×, short-connection rate %.2f×\n", bt/ht, br/hr }'
fi
