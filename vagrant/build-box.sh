#!/usr/bin/env bash
# build-box.sh: build the hftcap test VM's libvirt box offline, from Debian packages only (no box
# download): mmdebstrap of Debian 13 "trixie" (Linux 6.12: has the XDP RX-metadata kfuncs, which
# need 6.3) with the packages setup.sh installs already in it, an ext4 root filesystem made with
# mkfs.ext4 -d (no loop device, no mount), converted to qcow2 by qemu-img and packed with the kernel
# and initrd that the box's Vagrantfile boots directly (no bootloader in the image).
#
#   sudo vagrant/build-box.sh [OUT_DIR]       default OUT_DIR: vagrant/box (ignored by git)
#
# Writes OUT_DIR/hftcap-trixie.box; add it with `vagrant box add --name hftcap/trixie-local ...`
# (vagrant/run-tests.sh does both). The apt mirror is the first Debian one the host's apt uses
# (override: HFTCAP_BOX_MIRROR=URL). Needs root, mmdebstrap, qemu-utils, e2fsprogs, vagrant (for
# its insecure public key, replaced on the first `vagrant up`). Takes a few minutes.
set -euo pipefail
say() { printf 'build-box: %s\n' "$*"; }
die() { printf 'build-box: error: %s\n' "$1" >&2; [ -z "${2:-}" ] || printf 'hint: %s\n' "$2" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=$(realpath -m "${1:-$here/box}")
suite=trixie
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap creates device nodes and file owners)" "sudo $0 $*"
for tool in mmdebstrap mkfs.ext4 qemu-img; do
	command -v "$tool" >/dev/null || die "$tool is not installed" "apt-get install -y mmdebstrap e2fsprogs qemu-utils"
done
pubkey=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n 1 || true)
[ -n "$pubkey" ] || die "vagrant's insecure public key (keys/vagrant.pub) was not found" "apt-get install -y vagrant"

# The host's own Debian mirror (deb822 URIs: lines and one-line deb entries), not debian-security.
host_mirror() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && cat "$f"
	done | grep -oE '(^URIs:|^deb) +(\[[^]]*\] +)?[a-z]+://[^ ]+/debian/?( |$)' | grep -oE '[a-z]+://[^ ]+' \
		| head -n 1 || true
}
mirror=${HFTCAP_BOX_MIRROR:-$(host_mirror)}
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list(.d)" "HFTCAP_BOX_MIRROR=http://your-mirror/debian $0"

# What setup.sh would install on Debian, so that provisioning in a slow (TCG) guest installs no
# apt package; plus what a Vagrant libvirt guest needs: systemd, DHCP, DNS, ssh, sudo, rsync.
read -r -a project_pkgs <<<"$("$root/setup.sh" packages debian)"
base_pkgs=(linux-image-amd64 initramfs-tools systemd-sysv systemd-resolved udev dbus openssh-server
           sudo rsync ca-certificates iproute2 e2fsprogs less)
includes=$(IFS=,; echo "${base_pkgs[*]},${project_pkgs[*]}")

