#!/usr/bin/env bash
# setup.sh: install everything hftcap needs on a fresh Debian 12 or Ubuntu 24.04 machine, as root,
# then optionally run the demo or the tests. Idempotent: run it as often as you like.
#
#   ./setup.sh            install only
#   ./setup.sh demo       install, then run the one-command demo (the main job)
#   ./setup.sh test       install, then run the whole test suite
#   ./setup.sh packages [debian|ubuntu]   print the apt packages it installs, install nothing
#
# As root it runs as it is; as another user it runs itself again through sudo (it installs
# packages and creates network namespaces, so it needs root either way).
# The Vagrant provisioner and CI (.ci/run) call this same script.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
say() { printf 'setup: %s\n' "$*"; }

. /etc/os-release
PKGS=(clang llvm libbpf-dev libxdp-dev pkg-config zlib1g-dev libisal-dev gcc make python3 python3-venv python3-dev
      python3-bpfcc iproute2 iputils-ping util-linux ethtool linuxptp tshark tmux procps kmod prometheus
      prometheus-node-exporter)
# `./setup.sh packages [debian|ubuntu]` prints the list and installs nothing (vagrant/build-box.sh
# pre-installs it in the offline box).
dist=${ID:-}
if [ "${1:-}" = packages ]; then dist=${2:-$dist}; fi
case "$dist" in
	debian) PKGS+=(bpftool linux-headers-amd64 vagrant vagrant-libvirt) ;;
	ubuntu) PKGS+=(linux-tools-common linux-headers-generic) ;;
	*) say "unknown distribution '${dist:-?}': trying the Debian package names" >&2; PKGS+=(bpftool) ;;
esac
if [ "${1:-}" = packages ]; then echo "${PKGS[*]}"; exit 0; fi

if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null; then
		say "not root: running again through sudo"
		exec sudo -- "$ROOT/setup.sh" "$@"
	fi
	echo "setup: error: needs root (installs packages, creates namespaces) and sudo is not installed" >&2
	echo "hint: run it as root: su -c '$ROOT/setup.sh ${1:-}'" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture: answer no, without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# Vagrant is only needed to validate the Vagrantfile; not every release carries it.
if ! command -v vagrant >/dev/null; then
	apt-get install -y -q --no-install-recommends vagrant >/dev/null 2>&1 \
		|| say "vagrant is not packaged here: skipping it (only the Vagrant VM needs it)"
fi
if ! command -v bpftool >/dev/null && [ -x /usr/sbin/bpftool ]; then export PATH=$PATH:/usr/sbin; fi
if ! bpftool version >/dev/null 2>&1; then
	# Ubuntu's bpftool is a wrapper that needs the tools of the running kernel.
	apt-get install -y -q "linux-tools-$(uname -r)" >/dev/null 2>&1 || apt-get install -y -q linux-tools-generic >/dev/null 2>&1 || true
fi
bpftool version >/dev/null 2>&1 || { echo "setup: error: bpftool does not run" >&2; echo "hint: install bpftool (Debian) or linux-tools-\$(uname -r) (Ubuntu)" >&2; exit 1; }

# bcc compiles its programs against the running kernel's headers.
bash scripts/bcc-headers.sh

# A venv from the system Python, so Debian's bcc (python3-bpfcc) is importable in it.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.base_prefix.startswith("/usr") else 1)'; then
	rm -rf .venv
	/usr/bin/python3 -m venv --system-site-packages .venv
	say "made .venv from /usr/bin/python3 (with system site packages, for bcc)"
fi
.venv/bin/pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/pip install -q --disable-pip-version-check meson-python "meson>=1.2" ninja >/dev/null
PATH=$ROOT/.venv/bin:$PATH .venv/bin/pip install -q --disable-pip-version-check --no-build-isolation ".[test]"
say "hftcap $(.venv/bin/python -c 'import hftcap; print(hftcap.__version__)') installed in $ROOT/.venv (run: $ROOT/.venv/bin/hftcap)"

case "${1:-}" in
	"") ;;
	demo) shift; exec .venv/bin/hftcap demo "$@" ;;
	test) shift; exec .venv/bin/pytest -p no:cacheprovider "$@" ;;
	*) echo "setup: error: unknown action '$1'" >&2; echo "hint: ./setup.sh [demo|test]" >&2; exit 2 ;;
esac
