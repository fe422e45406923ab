"""hftcap send / exchange end to end in a lab the test creates (conftest `lab`: two fresh
namespaces joined by a veth, removed afterwards). The sender runs in a thread that entered the
exchange namespace (setns is per thread); the receiver socket is created by a thread that entered
the host namespace and joins the group on the host veth explicitly. Every send is bounded."""
from __future__ import annotations

import json
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from hftcap import _core
from hftcap.lab.exchange import (frame, itch_add, parse_build, parse_packet, request_packet, run_exchange,
                             run_send)
from bounds import bound

pytestmark = pytest.mark.root

GROUP = "239.1.1.7"
NS_DAY = 86_400_000_000_000
SESSION = b"HFTCAP0001"


def in_netns(ns: str, fn):
    """Run fn() in a fresh thread that entered namespace ns; returns its result."""
    box = {}

    def body():
        try:
            from pyroute2 import netns
            netns.setns(ns, flags=0)
            box["r"] = fn()
        except BaseException as e:
            box["e"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["r"]


def receiver(lab, port: int) -> socket.socket:
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root)
        s.bind((GROUP, port))
        idx = socket.if_nametoindex(lab.host_if)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0") + struct.pack("=i", idx))
        return s
    return in_netns(lab.host_ns, make)


def start_in_ex(lab, fn):
    """fn() in a thread inside the exchange namespace; returns (thread, box)."""
    box = {}

    def body():
        try:
            box["r"] = fn()
        except BaseException as e:
            box["e"] = e
    t = threading.Thread(target=lambda: in_netns(lab.ex_ns, body))
    t.start()
    return t, box


def collect(sock, until_eos: int, timeout: float):
    """(tai_ns_at_receive, datagram) until until_eos End of Session packets or timeout."""
    out, eos, end = [], 0, time.monotonic() + timeout
    while eos < until_eos and time.monotonic() < end:
        r, _, _ = select.select([sock], [], [], 0.2)
        if not r:
            continue
        dg = sock.recv(65536)
        out.append((time.clock_gettime_ns(time.CLOCK_TAI), dg))
        if dg[18:20] == b"\xff\xff":
            eos += 1
    return out


def joined(t, box, timeout=bound(30)):
    t.join(timeout)
    assert not t.is_alive(), "sender did not finish within its bound"
    if "e" in box:
        raise box["e"]
    return box["r"]


def test_send_exact_counts_sequences_and_tai_stamps(lab):
    port = 26410
    rx = receiver(lab, port)
    try:
        t, box = start_in_ex(lab, lambda: run_send(lab.ex_ns, f"{GROUP}:{port}", 5000, 500, 4,
                                                   max_seconds=10))
        got = collect(rx, 3, 15)
        res = joined(t, box)
    finally:
        rx.close()
    assert res["interface"] == lab.ex_if
    assert res["packets_sent"] == 500 and res["messages_sent"] == 2000 and res["send_errors"] == 0
    assert res["stop_reason"] == "done" and res["eos_sent"] == 3 and res["clock"] == "tai-midnight"
    pkts = [(t, parse_packet(dg)) for t, dg in got]
    data = [(t, p) for t, p in pkts if 0 < p[2] < 0xFFFF]
    eos = [p for _, p in pkts if p[2] == 0xFFFF]
    assert len(data) == 500
    assert [p[1] for _, p in data] == [1 + 4 * i for i in range(500)]
    assert all(p[0] == SESSION and p[2] == 4 for _, p in data)
    assert [(p[1], p[3]) for p in eos] == [(2001, [])] * 3
    # stamped with CLOCK_TAI mod 1 day at send time: before the receiver's CLOCK_TAI, and close
    for rx_tai, (_, _, _, msgs) in data:
        for m in msgs:
            lat = (rx_tai % NS_DAY - int.from_bytes(m[5:11], "big")) % NS_DAY
            assert lat < 200_000_000, lat  # < 200 ms: one clock, same machine
    # 500 packets at 5000 pps take ~0.1 s (CLOCK_MONOTONIC)
    assert 0.09e9 <= res["elapsed_ns"] < 2e9


