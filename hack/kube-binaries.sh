#!/usr/bin/env bash
# Build kube-apiserver and etcd from the Go module proxy (no prebuilt downloads) and cache
# them under $WEIR_KUBE_BIN (default $HOME/.cache/weir/bin). A second run that finds both
# binaries with a matching version stamp does nothing.
#
#   hack/kube-binaries.sh            # build if missing, print the bin dir
#   KUBE_VERSION=v1.36.3 ETCD_VERSION=v3.6.16 hack/kube-binaries.sh
#
# The tests in test/e2e/kube look for the binaries in $WEIR_KUBE_BIN or the default.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"   # k8s.io/kubernetes; v1.36.6 is not on the proxy
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"   # go.etcd.io/etcd/server/v3
CACHE="${WEIR_CACHE:-$HOME/.cache/weir}"
BIN="${WEIR_KUBE_BIN:-$CACHE/bin}"
BUILD="$CACHE/build"
STAMP="$BIN/VERSIONS"
WANT="kube-apiserver=$KUBE_VERSION etcd=$ETCD_VERSION"

if [[ -x "$BIN/kube-apiserver" && -x "$BIN/etcd" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
	echo "$BIN"
	exit 0
fi

mkdir -p "$BIN" "$BUILD"
staging="v0.${KUBE_VERSION#v1.}"           # v1.36.3 -> v0.36.3
export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
ldflags_version() {
	local major minor
	major="${KUBE_VERSION#v}"; major="${major%%.*}"
	minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
	local p
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		printf -- '-X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
			"$p" "$KUBE_VERSION" "$p" "$major" "$p" "$minor" "$p"
	done
}

build_apiserver() {
	local dir="$BUILD/kube-apiserver-$KUBE_VERSION"
	mkdir -p "$dir"
	cd "$dir"
	# k8s.io/kubernetes replaces its staging modules with ./staging paths; a dependent module
	# must map each of them to the published v0.Y.Z release itself.
	local kmod
	kmod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
	{
		echo "module weir.dev/build/kube-apiserver"
		echo
		echo "go 1.26"
		echo
		echo "require k8s.io/kubernetes $KUBE_VERSION"
		echo
		echo "replace ("
		grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$kmod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
		echo ")"
	} >go.mod
	go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" >/dev/null
	go build -trimpath -ldflags "-s -w $(ldflags_version)" -o "$BIN/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
	mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"
}

build_etcd() {
	local dir="$BUILD/etcd-$ETCD_VERSION"
	mkdir -p "$dir"
	cd "$dir"
	printf 'module weir.dev/build/etcd\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >go.mod
	go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
	go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
	mv "$BIN/etcd.tmp" "$BIN/etcd"
}

rm -f "$STAMP"
echo "building etcd $ETCD_VERSION into $BIN" >&2
build_etcd
echo "building kube-apiserver $KUBE_VERSION into $BIN" >&2
build_apiserver
echo "$WANT" >"$STAMP"
echo "$BIN"
