"""hftcap.measure.trace without root: the checks that turn a missing piece into one error with a hint, and
the /proc resolution of the receiver filter."""

import os
import socket
import sys
import types

import pytest

from hftcap.measure import trace
from hftcap.errors import HftcapError


def test_not_root_is_refused_with_hint(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(HftcapError) as ei:
        trace.KernelPathTracer(pid=os.getpid()).start()
    assert "root" in ei.value.msg and "sudo" in ei.value.hint and ei.value.code == 1


def test_missing_bcc_says_how_to_install(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setitem(sys.modules, "bcc", None)          # import bcc -> ImportError
    with pytest.raises(HftcapError) as ei:
        trace.KernelPathTracer().start()
    assert "bcc" in ei.value.msg
    assert "apt-get install python3-bpfcc" in ei.value.hint


def test_missing_headers_points_at_script(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setitem(sys.modules, "bcc", types.ModuleType("bcc"))
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir",
                        lambda p: False if str(p).startswith("/lib/modules/") else real_isdir(p))
    with pytest.raises(HftcapError) as ei:
        trace.KernelPathTracer().start()
    assert f"/lib/modules/{os.uname().release}/build" in ei.value.msg
    assert "scripts/bcc-headers.sh" in ei.value.hint


def test_bad_duration_is_a_usage_error():
    with pytest.raises(HftcapError) as ei:
        trace.run_trace(duration=0)
    assert ei.value.code == 2


def test_no_filter_means_every_receiver():
    assert trace.resolve_receivers() is None
    t = trace.KernelPathTracer()
    assert not t.filtering and t.describe_filter().startswith("none")


def test_pid_filter_resolves_to_thread_group():
    assert trace.resolve_receivers(pid=os.getpid()) == {os.getpid()}


def test_unknown_pid_is_an_error_at_start_only():
    pid = 2 ** 22 + 12345                                 # above pid_max
    with pytest.raises(HftcapError):
        trace.resolve_receivers(pid=pid)
    assert trace.resolve_receivers(pid=pid, strict=False) == set()


def test_port_filter_finds_the_socket_owner():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert os.getpid() in trace.resolve_receivers(port=port)
        assert os.getpid() in trace.resolve_receivers(port=port, pid=os.getpid())
    assert os.getpid() not in trace.resolve_receivers(port=port)


def test_netns_filter_by_path_and_unknown_name():
    assert os.getpid() in trace.resolve_receivers(netns=f"/proc/{os.getpid()}/ns/net")
    with pytest.raises(HftcapError) as ei:
        trace.resolve_receivers(netns="hftcap-no-such-ns")
    assert "hftcap-no-such-ns" in ei.value.msg and ei.value.hint == "ip netns list"


def test_filter_description_names_every_condition():
    d = trace.KernelPathTracer(netns="rx", port=4000, pid=42).describe_filter()
    assert "pid 42" in d and "port 4000" in d and "namespace rx" in d
