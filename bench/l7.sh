#!/usr/bin/env bash
# bench/l7.sh — weir's L7 gateway against nginx, HAProxy and Caddy in one run.
#
# Every proxy listens on loopback and forwards to the same backend (an nginx that
# answers a 6-byte body), over keep-alive connections. wrk sends small GETs with
# CONNS connections for DURATION to each proxy in turn (after a short warm-up) and we
# print requests per second, p50 and p99, and the ratios to weir. Then vegeta sends a
# fixed rate to each proxy, half of the maximum vegeta itself gets from nginx (RATE=n
# overrides it), and we print p50/p99.
# The CPU column is each proxy's own CPU time (user + system, all its processes) per
# request during its wrk runs. Every figure is the median of ROUNDS rounds, the proxies
# interleaved in each round, so that all of them see the same moments of a shared
# machine; compare ratios from one run only.
#
# Usage: bench/l7.sh            (DURATION=10s CONNS=64 THREADS=2 ROUNDS=3 by default)
# Needs: wrk, nginx, haproxy, caddy (Debian packages; installed when missing and run as
# root), Go (to build bench/cmd/l7gw and install vegeta into $HOME/.cache/weir/bin).
# Traffic stays on 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
RATE_DURATION=${RATE_DURATION:-10s}
VEGETA_VERSION=v12.12.0
BACKEND_PORT=18000 WEIR_PORT=18080 NGINX_PORT=18081 HAPROXY_PORT=18082 CADDY_PORT=18083

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/weir-l7bench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

need_pkgs=()
for tool in wrk:wrk nginx:nginx haproxy:haproxy caddy:caddy; do
	command -v "${tool%%:*}" >/dev/null 2>&1 || need_pkgs+=("${tool##*:}")
