"""Every error of `hftcap listen` is one line plus at most one hint, with the right exit code."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from bounds import bound

BIN = Path(sys.executable).parent
HFTCAP = str(BIN / "hftcap")


def run(*args, user=None):
    if not user:
        return subprocess.run([HFTCAP, *map(str, args)], capture_output=True, text=True, timeout=bound(60))
    return run_as(user, *args)


def run_as(user: int, *args):
    """The installed hftcap as another user. A checkout under /root (mode 700) is out of that
    user's reach, so the venv is bind-mounted on a world-readable directory in a mount namespace
    of this call alone (nothing outside sees it) and run from there: the same files, reachable."""
    venv = Path(sys.prefix)
    with tempfile.TemporaryDirectory(prefix="hftcap-venv-") as mnt:
        os.chmod(mnt, 0o755)
        script = ('mount --bind "$1" "$2" && shift 2 && '
                  f'exec setpriv --reuid={user} --regid={user} --clear-groups "$@"')
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
               str(venv), mnt, f"{mnt}/bin/python", "-m", "hftcap", *map(str, args)]
        # cwd /: `-m` must find the installed package, not a source tree in the working directory
        return subprocess.run(cmd, capture_output=True, text=True, timeout=bound(60), cwd="/")


def assert_one_error(cp, code, *needles):
    assert cp.returncode == code, (cp.returncode, cp.stdout, cp.stderr)
    lines = cp.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, cp.stderr
    assert lines[0].startswith("hftcap: error: "), cp.stderr
    if len(lines) == 2:
        assert lines[1].startswith("hint: ")
    assert "Traceback" not in cp.stderr
    for n in needles:
        assert n in cp.stderr, (n, cp.stderr)


def test_group_not_multicast():
    assert_one_error(run("listen", "-i", "lo", "--feed", "10.0.0.1:26400"), 2, "not a multicast group")


@pytest.mark.parametrize("port", ["0", "65536", "x"])
def test_bad_port(port):
    assert_one_error(run("listen", "-i", "lo", "--feed", f"239.1.1.1:{port}"), 2, "not 1-65535")


def test_bad_choice():
    assert_one_error(run("listen", "-i", "lo", "--feed", "239.1.1.1:1", "--path", "dpdk"), 2, "bad --path")


def test_unknown_option():
    assert_one_error(run("listen", "--bogus"), 2, "No such option")


def test_debug_shows_traceback():
    cp = run("--debug", "listen", "-i", "lo", "--feed", "10.0.0.1:26400")
    assert cp.returncode == 2 and "Traceback" in cp.stderr


@pytest.mark.root
@pytest.mark.root
def test_not_root():
    assert_one_error(run("listen", "-i", "lo", "--feed", "239.1.1.1:26400", user=65534), 1, "needs root", "sudo")


@pytest.mark.root
def test_missing_namespace():
    assert_one_error(run("listen", "--netns", "hftcap-no-such-ns", "-i", "x0", "--feed", "239.1.1.1:1"), 1,
                     "does not exist", "hftcap lab up")


@pytest.mark.root
def test_unknown_interface(lab):
    assert_one_error(run("listen", "--netns", lab.host_ns, "-i", "nosuch0", "--feed", "239.1.1.1:1"), 1,
                     "unknown interface 'nosuch0'")


@pytest.mark.root
def test_interface_down(lab):
    subprocess.run(["ip", "-n", lab.host_ns, "link", "set", lab.host_if, "down"], check=True)
    assert_one_error(run("listen", "--netns", lab.host_ns, "-i", lab.host_if, "--feed", "239.1.1.1:1"), 1,
                     "is down", "link set")


def test_kernel_without_af_xdp(monkeypatch):
    """The AF_XDP probe maps EAFNOSUPPORT to the named kernel feature (no such kernel here)."""
    import errno
    import socket as socket_mod

    from hftcap.receive import path as capture
    from hftcap.errors import HftcapError

    def no_xdp(*a, **k):
        if a and a[0] == capture.AF_XDP:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return socket_mod.socket.__new__(socket_mod.socket)

    monkeypatch.setattr(capture.socket, "socket", no_xdp)
    with pytest.raises(HftcapError) as ei:
        capture.check_kernel("xdp")
    assert "CONFIG_XDP_SOCKETS" in ei.value.msg and "--path kernel" in ei.value.hint
    capture.check_kernel("kernel")  # the kernel path does not need AF_XDP


def test_generator_arguments_are_a_usage_error():
    assert_one_error(run("exchange", "--stocks", "8", "--messages", "10", "--write", "/dev/null"), 2,
                     "cannot generate 10 messages for 8 stocks")


def test_generator_profile_errors():
    assert_one_error(run("exchange", "--profile", "night", "--write", "/dev/null"), 2, "--profile 'night'")
    assert_one_error(run("exchange", "--profile", "day", "--stocks", "100", "--messages", "200",
                         "--write", "/dev/null"), 2, "cannot generate 200 messages for 100 stocks",
                     "at least 316 messages")
