"""hftcap listen end to end in a lab the test creates: known workloads on both paths, the
kernel still sees what is not the feed, no XDP program left behind, a foreign program
respected, and every error a single line with a hint."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from listenproc import FEED, Listener, send_test_packets, xdp_prog_on

pytestmark = pytest.mark.root

MODES = [("xdp", "wakeup"), ("xdp", "busy"), ("kernel", "wakeup"), ("kernel", "busy")]


@pytest.mark.parametrize("path,poll", MODES, ids=[f"{p}-{m}" for p, m in MODES])
def test_known_workload_23_packets_of_7(lab, path, poll):
    li = Listener(lab, "--path", path, "--poll", poll, "--count", 23, "--duration", 20).wait_ready()
    try:
        send_test_packets(lab, 23, 7)
        r = li.result()
    finally:
        li.kill()
    assert r["path"] == path and r["poll_mode"] == poll
    assert r["stopped_by"] == "count"
    assert r["packets"] == 23
    assert r["messages"] == 161
    assert r["gaps"] == 0 and r["duplicates"] == 0
    assert r["last_sequence"] == 161
    assert all(v == 0 for v in r["drops"].values()), r["drops"]
    assert r["hw_timestamps"] is False  # veth has no PHC
    assert "no hardware RX timestamp" in r["hw_timestamps_reason"]
    if path == "xdp":
        assert r["xdp_mode"] in ("native", "generic")
        assert r["bind_mode"] in ("zerocopy", "copy")
        assert r["xdp"]["redirected"] == 23
        assert r["xdp"]["pass_no_socket"] == 0
    else:
        assert r["xdp"] == {}


def test_gap_and_duplicate_counted(lab):
    """Sequences 1-35, then 50-56 (gap of 14), then 1-7 again (7 duplicates)."""
    li = Listener(lab, "--count", 7, "--duration", 20).wait_ready()
    try:
        send_test_packets(lab, 5, 7, first=1)
        send_test_packets(lab, 1, 7, first=50)
        send_test_packets(lab, 1, 7, first=1)
        r = li.result()
    finally:
        li.kill()
    assert r["packets"] == 7
    assert r["messages"] == 42
    assert r["gaps"] == 14
    assert r["duplicates"] == 7
    assert r["last_sequence"] == 56


def _ns(lab, *cmd, **kw):
    return subprocess.run(["ip", "netns", "exec", *cmd], capture_output=True, text=True, timeout=30, **kw)


def test_non_feed_traffic_reaches_the_kernel(lab):
    li = Listener(lab, "--duration", 30).wait_ready()
    rx = None
    try:
        # ICMP to the host side.
        ping = _ns(lab, lab.ex_ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", lab.host_addr)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # Unicast UDP to another port, received by an ordinary socket in the host namespace.
        code = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
                "s.bind(('0.0.0.0',26999));s.settimeout(10);print('bound',flush=True);"
                "print(s.recv(100).decode());")
        rx = subprocess.Popen(["ip", "netns", "exec", lab.host_ns, sys.executable, "-c", code],
                              stdout=subprocess.PIPE, text=True)
        # bounded: the receiver exits within 10 s even if nothing comes
        assert rx.stdout.readline().strip() == "bound", "receiver did not bind"
        send = ("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
                f"[s.sendto(b'not-the-feed',('{lab.host_addr}',26999)) for _ in range(3)]")
        assert _ns(lab, lab.ex_ns, sys.executable, "-c", send).returncode == 0
        out, _ = rx.communicate(timeout=15)
        assert out.strip() == "not-the-feed"
        li.p.send_signal(signal.SIGINT)
        r = li.result()
    finally:
        li.kill()
        if rx and rx.poll() is None:
            rx.kill()
    assert r["stopped_by"] == "SIGINT"
    assert r["xdp"]["redirected"] == 0
    assert r["xdp"]["pass_not_feed"] >= 6  # 3 pings + 3 datagrams (plus ARP/IPv6 noise)


@pytest.mark.parametrize("how", ["count", "SIGTERM", "SIGKILL"])
def test_no_xdp_program_left_behind(lab, how):
    li = Listener(lab, "--count", 1, "--duration", 30).wait_ready()
    try:
        assert xdp_prog_on(lab), "program should be attached while listening"
        if how == "count":
            send_test_packets(lab, 1, 1)
            assert li.result()["packets"] == 1
        else:
            li.p.send_signal(getattr(signal, how))
            li.p.communicate(timeout=15)
            if how == "SIGTERM":
                assert li.p.returncode == 0
    finally:
        li.kill()
    deadline = time.monotonic() + 5  # the link is released with the last fd
    while xdp_prog_on(lab) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert xdp_prog_on(lab) is None


PASS_PROG = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int foreign_pass(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""


def test_foreign_xdp_program_is_refused_and_kept(lab, tmp_path):
    src = tmp_path / "pass.bpf.c"
    src.write_text(PASS_PROG)
    obj = tmp_path / "pass.bpf.o"
    arch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["clang", "-O2", "-target", "bpf", "-idirafter", f"/usr/include/{arch}", "-c", str(src),
                    "-o", str(obj)], check=True)
    subprocess.run(["ip", "-n", lab.host_ns, "link", "set", "dev", lab.host_if, "xdpgeneric", "obj", str(obj),
                    "sec", "xdp"], check=True)
    before = xdp_prog_on(lab)
    assert before
    cp = subprocess.run([str(sys.modules["listenproc"].BIN / "hftcap"), "listen", "--netns", lab.host_ns,
                         "-i", lab.host_if, "--feed", FEED, "--duration", "1"], capture_output=True, text=True,
                        timeout=30)
    assert cp.returncode == 1
    lines = cp.stderr.strip().splitlines()
    assert lines[0].startswith("hftcap: error: interface") and f"id {before}" in lines[0]
    assert "foreign_pass" in lines[0]
    assert lines[1].startswith("hint:") and len(lines) == 2
    assert xdp_prog_on(lab) == before


def _hftcap_send(lab, count, k=1, rate=0):
    import json
    cp = subprocess.run([str(sys.modules["listenproc"].BIN / "hftcap"), "send", "--netns", lab.ex_ns, "--feed", FEED,
                         "--rate", str(rate), "--count", str(count), "-k", str(k), "--max-seconds", "20", "--json"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def _wait_end_of_session(li, timeout: float) -> None:
    """Until the listener has counted an End of Session packet (its Prometheus endpoint), or fail."""
    import re
    import urllib.request
    line = next(x for x in li.err_lines if "metrics at" in x)
    url = re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", line).group(1)
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        m = re.search(r"^hftcap_moldudp64_end_of_session_total(?:\{[^}]*\})? (\S+)$", body, re.M)
        seen = float(m.group(1)) if m else None
        if seen and seen >= 1:
            return
        time.sleep(0.05)
    pytest.fail(f"no End of Session counted within {timeout} s of the send's end (metric: {seen})")


@pytest.mark.slow
@pytest.mark.parametrize("path,poll", MODES, ids=[f"{p}-{m}" for p, m in MODES])
def test_200k_packets_at_full_rate_loss_reported_exactly(lab, path, poll):
    """The sender's fastest rate: whatever is lost is reported as gaps (the End of Session
    packets carry the next sequence number), never hidden: received + gaps == sent."""
    # No fixed duration: a loaded host can take longer than any guess to start the sender. The
    # listener runs under a 90 s bound and is stopped (SIGTERM) once its own counters show the
    # End of Session packets, read from its metrics endpoint on loopback.
    li = Listener(lab, "--path", path, "--poll", poll, "--duration", 90, "--metrics", "127.0.0.1:0").wait_ready()
    try:
        sent = _hftcap_send(lab, 200_000)
        _wait_end_of_session(li, timeout=30.0)
        li.p.send_signal(signal.SIGTERM)
        r = li.result()
    finally:
        li.kill()
    assert sent["data_packets"] == 200_000 and sent["messages_sent"] == 200_000
    assert r["end_of_session"] >= 1, "the End of Session packets must arrive (they reveal tail loss)"
    assert r["messages"] + r["gaps"] == 200_000
    assert r["last_sequence"] == 200_000  # End of Session names 200,001 as next, lost or not
    assert r["duplicates"] == 0
    print(f"{path}-{poll}: received {r['messages']:,} of 200,000 at {sent['packet_rate_pps']:,.0f} pps, "
          f"lost {r['gaps']:,} (reported as gaps)")


MQ_SENDER = r"""
import socket, struct, sys, time
n, ifaddr = int(sys.argv[1]), sys.argv[2]
socks = []
for i in range(8):  # 8 flows (source ports): the sender's veth spreads them over its queues
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
    s.bind((ifaddr, 40000 + i))
    socks.append(s)
