# Settings shared by test/cluster's scripts (sourced). Override any of them in the
# environment; the defaults keep every address private to this machine.
WEIR_CLUSTER_DIR="${WEIR_CLUSTER_DIR:-/var/lib/weir-cluster}"
RUN="${WEIR_CLUSTER_RUN:-/run/weir-cluster}"
LOGS="$WEIR_CLUSTER_DIR/logs"
PKI="$WEIR_CLUSTER_DIR/pki"
KBIN="${WEIR_KUBE_BIN:-${WEIR_CACHE:-$HOME/.cache/weir}/bin}"
CNI_BIN="${CNI_BIN:-/usr/lib/cni}"
CONTAINERD_SOCK="$RUN/containerd.sock"
NODE_NAME="${NODE_NAME:-weir-node}"
# The node's address: the first global IPv4 address (the API server advertises it, so pods
# reach the API server and node ports there).
NODE_IP="${NODE_IP:-$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1)}"
API_PORT=6443                          # manifests/node-proxy names it
ETCD_PORT="${ETCD_PORT:-12379}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-12380}"
CLUSTER_DOMAIN="${CLUSTER_DOMAIN:-cluster.local}"
SERVICE_CIDR="${SERVICE_CIDR:-10.96.0.0/16}"
API_SERVICE_IP="${API_SERVICE_IP:-10.96.0.1}"
DNS_SERVICE_IP=10.96.0.10              # manifests/node-proxy pins weir-dns there
CLUSTER_CIDR="${CLUSTER_CIDR:-10.244.0.0/16}"
POD_CIDR="${POD_CIDR:-10.244.0.0/24}"   # the node's podCIDR (first /24 of CLUSTER_CIDR)
POD_GATEWAY="${POD_GATEWAY:-10.244.0.1}"
BRIDGE="${BRIDGE:-weircni0}"
GUARD_TABLE="weir_cluster_guard"
PAUSE_IMAGE="registry.k8s.io/pause:3.10.2"   # k8s.io/kubernetes test/utils/image at v1.36
export KUBECONFIG="$WEIR_CLUSTER_DIR/admin.kubeconfig"
