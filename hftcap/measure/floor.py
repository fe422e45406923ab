"""The floor: the least code that can send or receive a packet on this machine, measured in the
same lab, at the same rate and in the same run as hftcap's paths (`hftcap bench --floor`), so a
reader sees how much of each microsecond is the machine's and how much is hftcap's.

  floor send        one datagram per send(), CLOCK_TAI stamped into it right before the call
                    (hftcap/_core/floor.c); stamp -> send() returned per packet
  floor recv xdp    xdp/floor.bpf.c (parse to UDP, stamp, redirect) and a consumer that only
                    stamps at dequeue: send_to_xdp, xdp_to_app, send_to_app
  floor recv kernel a UDP socket joined to the group, recvmsg(MSG_DONTWAIT) in a spin, with the
                    SO_TIMESTAMPING software stamp: stack_to_app, send_to_app
  floor line        a 64-byte line bounced between two pinned CPUs: what a line one CPU wrote
                    costs to read on the other (the frame the receive CPU wrote, read by the
                    data thread); CLOCK_MONOTONIC, one read per batch of round trips

Every packet stamp is CLOCK_TAI (the software RX stamp is CLOCK_REALTIME mapped by the kernel's
TAI offset), as in hftcap's own hops, so both subtract the same way."""
from __future__ import annotations

import errno
import json
import os
import signal
import time

from . import latency, progcost
from ..errors import HftcapError, UsageError, from_oserror

KINDS = ("xdp", "kernel")
HOPS = {"xdp": ("send_to_xdp", "xdp_to_app", "send_to_app"), "kernel": ("stack_to_app", "send_to_app")}
HOP_SPANS = {
    "send_to_xdp": "floor sender's stamp (right before send()) -> floor XDP program's stamp (after its parse)",
    "xdp_to_app": "floor XDP program's stamp -> floor consumer took the descriptor",
    "stack_to_app": "SO_TIMESTAMPING software stamp -> recvmsg returned",
    "send_to_app": "floor sender's stamp -> the floor receiver took the packet",
}
CLOCK = "CLOCK_TAI (socket software stamp: CLOCK_REALTIME + kernel TAI offset)"
MAX_PAYLOAD = 1472


def _wait(stop: dict, rx, warmup: float, duration: float, t0: float, prog) -> None:
    warm = warmup > 0
    while not stop.get("sig"):
        now = time.monotonic() - t0
        if warm and now >= warmup:
            rx.reset()
            if prog is not None:
                prog.mark()
            warm = False
        if now >= duration:
            return
        time.sleep(0.02)


