"""The Vagrant test VM definition: `vagrant validate` passes offline, a broken tree does not, and
the kernel gate refuses kernels without the XDP RX-metadata kfuncs (< 6.3)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"


def _vagrant(args, cwd, tmp_path):
    if shutil.which("vagrant") is None:
        if IN_CI:
            pytest.fail("vagrant is not installed (CI=true: this test must run; apt-get install vagrant)")
        pytest.skip("vagrant is not installed (apt-get install vagrant)")
    env = dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1",
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dot-vagrant"))
    return subprocess.run(["vagrant", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_vagrant_validate(tmp_path):
    # Everything but the provider blocks: needs no hypervisor.
    r = _vagrant(["validate", "--ignore-provider"], REPO, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout
    # With the provider blocks, when this host has a usable provider (libvirt or VirtualBox).
    r = _vagrant(["validate"], REPO, tmp_path)
    out = r.stdout + r.stderr
    if "isn't usable on this system" in out or "No usable default provider" in out:
        return
    assert r.returncode == 0, out
    assert "validated successfully" in r.stdout


def test_vagrant_validate_fails_without_the_provisioning_scripts(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(REPO / "Vagrantfile", tree / "Vagrantfile")
    r = _vagrant(["validate", "--ignore-provider"], tree, tmp_path)
    assert r.returncode != 0
    assert "check-kernel.sh" in r.stdout + r.stderr


def test_vagrantfile_asks_for_two_cpus_and_4gb():
    text = (REPO / "Vagrantfile").read_text()
    assert text.count(".cpus = 2") == 2 and text.count(".memory = 4096") == 2
    assert 'inline: "bash /vagrant/setup.sh"' in text


@pytest.mark.parametrize("release, ok", [
    ("6.1.0-56-amd64", False),        # Debian 12: no RX-metadata kfuncs
    ("5.19.0", False),
    ("6.3.0", True),
    ("6.12.38+deb13-amd64", True),    # Debian 13 trixie
    ("6.8.0-45-generic", True),       # Ubuntu 24.04
    ("7.0.1", True),
])
def test_check_kernel_gate(release, ok):
    r = subprocess.run(["bash", str(REPO / "vagrant" / "check-kernel.sh")],
                       env=dict(os.environ, HFTCAP_KERNEL_RELEASE=release),
                       capture_output=True, text=True, timeout=30)
    assert (r.returncode == 0) == ok, r.stdout + r.stderr
    assert release in (r.stdout if ok else r.stderr)
