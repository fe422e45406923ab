#!/usr/bin/env bash
# bcc-headers.sh: give bcc kernel headers when the running kernel has no headers package.
# bcc compiles its programs against /lib/modules/$(uname -r)/build (and .../source). When that is
# missing, point both at the newest installed Debian generic headers (linux-headers-*-amd64 and its
# -common). hftcap's trace programs read only tracepoint arguments, so a header version that differs
# from the kernel is enough for them (no kernel struct is dereferenced).
# Idempotent; prints one line saying what it did. Run as root. Exit 1 if no headers are installed.
set -euo pipefail

rel=$(uname -r)
moddir=/lib/modules/$rel

if [[ -e $moddir/build/include/linux/kconfig.h || -e $moddir/build/include/generated/autoconf.h ]]; then
    echo "bcc-headers: $moddir/build already has headers ($(readlink -f "$moddir/build")); nothing to do"
    exit 0
fi

arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
build=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z $build ]]; then
    echo "bcc-headers: no /usr/src/linux-headers-*-$arch found; install one: apt-get install -y linux-headers-$arch" >&2
    exit 1
fi
common=${build%-"$arch"}-common
if [[ ! -d $common ]]; then
    echo "bcc-headers: $build has no matching $common; install linux-headers-$arch again" >&2
    exit 1
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "bcc-headers: must run as root to write $moddir" >&2
    exit 1
fi
mkdir -p "$moddir"
ln -sfn "$build" "$moddir/build"
ln -sfn "$common" "$moddir/source"
echo "bcc-headers: kernel $rel has no headers; linked $moddir/build -> $build and source -> $common"
