#!/usr/bin/env bash
# Bring up a one-node Kubernetes cluster on this machine with weir as its only service
# proxy, cluster DNS and gateway: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet with containerd and the bridge CNI plugin. No kube-proxy, no
# CoreDNS. Everything stays on this machine: pods live on a bridge in a private range and a
# guard table drops anything they send that would leave it.
#
#   test/cluster/up.sh          # build what is missing, start, apply weir, wait until ready
#   test/cluster/down.sh        # stop everything and remove the state
#
# Needs root, containerd, runc and containernetworking-plugins (Debian), and the binaries
# of hack/kube-binaries.sh cluster. Kubeconfig: $WEIR_CLUSTER_DIR/admin.kubeconfig.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"

log() { printf '%s up: %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (containerd, kubelet, nftables)"
for b in containerd runc ctr openssl; do
	command -v "$b" >/dev/null || die "$b missing: apt-get install containerd runc containernetworking-plugins openssl"
done
[[ -x "$CNI_BIN/bridge" ]] || die "$CNI_BIN/bridge missing: apt-get install containernetworking-plugins"
"$repo/hack/kube-binaries.sh" cluster >/dev/null

if [[ -f "$RUN/up" ]]; then
	die "a cluster is already up in $WEIR_CLUSTER_DIR (test/cluster/down.sh first)"
fi
mkdir -p "$WEIR_CLUSTER_DIR" "$RUN" "$LOGS" "$PKI"
touch "$RUN/up"

# start NAME CMD...: run a component in the background, its pid in $RUN/NAME.pid.
start() {
	local name="$1"; shift
	setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$RUN/$name.pid"
}
wait_for() { # wait_for SECONDS WHAT CMD...
	local t="$1" what="$2"; shift 2
	local end=$((SECONDS + t))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < end)) || die "$what not ready after ${t}s (logs in $LOGS)"
		sleep 1
	done
}

# --- certificates -----------------------------------------------------------------------
pki() {
	cd "$PKI"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=weir-cluster-ca" 2>/dev/null
	# cert NAME CN [O] [SANS]
	cert() {
		local name="$1" cn="$2" o="${3:-}" sans="${4:-}" subj="/CN=$2"
		[[ -n "$o" ]] && subj="/O=$o/CN=$cn"
		openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
		{
			echo "basicConstraints=CA:FALSE"
			echo "keyUsage=digitalSignature,keyEncipherment"
			if [[ -n "$sans" ]]; then
				echo "extendedKeyUsage=serverAuth,clientAuth"
				echo "subjectAltName=$sans"
			else
				echo "extendedKeyUsage=clientAuth"
			fi
		} >"$name.ext"
		openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" -days 30 -extfile "$name.ext" 2>/dev/null
		rm -f "$name.csr" "$name.ext"
	}
	cert apiserver kube-apiserver "" "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP"
	cert admin kubernetes-admin system:masters
	cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
	cert controller-manager system:kube-controller-manager
	cert scheduler system:kube-scheduler
	cert kubelet "system:node:$NODE_NAME" system:nodes
	cert kubelet-serving "system:node:$NODE_NAME" system:nodes "DNS:$NODE_NAME,IP:$NODE_IP,IP:127.0.0.1"
	openssl genrsa -out sa.key 2048 2>/dev/null
	openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
	cd - >/dev/null
}
kubeconfig() { # kubeconfig NAME: $WEIR_CLUSTER_DIR/NAME.kubeconfig with PKI/NAME.{crt,key}
	cat >"$WEIR_CLUSTER_DIR/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: weir
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $1
  user:
    client-certificate: $PKI/$1.crt
    client-key: $PKI/$1.key
contexts:
- name: weir
  context: {cluster: weir, user: $1}
current-context: weir
EOF
}
log "certificates"
pki
for k in admin controller-manager scheduler kubelet; do kubeconfig "$k"; done