def test_exchange_injection_matches_the_schedule_and_rerequest_recovers(lab):
    port = 26420
    msgs = [itch_add(1, i + 1, b"B", 100, 1_000_000 + i) for i in range(1200)]
    stream = frame(msgs)
    kw = dict(messages_per_packet=3, loss=0.05, dup=0.05, reorder=0.05, seed=11)
    # the same schedule, built without a socket: the wire order must be exactly this
    ref = _core.Sender(stream, messages_per_packet=3, loss=0.05, dup=0.05, reorder=0.05, seed=11,
                       eos_count=3)
    blob, ref_st = ref.build(1 << 22)
    expect = [dg[10:20] for _, dg in parse_build(blob)]
    rx = receiver(lab, port)
    req = in_netns(lab.host_ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        t, box = start_in_ex(lab, lambda: run_exchange(lab.ex_ns, f"{GROUP}:{port}", stream, msg_rate=30000,
                                                       linger=4.0, duration=10, **kw))
        got = collect(rx, 3, 15)
        wire = [dg[10:20] for _, dg in got]
        assert wire == expect
        seen = {}
        for _, dg in got:
            _, seq, count, blocks = parse_packet(dg)
            if 0 < count < 0xFFFF:
                for i, b in enumerate(blocks):
                    seen[seq + i] = b
        missing = sorted(set(range(1, 1201)) - set(seen))
        assert len(missing) == 3 * ref_st["lost_packets"] > 0
        # recover the gaps from the re-request server (unicast, replies to the request's source)
        requests = 0
        dest = (lab.ex_addr, port + 1)
        deadline = time.monotonic() + bound(5)
        while missing and time.monotonic() < deadline:
            req.sendto(request_packet(SESSION, missing[0], len(missing)), dest)
            requests += 1
            r, _, _ = select.select([req], [], [], 1.0)
            if not r:
                continue
            dg, src = req.recvfrom(65536)
            _, seq, count, blocks = parse_packet(dg)
            assert src == dest and seq == missing[0] and 1 <= count
            for i, b in enumerate(blocks):
                seen.setdefault(seq + i, b)
            missing = sorted(set(range(1, 1201)) - set(seen))
        assert not missing
        # an unknown range gets no reply
        req.sendto(request_packet(SESSION, 5000, 3), dest)
        assert select.select([req], [], [], 0.5)[0] == []
        res = joined(t, box)
    finally:
        rx.close()
        req.close()
    got_msgs = [seen[q] for q in range(1, 1201)]
    assert [m[:5] + m[11:] for m in got_msgs] == [m[:5] + m[11:] for m in msgs]
    for k in ("lost_packets", "duplicated_packets", "reordered_packets", "packets_sent", "data_packets"):
        assert res[k] == ref_st[k], k
    rr = res["rerequests"]
    assert rr["requests"] == requests + 1 and rr["replies"] == requests and rr["unknown_range"] == 1
    assert res["rerequest_port"] == port + 1 and res["pace"] == "messages"


def test_send_rate_report_200k_single_message_packets(lab, capsys):
    """Benchmark-ish, no gate: the packet rate the sender sustains, 1 message per packet."""
    port = 26430
    rx = receiver(lab, port)
    try:
        t, box = start_in_ex(lab, lambda: run_send(lab.ex_ns, f"{GROUP}:{port}", 0, 200_000, 1,
                                                   max_seconds=30, eos_count=1))
        n, end = 0, time.monotonic() + bound(40)
        rx.setblocking(False)
        while t.is_alive() or n == 0:
            if time.monotonic() > end:
                break
            r, _, _ = select.select([rx], [], [], 0.2)
            while r:
                try:
                    rx.recv(2048)
                    n += 1
                except BlockingIOError:
                    break
        res = joined(t, box, 40)
    finally:
        rx.close()
    assert res["packets_sent"] == 200_000 and res["send_errors"] == 0
    with capsys.disabled():
        print(f"\nsender: 200,000 packets x 1 message, {res['elapsed_ns'] / 1e6:.1f} ms "
              f"(CLOCK_MONOTONIC) = {res['packet_rate_pps']:,.0f} packets/s over a veth between "
              f"two namespaces, {res['batches']} sendmmsg calls; receiver got {n:,} "
              f"(2 shared cores, noisy)")


def _send_process(lab, *args):
    """run_send in its own process, entering the namespace from the main thread as the CLI does."""
    code = ("import json,sys; from hftcap.lab.exchange import run_send; "
            "print(json.dumps(run_send(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), "
            "int(sys.argv[5]), max_seconds=10, eos_count=0)))")
    cp = subprocess.run([sys.executable, "-c", code, lab.ex_ns, *map(str, args)], capture_output=True,
                        text=True, timeout=bound(30), cwd="/")  # not the source tree: import the installed hftcap
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


@pytest.mark.parametrize("path", ["kernel", "xdp"])
def test_listen_receives_exactly_what_send_sent(lab, path):
    """The product's own receiver on both paths: 37 packets of 5 messages, no gap, no drop
    (no End of Session packets here: listen counts every datagram of the feed)."""
    from listenproc import FEED, Listener
    li = Listener(lab, "--path", path, "--count", 37, "--duration", 20).wait_ready()
    try:
        res = _send_process(lab, FEED, 2000, 37, 5)
        r = li.result()
    finally:
        li.kill()
    assert res["packets_sent"] == 37 and res["messages_sent"] == 185
    assert r["packets"] == 37 and r["messages"] == 185
    assert r["gaps"] == 0 and r["duplicates"] == 0 and r["last_sequence"] == 185


def test_file_pace_speed_heartbeats_and_stamps_in_real_time(lab):
    """File timestamps 0, 1 ms, 5 s, 5.001 s at speed 2: the third packet goes out 2.5 s after
    the first, two heartbeats (next sequence number 3) fill the idle second marks."""
    port = 26440
    base = 34_200_000_000_000
    msgs = [itch_add(1, i + 1, b"B", 10, 1_000_000, ts_ns=base + t)
            for i, t in enumerate((0, 1_000_000, 5_000_000_000, 5_001_000_000))]
    rx = receiver(lab, port)
    try:
        t, box = start_in_ex(lab, lambda: run_exchange(lab.ex_ns, f"{GROUP}:{port}", frame(msgs), speed=2.0,
                                                       messages_per_packet=1, serve=False, duration=10))
        got = collect(rx, 3, 10)
        res = joined(t, box)
    finally:
        rx.close()
    kinds = [(int.from_bytes(dg[10:18], "big"), int.from_bytes(dg[18:20], "big")) for _, dg in got]
    assert kinds == [(1, 1), (2, 1), (3, 0), (3, 0), (3, 1), (4, 1)] + [(5, 0xFFFF)] * 3
    t0 = got[0][0]
    at = [(tai - t0) / 1e9 for tai, _ in got]  # receiver CLOCK_TAI, seconds after the first
    assert 0.95 <= at[2] <= 1.3 and 1.95 <= at[3] <= 2.3  # heartbeats near 1.0005 s and 2.0005 s
    assert 2.45 <= at[4] <= 2.8
    stamps = [int.from_bytes(parse_packet(dg)[3][0][5:11], "big") for (_, dg), k in zip(got, kinds) if k[1] == 1]
    gap = ((stamps[2] - stamps[0]) % NS_DAY) / 1e9  # sender's tai-midnight stamps
    assert 2.49 <= gap <= 2.8, gap
    assert res["heartbeats_sent"] == 2 and res["pace"] == "file" and res["stop_reason"] == "done"


def test_ctrl_c_stops_the_feed_with_end_of_session(lab):
    port = 26450
    rx = receiver(lab, port)
    # SIGINT raises KeyboardInterrupt even when this suite was started with SIGINT ignored (a
    # background job of a script, as tests/stress.sh under nohup): ignored is inherited.
    code = ("import json,signal,sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from hftcap.lab.exchange import run_exchange, synthetic_stream; "
            "print(json.dumps(run_exchange(sys.argv[1], sys.argv[2], synthetic_stream(100000), msg_rate=200, "
            "messages_per_packet=8, duration=20, linger=0.2)))")
    p = subprocess.Popen([sys.executable, "-c", code, lab.ex_ns, f"{GROUP}:{port}"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        early = []                        # stop once 5 packets are out, not after a fixed sleep
        while len(early) < 5:
            pkt = collect_one(rx, 10)
            assert pkt is not None, f"the exchange stopped sending after {len(early)} packets"
            early.append(pkt)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=bound(30))     # a bound on the exit, generous on a loaded host
        got = early + collect(rx, 3, 3)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        rx.close()
    assert p.returncode == 0, err
    res = json.loads(out)
    assert res["stop_reason"] == "stopped" and res["eos_sent"] == 3
    assert 5 <= res["data_packets"] <= 100
    data = [parse_packet(dg) for _, dg in got if 0 < int.from_bytes(dg[18:20], "big") < 0xFFFF]
    assert len(data) == res["packets_sent"]
    assert [d[1] for d in data] == [1 + 8 * i for i in range(len(data))]
    eos = [dg for _, dg in got if dg[18:20] == b"\xff\xff"]
    assert eos == [SESSION + struct.pack(">QH", res["next_seq"], 0xFFFF)] * 3
    assert res["next_seq"] == 1 + 8 * len(data)


def collect_one(sock, timeout):
    r, _, _ = select.select([sock], [], [], timeout)
    return (time.clock_gettime_ns(time.CLOCK_TAI), sock.recv(65536)) if r else None


def test_bad_interface_and_busy_rerequest_port_are_one_line_errors(lab):
    from hftcap.errors import HftcapError
    t, box = start_in_ex(lab, lambda: run_send(lab.ex_ns, f"{GROUP}:26460", 10, 1, 1, interface="nope0"))
    t.join(10)
    e = box.get("e")
    assert isinstance(e, HftcapError) and "no interface 'nope0'" in e.msg and e.hint
    holder = in_netns(lab.ex_ns, lambda: _bound(26471))
    try:
        t, box = start_in_ex(lab, lambda: run_exchange(lab.ex_ns, f"{GROUP}:26470", frame([]), duration=1))
        t.join(10)
        e = box.get("e")
        assert isinstance(e, HftcapError) and "26471" in e.msg and "Address already in use" in e.msg
    finally:
        holder.close()


def _bound(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    return s
