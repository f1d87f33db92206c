#!/usr/bin/env bash
# Build Kubernetes binaries and etcd from the Go module proxy (no prebuilt downloads) and
# cache them under $WEIR_KUBE_BIN (default $HOME/.cache/weir/bin). A run that finds every
# wanted binary with a matching version stamp does nothing.
#
#   hack/kube-binaries.sh             # kube-apiserver and etcd (test/e2e/kube)
#   hack/kube-binaries.sh cluster     # + controller-manager, scheduler, kubelet, kube-proxy (test/cluster)
#   hack/kube-binaries.sh e2e         # agnhost, ginkgo and e2e.test (the Kubernetes e2e suite)
#   hack/kube-binaries.sh all         # cluster + e2e
#   KUBE_VERSION=v1.36.3 ETCD_VERSION=v3.6.16 hack/kube-binaries.sh all
#
# The Kubernetes commands of a set are built by ONE `go build`, so the packages they share
# compile once. Run it under `nice -n 10` on a shared machine. It prints the bin dir.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"   # k8s.io/kubernetes; v1.36.6 is not on the proxy
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"   # go.etcd.io/etcd/server/v3
CACHE="${WEIR_CACHE:-$HOME/.cache/weir}"
BIN="${WEIR_KUBE_BIN:-$CACHE/bin}"
BUILD="$CACHE/build"
STAMP="$BIN/VERSIONS"                     # name=version, one per line

case "${1:-apiserver}" in
apiserver) kube=(kube-apiserver); want_etcd=1; want_e2e=0 ;;
cluster) kube=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy); want_etcd=1; want_e2e=0 ;;
e2e) kube=(); want_etcd=0; want_e2e=1 ;;
all) kube=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy); want_etcd=1; want_e2e=1 ;;
*) echo "usage: $0 [apiserver|cluster|e2e|all]" >&2; exit 2 ;;
esac

# stamped NAME VERSION: the binary exists and the stamp names this version.
stamped() {
	[[ -x "$BIN/$1" && -f "$STAMP" ]] && tr ' ' '\n' <"$STAMP" | grep -qxF "$1=$2"
}
stamp() { # stamp NAME VERSION
	local rest=""
	[[ -f "$STAMP" ]] && rest="$(tr ' ' '\n' <"$STAMP" | grep -v "^$1=" | grep -v '^$' || true)"
	{ [[ -n "$rest" ]] && echo "$rest"; echo "$1=$2"; } | sort >"$STAMP.tmp"
	mv "$STAMP.tmp" "$STAMP"
}

all_stamped() {
	local n
	[[ $want_etcd == 0 ]] || stamped etcd "$ETCD_VERSION" || return 1
	for n in "${kube[@]}"; do stamped "$n" "$KUBE_VERSION" || return 1; done
	[[ $want_e2e == 0 ]] || { stamped e2e.test "$KUBE_VERSION" && stamped ginkgo "$KUBE_VERSION" && stamped agnhost "$KUBE_VERSION"; }
}
if all_stamped; then
	echo "$BIN"
	exit 0
fi
mkdir -p "$BIN" "$BUILD"
# One build at a time: a second run waits for the first and then builds what is still
# missing.
exec 9>"$BUILD/.lock"
flock 9
staging="v0.${KUBE_VERSION#v1.}"           # v1.36.3 -> v0.36.3
export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
ldflags_version() {
	local major minor p
	major="${KUBE_VERSION#v}"; major="${major%%.*}"
	minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		printf -- '-X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
			"$p" "$KUBE_VERSION" "$p" "$major" "$p" "$minor" "$p"
	done
}

# kube_module: a throwaway module that requires k8s.io/kubernetes. k8s.io/kubernetes
# replaces its staging modules with ./staging paths; a dependent module must map each of
# them to the published v0.Y.Z release itself.
kube_module() {
	local dir="$BUILD/kubernetes-$KUBE_VERSION" kmod
	mkdir -p "$dir"
	cd "$dir"
	if [[ ! -f go.mod ]]; then
		kmod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
		{
			echo "module weir.dev/build/kubernetes"
			echo
			echo "go 1.26"
			echo
			echo "require k8s.io/kubernetes $KUBE_VERSION"
			echo
			echo "replace ("
			grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$kmod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
			echo ")"
		} >go.mod
	fi
}

build_kube() { # build_kube NAME...
	kube_module
	local pkgs=() n
	for n in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
	go get "${pkgs[@]/%/@$KUBE_VERSION}" >/dev/null 2>&1 || go get "${pkgs[@]}" >/dev/null
	local out="$BIN/.build"
	rm -rf "$out"; mkdir -p "$out"
	go build -trimpath -ldflags "-s -w $(ldflags_version)" -o "$out/" "${pkgs[@]}"
	for n in "$@"; do mv "$out/$n" "$BIN/$n"; stamp "$n" "$KUBE_VERSION"; done
	rmdir "$out"
}

build_e2e() {
	kube_module
	go get "k8s.io/kubernetes/test/e2e@$KUBE_VERSION" "k8s.io/kubernetes/test/images/agnhost@$KUBE_VERSION" >/dev/null 2>&1 || true
	# agnhost: the e2e suite's server/client image (test/cluster/images.sh packs it).
	go build -trimpath -ldflags "-s -w" -o "$BIN/agnhost.tmp" k8s.io/kubernetes/test/images/agnhost
	mv "$BIN/agnhost.tmp" "$BIN/agnhost"
	stamp agnhost "$KUBE_VERSION"
	# ginkgo at the version k8s.io/kubernetes requires (its go.mod pins it).
	local gv
	gv="$(go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)"
	go get "github.com/onsi/ginkgo/v2/ginkgo@$gv" >/dev/null
	go build -trimpath -o "$BIN/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo
	mv "$BIN/ginkgo.tmp" "$BIN/ginkgo"
	stamp ginkgo "$KUBE_VERSION"
	go test -c -trimpath -ldflags "-s -w $(ldflags_version)" -o "$BIN/e2e.test.tmp" k8s.io/kubernetes/test/e2e
	mv "$BIN/e2e.test.tmp" "$BIN/e2e.test"
	stamp e2e.test "$KUBE_VERSION"
}

build_etcd() {
	local dir="$BUILD/etcd-$ETCD_VERSION"
	mkdir -p "$dir"
	cd "$dir"
	printf 'module weir.dev/build/etcd\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >go.mod
	go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
	go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
	mv "$BIN/etcd.tmp" "$BIN/etcd"
	stamp etcd "$ETCD_VERSION"
}

if [[ $want_etcd == 1 ]] && ! stamped etcd "$ETCD_VERSION"; then
	echo "building etcd $ETCD_VERSION into $BIN" >&2
	build_etcd
fi
missing=()
for n in "${kube[@]}"; do stamped "$n" "$KUBE_VERSION" || missing+=("$n"); done
if [[ ${#missing[@]} -gt 0 ]]; then
	echo "building ${missing[*]} $KUBE_VERSION into $BIN (one go build)" >&2
	start=$SECONDS
	build_kube "${missing[@]}"
	echo "built ${missing[*]} in $((SECONDS - start)) s" >&2
fi
if [[ $want_e2e == 1 ]] && ! { stamped e2e.test "$KUBE_VERSION" && stamped ginkgo "$KUBE_VERSION" && stamped agnhost "$KUBE_VERSION"; }; then
	echo "building agnhost, ginkgo and e2e.test $KUBE_VERSION into $BIN" >&2
	start=$SECONDS
	build_e2e
	echo "built agnhost, ginkgo and e2e.test in $((SECONDS - start)) s" >&2
fi
echo "$BIN"
