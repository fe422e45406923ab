"""The Vagrant test VM definition: `vagrant validate` passes offline, a broken tree does not, the
kernel gate refuses kernels without the XDP RX-metadata kfuncs (< 6.3), and the KVM-or-TCG check
falls back to TCG with a reason. The VM run itself is vagrant/run-tests.sh (see vagrant/README.md)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"


def _vagrant(args, cwd, tmp_path, **extra_env):
    if shutil.which("vagrant") is None:
        if IN_CI:
            pytest.fail("vagrant is not installed (CI=true: this test must run; apt-get install vagrant)")
        pytest.skip("vagrant is not installed (apt-get install vagrant)")
    env = dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1",
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dot-vagrant"), **extra_env)
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


def _choose_driver(*args, **env):
    return subprocess.run(["bash", str(REPO / "vagrant" / "choose-driver.sh"), *args],
                          env=dict(os.environ, **env), capture_output=True, text=True, timeout=120)


def test_choose_driver_falls_back_to_tcg_without_kvm_device():
    r = _choose_driver(HFTCAP_KVM_DEVICE="/nonexistent/kvm")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "qemu\n"
    assert "qemu (TCG): /nonexistent/kvm does not exist" in r.stderr


def test_choose_driver_falls_back_to_tcg_when_the_test_boot_fails(tmp_path):
    # Not a kernel: QEMU cannot boot it, so KVM is not proven and TCG is chosen, with a reason.
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(b"\0" * 4096)
    r = _choose_driver(str(bogus))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "qemu\n"
    kvm_usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    if kvm_usable and shutil.which("qemu-system-x86_64"):
        assert "a test boot of vmlinuz under KVM failed" in r.stderr, r.stderr
    elif kvm_usable:
        assert "KVM is unproven" in r.stderr, r.stderr
    elif not kvm_usable:
        assert "/dev/kvm" in r.stderr and "qemu (TCG)" in r.stderr, r.stderr


def test_choose_driver_never_picks_an_unproven_kvm(tmp_path):
    # A KVM device that opens, but no test boot can be made: TCG, with the reason and a hint.
    dev = tmp_path / "kvm"
    dev.write_bytes(b"")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0" * 4096)
    r = _choose_driver(str(kernel), HFTCAP_KVM_DEVICE=str(dev), HFTCAP_QEMU="")
    assert (r.returncode, r.stdout) == (0, "qemu\n"), r.stderr
    assert "qemu-system-x86_64 is not installed, so KVM is unproven" in r.stderr
    assert "HFTCAP_LIBVIRT_DRIVER=kvm" in r.stderr
    r = _choose_driver(str(tmp_path / "no-such-kernel"), HFTCAP_KVM_DEVICE=str(dev),
                       HFTCAP_QEMU="/bin/false")
    assert (r.returncode, r.stdout) == (0, "qemu\n"), r.stderr
    assert "no kernel to test-boot, so KVM is unproven" in r.stderr


def test_vagrantfile_box_and_driver_options(tmp_path):
    r = _vagrant(["validate", "--ignore-provider"], REPO, tmp_path, HFTCAP_BOX="local")
    assert r.returncode == 0, r.stdout + r.stderr
    for var, value in (("HFTCAP_BOX", "nightly"), ("HFTCAP_LIBVIRT_DRIVER", "xen")):
        r = _vagrant(["validate", "--ignore-provider"], REPO, tmp_path, **{var: value})
        assert r.returncode != 0
        assert f"{var} must be" in r.stdout + r.stderr and value in r.stdout + r.stderr


def test_setup_prints_the_package_list_the_box_preinstalls():
    r = subprocess.run(["bash", str(REPO / "setup.sh"), "packages", "debian"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    pkgs = r.stdout.split()
    assert {"clang", "libxdp-dev", "python3-bpfcc", "bpftool", "linux-headers-amd64"} <= set(pkgs)
    ubuntu = subprocess.run(["bash", str(REPO / "setup.sh"), "packages", "ubuntu"],
                            capture_output=True, text=True, timeout=30).stdout.split()
    assert "linux-headers-generic" in ubuntu and "linux-headers-amd64" not in ubuntu
