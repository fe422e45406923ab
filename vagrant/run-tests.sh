#!/usr/bin/env bash
# run-tests.sh: the hftcap lab tests in a fresh Vagrant VM, from a host, bounded in time.
#
#   sudo vagrant/run-tests.sh [PYTEST_ARGS...]          on the host: the whole cycle below
#   sudo bash /vagrant/vagrant/run-tests.sh --inside [PYTEST_ARGS...]    in a provisioned VM
#
# On the host it: installs the host tools it lacks (vagrant, vagrant-libvirt, libvirt, QEMU,
# mmdebstrap, qemu-utils); starts libvirtd and virtlogd if they are not running (PID 1 need not be
# systemd; it stops the ones it started); builds the offline box (vagrant/build-box.sh) and adds it
# unless HFTCAP_BOX=published; downloads the Python wheels setup.sh needs into vagrant/wheels, so
# the guest installs them with no index; `vagrant up` (driver chosen by vagrant/choose-driver.sh
# unless HFTCAP_LIBVIRT_DRIVER is set), which provisions with setup.sh; runs the lab tests inside
# (default: -m root tests/integration: namespaces, veth pairs, XDP, the feed) with CI=true; prints
# pytest's summary, the provider, boot and wall times; destroys the VM whatever happened.
#
# HFTCAP_VM_BUDGET (seconds, default 3600) bounds the whole run; every step gets what is left.
# HFTCAP_TEST_TIME_SCALE: the factor of the suite's time bounds in the guest (tests/bounds.py);
# default 20 under TCG, the guest's own calibration under KVM.
# Exit status: pytest's inside the guest, or 1 when a step failed or ran out of time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