msg = b"S" + b"\0" * 10 + b"O"
deadline = time.monotonic() + 10
for i in range(n):
    if time.monotonic() > deadline:
        sys.exit("time bound reached")
    socks[i % 8].sendto(b"MQSESSION1" + struct.pack(">QHH", i + 1, 1, len(msg)) + msg, ("239.1.1.1", 26400))
    time.sleep(0.0002)
"""


@pytest.fixture
def multiqueue_lab():
    """Two namespaces joined by a veth pair with 4 RX/TX queues per end."""
    import types
    import uuid
    tag = uuid.uuid4().hex[:5]
    a, b = f"mq{tag}a", f"mq{tag}b"
    run = lambda *c: subprocess.run(c, check=True, capture_output=True)  # noqa: E731
    run("ip", "netns", "add", a)
    run("ip", "netns", "add", b)
    try:
        run("ip", "link", "add", f"{a}0", "netns", a, "numtxqueues", "4", "numrxqueues", "4", "type", "veth",
            "peer", "name", f"{b}0", "netns", b, "numtxqueues", "4", "numrxqueues", "4")
        run("ip", "-n", a, "addr", "add", "10.78.9.1/24", "dev", f"{a}0")
        run("ip", "-n", b, "addr", "add", "10.78.9.2/24", "dev", f"{b}0")
        run("ip", "-n", a, "link", "set", f"{a}0", "up")
        run("ip", "-n", b, "link", "set", f"{b}0", "up")
        run("ip", "-n", a, "route", "add", "224.0.0.0/4", "dev", f"{a}0")
        yield types.SimpleNamespace(ex_ns=a, host_ns=b, host_if=f"{b}0", ex_addr="10.78.9.1", name=tag)
    finally:
        subprocess.run(["ip", "netns", "del", a], capture_output=True)
        subprocess.run(["ip", "netns", "del", b], capture_output=True)


@pytest.mark.parametrize("queue", ["0", "all"])
def test_multiqueue_binding(multiqueue_lab, queue):
    """One queue bound on a 4-queue interface misses the flows on the others, counts them in
    pass_no_socket and says so; --queue all binds a socket per queue and misses nothing."""
    lab = multiqueue_lab
    li = Listener(lab, "--queue", queue, "--count", 400 if queue == "all" else 10**6, "--duration", 8).wait_ready()
    try:
        subprocess.run(["ip", "netns", "exec", lab.ex_ns, sys.executable, "-c", MQ_SENDER, "400", lab.ex_addr],
                       check=True, timeout=30)
        if queue != "all":
            li.p.send_signal(signal.SIGINT)
        r = li.result()
    finally:
        li.kill()
    assert r["rx_queues"] == 4
    if queue == "all":
        assert r["queue"] == "0,1,2,3" and r["packets"] == 400
        # The 8 flows land on 4 queues, which the data thread drains one after the other: a
        # packet can be taken after a later one from another queue. MoldUDP64 then counts it
        # once as a gap and once as a duplicate, never lost and never twice applied.
        assert r["messages"] + r["gaps"] == 400 and r["duplicates"] == r["gaps"]
        assert r["last_sequence"] == 400
        assert r["xdp"]["pass_no_socket"] == 0 and "warning" not in r
    else:
        assert r["packets"] + r["xdp"]["pass_no_socket"] == 400
        assert r["xdp"]["pass_no_socket"] > 0, "8 flows should not all hash to queue 0"
        assert "--queue all" in r["warning"]
