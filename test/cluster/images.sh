#!/usr/bin/env bash
# Build the images the conformance suites run, as OCI archives, from sources on the Go
# module proxy and packages from Debian (no registry is reachable), tagged exactly as the
# suites name them:
#   registry.k8s.io/pause:3.10.2                         pause.c of k8s.io/kubernetes, static
#   registry.k8s.io/gateway-api/echo-basic:<every tag the conformance manifests use>
#                                                        sigs.k8s.io/gateway-api/conformance/echo-basic
#   registry.k8s.io/e2e-test-images/agnhost:2.63.0       k8s.io/kubernetes/test/images/agnhost
#                                                        + sh, curl, wget, nc, dig, ip (Debian)
#                                                        + /coredns (github.com/coredns/coredns)
#   registry.k8s.io/e2e-test-images/busybox:1.37.0-1     Debian busybox-static (+ the same tools)
#   registry.k8s.io/e2e-test-images/glibc-dns-testing:2.0.0   dig and getent (Debian), /coredns
#   registry.k8s.io/coredns/coredns:<every tag the Gateway API manifests use>   /coredns
# into $WEIR_CACHE/images (default $HOME/.cache/weir/images); prints that folder.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
CACHE="${WEIR_CACHE:-$HOME/.cache/weir}"
OUT="$CACHE/images"
KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-$(cd "$repo" && go list -m -f '{{.Version}}' sigs.k8s.io/gateway-api)}"
KBIN="${WEIR_KUBE_BIN:-$CACHE/bin}" # agnhost comes from hack/kube-binaries.sh e2e
# Upstream's agnhost and glibc-dns-testing images carry a CoreDNS release binary at /coredns
# (the DNS tests run it as their own test server); here it is built from the module proxy.
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
mkdir -p "$OUT" "$CACHE/build"
export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
ociimage() { (cd "$repo" && go run ./hack/ociimage "$@"); }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# pause: upstream's pause.c, built as its Makefile does (-Os -static).
if [[ ! -f "$OUT/pause.tar" ]]; then
	kdir="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
	gcc -Os -Wall -Werror -static -DVERSION=v3.10.2-weir -o "$work/pause" "$kdir/build/pause/linux/pause.c"
	ociimage -o "$OUT/pause.tar" -tag registry.k8s.io/pause:3.10.2 -add "$work/pause:/pause" -entrypoint /pause -user 65535:65535
fi

# echo-basic at weir's gateway-api version, tagged with every tag its manifests name.
gw="$CACHE/build/gateway-conformance-$GATEWAY_API_VERSION"
if [[ ! -f "$OUT/echo-basic-$GATEWAY_API_VERSION.tar" ]]; then
	mkdir -p "$gw"
	(
		cd "$gw"
		# The conformance module requires gateway-api at a placeholder version it replaces
		# with ../ in its own repository; a dependent module maps it to the release.
		printf 'module weir.dev/build/gateway-conformance\n\ngo 1.26\n\nrequire sigs.k8s.io/gateway-api/conformance %s\n\nreplace sigs.k8s.io/gateway-api => sigs.k8s.io/gateway-api %s\n' \
			"$GATEWAY_API_VERSION" "$GATEWAY_API_VERSION" >go.mod
		go get "sigs.k8s.io/gateway-api/conformance/echo-basic@$GATEWAY_API_VERSION" >/dev/null 2>&1 || true
		go build -trimpath -ldflags "-s -w" -o "$work/echo-basic" sigs.k8s.io/gateway-api/conformance/echo-basic
	)
	cdir="$(cd "$gw" && go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api/conformance)"
	tags=()
	for t in $(grep -rhoE 'registry\.k8s\.io/gateway-api/echo-basic:[A-Za-z0-9._-]+' "$cdir" | sort -u); do tags+=(-tag "$t"); done
	ociimage -o "$OUT/echo-basic-$GATEWAY_API_VERSION.tar" "${tags[@]}" -add "$work/echo-basic:/echo-basic" -entrypoint /echo-basic
fi