work=$(mktemp -d "${TMPDIR:-/var/tmp}/hftcap-box.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$out"
say "debootstrapping $suite from $mirror with ${#project_pkgs[@]} project packages into $rootfs"
# The hooks run on the host with the chroot as $1.
mmdebstrap --variant=apt --include="$includes" \
	--essential-hook='echo "wireshark-common wireshark-common/install-setuid boolean false" | chroot "$1" debconf-set-selections' \
	--customize-hook='echo hftcap > "$1/etc/hostname"' \
	--customize-hook='printf "/dev/vda / ext4 defaults 0 1\n" > "$1/etc/fstab"' \
	--customize-hook='printf "[Match]\nType=ether\n\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/10-dhcp.network"' \
	--customize-hook='chroot "$1" systemctl enable systemd-networkd systemd-resolved ssh' \
	--customize-hook='chroot "$1" useradd --create-home --shell /bin/bash vagrant' \
	--customize-hook='echo "vagrant ALL=(ALL) NOPASSWD: ALL" > "$1/etc/sudoers.d/vagrant"; chmod 0440 "$1/etc/sudoers.d/vagrant"' \
	--customize-hook="install -d -m 0700 -o 1000 -g 1000 \"\$1/home/vagrant/.ssh\"; install -m 0600 -o 1000 -g 1000 '$pubkey' \"\$1/home/vagrant/.ssh/authorized_keys\"" \
	--customize-hook='cp -L "$1"/boot/vmlinuz-* "$1"/boot/initrd.img-* "$1/.."' \
	--customize-hook='rm -f "$1/etc/resolv.conf"; ln -s ../run/systemd/resolve/stub-resolv.conf "$1/etc/resolv.conf"' \
	--customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages' \
	"$suite" "$rootfs" "$mirror"
# The customize hook $1 is $rootfs: the kernel and initrd are in $work.
kernel=$(ls "$work"/vmlinuz-* | head -n 1)
initrd=$(ls "$work"/initrd.img-* | head -n 1)
release=${kernel##*/vmlinuz-}
HFTCAP_KERNEL_RELEASE=$release bash "$here/check-kernel.sh"

# Root filesystem: what is installed plus 6 GiB for the venv, the build and the tests' files.
used_mib=$(du -sm "$rootfs" | cut -f1)
size_mib=$(( used_mib + 6144 ))
say "root filesystem: ${used_mib} MiB used, ${size_mib} MiB image"
mkfs.ext4 -q -F -L hftcap-root -d "$rootfs" "$work/root.raw" "${size_mib}M"
qemu-img convert -f raw -O qcow2 "$work/root.raw" "$work/box.img"
rm -f "$work/root.raw"
rm -rf "$rootfs"
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
rm -f "$kernel" "$initrd"
virtual_gib=$(( (size_mib + 1023) / 1024 ))
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$virtual_gib" > "$work/metadata.json"
# The box's own Vagrantfile: boot the packed kernel directly (the image has no bootloader). libvirt's
# QEMU runs as its own user, which cannot reach into a 0700 home holding ~/.vagrant.d: the kernel
# and initrd are copied once to libvirt's boot directory.
cat > "$work/Vagrantfile" <<EOF
# hftcap offline box (built by vagrant/build-box.sh): the image is a bare ext4 root filesystem,
# booted by the Linux kernel $release and initrd packed beside this file.
require "fileutils"
boot = "/var/lib/libvirt/boot/hftcap-$release"
files = %w[vmlinuz initrd.img]
unless files.all? { |f| File.size?(File.join(boot, f)) == File.size(File.join(__dir__, f)) }
  begin
    FileUtils.mkdir_p(boot)
    FileUtils.cp(files.map { |f| File.join(__dir__, f) }, boot)
  rescue SystemCallError => e
    abort "hftcap box: cannot copy its kernel to #{boot} (#{e.message}); hint: run vagrant once as root"
  end
end
Vagrant.configure("2") do |config|
  config.vm.provider "libvirt" do |lv|
    lv.kernel = File.join(boot, "vmlinuz")
    lv.initrd = File.join(boot, "initrd.img")
    lv.cmd_line = "root=/dev/vda rw console=ttyS0,115200 panic=10"
  end
end
EOF
echo "$release" > "$work/kernel-release"
say "packing $out/hftcap-trixie.box (kernel $release)"
tar -C "$work" -cf "$out/hftcap-trixie.box.part" metadata.json Vagrantfile box.img vmlinuz initrd.img kernel-release
mv "$out/hftcap-trixie.box.part" "$out/hftcap-trixie.box"
cp "$work/vmlinuz" "$out/vmlinuz"
echo "$release" > "$out/kernel-release"
say "done: $out/hftcap-trixie.box ($(du -h "$out/hftcap-trixie.box" | cut -f1))"