if [[ ${1:-} == --inside ]]; then
	# In the guest: setup.sh (the provisioner) built and installed hftcap into /vagrant/.venv.
	shift
	if [[ $(id -u) -ne 0 ]]; then exec sudo bash "$0" --inside "$@"; fi
	src=${HFTCAP_SRC:-/vagrant}
	[[ -x $src/.venv/bin/pytest ]] || bash "$src/setup.sh"
	cd "$src"
	printf 'run-tests: inside: kernel %s, %s CPUs, HFTCAP_TEST_TIME_SCALE=%s\n' "$(uname -r)" "$(nproc)" \
		"${HFTCAP_TEST_TIME_SCALE:-unset (calibrated)}"
	[[ $# -gt 0 ]] || set -- -m root tests/integration
	CI=true exec "$src/.venv/bin/pytest" -p no:cacheprovider -q "$@"
fi

say() { printf 'run-tests: %s\n' "$*"; }
die() { printf 'run-tests: error: %s\n' "$1" >&2; [[ -z ${2:-} ]] || printf 'hint: %s\n' "$2" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (starts libvirtd, builds the box)" "sudo $0 $*"
pytest_args=("$@")
[[ ${#pytest_args[@]} -gt 0 ]] || pytest_args=(-m root tests/integration)
budget=${HFTCAP_VM_BUDGET:-3600}
t0=$(date +%s)
left() { local l=$(( budget - ($(date +%s) - t0) )); (( l > 0 )) || die "the time budget of ${budget} s is used up"; echo "$l"; }
bounded() { local l; l=$(left) || exit 1; timeout -k 30 "$l" "$@"; }
export VAGRANT_CHECKPOINT_DISABLE=1 HFTCAP_BOX=${HFTCAP_BOX:-local}
# A machine of its own: its state under .vagrant/run-tests-PID, its domain named hftcap-test-PID_*.
export VAGRANT_DOTFILE_PATH=$root/.vagrant/run-tests-$$ HFTCAP_VM_PREFIX=hftcap-test-$$-

host_pkgs=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
           qemu-system-x86 qemu-utils dnsmasq-base iptables mmdebstrap e2fsprogs)
missing=()
for p in "${host_pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
	say "installing ${missing[*]}"
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

started=()
stop_daemons() {
	local pidfile
	for pidfile in "${started[@]}"; do
		[[ -s $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
	done
}
if ! virsh -q -c qemu:///system version >/dev/null 2>&1; then
	mkdir -p /run/libvirt
	for d in virtlogd libvirtd; do
		pidfile=/run/libvirt/$d-hftcap-$$.pid
		"$d" -d --pid-file "$pidfile"
		started+=("$pidfile")
	done
	for _ in $(seq 100); do virsh -q -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.1; done
	virsh -q -c qemu:///system version >/dev/null 2>&1 || { stop_daemons; die "libvirtd did not answer within 10 s"; }
	say "started virtlogd and libvirtd (stopped again at the end)"
fi

vm_up=0
finish() {
	local rc=$?
	if (( vm_up )); then
		say "destroying the VM"
		(cd "$root" && timeout -k 10 300 vagrant destroy -f >/dev/null 2>&1) || say "vagrant destroy failed"
		# Whatever vagrant left (a timeout can stop it before it recorded the domain): by name.
		local dom
		for dom in $(virsh -q -c qemu:///system list --all --name | grep "^$HFTCAP_VM_PREFIX" || true); do
			virsh -q -c qemu:///system destroy "$dom" >/dev/null 2>&1 || true
			virsh -q -c qemu:///system undefine --remove-all-storage "$dom" >/dev/null 2>&1 \
				|| say "could not remove domain $dom: virsh undefine --remove-all-storage $dom"
		done
	fi
	rm -rf "$VAGRANT_DOTFILE_PATH"
	stop_daemons
	say "wall time $(( $(date +%s) - t0 )) s"
	exit "$rc"
}
trap finish EXIT
trap 'exit 1' INT TERM

if [[ $HFTCAP_BOX == local ]]; then
	box=$here/box/hftcap-trixie.box
	if [[ ! -s $box ]]; then
		say "building the offline box"
		bounded bash "$here/build-box.sh" "$here/box"
	fi
	added=$(ls -d "${VAGRANT_HOME:-$HOME/.vagrant.d}"/boxes/hftcap-VAGRANTSLASH-trixie-local/*/libvirt 2>/dev/null | head -n 1 || true)
	if [[ -z $added || $box -nt $added/metadata.json ]]; then
		say "adding $box as hftcap/trixie-local"
		bounded vagrant box add --force --name hftcap/trixie-local "$box" >/dev/null
	fi
fi

# PyPI wheels for the guest's Python (Debian 13: CPython 3.13): the guest then needs no index, and
# no TLS trust of its own.
say "downloading the Python wheels into vagrant/wheels"
py=python3
[[ -x $root/.venv/bin/python ]] && py=$root/.venv/bin/python
reqs=$("$py" - "$root/pyproject.toml" <<'EOF'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))
extras = [r for group in p["project"].get("optional-dependencies", {}).values() for r in group]
print("\n".join(["pip", "ninja", *p["build-system"]["requires"], *p["project"]["dependencies"], *extras]))
EOF
)
mapfile -t reqs <<<"$reqs"
bounded "$py" -m pip download -q --disable-pip-version-check --dest "$here/wheels" --only-binary=:all: \
	--implementation cp --python-version 3.13 --abi cp313 --abi abi3 --abi none \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	--platform any "${reqs[@]}" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
export HFTCAP_WHEELHOUSE=/vagrant/vagrant/wheels

cd "$root"
say "vagrant up (box ${HFTCAP_BOX}), then provisioning with setup.sh"
vm_up=1
t_up=$(date +%s)
bounded vagrant up --provider=libvirt --no-provision 2>&1 | tr '\r' '\n' | sed -E '/Progress: [0-9]+%|^\s*$/d' \
	|| die "vagrant up failed"
boot_s=$(( $(date +%s) - t_up ))
driver=$(virsh -q -c qemu:///system dumpxml "$(virsh -q -c qemu:///system list --name | grep "^$HFTCAP_VM_PREFIX" | head -n 1)" \
	| grep -o "<domain type='[a-z]*'" | cut -d"'" -f2)
say "VM up in ${boot_s} s (libvirt domain type ${driver}: $([[ $driver == kvm ]] && echo KVM || echo 'TCG, software emulation'))"
# The suite's time bounds (tests/bounds.py) hold on the machines they were set on; a TCG guest
# runs 10-20x slower, so they are scaled by the upper end of that, 20, unless the caller chose a
# factor. Only the bounds of waits scale; no assertion changes. Under KVM the suite calibrates.
scale=${HFTCAP_TEST_TIME_SCALE:-}
[[ -n $scale || $driver == kvm ]] || scale=20
[[ -z $scale ]] || say "time bounds of the tests scaled by HFTCAP_TEST_TIME_SCALE=$scale"
t_prov=$(date +%s)
bounded vagrant provision 2>&1 | sed 's/^/  /' || die "provisioning (setup.sh in the guest) failed"
prov_s=$(( $(date +%s) - t_prov ))
say "provisioned in ${prov_s} s"
t_test=$(date +%s)
set +e
bounded vagrant ssh -c "sudo ${scale:+HFTCAP_TEST_TIME_SCALE=$scale }bash /vagrant/vagrant/run-tests.sh --inside $(printf '%q ' "${pytest_args[@]}")" \
	-- -o ServerAliveInterval=30 2>&1 | tee "$root/.vagrant/run-tests-$$.log"
rc=${PIPESTATUS[0]}
set -e
test_s=$(( $(date +%s) - t_test ))
say "tests in ${test_s} s; summary from inside the guest:"
grep -E '^(=+ )?[0-9]+ (passed|failed|error|skipped|deselected)' "$root/.vagrant/run-tests-$$.log" | tail -n 1 || say "no pytest summary line (exit $rc)"
rm -f "$root/.vagrant/run-tests-$$.log"
say "provider libvirt/${driver}, box ${HFTCAP_BOX}, boot ${boot_s} s, provision ${prov_s} s, tests ${test_s} s"
exit "$rc"
