#!/usr/bin/env bash
# choose-driver.sh: pick the libvirt domain type for the hftcap VM and say why.
#   kvm   /dev/kvm is usable AND a real Linux kernel boots under it to the point of mounting root
#   qemu  otherwise (TCG, software emulation: slower, but boots anywhere), including when no test
#         boot could be made (no qemu-system-x86_64, no kernel): an unproven KVM is never chosen
# A paravirtual /dev/kvm (kvm-pvm, as on some cloud VMs) opens and starts a guest, then stops it
# early with "KVM internal error: emulation failure", so a test boot is the only honest check.
#
#   vagrant/choose-driver.sh [KERNEL]     prints kvm or qemu on stdout, the reason on stderr
#
# KERNEL defaults to the offline box's kernel (vagrant/box/vmlinuz, or the one in the added box),
# else the newest /boot/vmlinuz-*.
# The test boot has no root disk and no initrd: the kernel initialises every built-in driver, then
# panics with "VFS: Unable to mount root fs", which is the proof; -no-reboot makes QEMU exit there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernel=${1:-}
if [ -z "$kernel" ]; then
	kernel=$(ls "$here/box/vmlinuz" "${VAGRANT_HOME:-$HOME/.vagrant.d}"/boxes/hftcap-VAGRANTSLASH-trixie-local/*/libvirt/vmlinuz \
		2>/dev/null | head -n 1 || true)
	[ -n "$kernel" ] || kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
fi
kvm=${HFTCAP_KVM_DEVICE:-/dev/kvm}   # override only to test this script
why() { printf 'choose-driver: %s\n' "$*" >&2; }

if [ ! -e "$kvm" ]; then
	why "qemu (TCG): $kvm does not exist (no hardware virtualisation here)"; echo qemu; exit 0
fi
if ! : 2>/dev/null <>"$kvm"; then
	why "qemu (TCG): $kvm is not readable and writable by $(id -un)"; echo qemu; exit 0
fi
qemu=${HFTCAP_QEMU-$(command -v qemu-system-x86_64 || true)}   # override (empty: none) only to test
if [ -z "$qemu" ]; then
	why "qemu (TCG): $kvm opens, but qemu-system-x86_64 is not installed, so KVM is unproven (no test boot); hint: apt-get install qemu-system-x86, or HFTCAP_LIBVIRT_DRIVER=kvm to force"
	echo qemu; exit 0
fi
if [ -z "$kernel" ] || [ ! -r "$kernel" ]; then
	why "qemu (TCG): $kvm opens, but there is no kernel to test-boot, so KVM is unproven; hint: vagrant/build-box.sh, or HFTCAP_LIBVIRT_DRIVER=kvm to force"
	echo qemu; exit 0
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s.%N)
# On an emulation failure QEMU pauses the guest instead of exiting: watch the log, at most 60 s.
"$qemu" -accel kvm -cpu host -m 256 -smp 1 -nodefaults -display none -no-reboot \
	-serial "file:$log" -kernel "$kernel" -append "console=ttyS0 panic=-1 root=/dev/hftcap-probe-no-root" \
	>>"$log" 2>&1 &
pid=$!
for _ in $(seq 600); do
	grep -qE "Unable to mount root fs|KVM internal error|emulation failure" "$log" && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
kill "$pid" 2>/dev/null || true
rc=0; wait "$pid" || rc=$?
secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
if grep -q "Unable to mount root fs" "$log"; then
	# libvirt runs QEMU as its own user (libvirt-qemu on Debian), not as root.
	if id libvirt-qemu >/dev/null 2>&1 && ! runuser -u libvirt-qemu -- sh -c ': <>/dev/kvm' 2>/dev/null; then
		why "qemu (TCG): KVM boots a kernel, but libvirt's QEMU user libvirt-qemu cannot open /dev/kvm ($(stat -c '%U:%G %a' /dev/kvm)); hint: chgrp kvm /dev/kvm && chmod 660 /dev/kvm"
		echo qemu; exit 0
	fi
	why "kvm: a test boot of $(basename "$kernel") under KVM reached the root mount in ${secs} s"
	echo kvm; exit 0
fi
detail=$(grep -m 1 -E "KVM internal error|emulation failure|failed to initialize kvm|Could not access KVM" "$log" || true)
[ -n "$detail" ] || detail=$(tail -n 1 "$log")
why "qemu (TCG): a test boot of $(basename "$kernel") under KVM failed after ${secs} s: ${detail:-no root mount within 60 s (qemu exit $rc)}"
echo qemu
