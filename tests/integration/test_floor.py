"""The floor pieces on their own (hftcap floor recv / send) and the XDP program's cost:
exact accounting of the floor's packets and hops, and BPF run-time statistics left as found
after a run and after an error."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from listenproc import FEED, Listener, send_test_packets, xdp_prog_on
from bounds import bound

pytestmark = pytest.mark.root
BIN = Path(sys.executable).parent
HFTCAP = str(BIN / "hftcap")
SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


def sysctl() -> str:
    return Path(SYSCTL).read_text().strip()


def start_floor_recv(lab, kind, tmp_path):
    out = tmp_path / f"floor-{kind}.json"
    p = subprocess.Popen([HFTCAP, "floor", "recv", "--netns", lab.host_ns, "-i", lab.host_if, "--feed", FEED,
                          "--kind", kind, "--duration", f"{bound(60):g}", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + bound(20)
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stderr], [], [], 0.2)
        if r:
            line = p.stderr.readline()
            if "listening on" in line:
                return p, out
            if not line:
                break
    p.kill()
    raise AssertionError(f"floor recv did not start: {p.communicate()}")


@pytest.mark.parametrize("kind", ["xdp", "kernel"])
def test_floor_recv_accounts_every_packet_in_every_hop(lab, kind, tmp_path):
    from hftcap.measure import floor, latency
    rx, out = start_floor_recv(lab, kind, tmp_path)
    try:
        cp = subprocess.run(["taskset", "-c", "0", HFTCAP, "floor", "send", "--netns", lab.ex_ns, "--feed", FEED,
                             "--rate", "5000", "--packets", "2000", "--payload", "100"],
                            capture_output=True, text=True, timeout=bound(60))
        assert cp.returncode == 0, cp.stderr
        sent = json.loads(cp.stdout)
        # `floor recv` reports only at its end (no live counter to wait on). The accounting below
        # holds for however many datagrams it took (one sample per hop per datagram, at most the
        # 2,000 sent), so this pause only lets the last ones in; it cannot make the test fail.
        time.sleep(0.3)
        rx.send_signal(signal.SIGINT)
        _, err = rx.communicate(timeout=bound(30))
        assert rx.returncode == 0, err
    finally:
        if rx.poll() is None:
            rx.kill()
    got = json.loads(out.read_text())
    assert sent["sent"] == 2000 and sent["errors"] == 0 and sent["payload_bytes"] == 100
    s = sent["stamp_to_return"]
    assert s["count"] == 2000 and 0 < s["p50_ns"] <= s["p99_ns"] <= s["max_ns"] and s["clock"] == "CLOCK_TAI"
    assert 0 < got["packets"] <= 2000 and got["bad"] == 0
    assert set(got["hops"]) == set(floor.HOPS[kind]) == set(got["hists"])
    for hop, d in got["hists"].items():
        n = latency.from_sparse(d).count + got["negative"].get(hop, 0)
        # every packet gives one sample per hop (XDP hops: unless the program did not stamp it)
        assert n == got["packets"] - (got["unstamped"] if hop != "send_to_app" else 0), hop
        v = got["hops"][hop]
        assert 0 < v["p50_ns"] <= v["p99_ns"] <= v["max_ns"], (hop, v)
    if kind == "xdp":
        assert got["unstamped"] == 0
        c = got["xdp_program_cost"]
        # the program ran for every datagram sent (and maybe an IGMP report or two)
        assert c["runs"] >= got["packets"] and c["ns_per_run"] > 0 and "sched_clock" in c["clock"]
        assert xdp_prog_on(lab) is None  # detached again
    else:
        assert got["xdp_program_cost"] is None


def test_bpf_stats_are_on_for_a_listen_run_and_left_as_found(lab):
    before = sysctl()
    li = Listener(lab, "--path", "xdp", "--count", "40").wait_ready()
    try:
        send_test_packets(lab, 40, 2)
        res = li.result()
    finally:
        li.kill()
    c = res["xdp_program_cost"]
    assert c["runs"] >= 40 and c["ns_per_run"] > 0, c  # counted: statistics were on
    assert sysctl() == before


def test_bpf_stats_left_as_found_after_an_error(lab):
    before = sysctl()
    cp = subprocess.run([HFTCAP, "listen", "--netns", lab.host_ns, "-i", "nosuchif0", "--feed", FEED,
                         "--path", "xdp", "--duration", "1"], capture_output=True, text=True, timeout=bound(60))
    assert cp.returncode != 0 and "unknown interface 'nosuchif0'" in cp.stderr
    assert "Traceback" not in cp.stderr
    assert sysctl() == before


def test_stats_enabled_closes_its_fd_when_the_block_raises():
    from hftcap import _core
    from hftcap.measure import progcost
    fds = []

    class Core:
        @staticmethod
        def bpf_enable_stats():
            fds.append(_core.bpf_enable_stats())
            return fds[-1]

    with pytest.raises(RuntimeError):
        with progcost.stats_enabled(Core()):
            os.fstat(fds[0])  # open inside the block
            raise RuntimeError("boom")
    with pytest.raises(OSError):
        os.fstat(fds[0])  # closed: the kernel's statistics holder is gone