# A Debian root with the tools the e2e suite runs inside its pods (sh, curl, nc, dig,
# getent, ip, awk) and busybox for every other command.
tools_root() {
	local root="$1" debs="$CACHE/image/debs" pkgs p
	mkdir -p "$debs" "$root"
	# Depends and Pre-Depends, recursively; not the packaging tools and alternatives
	# (debconf, dpkg, the other awks) a plain root does not run.
	pkgs="$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances \
		bash curl wget netcat-openbsd iproute2 bind9-dnsutils busybox-static libc-bin mawk 2>/dev/null |
		grep -v '^[ <]' | sort -u |
		grep -vxE 'debconf|cdebconf|dpkg|install-info|gawk|original-awk|libnewt0.52|libslang2|libtextwrap1|libdebian-installer4|libsigsegv2|libmpfr6|tar')"
	[[ -n "$pkgs" ]] || { apt-get update -qq; tools_root "$@"; return; }
	(
		cd "$debs"
		local missing=()
		for p in $pkgs; do compgen -G "${p}_*.deb" >/dev/null || missing+=("$p"); done
		[[ ${#missing[@]} -eq 0 ]] || apt-get download "${missing[@]}" >/dev/null 2>&1
	)
	for p in $pkgs; do dpkg -x "$(ls "$debs/${p}"_*.deb | tail -1)" "$root"; done
	rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/locale"
	ln -sf mawk "$root/usr/bin/awk"
	ln -sf nc.openbsd "$root/bin/nc"
	# GNU wget, not busybox's: Debian's busybox 1.35 wget crashes with -T (the e2e suite's
	# "wget -q -O - -T 1 URL").
	# sh is bash, not busybox: Debian's busybox sh runs its own applets before PATH (its nc
	# lacks -v and -z, which the e2e suite passes).
	ln -sf bash "$root/bin/sh"
	# busybox applets where Debian gave no command of that name.
	local a
	for a in $("$root/bin/busybox" --list-full); do
		[[ -e "$root/$a" || -L "$root/$a" || -e "$root/usr/$a" || -e "$root/${a#usr/}" ]] && continue
		mkdir -p "$root/$(dirname "$a")"
		ln -s /bin/busybox "$root/$a"
	done
	mkdir -p "$root/tmp" "$root/results" "$root/etc"
	chmod 1777 "$root/tmp"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
	printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
}
# CoreDNS with the plugins the e2e DNS tests' and the Gateway API suite's Corefiles use
# (hosts, log, errors, forward, cache, health, ready, reload, whoami), built as CoreDNS
# documents for a custom plugin set: a main that imports coremain and the plugin packages.
COREDNS_PLUGINS="cache errors forward health hosts log ready reload whoami"
coredns() {
	local dir="$CACHE/build/coredns-$COREDNS_VERSION" p
	mkdir -p "$dir"
	{
		echo '// CoreDNS with the plugins the Kubernetes e2e and Gateway API suites configure.'
		echo 'package main'
		echo
		echo 'import ('
		for p in $COREDNS_PLUGINS; do printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "$p"; done
		echo
		printf '\t"github.com/coredns/coredns/coremain"\n)\n\nfunc main() { coremain.Run() }\n'
	} >"$dir/main.go.new"
	if [[ -x "$dir/coredns" ]] && cmp -s "$dir/main.go.new" "$dir/main.go"; then
		rm "$dir/main.go.new"
		echo "$dir/coredns"
		return
	fi
	mv "$dir/main.go.new" "$dir/main.go"
	(
		cd "$dir"
		printf 'module weir.dev/build/coredns\n\ngo 1.26\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >go.mod
		go mod tidy >/dev/null 2>&1
		go build -trimpath -ldflags "-s -w" -o coredns.new . && mv coredns.new coredns
	) >&2
	echo "$dir/coredns"
}
# The tools images are rebuilt when what goes into them changes.
tools_stamp="agnhost $KUBE_VERSION coredns $COREDNS_VERSION $COREDNS_PLUGINS"
if [[ (-x "$KBIN/agnhost" && ! -f "$OUT/agnhost-$KUBE_VERSION.tar") || ! -f "$OUT/busybox.tar" || ! -f "$OUT/glibc-dns-testing.tar" || ! -f "$OUT/coredns.tar" ||
	"$(cat "$OUT/tools.stamp" 2>/dev/null)" != "$tools_stamp" ]]; then
	tools_root "$work/tools"
	cdns="$(coredns)"
	if [[ -x "$KBIN/agnhost" ]]; then
		ociimage -o "$OUT/agnhost-$KUBE_VERSION.tar" -tag registry.k8s.io/e2e-test-images/agnhost:2.63.0 \
			-add "$work/tools:/" -add "$KBIN/agnhost:/agnhost" -add "$cdns:/coredns" -entrypoint /agnhost -cmd pause
	else
		echo "no $KBIN/agnhost (hack/kube-binaries.sh e2e): no agnhost image" >&2
	fi
	ociimage -o "$OUT/busybox.tar" -tag registry.k8s.io/e2e-test-images/busybox:1.37.0-1 \
		-add "$work/tools:/" -cmd sh
	ociimage -o "$OUT/glibc-dns-testing.tar" -tag registry.k8s.io/e2e-test-images/glibc-dns-testing:2.0.0 \
		-add "$work/tools:/" -add "$cdns:/coredns" -cmd sh
	# The Gateway API suite's base manifests run a CoreDNS Deployment (its UDPRoute tests'
	# backend); every CoreDNS tag its manifests name.
	cdir="$(cd "$gw" && go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api/conformance)"
	tags=()
	for t in $(grep -rhoE 'registry\.k8s\.io/coredns/coredns:[A-Za-z0-9._-]+' "$cdir" | sort -u); do tags+=(-tag "$t"); done
	ociimage -o "$OUT/coredns.tar" "${tags[@]}" -add "$cdns:/coredns" -entrypoint /coredns
	echo "$tools_stamp" >"$OUT/tools.stamp"
fi
echo "$OUT"