def run_recv(netns: str | None, interface: str, feed: str, kind: str = "xdp", cpu: int | None = None,
             warmup: float = 0.0, duration: float = 10.0, zerocopy: bool = False,
             on_started=None) -> dict:
    """`hftcap floor recv`: the bare receiver until SIGINT/SIGTERM or duration; its hops."""
    if kind not in KINDS:
        raise UsageError(f"--kind {kind!r}: expected xdp or kernel")
    if not 0 < duration <= 86400 or warmup < 0:
        raise UsageError("--duration must be in (0, 86400] s and --warmup >= 0")
    if os.geteuid() != 0:
        raise HftcapError("floor recv needs root (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW)", hint="run it with sudo")
    from .. import _core
    from ..lab import netns as _netns
    from ..receive.options import parse_feed
    from ..receive.path import check_foreign_xdp, check_kernel, resolve_interface
    f = parse_feed(feed)
    if netns:
        _netns.enter(netns)
    ifindex = resolve_interface(interface, netns)
    if kind == "xdp":
        check_kernel("xdp")
        check_foreign_xdp(_core, ifindex, interface, netns)
    stop: dict = {}
    old = {s: signal.signal(s, lambda n, _f: stop.update(sig=n)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with progcost.stats_enabled(_core, kind == "xdp"):
            try:
                rx = _core.FloorReceiver(interface, ifindex, kind, f.group, f.port,
                                         cpu=-1 if cpu is None else cpu, zerocopy=zerocopy)
            except OSError as e:
                raise from_oserror(e, f"floor {kind} receiver on {interface} ({e.filename})") from None
            member = None
            try:
                if kind == "xdp":  # the AF_XDP path does not join by itself; the socket path does
                    from ..receive.path import join_group
                    member = join_group(ifindex, f)
                st0 = rx.stats()
                prog = progcost.ProgCost(_core, st0["prog_id"]) if kind == "xdp" else None
                rx.start()
                if on_started:
                    on_started()
                t0 = time.monotonic()
                _wait(stop, rx, warmup, duration, t0, prog)
                rx.stop()
                elapsed = time.monotonic() - t0
                snaps = dict(zip(_core.FLOOR_HOP_NAMES, latency.parse_export(rx.hists())))
                st = rx.stats()
                cost = prog.read() if prog is not None else None
            finally:
                rx.close()
                if member is not None:
                    member.close()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    hops = {h: latency.sparse(snaps[h]) for h in HOPS[kind]}
    return {"command": "floor recv", "kind": kind, "interface": interface, "netns": netns,
            "feed": f"{f.group}:{f.port}", "cpu": cpu, "bind": "zerocopy" if zerocopy else "copy",
            "clock": CLOCK, "duration_s": round(elapsed, 3), "warmup_s": warmup,
            "packets": st["packets"], "bad": st["bad"], "unstamped": st["unstamped"],
            "seq_gaps": st["seq_gaps"], "io_errors": st["io_errors"],
            "negative": {k: v for k, v in st["negative"].items() if v},
            "hops": {h: {"span": HOP_SPANS[h], **(latency.summary_ns(snaps[h]) or {"absent": "no samples"})}
                     for h in HOPS[kind]},
            "hists": hops, "xdp_program_cost": cost}


def run_send(netns: str | None, feed: str, rate: float, packets: int, payload: int = 64,
             duration: float = 60.0, interface: str | None = None, spin_us: float = 50.0) -> dict:
    """`hftcap floor send`: `packets` datagrams at `rate` packets/s, one per send()."""
    if packets < 1 or packets > 100_000_000:
        raise UsageError(f"--packets {packets}: expected 1 to 100,000,000")
    if not rate > 0:
        raise UsageError(f"--rate {rate}: expected > 0 packets/s")
    if not 16 <= payload <= MAX_PAYLOAD:
        raise UsageError(f"--payload {payload}: expected 16 to {MAX_PAYLOAD} bytes")
    if not 0 < duration <= 86400:
        raise UsageError(f"--duration {duration}: expected 0 < S <= 86400")
    from .. import _core
    from ..lab import netns as _netns
    from ..lab.exchange import open_feed_socket
    from ..receive.options import parse_feed
    f = parse_feed(feed)
    if netns:
        _netns.enter(netns)
    sock, ifname = open_feed_socket(f.group, f.port, interface)
    old = {s: signal.signal(s, lambda n, _f: _core.floor_stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        r = _core.floor_send(sock.fileno(), packets, float(rate), payload, duration, spin_us)
    except OSError as e:
        raise from_oserror(e, "floor send") from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        sock.close()
    h = latency.parse_export(r.pop("stamp_to_return"))[0]
    el = r["elapsed_ns"]
    return {"command": "floor send", "netns": netns, "feed": f"{f.group}:{f.port}", "interface": ifname,
            "payload_bytes": payload, "rate_pps": rate, **r,
            "packet_rate_pps": round(r["sent"] / (el / 1e9), 1) if el else None,
            "stamp_to_return": {"span": "stamp -> send() returned", "clock": "CLOCK_TAI",
                                **(latency.summary_ns(h) or {"absent": "no samples"}), "hist": latency.sparse(h)}}


LINE_CLOCK = "CLOCK_MONOTONIC (one read per batch of round trips)"
LINE_SPAN = ("a 64-byte line written on CPU A, read on CPU B: half of a round trip (B writes one "
             "line, A sees it and writes another, B sees that)")


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def run_line(cpu_a: int, cpu_b: int, batches: int = 200, per_batch: int = 1000, max_s: float = 2.0) -> dict:
    """`hftcap floor line`: one-way cost of a cache line from cpu_a to cpu_b, from batches of
    per_batch round trips (each batch timed by one CLOCK_MONOTONIC pair); p50 / p90 / min of the
    batches' means. Bounded by batches x per_batch trips and max_s seconds."""
    ours = _cpus()
    for name, c in (("--cpu-a", cpu_a), ("--cpu-b", cpu_b)):
        if c not in ours:
            raise UsageError(f"{name} {c}: not a CPU this process may run on",
                             hint=f"choose from {','.join(map(str, ours))}")
    if cpu_a == cpu_b:
        raise UsageError(f"--cpu-a and --cpu-b are both {cpu_a}: a line between two CPUs needs two",
                         hint="e.g. the CPU of the NIC queue's interrupt and the data thread's CPU")
    if not 1 <= batches <= 100_000 or not 1 <= per_batch <= 1_000_000:
        raise UsageError(f"--batches {batches} --per-batch {per_batch}: expected 1..100000 and 1..1000000",
                         hint="the defaults (200 batches of 1,000 round trips) take about 0.1 s")
    if not 0 < max_s <= 600:
        raise UsageError(f"--max-seconds {max_s}: expected 0 < S <= 600",
                         hint="a bound on the whole measurement; the default is 2 s")
    from .. import _core
    try:
        ns, complete = _core.floor_line(cpu_a, cpu_b, batches, per_batch, float(max_s))
    except OSError as e:
        raise from_oserror(e, f"floor line between CPU {cpu_a} and CPU {cpu_b}",
                           hint="a vCPU stalled by the host for the whole bound: try again or raise --max-seconds"
                           if e.errno == errno.ETIMEDOUT else None) from None
    one = sorted(x / per_batch / 2 for x in ns)

    def q(f: float) -> float:
        return round(one[min(len(one) - 1, int(f * len(one)))], 1)

    return {"command": "floor line", "cpu_a": cpu_a, "cpu_b": cpu_b, "span": LINE_SPAN, "clock": LINE_CLOCK,
            "batches": len(ns), "batches_asked": batches, "round_trips_per_batch": per_batch,
            "complete": complete, "one_way_p50_ns": q(0.5), "one_way_p90_ns": q(0.9),
            "one_way_min_ns": round(one[0], 1), "statistic": "per batch: its time / round trips / 2; "
            "p50, p90 and min over the batches"}


def describe_line(d: dict | None) -> str:
    """One line for the bench's output."""
    if not d:
        return "-"
    if "absent" in d:
        return f"absent ({d['absent']})"
    return (f"a cache line from CPU {d['cpu_a']} to CPU {d['cpu_b']}: {d['one_way_p50_ns']:,.0f} ns one way "
            f"(p50; p90 {d['one_way_p90_ns']:,.0f} ns; half a round trip, {d['batches']} batches of "
            f"{d['round_trips_per_batch']:,}, {LINE_CLOCK})")


def write_json(doc: dict, path: str) -> None:
    try:
        with open(path + ".tmp", "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
        os.replace(path + ".tmp", path)
    except OSError as e:
        raise from_oserror(e, f"writing {path}") from None