done
if ((${#need_pkgs[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "missing: ${need_pkgs[*]} (apt-get install them)" >&2
		exit 1
	fi
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
vegeta=$HOME/.cache/weir/bin/vegeta
if [[ ! -x $vegeta ]]; then
	mkdir -p "$HOME/.cache/weir/bin"
	(cd "$work" && GOBIN=$HOME/.cache/weir/bin GOFLAGS=-mod=mod go install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION")
fi
(cd "$root" && go build -o "$work/l7gw" ./bench/cmd/l7gw)

# The backend: nginx answering "hello\n" from memory.
mkdir -p "$work/backend" "$work/nginx"
cat >"$work/backend/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $work/backend/nginx.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/backend; proxy_temp_path $work/backend; fastcgi_temp_path $work/backend;
  uwsgi_temp_path $work/backend; scgi_temp_path $work/backend;
  server { listen 127.0.0.1:$BACKEND_PORT; location / { return 200 "hello\n"; } } }
CONF
nginx -c "$work/backend/nginx.conf" -p "$work/backend" & pids+=($!)

cat >"$work/nginx/nginx.conf" <<CONF
daemon off; worker_processes auto; pid $work/nginx/nginx.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; }
  server { listen 127.0.0.1:$NGINX_PORT;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & pids+=($!)
declare -A ppid
ppid[nginx]=$!

cat >"$work/haproxy.cfg" <<CONF
global
  nbthread $(nproc)
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND_PORT
CONF
haproxy -f "$work/haproxy.cfg" -db & pids+=($!)
ppid[haproxy]=$!

cat >"$work/Caddyfile" <<CONF
{
	admin off
	auto_https off
}
http://127.0.0.1:$CADDY_PORT {
	reverse_proxy 127.0.0.1:$BACKEND_PORT
}
CONF
XDG_DATA_HOME=$work XDG_CONFIG_HOME=$work caddy run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 & pids+=($!)
ppid[caddy]=$!

"$work/l7gw" -listen "127.0.0.1:$WEIR_PORT" -backends "127.0.0.1:$BACKEND_PORT" >"$work/l7gw.log" 2>&1 & pids+=($!)
ppid[weir]=$!

for port in $BACKEND_PORT $WEIR_PORT $NGINX_PORT $HAPROXY_PORT $CADDY_PORT; do
	for _ in $(seq 100); do
		curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
		sleep 0.1
	done
	curl -fsS -o /dev/null "http://127.0.0.1:$port/" || { echo "port $port does not answer" >&2; exit 1; }
done

# wrk latency figures come as 1.23ms, 456.00us or 1.02s; print milliseconds.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }

# CPU clock ticks (user + system) of a process and its children.
ticks() {
	local t=0 p
	for p in "$1" $(pgrep -P "$1"); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
hz=$(getconf CLK_TCK)

ROUNDS=${ROUNDS:-3}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END { if (NR % 2) print v[(NR+1)/2]; else printf "%.3f", (v[NR/2]+v[NR/2+1])/2 }'; }
declare -A rps p50 p99 fp50 fp99 cpu rpss p50s p99s cpus
names=(weir nginx haproxy caddy)
declare -A port=([weir]=$WEIR_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT [caddy]=$CADDY_PORT)
# ROUNDS rounds, the proxies interleaved; each figure is the median of the rounds.
for round in $(seq "$ROUNDS"); do
	for n in "${names[@]}"; do
		url="http://127.0.0.1:${port[$n]}/"
		wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "$url" >/dev/null
		t0=$(ticks "${ppid[$n]}")
		out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url")
		t1=$(ticks "${ppid[$n]}")
		reqs=$(awk '/requests in/ {print $1}' <<<"$out")
		r=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
		errs=$(awk '/Non-2xx|Socket errors/' <<<"$out")
		[[ -n $errs ]] && echo "$n: $errs" >&2
		c=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.1f", t / hz / n * 1e6; else print "-" }')
		echo "round $round: $n $r rps, $c µs CPU/request, load $(cut -d' ' -f1 /proc/loadavg)" >&2
		rpss[$n]+="$r " cpus[$n]+="$c "
		p50s[$n]+="$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms) "
		p99s[$n]+="$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms) "
	done
done
for n in "${names[@]}"; do
	rps[$n]=$(median "${rpss[$n]}") p50[$n]=$(median "${p50s[$n]}") p99[$n]=$(median "${p99s[$n]}") cpu[$n]=$(median "${cpus[$n]}")
done

# The fixed-rate run's load generator is vegeta, which needs far more CPU per request
# than wrk; on a small machine half of nginx's wrk maximum saturates vegeta itself and
# every proxy shows seconds of latency. So nginx's maximum is measured again with vegeta
# (as fast as it can, CONNS workers), and the fixed rate is half of that: half of what
# nginx sustains under this generator on this machine. RATE=<n> overrides it.
# vegeta's workers are bounded to CONNS (as wrk's connections are): unbounded, vegeta
# adds a worker and a connection whenever a request is late, and on 2 shared cores one
# stall snowballs into hundreds of connections and seconds of latency for every proxy.
# Each proxy gets one fixed-rate run per round (ROUNDS), interleaved; the table shows
# the median p50 and p99 of the rounds.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
vmax=$(echo "GET http://127.0.0.1:$NGINX_PORT/" | "$vegeta" attack -rate=0 -max-workers="$CONNS" -duration="$RATE_DURATION" -keepalive=true |
	"$vegeta" report -type=json | python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["throughput"])')
rate=${RATE:-$((vmax / 2))}
declare -A fp50s fp99s
for round in $(seq "$ROUNDS"); do
	for n in "${names[@]}"; do
		url="http://127.0.0.1:${port[$n]}/"
		# Warm-up at the same rate, as wrk has one: the proxy's upstream pool grows to
		# what vegeta's connections need before the measured run.
		echo "GET $url" | "$vegeta" attack -rate="$rate" -duration="$WARMUP" -keepalive=true \
			-workers="$CONNS" -max-workers="$CONNS" >/dev/null
		json=$(echo "GET $url" | "$vegeta" attack -rate="$rate" -duration="$RATE_DURATION" -keepalive=true \
			-workers="$CONNS" -max-workers="$CONNS" | "$vegeta" report -type=json)
		read -r a b < <(python3 -c 'import json,sys; d=json.load(sys.stdin); l=d["latencies"]; print("%.3f %.3f" % (l["50th"]/1e6, l["99th"]/1e6))' <<<"$json")
		fp50s[$n]+="$a " fp99s[$n]+="$b "
		python3 -c 'import json,sys; d=json.load(sys.stdin); print("fixed rate, round %s: %s: %.0f rps sent, success %.4f, status codes %s, p99 %s ms" % (sys.argv[2], sys.argv[1], d["rate"], d["success"], d["status_codes"], sys.argv[3]), file=sys.stderr)' "$n" "$round" "$b" <<<"$json"
	done
done
for n in "${names[@]}"; do
	fp50[$n]=$(median "${fp50s[$n]}")
	fp99[$n]=$(median "${fp99s[$n]}")
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "-" }'; }
echo
echo "L7 proxies, loopback, $(nproc) cores, wrk -t$THREADS -c$CONNS -d$DURATION, medians of $ROUNDS rounds, backend nginx 'return 200'; load average $load_before before the fixed-rate runs, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "| proxy | RPS | p50 ms | p99 ms | weir RPS ÷ this | CPU µs/request | p50 ms @ $rate rps | p99 ms @ $rate rps |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for n in "${names[@]}"; do
	echo "| $n | ${rps[$n]} | ${p50[$n]} | ${p99[$n]} | $(ratio "${rps[weir]}" "${rps[$n]}") | ${cpu[$n]} | ${fp50[$n]} | ${fp99[$n]} |"
done
echo
echo "fixed rate: $rate rps = half of nginx's maximum under vegeta ($vmax rps; under wrk ${rps[nginx]} rps), $CONNS vegeta workers, median of $ROUNDS runs"
echo "weir against its targets: RPS ≥ 1.0× nginx: $(ratio "${rps[weir]}" "${rps[nginx]}")×, ≥ 1.0× haproxy: $(ratio "${rps[weir]}" "${rps[haproxy]}")×;" \
	"CPU/request ≤ 1.0× nginx: $(ratio "${cpu[weir]}" "${cpu[nginx]}")×; p99 at saturation ≤ 1.5× nginx: $(ratio "${p99[weir]}" "${p99[nginx]}")×;" \
	"p99 at half of nginx's max rate ≤ 1.0× nginx: $(ratio "${fp99[weir]}" "${fp99[nginx]}")×"
