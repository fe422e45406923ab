#!/usr/bin/env bash
# Run the whole hftcap test suite inside the Vagrant VM, as root (the root tests create network
# namespaces and load BPF programs) and with CI=true, so a root test that cannot run fails
# instead of skipping. Extra arguments go to pytest (e.g. -k trace, -x).
# The venv lives outside /vagrant so that `vagrant rsync` does not remove it.
set -euo pipefail
if [[ $(id -u) -ne 0 ]]; then
    exec sudo --preserve-env=HFTCAP_SRC,HFTCAP_VENV bash "$0" "$@"
fi
src=${HFTCAP_SRC:-/vagrant}
venv=${HFTCAP_VENV:-/opt/hftcap-venv}

if [[ ! -x $venv/bin/python ]]; then
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
"$venv/bin/pip" install -q meson-python meson ninja typer rich numpy pyroute2 pytest
PATH=$venv/bin:$PATH "$venv/bin/pip" install -q --no-build-isolation "$src"

# Run from tests/ so the source tree's hftcap/ does not shadow the installed package.
cd "$src/tests"
CI=true exec "$venv/bin/python" -m pytest -q "$@"
