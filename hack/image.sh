#!/usr/bin/env bash
# Build weir's container image as an OCI archive, without a registry or a container daemon:
# one layer of Debian packages (nft, iptables and the libraries they link), one layer with
# the static weir binary. The tag matches deploy/ (weir:latest).
#
#   hack/image.sh                       # writes _output/weir-image.tar, prints its path
#   hack/image.sh --import              # and imports it into containerd's k8s.io namespace
#   TAG=registry.example/weir:v1 OUT=/tmp/weir.tar hack/image.sh
#
# Push it elsewhere with any OCI tool (skopeo copy oci-archive:_output/weir-image.tar ...).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
TAG="${TAG:-weir:latest}"
OUT="${OUT:-$repo/_output/weir-image.tar}"
CACHE="${WEIR_CACHE:-$HOME/.cache/weir}"
# nftables and iptables with their Depends (apt-cache depends --recurse, no Recommends).
PKGS=(nftables libnftables1 libnftnl11 libmnl0 libjansson4 libgmp10 libedit2 libbsd0 libmd0 libtinfo6
	iptables libxtables12 libip4tc2 libip6tc2 libnetfilter-conntrack3 libnfnetlink0 netbase
	libc6 libgcc-s1 gcc-12-base)

debs="$CACHE/image/debs"
mkdir -p "$debs" "$(dirname "$OUT")"
(
	cd "$debs"
	missing=()
	for p in "${PKGS[@]}"; do compgen -G "${p}_*.deb" >/dev/null || missing+=("$p"); done
	if [[ ${#missing[@]} -gt 0 ]]; then
		apt-get download "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "${missing[@]}" >/dev/null; }
	fi
)
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
for p in "${PKGS[@]}"; do
	dpkg -x "$(ls "$debs/${p}"_*.deb | tail -1)" "$root/rootfs"
done
rm -rf "$root/rootfs/usr/share/doc" "$root/rootfs/usr/share/man" "$root/rootfs/usr/share/lintian"
# What update-alternatives would do in Debian: iptables is iptables-nft.
for t in iptables ip6tables; do
	for s in "" -save -restore; do
		ln -sf "xtables-nft-multi" "$root/rootfs/usr/sbin/$t$s"
	done
done
mkdir -p "$root/rootfs/tmp" "$root/rootfs/run" "$root/rootfs/etc"
echo 'root:x:0:0:root:/root:/sbin/nologin' >"$root/rootfs/etc/passwd"
echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >>"$root/rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/rootfs/etc/group"

CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$root/weir" ./cmd/weir
go run ./hack/ociimage -o "$OUT" -tag "$TAG" \
	-add "$root/rootfs:/" -add "$root/weir:/usr/local/bin/weir" \
	-entrypoint /usr/local/bin/weir
if [[ "${1:-}" == "--import" ]]; then
	ctr -n k8s.io images import "$OUT" >/dev/null
fi
echo "$OUT"
