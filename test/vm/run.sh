#!/usr/bin/env bash
# run.sh: the VM suite. The IPVS data plane's namespace tests (test/e2e/dataplane
# TestIPVS*) need a kernel with IP_VS, which the hosts weir is built on may lack: they run
# in a guest booted by test/vm/vm.sh (Debian's 6.1 kernel), boot included. Extra
# arguments go to the test binary (for example -test.run TestIPVSSchedulers).
# Needs root, qemu-system-x86 and busybox-static (apt-get install qemu-system-x86
# busybox-static ipvsadm); the kernel and initramfs are cached in $HOME/.cache/weir/vm.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-test.run 'TestIPVS' -test.v -test.timeout 20m)
rc=0
test/vm/vm.sh -t 2400 ./test/e2e/dataplane "${args[@]}" || rc=$?
echo "vm suite: exit $rc after $(( $(date +%s) - start )) s (boot included)"
exit "$rc"
