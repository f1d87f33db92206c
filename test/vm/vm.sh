#!/usr/bin/env bash
# vm.sh: run test programs in a throw-away virtual machine that boots Debian's 6.1
# kernel (which has IP_VS, unlike the hosts weir is built on), and exit with their status.
#
#   test/vm/vm.sh [options] CMD [--- CMD]...
#     CMD is a Go package (a path starting with ./ , built with `go test -c`) or an
#     executable file, followed by its arguments. Commands run in order as root in the
#     guest, from a copy of the package's directory (testdata/ included); the first
#     failure is the run's status (later commands still run).
#   options:
#     -m MiB      guest memory (default 2048)
#     -c N        guest CPUs (default 2)
#     -t SECONDS  whole-run timeout, boot included (default 1800)
#     -o DIR      keep the shared directory here (the guest's /share: bin/, out/, console.log)
#
# The guest is built once and cached under $HOME/.cache/weir/vm (delete it to rebuild):
#   - the kernel: `apt-get download` of linux-image-amd64's dependency, `dpkg -x`;
#   - an initramfs: busybox-static, the kernel modules named in MODULES below with
#     everything modules.dep says they need, in load order, and the host's ip, nft,
#     iptables(-nft), ipvsadm with their shared libraries (Debian's, as on the host).
# Per run, the test binaries (CGO_ENABLED=0 go test -c) go through a 9p share, the
# console comes back on the serial port (printed here and kept in console.log), and the
# guest writes its exit status to the share.
#
# Acceleration: KVM when /dev/kvm exists and a probe boot answers within 40 s (nested KVM
# may hang at boot); the answer is cached per host boot. Otherwise TCG. WEIR_VM_ACCEL=tcg
# or kvm forces one. qemu runs at nice 10.
#
# In the guest each command sees WEIR_VM=1 and WEIR_VM_OUT=/share/out (the host's
# <share>/out, for results such as benchmark CSVs).
set -euo pipefail

MODULES=(
	# IPVS and its schedulers
	ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh ip_vs_dh ip_vs_sed ip_vs_nq ip_vs_mh
	# conntrack, NAT, nftables as weir's nftables and ipvs modes use it
	nf_conntrack nf_conntrack_netlink nf_nat nf_tables nft_chain_nat nft_ct nft_nat nft_masq
	nft_numgen nft_hash nft_fib nft_fib_inet nft_fib_ipv4 nft_fib_ipv6 nft_reject nft_reject_inet
	nft_reject_ipv4 nft_reject_ipv6 nft_compat nft_redir nft_limit
	# iptables(-nft) mode's extensions
	xt_statistic xt_recent xt_addrtype xt_conntrack xt_mark xt_MASQUERADE xt_nat xt_comment
	xt_tcpudp xt_multiport ipt_REJECT ip6t_REJECT nf_reject_ipv4 nf_reject_ipv6
	# links the namespace tests make
	veth bridge dummy
	# the share
	9p 9pnet_virtio virtio_pci
)
# Soft dependencies modules.dep does not list (modinfo softdep pre:), loaded first.
declare -A SOFTDEP=([libcrc32c]="crc32c_generic")

mem=2048 cpus=2 timeout=1800 keep=""
while getopts "m:c:t:o:" opt; do
	case $opt in
	m) mem=$OPTARG ;; c) cpus=$OPTARG ;; t) timeout=$OPTARG ;; o) keep=$OPTARG ;;
	*) sed -n '2,20p' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { sed -n '2,20p' "$0"; exit 2; }

repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${WEIR_VM_CACHE:-$HOME/.cache/weir/vm}
mkdir -p "$cache"
log() { printf 'vm: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
for bin in qemu-system-x86_64 busybox; do
	command -v "$bin" >/dev/null || die "$bin is missing: apt-get install qemu-system-x86 busybox-static"
done
busybox --list | grep -x depmod >/dev/null || die "busybox has no depmod applet: install busybox-static"

# --- the kernel --------------------------------------------------------------------
kernel_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'
}
kdir=$cache/kernel
if [ ! -f "$kdir/ok" ]; then
	pkg=$(kernel_pkg)
	[ -n "$pkg" ] || die "apt-cache knows no linux-image-amd64: run apt-get update"
	log "downloading $pkg"
	rm -rf "$kdir" "$cache/dl" && mkdir -p "$kdir" "$cache/dl"
	(cd "$cache/dl" && apt-get download "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
	dpkg -x "$cache"/dl/"$pkg"_*.deb "$kdir"
	rm -rf "$cache/dl"
	touch "$kdir/ok"
fi
kver=$(ls "$kdir/lib/modules" | head -1)
vmlinuz=$kdir/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || die "no $vmlinuz"
[ -f "$kdir/lib/modules/$kver/modules.dep" ] || busybox depmod -b "$kdir" "$kver"

# --- the initramfs -----------------------------------------------------------------
# modorder prints the modules' paths (relative to lib/modules/<ver>) in load order: each
# after everything modules.dep says it needs, and after its soft dependencies.
modorder() {
	local dep=$kdir/lib/modules/$kver/modules.dep builtin=$kdir/lib/modules/$kver/modules.builtin
	declare -A seen=()
	local out=()
	visit() {
		local name=$1 path deps d
		[ -n "${seen[$name]:-}" ] && return 0
		seen[$name]=1
		for d in ${SOFTDEP[$name]:-}; do visit "$d"; done
		path=$(awk -F: -v n="$name" '{ b=$1; sub(".*/","",b); sub(/\.ko(\.[a-z]+)?$/,"",b); gsub("-","_",b); if (b==n) {print $1; exit} }' "$dep")
		if [ -z "$path" ]; then
			grep -q "/${name//_/[-_]}\.ko" "$builtin" && return 0
			die "module $name is neither in modules.dep nor built in"
		fi
		deps=$(awk -F: -v p="$path" '$1==p {print $2; exit}' "$dep")
		for d in $deps; do
			d=${d##*/}; d=${d%%.ko*}; visit "${d//-/_}"
		done
		out+=("$path")
	}
	local m
	for m in "${MODULES[@]}"; do visit "$m"; done
	printf '%s\n' "${out[@]}"
}

# The initramfs is rebuilt when this script, the kernel or the host's tools change.
tools=(ip nft iptables-nft ip6tables-nft ipvsadm)
stamp=$( { sha256sum "$0"; echo "$kver"; for t in "${tools[@]}"; do command -v "$t" >/dev/null && sha256sum "$(readlink -f "$(command -v "$t")")"; done; } | sha256sum | cut -c1-16)
initrd=$cache/initramfs-$stamp.cpio
if [ ! -f "$initrd" ]; then
	log "building the initramfs ($kver)"
	root=$(mktemp -d)
	trap 'rm -rf "$root"' EXIT
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,share,root,var/run,lib/modules/$kver}
	cp "$(command -v busybox)" "$root/bin/busybox"
	for a in $(busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
	ln -sf ../bin/busybox "$root/sbin/modprobe"
	# Modules, in load order.
	modorder >"$root/etc/modules.order"
	cp "$root/etc/modules.order" "$cache/modules-$stamp.order"
	while read -r p; do
		mkdir -p "$root/lib/modules/$kver/$(dirname "$p")"
		case $p in
		*.xz) xz -dc "$kdir/lib/modules/$kver/$p" >"$root/lib/modules/$kver/${p%.xz}" ;;
		*) cp "$kdir/lib/modules/$kver/$p" "$root/lib/modules/$kver/$p" ;;
		esac
	done <"$root/etc/modules.order"
	sed -i 's/\.xz$//' "$root/etc/modules.order"
	cp "$kdir/lib/modules/$kver"/modules.{builtin,order} "$root/lib/modules/$kver/" 2>/dev/null || true
	busybox depmod -b "$root" "$kver"
	# The host's network tools and the libraries they load.
	copybin() {
		local f=$1 lib
		mkdir -p "$root$(dirname "$f")"
		cp -L "$f" "$root$f"
		for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*'); do
			[ -e "$root$lib" ] && continue
			mkdir -p "$root$(dirname "$lib")"
			cp -L "$lib" "$root$lib"
		done
	}
	for t in "${tools[@]}"; do
		p=$(command -v "$t") || die "$t is missing on the host (apt-get install iproute2 nftables iptables ipvsadm)"
		copybin "$(readlink -f "$p")"
		[ "$(readlink -f "$p")" = "$p" ] || ln -sf "$(readlink -f "$p")" "$root$p"
	done
	# iptables-nft under the names weir runs, and its dlopen'ed extensions.
	xt=$(readlink -f "$(command -v iptables-nft)")
	for n in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
		ln -sf "$xt" "$root/usr/sbin/$n"
	done
	xtlib=$(dirname "$(readlink -f "$(ldd "$xt" | grep -o '/[^ ]*libxtables[^ ]*')")")/xtables
	if [ -d "$xtlib" ]; then
		mkdir -p "$root$xtlib"
		cp -L "$xtlib"/*.so "$root$xtlib/"
		for so in "$root$xtlib"/*.so; do
			for lib in $(ldd "$so" 2>/dev/null | grep -o '/[^ ]*'); do
				[ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
			done
		done
	fi
	cp /etc/protocols /etc/services "$root/etc/" 2>/dev/null || true
	mkdir -p "$root/etc/iproute2" "$root/usr/share/iproute2"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\n' >"$root/etc/group"
	printf 'hosts: files\n' >"$root/etc/nsswitch.conf"
	printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
	cat >"$root/init" <<'EOF'
#!/bin/sh
# The guest's init: load the modules, mount the share, run /share/run.sh, power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm
mount -t tmpfs run /run; mount -t tmpfs tmp /tmp
mount -t bpf bpf /sys/fs/bpf 2>/dev/null; mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
echo /sbin/modprobe >/proc/sys/kernel/modprobe
v=$(uname -r)
while read -r m; do
	insmod "/lib/modules/$v/$m" 2>/tmp/insmod.err || grep -q 'File exists' /tmp/insmod.err || { echo "vm: insmod $m: $(cat /tmp/insmod.err)"; }
done </etc/modules.order
ip link set lo up
rc=1
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share /share; then
	echo "WEIR-VM-BOOTED $(cut -d' ' -f1 /proc/uptime)"
	if [ -x /share/run.sh ]; then
		WEIR_VM=1 WEIR_VM_OUT=/share/out /share/run.sh
		rc=$?
	else
		echo "vm: /share/run.sh is missing"
	fi
	echo "$rc" >/share/rc
	sync
	umount /share
else
	echo "vm: cannot mount the share"
fi
echo "WEIR-VM-EXIT $rc $(cut -d' ' -f1 /proc/uptime)"
reboot -f
EOF
	chmod +x "$root/init"
	(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null) >"$initrd.tmp"
	mv "$initrd.tmp" "$initrd"
	rm -rf "$root"
	trap - EXIT
	log "initramfs: $(du -h "$initrd" | cut -f1), $(grep -c . "$cache/modules-$stamp.order") modules"
fi

# --- the share: test binaries and the run script -------------------------------------
share=${keep:-$(mktemp -d)}
mkdir -p "$share/bin" "$share/out" "$share/pkg"
[ -n "$keep" ] || trap 'rm -rf "$share"' EXIT
{
	echo '#!/bin/sh'
	echo 'status=0'
} >"$share/run.sh"
n=0
args=("$@" ---)
cmd=()
for a in "${args[@]}"; do
	if [ "$a" != "---" ]; then cmd+=("$a"); continue; fi
	[ ${#cmd[@]} -gt 0 ] || continue
	n=$((n + 1))
	target=${cmd[0]}
	dir=/tmp
	if [[ $target == ./* && -d $repo/$target ]]; then
		log "go test -c $target"
		(cd "$repo" && CGO_ENABLED=0 nice -n 10 go test -c -o "$share/bin/$n.test" "$target") || die "go test -c $target failed"
		mkdir -p "$share/pkg/$n"
		[ -d "$repo/$target/testdata" ] && cp -r "$repo/$target/testdata" "$share/pkg/$n/"
		dir=/tmp/pkg/$n
		exe=/tmp/bin/$n.test
	elif [ -x "$target" ]; then
		cp "$target" "$share/bin/$n.bin"
		exe=/tmp/bin/$n.bin
	else
		die "$target is neither a Go package under $repo (./path) nor an executable"
	fi
	quoted=$(printf ' %q' "${cmd[@]:1}")
	{
		echo "echo '=== vm: $n: ${cmd[*]}'"
		echo "mkdir -p /tmp/bin $dir && cp /share/bin/$(basename "$exe") $exe && { [ ! -d /share/pkg/$n ] || cp -r /share/pkg/$n/. $dir/; }"
		echo "start=\$(cut -d' ' -f1 /proc/uptime)"
		echo "(cd $dir && $exe$quoted); rc=\$?"
		echo "echo \"=== vm: $n: exit \$rc after \$(awk -v s=\$start '{print \$1-s}' /proc/uptime) s\""
		echo "rm -f $exe"
		echo "[ \$rc -eq 0 ] || [ \$status -ne 0 ] || status=\$rc"
	} >>"$share/run.sh"
	cmd=()
done
echo 'exit $status' >>"$share/run.sh"
chmod +x "$share/run.sh"

# --- acceleration ------------------------------------------------------------------
qemu=(nice -n 10 qemu-system-x86_64 -nodefaults -no-reboot -display none -serial stdio -monitor none
	-kernel "$vmlinuz" -initrd "$initrd" -m "$mem" -smp "$cpus"
	-device virtio-rng-pci)
append="console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init"
accel=${WEIR_VM_ACCEL:-}
if [ -z "$accel" ]; then
	accel=tcg
	if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
		bootid=$(cat /proc/sys/kernel/random/boot_id)
		probe=$cache/kvm-$bootid
		if [ ! -f "$probe" ]; then
			log "probing KVM (40 s at most)"
			(timeout 40 "${qemu[@]}" -accel kvm -cpu host -append "$append rdinit=/bin/true" </dev/null >"$probe.log" 2>&1) 2>/dev/null || true
			if grep -q 'Kernel panic\|reboot' "$probe.log"; then
				echo kvm >"$probe"
			else
				echo tcg >"$probe"
			fi
		fi
		accel=$(cat "$probe")
	fi
fi
case $accel in
kvm) qemu+=(-accel kvm -cpu host) ;;
tcg) qemu+=(-accel tcg,thread=multi -cpu max) ;;
*) die "WEIR_VM_ACCEL=$accel: want kvm or tcg" ;;
esac

# --- run -----------------------------------------------------------------------------
log "booting $kver with $accel, $cpus CPUs, $mem MiB; $n command(s)"
start=$(date +%s.%N)
rm -f "$share/rc"
set +e
timeout "$timeout" "${qemu[@]}" -append "$append" \
	-fsdev local,id=share,path="$share",security_model=none \
	-device virtio-9p-pci,fsdev=share,mount_tag=share </dev/null | tee "$share/console.log"
qrc=${PIPESTATUS[0]}
set -e
wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')
booted=$(awk '/^WEIR-VM-BOOTED/ {print $2}' "$share/console.log" | tr -d '\r')
guest=$(awk '/^WEIR-VM-EXIT/ {print $3}' "$share/console.log" | tr -d '\r')
log "wall ${wall} s (guest: booted at ${booted:-?} s, done at ${guest:-?} s, $accel)"
[ "$qrc" -ne 124 ] || die "timed out after $timeout s"
[ -f "$share/rc" ] || die "the guest wrote no exit status (qemu exit $qrc)"
rc=$(cat "$share/rc")
[ -z "$keep" ] || log "share kept in $share"
exit "$rc"