# --- containerd and CNI -----------------------------------------------------------------
log "containerd"
RESTRICT_OOM=false
# CAP_SYS_RESOURCE is bit 24 of the effective capabilities.
(( (0x$(awk '/^CapEff/ {print $2}' /proc/self/status) >> 24) & 1 )) || RESTRICT_OOM=true
mkdir -p "$WEIR_CLUSTER_DIR/cni/net.d" "$WEIR_CLUSTER_DIR/containerd"
cat >"$WEIR_CLUSTER_DIR/cni/net.d/10-weir-cluster.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "weir-cluster",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$WEIR_CLUSTER_DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
cat >"$WEIR_CLUSTER_DIR/containerd/config.toml" <<EOF
version = 2
root = "$WEIR_CLUSTER_DIR/containerd/root"
state = "$RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without CAP_SYS_RESOURCE (a container or VM that drops it, as this development machine
  # does), runc cannot lower oom_score_adj to the kubelet's -998: keep it at containerd's.
  restrict_oom_score_adj = $RESTRICT_OOM
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$WEIR_CLUSTER_DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
EOF
start containerd containerd --config "$WEIR_CLUSTER_DIR/containerd/config.toml"
wait_for 30 containerd ctr --address "$CONTAINERD_SOCK" version

# Images: every one built here (no registry), imported under the names the suites use.
log "images"
images="$("$here/images.sh")"
OUT="$images/weir.tar" "$repo/hack/image.sh" >/dev/null
for img in "$images"/*.tar; do
	ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$img" >/dev/null
done

# --- guard: pod traffic stays on this machine -------------------------------------------
# Packets from the pod bridge may reach pods (back into the bridge) and this host (input);
# anything the host would forward elsewhere is dropped, and so is anything for the pod or
# Service ranges that would leave by another interface. The chains run after the
# filter-priority chains, so weir's own verdicts (a Service without endpoints is rejected)
# come first. The host's own packets are checked in postrouting, not output: a packet the
# host sends to a ClusterIP is routed to eth0, DNATed to a pod in nat output and rerouted
# to the bridge, but output hooks still see the first route's interface.
sysctl -qw net.ipv4.ip_forward=1
modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
nft -f - <<EOF
table inet $GUARD_TABLE {
  chain forward {
    type filter hook forward priority 100; policy accept;
    iifname "$BRIDGE" oifname != "$BRIDGE" counter drop
    ip saddr $POD_CIDR oifname != "$BRIDGE" counter drop
  }
  chain postrouting {
    type filter hook postrouting priority 100; policy accept;
    ip daddr { $CLUSTER_CIDR, $SERVICE_CIDR } oifname != "$BRIDGE" counter drop
  }
}
EOF

# --- control plane ----------------------------------------------------------------------
log "etcd"
start etcd "$KBIN/etcd" --name=weir-cluster --data-dir="$WEIR_CLUSTER_DIR/etcd" \
	--listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
	--listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster="weir-cluster=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level=warn
log "kube-apiserver"
start kube-apiserver "$KBIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
	--bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port="$API_PORT" \
	--tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
	--client-ca-file="$PKI/ca.crt" --authorization-mode=Node,RBAC \
	--kubelet-preferred-address-types=InternalIP --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
	--service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
	--service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
	--service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 \
	--allow-privileged=true --profiling=false --enable-admission-plugins=NodeRestriction \
	--cert-dir="$PKI/apiserver-certs" --v=1
export KUBECONFIG="$WEIR_CLUSTER_DIR/admin.kubeconfig"
wait_for 120 kube-apiserver kubectl get --raw /readyz
log "kube-controller-manager, kube-scheduler"
start kube-controller-manager "$KBIN/kube-controller-manager" --kubeconfig="$WEIR_CLUSTER_DIR/controller-manager.kubeconfig" \
	--authentication-kubeconfig="$WEIR_CLUSTER_DIR/controller-manager.kubeconfig" \
	--authorization-kubeconfig="$WEIR_CLUSTER_DIR/controller-manager.kubeconfig" \
	--bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false --use-service-account-credentials \
	--service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
	--cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
	--allocate-node-cidrs --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
	--service-cluster-ip-range="$SERVICE_CIDR" --controllers='*,-cloud-node-lifecycle' --v=1
start kube-scheduler "$KBIN/kube-scheduler" --kubeconfig="$WEIR_CLUSTER_DIR/scheduler.kubeconfig" \
	--authentication-kubeconfig="$WEIR_CLUSTER_DIR/scheduler.kubeconfig" \
	--authorization-kubeconfig="$WEIR_CLUSTER_DIR/scheduler.kubeconfig" \
	--bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false --v=1

# --- kubelet ----------------------------------------------------------------------------
log "kubelet"
mkdir -p "$WEIR_CLUSTER_DIR/kubelet"
cat >"$WEIR_CLUSTER_DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_SERVICE_IP]
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
resolvConf: $WEIR_CLUSTER_DIR/kubelet/resolv.conf
readOnlyPort: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 250
podPidsLimit: -1
EOF
# Pods with dnsPolicy Default get this resolver: the host's own, if it has one.
grep -E '^(nameserver|search|options)' /etc/resolv.conf >"$WEIR_CLUSTER_DIR/kubelet/resolv.conf" 2>/dev/null || true
start kubelet "$KBIN/kubelet" --config="$WEIR_CLUSTER_DIR/kubelet/config.yaml" \
	--kubeconfig="$WEIR_CLUSTER_DIR/kubelet.kubeconfig" --root-dir="$WEIR_CLUSTER_DIR/kubelet/root" \
	--hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
wait_for 120 "node $NODE_NAME" kubectl get node "$NODE_NAME"

# --- weir ---------------------------------------------------------------------------------
log "weir (deploy/ with this cluster's overlay, server-side apply)"
kubectl apply --server-side -k "$repo/deploy/crds" >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl apply --server-side -k "$here/manifests/node-proxy" >/dev/null
kubectl apply --server-side -k "$here/manifests/gateway" >/dev/null
# Gateway API CRDs of the experimental channel by default (GATEWAY_API_CHANNEL=standard
# keeps deploy/crds as shipped): HTTPRoute's retry field, which weir serves and the
# conformance suite's HTTPRouteRetry tests, exists only there, and the API server drops
# fields its CRD lacks, so on the standard channel a route's retry policy silently
# disappears. deploy/ installs the standard channel with Gateway API's safe-upgrades
# policy, which refuses experimental CRDs over standard ones: it goes first (the
# experimental bundle brings its own).
if [[ "${GATEWAY_API_CHANNEL:-experimental}" == experimental ]]; then
	gwapi="$(cd "$repo" && go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)"
	kubectl delete validatingadmissionpolicybinding,validatingadmissionpolicy safe-upgrades.gateway.networking.k8s.io --ignore-not-found >/dev/null
	# The API server's admission reads policies from a cache: the deleted policy may
	# still refuse the apply for a moment on an idle machine. Retry until it is gone.
	for try in $(seq 30); do
		kubectl apply --server-side --force-conflicts -k "$gwapi/config/crd/experimental" >/dev/null 2>"$LOGS/crd-apply.err" && break
		[[ $try -lt 30 ]] || { cat "$LOGS/crd-apply.err" >&2; exit 1; }
		sleep 1
	done
	kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
fi
wait_for 180 "node Ready" kubectl wait --for=condition=Ready node "$NODE_NAME" --timeout=5s
kubectl -n weir-system rollout status daemonset/weir-node-proxy --timeout=180s >/dev/null
kubectl -n weir-system rollout status deployment/weir-gateway --timeout=180s >/dev/null
# Service accounts get their default token controller-side; wait for "default".
wait_for 60 "default ServiceAccount" kubectl -n default get serviceaccount default
log "up: KUBECONFIG=$KUBECONFIG"
echo "$KUBECONFIG"
