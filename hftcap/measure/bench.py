"""`hftcap bench`: the kernel-vs-bypass comparison, measured.

In a lab it makes and removes, the same exchange stream (fixed seed, stocks and message rate)
is received in turn by AF_XDP busy-poll, AF_XDP wakeup, kernel socket busy-poll and kernel
socket blocking, alternating over several rounds so machine noise hits every path alike. Each
trial is a real `hftcap listen --save` in the host namespace and a real `hftcap exchange` in the
exchange namespace (pinned to different CPUs); the per-hop histograms of all rounds are summed
per path. Percentiles come from those sums; a hop whose clock is missing is left out.

With compare_snapshots, one path also receives the same stream converted to hftcap Book
Snapshots (`exchange --mode snapshot`: each book update re-sends the top N levels of its
stock; hftcap.feed.snapshots) at the same message rate, hence the same update rate, right after
its delta trial in every round: bytes and packets on the wire, data-thread CPU per book update
and sender_to_book for both, under "snapshot_vs_delta". The default path for it is xdp-wakeup:
a busy-polling data thread spins for the whole trial, so its CPU time measures the trial's
length, not the work per update."""
from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from . import latency
from ..errors import HftcapError, UsageError, require_root
from ..receive.options import STAMPS, TSC_HINT, TSC_NOT_INVARIANT

PATH_MODES = {"xdp-busy": ("xdp", "busy"), "xdp-wakeup": ("xdp", "wakeup"),
              "kernel-busy": ("kernel", "busy"), "kernel-block": ("kernel", "wakeup")}
# Not run by default: xdp-busy with `listen --warm-books` (the books kept in cache while idle), for
# `--path xdp-busy,xdp-busy-warm`, the two alternating in every round.
ALL_MODES = {**PATH_MODES, "xdp-busy-warm": ("xdp", "busy")}
FEED = "239.1.1.1:26400"


def _split(m: str) -> tuple[str, str | None]:
    """A bench mode is a path, or PATH:STAMP when the stamp sources alternate (--stamp tsc,clock)."""
    p, _, st = m.partition(":")
    return p, st or None


def _pm(m: str) -> tuple[str, str]:
    return ALL_MODES[_split(m)[0]]


def _hftcap() -> str:
    exe = Path(sys.executable).parent / "hftcap"
    return str(exe) if exe.exists() else "hftcap"


def _bound_s(total_s: float) -> float:
    """The hard time bound of one trial's processes. A trial is bounded in count (the exchange
    sends a fixed number of messages, then End of Session) and ends when its End of Session has
    been taken: this bound only stops a hung one. It is wide so that a slow machine (a VM under
    software emulation, 10-20x slower, where starting the tracer alone takes a minute) still
    completes every trial: a listener stopped by a time bound before the stream came would
    report no samples at all."""
    return 20 * total_s + 300


def _metrics_value(url: str, name: str) -> float | None:
    import re
    import urllib.request
    try:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return None
    m = re.search(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def _wait_end_of_session(url: str | None, bound_s: float) -> bool:
    """Until the listener (its metrics endpoint on loopback) has taken an End of Session: the
    exchange sends it after the stream, on the same queue, so every packet before it has been
    taken too. False when bound_s passed first (End of Session lost: the loss is counted)."""
    if url is None:
        return False
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        v = _metrics_value(url, "hftcap_moldudp64_end_of_session_total")
        if v is not None and v >= 1:
            return True
        time.sleep(0.02)
    return False


def _trial(lb, mode: str, a: dict, save: str, stream: str = "delta", tracer_factory=None) -> dict:
    import re
    path, poll = _pm(mode)
    total_s = a["seconds"] + a["warmup"]
    messages = int(a["msg_rate"] * total_s)
    bound_s = _bound_s(total_s)
    li = subprocess.Popen(
        [_hftcap(), "listen", "--netns", lb.host_ns, "-i", lb.host_if, "--feed", FEED, "--path", path,
         "--poll", poll, "--cpu", str(a["cpu_rx"]), "--itch-clock", "tai-midnight", "--warmup", str(a["warmup"]),
         "--save", save, "--json", "--duration", f"{bound_s:g}", "--metrics", "127.0.0.1:0"]
        + (["--stamp", _split(mode)[1]] if _split(mode)[1] else [])
        + (["--warm-books"] if _split(mode)[0] == "xdp-busy-warm" else []),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = li.stderr.readline()
        if line.startswith("hftcap: doctor:"):     # listen's line on the host's tuning comes first
            line = li.stderr.readline()
        if "listening on" not in line:
            raise HftcapError(f"bench: listen ({mode}) did not start: {line.strip()} {li.stderr.read().strip()}")
        m = re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", line)
        url = m.group(1) if m else None
        tracer = tracer_factory(li.pid) if tracer_factory and path == "kernel" else None
        ex = subprocess.run(
            ["taskset", "-c", str(a["cpu_tx"]), _hftcap(), "exchange", "--netns", lb.ex_ns, "--feed", FEED,
             "--seed", str(a["seed"]), "--stocks", str(a["stocks"]), "--messages", str(messages),
             "--msg-rate", str(a["msg_rate"]), "-k", str(a["k"]), "--rerequest-port", "0", "--linger", "0",
             "--duration", f"{bound_s:g}", "--json"]
            + (["--mode", "snapshot", "--levels", str(a["snapshot_levels"])] if stream == "snapshot" else []),
            capture_output=True, text=True, timeout=bound_s + 60)
        if ex.returncode:
            raise HftcapError(f"bench: exchange failed: {ex.stderr.strip()}")
        sent = json.loads(ex.stdout)
        _wait_end_of_session(url, 30.0)       # the last packets in flight
        stages = accounting = None
        if tracer is not None:
            stages = tracer.read()
            accounting = tracer.accounting()
            tracer.stop()
        li.send_signal(signal.SIGINT)
        out, err = li.communicate(timeout=bound_s)
        if li.returncode:
            raise HftcapError(f"bench: listen ({mode}) failed: {err.strip()}")
        got = json.loads(out)
    finally:
        if li.poll() is None:
            li.kill()
            li.communicate()
    return {"sent": sent, "listen": got, "result": latency.load_result(save), "stages": stages,
            "trace_accounting": accounting}


FLOOR_PATHS = {"floor-xdp": "xdp", "floor-kernel": "kernel"}
# hftcap's hop -> the floor's hop it is read against: (floor path, floor hop).
FLOOR_OF = {"xdp": {"xdp_to_dequeue": ("floor-xdp", "xdp_to_app"), "sender_to_book": ("floor-xdp", "send_to_app")},
            "kernel": {"stack_to_dequeue": ("floor-kernel", "stack_to_app"),
                       "sender_to_book": ("floor-kernel", "send_to_app")}}


def _floor_trial(lb, mode: str, a: dict, payload: int, out_file: str) -> dict:
    """One floor trial: the bare receiver in the host namespace, the bare sender (pinned like the
    exchange) at the same packet rate as hftcap's trials, for the same time."""
    kind = FLOOR_PATHS[mode]
    total_s = a["seconds"] + a["warmup"]
    pps = a["msg_rate"] / a["k"]
    packets = max(1, int(pps * total_s))
    bound_s = _bound_s(total_s)
    rx = subprocess.Popen(
        [_hftcap(), "floor", "recv", "--netns", lb.host_ns, "-i", lb.host_if, "--feed", FEED, "--kind", kind,
         "--cpu", str(a["cpu_rx"]), "--warmup", str(a["warmup"]), "--duration", f"{bound_s:g}", "--out", out_file],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = rx.stderr.readline()
        if "listening on" not in line:
            raise HftcapError(f"bench: floor recv ({kind}) did not start: {line.strip()} {rx.stderr.read().strip()}")
        tx = subprocess.run(
            ["taskset", "-c", str(a["cpu_tx"]), _hftcap(), "floor", "send", "--netns", lb.ex_ns, "--feed", FEED,
             "--rate", str(pps), "--packets", str(packets), "--payload", str(payload),
             "--duration", f"{bound_s:g}"], capture_output=True, text=True, timeout=bound_s + 60)
        if tx.returncode:
            raise HftcapError(f"bench: floor send failed: {tx.stderr.strip()}")
        sent = json.loads(tx.stdout)
        time.sleep(0.2)  # the last packets in flight
        rx.send_signal(signal.SIGINT)
        _out, err = rx.communicate(timeout=bound_s)
        if rx.returncode:
            raise HftcapError(f"bench: floor recv ({kind}) failed: {err.strip()}")
        got = json.loads(Path(out_file).read_text())
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.communicate()
    return {"sent": sent, "recv": got}


def _new_floor() -> dict:
    return {"hists": {}, "sender": None, "sent": 0, "received": 0, "trials": 0, "prog": [0, 0], "payload": None,
            "rounds": {}}


def _add_floor(x: dict, t: dict) -> None:
    got, sent = t["recv"], t["sent"]
    x["trials"] += 1
    x["sent"] += sent["sent"]
    x["received"] += got["packets"]
    x["payload"] = sent["payload_bytes"]
    for hop, d in got["hists"].items():
        x["hists"][hop] = latency.merge(x["hists"].get(hop), latency.from_sparse(d))
        x["rounds"].setdefault(hop, []).append(got["hops"][hop].get("p50_ns"))
    x["sender"] = latency.merge(x["sender"], latency.from_sparse(sent["stamp_to_return"]["hist"]))
    c = got.get("xdp_program_cost") or {}
    if "runs" in c:
        x["prog"][0] += c["run_time_ns"]
        x["prog"][1] += c["runs"]


def _prog_doc(ns_cnt: list) -> dict | None:
    from .progcost import CLOCK
    ns, cnt = ns_cnt
    return {"ns_per_run": round(ns / cnt, 1), "runs": cnt, "clock": CLOCK} if cnt else None


def _floor_doc(x: dict, mode: str) -> dict:
    from . import floor
    kind = FLOOR_PATHS[mode]
    hops = {}
    for h in floor.HOPS[kind]:
        sm = latency.summary_ns(x["hists"][h]) if h in x["hists"] else None
        if sm:
            hops[h] = {"span": floor.HOP_SPANS[h], **sm, "rounds_p50_ns": x["rounds"].get(h, [])}
    snd = latency.summary_ns(x["sender"]) if x["sender"] is not None else None
    return {"kind": kind, "trials": x["trials"], "sent": x["sent"], "received": x["received"],
            "lost": x["sent"] - x["received"], "payload_bytes": x["payload"], "clock": floor.CLOCK,
            "hops": hops, "sender": {"stamp_to_return": snd, "clock": "CLOCK_TAI",
                                     "span": "stamp -> send() returned, one packet per send()"},
            "xdp_program_cost": _prog_doc(x["prog"])}


def _median_diff(a: list | None, b: list | None) -> int | None:
    """Median over rounds of (hftcap's p50 - the floor's p50 of the same round): each pair ran
    back to back, so slow phases of the machine hit both sides of a difference alike."""
    d = sorted(x - y for x, y in zip(a or [], b or []) if x is not None and y is not None)
    if not d:
        return None
    n = len(d)
    return d[n // 2] if n % 2 else (d[n // 2 - 1] + d[n // 2]) // 2


def _excess(doc: dict) -> dict:
    """Per hftcap path and hop with a floor counterpart: both figures and the difference, all
    from this run's merged histograms."""
    out = {}
    for m, p in doc["paths"].items():
        rows = {}
        for hop, (fm, fh) in FLOOR_OF[_pm(m)[0]].items():
            v, f = p["hops"].get(hop), doc.get("floor", {}).get(fm, {}).get("hops", {}).get(fh)
            if not v or not f:
                continue
            rows[hop] = {"floor": f"{fm}/{fh}", "p50_ns": v["p50_ns"], "p99_ns": v["p99_ns"],
                         "floor_p50_ns": f["p50_ns"], "floor_p99_ns": f["p99_ns"],
                         "excess_p50_ns": v["p50_ns"] - f["p50_ns"], "excess_p99_ns": v["p99_ns"] - f["p99_ns"],
                         "excess_p50_median_of_rounds_ns": _median_diff(v.get("rounds_p50_ns"),
                                                                        f.get("rounds_p50_ns"))}
        fs = doc.get("floor", {}).get("floor-xdp" if _pm(m)[0] == "xdp" else "floor-kernel", {})
        hs = (p.get("sender") or {}).get("stamp_to_send_return")
        ff = (fs.get("sender") or {}).get("stamp_to_return")
        if hs and ff:
            rows["sender_stamp_to_send_return"] = {
                "floor": "floor sender/stamp_to_return", "p50_ns": hs["p50_ns"], "p99_ns": hs["p99_ns"],
                "floor_p50_ns": ff["p50_ns"], "floor_p99_ns": ff["p99_ns"],
                "excess_p50_ns": hs["p50_ns"] - ff["p50_ns"], "excess_p99_ns": hs["p99_ns"] - ff["p99_ns"]}
        pc, fc = p.get("xdp_program_cost"), fs.get("xdp_program_cost")
        if pc and fc:
            rows["xdp_program"] = {"floor": "floor-xdp program", "mean_ns": pc["ns_per_run"],
                                   "floor_mean_ns": fc["ns_per_run"],
                                   "excess_mean_ns": round(pc["ns_per_run"] - fc["ns_per_run"], 1)}
        if rows:
            out[m] = rows
    return out


def _merge_stages(acc: dict, stages: dict) -> None:
    from .trace import bucket_index
    for name, st in stages.items():
        a = acc.setdefault(name, {"counts": {}, "max_ns": 0})
        for lo, _hi, c in st["buckets"]:
            i = bucket_index(lo)
            a["counts"][i] = a["counts"].get(i, 0) + c
        a["max_ns"] = max(a["max_ns"], st["max_ns"] or 0)


def _merge_accounting(acc: dict, a: dict) -> None:
    acc["returned"] = acc.get("returned", 0) + a["returned"]
    acc["matched"] = acc.get("matched", 0) + a["matched"]
    by = acc.setdefault("unmatched_by_reason", {})
    for k, v in a["unmatched_by_reason"].items():
        by[k] = by.get(k, 0) + v


def _stage_summary(acc: dict) -> dict:
    from .trace import summarize
    out = {}
    for name, a in acc.items():
        n = max(a["counts"], default=-1) + 1
        s = summarize([a["counts"].get(i, 0) for i in range(n)], max_ns=a["max_ns"] or None)
        out[name] = {k: s[k] for k in ("count", "p50_ns", "p99_ns", "max_ns")}
    return out


def _merge(acc: dict, res: latency.Result, path: str) -> None:
    for hop, d in res.hops[path].items():
        if isinstance(d, latency.Absent):
            acc.setdefault(hop, d)
            continue
        cur = acc.get(hop)
        if cur is None or isinstance(cur, latency.Absent):
            acc[hop] = latency.HistSnapshot(d.counts.copy(), d.min_ns, d.max_ns, d.sum_ns)
        else:
            mn = min(x for x in (cur.min_ns, d.min_ns) if x is not None) if (cur.min_ns or d.min_ns) else None
            mx = max(x or 0 for x in (cur.max_ns, d.max_ns)) or None
            acc[hop] = latency.HistSnapshot(cur.counts + d.counts, mn, mx, (cur.sum_ns or 0) + (d.sum_ns or 0))


def _new_side() -> dict:
    return {"hists": {}, "sent": 0, "received": 0, "updates": 0, "cpu_s": 0.0, "bytes": 0, "packets": 0,
            "trials": 0}


def _add_side(x: dict, t: dict, path: str) -> None:
    from ..feed.snapshots import book_updates
    got = t["listen"]
    x["sent"] += t["sent"]["messages_sent"]
    x["received"] += got["messages"]
    x["updates"] += book_updates(got.get("messages_by_type", {}))
    x["cpu_s"] += got["data_thread_cpu_s"]
    x["bytes"] += got["bytes"]
    x["packets"] += got["packets"]
    x["trials"] += 1
    _merge(x["hists"], t["result"], path)


def _side_doc(x: dict, path: str) -> dict:
    u = x["updates"]
    d = {"trials": x["trials"], "sent_messages": x["sent"], "received_messages": x["received"],
         "lost_messages": x["sent"] - x["received"], "book_updates": u, "packets": x["packets"],
         "bytes": x["bytes"], "cpu_s": round(x["cpu_s"], 6),
         "bytes_per_update": round(x["bytes"] / u, 1) if u else None,
         "packets_per_update": round(x["packets"] / u, 4) if u else None,
         "cpu_ns_per_update": round(x["cpu_s"] * 1e9 / u, 1) if u else None, "sender_to_book": None}
    h = x["hists"].get("sender_to_book")
    if h is not None and not isinstance(h, latency.Absent):
        st = latency.hop_stats(path, "sender_to_book", h)
        if not st.absent:
            d["sender_to_book"] = {"p50_ns": st.p50, "p99_ns": st.p99, "max_ns": st.max, "count": st.count}
    return d


def _compare_doc(cmp: dict, path: str, levels: int) -> dict:
    from ..feed.snapshots import snapshot_len
    dl, sn = _side_doc(cmp["delta"], ALL_MODES[path][0]), _side_doc(cmp["snapshot"], ALL_MODES[path][0])

    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None
    lat = lambda d, q: d["sender_to_book"][q] if d["sender_to_book"] else None  # noqa: E731
    return {"path": path, "levels_per_side": levels, "snapshot_message_bytes": snapshot_len(levels),
            "layout": "hftcap Book Snapshot 'Z' (not ITCH 5.0): ITCH header, N, N bid + N ask levels of "
                      "price u32, shares u32, orders u32",
            "update": "delta: one A/F/E/C/X/D/U; snapshot: one Z (the same updates, one for one)",
            "clocks": {"cpu": "CLOCK_THREAD_CPUTIME_ID of the data thread, whole trial incl. warm-up",
                       "sender_to_book": "tai-midnight (exchange send time -> book updated), after warm-up"},
            "bytes": "UDP payload bytes received by the consumer",
            "delta": dl, "snapshot": sn,
            "snapshot_over_delta": {"bytes_per_update": ratio(sn["bytes_per_update"], dl["bytes_per_update"]),
                                    "packets_per_update": ratio(sn["packets_per_update"], dl["packets_per_update"]),
                                    "cpu_ns_per_update": ratio(sn["cpu_ns_per_update"], dl["cpu_ns_per_update"]),
                                    "sender_to_book_p50": ratio(lat(sn, "p50_ns"), lat(dl, "p50_ns")),
                                    "sender_to_book_p99": ratio(lat(sn, "p99_ns"), lat(dl, "p99_ns"))}}


def run_bench(rounds: int = 3, seconds: float = 3.0, msg_rate: float = 50_000, k: int = 4, seed: int = 7,
              stocks: int = 16, warmup: float = 0.5, lab_name: str | None = None, paths: list[str] | None = None,
              cpu_rx: int = 1, cpu_tx: int = 0, json_file: str | None = None, console=None,
              progress=None, trace: bool = False, compare_snapshots: bool = False, snapshot_levels: int = 5,
              snapshot_path: str = "xdp-wakeup", plot: str | None = None, floor: bool = True,
              stamps: list[str] | None = None) -> dict:
    require_root("bench")
    if plot:
        from .plot import check_out
        check_out(plot)
    modes = paths or list(PATH_MODES)
    for m in modes + ([snapshot_path] if compare_snapshots else []):
        if m not in ALL_MODES:
            raise UsageError(f"unknown path '{m}'", hint="one of: " + ", ".join(ALL_MODES))
    for st in stamps or []:
        if st not in STAMPS:
            raise UsageError(f"unknown stamp source '{st}'", hint="one of: " + ", ".join(STAMPS))
    if compare_snapshots and stamps:
        raise UsageError("--stamp and --compare-snapshots do not go together")
    if "tsc" in (stamps or []):
        from .. import _core
        if not _core.TSC_INVARIANT:  # before any lab is built, not once per trial
            raise UsageError(f"--stamp tsc: {TSC_NOT_INVARIANT}", hint=TSC_HINT)
    if stamps:  # every path once per stamp source, alternating within each round
        modes = [f"{m}:{st}" for m in modes for st in stamps]
    if compare_snapshots:
        from ..feed.snapshots import check_levels
        check_levels(snapshot_levels)
    if rounds < 1 or seconds <= 0 or msg_rate <= 0 or k < 1:
        raise UsageError("rounds, seconds, rate and messages per packet must be positive")
    ncpu = os.cpu_count() or 1
    if max(cpu_rx, cpu_tx) >= ncpu:
        raise UsageError(f"--cpu-rx/--cpu-tx must be below {ncpu}")
    from ..lab import topology as labmod
    # A lab of this run's own: two benches at once (or a test beside a bench) never share one.
    lab_name = lab_name or f"hb{os.getpid() % 10_000_000}"
    a = dict(rounds=rounds, seconds=seconds, msg_rate=msg_rate, k=k, seed=seed, stocks=stocks, warmup=warmup,
             cpu_rx=cpu_rx, cpu_tx=cpu_tx, snapshot_levels=snapshot_levels)
    tracer_factory = None
    if trace:
        from .trace import KernelPathTracer, _import_bcc
        _import_bcc()  # a missing bcc fails here, with its hint, before any trial

        def traced(pid):
            return KernelPathTracer(pid=pid).start()
        tracer_factory = traced
    # Trials of one round: every path in turn (deltas); with compare_snapshots the compare path's
    # snapshot trial follows its delta trial (a delta trial of its own if the path is not listed).
    jobs = [(m, "delta") for m in modes]
    if compare_snapshots:
        i = modes.index(snapshot_path) + 1 if snapshot_path in modes else len(jobs)
        extra = [(snapshot_path, "snapshot")] if snapshot_path in modes else \
            [(snapshot_path, "delta-only"), (snapshot_path, "snapshot")]
        jobs[i:i] = extra
    if floor:
        kinds = {_pm(m)[0] for m in modes}
        jobs += [(fm, "floor") for fm, kind in FLOOR_PATHS.items() if kind in kinds]
    floors = {fm: _new_floor() for fm, stream in jobs if stream == "floor"}
    cmp = {"delta": _new_side(), "snapshot": _new_side()}
    lb = labmod.up(lab_name)
    acc = {m: {"hists": {}, "stages": {}, "sent": 0, "received": 0, "cpu_s": 0.0, "bytes": 0, "packets": 0, "gaps": 0,
               "updates": 0, "sender": None, "prog": [0, 0], "rounds": {}, "trace_accounting": {},
               "stamp_clock": []}
           for m in modes}
    info = {}
    # The machine's cache line between the sender's and the receiver's CPUs, right before each
    # trial: the host may move vCPUs between physical cores at any time, and what the data thread
    # pays for a frame the other CPU wrote moves with it (e.g. ~60 ns or ~250 ns on one VM).
    lines: dict[str, list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="hftcap-bench-") as tmp:
            for rnd in range(rounds):
                for m, stream in jobs:
                    if cpu_tx != cpu_rx:
                        lines.setdefault(m, []).append(_line_trial(cpu_tx, cpu_rx))
                    if stream == "floor":
                        # the same UDP payload size as hftcap's packets (the first trial's mean)
                        done = [x for x in acc.values() if x["packets"]]
                        payload = (round(done[0]["bytes"] / done[0]["packets"]) if done
                                   else 20 + a["k"] * 38)
                        ft = _floor_trial(lb, m, a, min(max(payload, 16), 1472),
                                          os.path.join(tmp, f"{m}-{rnd}.json"))
                        _add_floor(floors[m], ft)
                        if progress:
                            progress(rnd, m, {"messages": ft["recv"]["packets"]},
                                     {"messages_sent": ft["sent"]["sent"]})
                        continue
                    t = _trial(lb, m, a, os.path.join(tmp, f"{m}-{stream}-{rnd}.json"),
                               "snapshot" if stream == "snapshot" else "delta", tracer_factory)
                    s, got = t["sent"], t["listen"]
                    if compare_snapshots and m == snapshot_path:
                        _add_side(cmp["snapshot" if stream == "snapshot" else "delta"], t, _pm(m)[0])
                    if stream != "delta":
                        if progress:
                            progress(rnd, f"{m} ({stream.replace('-only', '')})", got, s)
                        continue
                    x = acc[m]
                    x["sent"] += s["messages_sent"]
                    x["received"] += got["messages"]
                    x["gaps"] += got["gaps"]
                    x["cpu_s"] += got["data_thread_cpu_s"]
                    x["bytes"] += got["bytes"]
                    x["packets"] += got["packets"]
                    _merge(x["hists"], t["result"], _pm(m)[0])
                    for hop, d in t["result"].hops[_pm(m)[0]].items():
                        sm = None if isinstance(d, latency.Absent) else latency.summary_ns(d)
                        x["rounds"].setdefault(hop, []).append(sm["p50_ns"] if sm else None)
                    sh = (s.get("stamp_to_send_return") or {}).get("hist")
                    if sh:
                        x["sender"] = latency.merge(x["sender"], latency.from_sparse(sh))
                    pc = got.get("xdp_program_cost") or {}
                    if "runs" in pc:
                        x["prog"][0] += pc["run_time_ns"]
                        x["prog"][1] += pc["runs"]
                    if t["stages"]:
                        _merge_stages(x["stages"], t["stages"])
                        _merge_accounting(x["trace_accounting"], t["trace_accounting"])
                    if got.get("stamp_clock"):
                        x["stamp_clock"].append(got["stamp_clock"])
                    info.setdefault(m, {k2: got.get(k2) for k2 in ("xdp_mode", "bind_mode", "poll_mode", "hw_clock")})
                    if progress:
                        progress(rnd, m, got, s)
    finally:
        labmod.down(lab_name)
    doc = {"conditions": {
        "kernel": platform.release(), "interface": "veth (lab)", "rounds": rounds, "seconds_per_trial": seconds,
        "warmup_s": warmup, "message_rate": msg_rate, "messages_per_packet": k, "seed": seed, "stocks": stocks,
        "sender_cpu": cpu_tx, "receiver_cpu": cpu_rx, "order": "alternating: each round runs every path in turn",
        "clocks": {"user": "CLOCK_TAI", "xdp": "CLOCK_TAI", "itch": "tai-midnight (exchange send time)",
                   "cpu": "CLOCK_THREAD_CPUTIME_ID of the data thread"},
        "modes_obtained": info, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "paths": {}}
    for m in modes:
        x = acc[m]
        hops = {}
        for hop, d in x["hists"].items():
            if isinstance(d, latency.Absent):
                continue
            st = latency.hop_stats(_pm(m)[0], hop, d)
            if st.absent:
                continue
            hops[hop] = {**st.ns_summary(), "rounds_p50_ns": x["rounds"].get(hop, [])}
        absent = {hop: d.reason for hop, d in x["hists"].items() if isinstance(d, latency.Absent)}
        doc["paths"][m] = {"hops": hops, "absent_hops": absent, "sent": x["sent"], "received": x["received"],
                           "lost": x["sent"] - x["received"], "gaps": x["gaps"], "cpu_s": round(x["cpu_s"], 6),
                           "bytes": x["bytes"], "packets": x["packets"],
                           "cpu_ns_per_message": round(x["cpu_s"] * 1e9 / x["received"], 1) if x["received"] else None}
        if x["sender"] is not None:
            doc["paths"][m]["sender"] = {"stamp_to_send_return": latency.summary_ns(x["sender"]),
                                         "clock": "CLOCK_TAI",
                                         "span": "exchange stamped a packet -> its send call returned"}
        if x["prog"][1]:
            doc["paths"][m]["xdp_program_cost"] = _prog_doc(x["prog"])
        if x["stamp_clock"]:
            doc["paths"][m]["stamp_clock"] = _stamp_doc(x["stamp_clock"])
        if x["stages"]:
            doc["paths"][m]["kernel_stages"] = _stage_summary(x["stages"])
            # datagrams the traced listener returned while traced (read before it stops; packets
            # still in flight then are in neither): matched + unmatched by reason
            doc["paths"][m]["kernel_stages_accounting"] = x["trace_accounting"]
            doc["paths"][m]["kernel_stages_clock"] = ("CLOCK_MONOTONIC (bpf_ktime_get_ns); percentiles are "
                                                      "bucket upper edges, at most 12.5% high")
    doc["cpu_line"] = _line_doc(lines, cpu_tx, cpu_rx)
    if floors:
        doc["floor"] = {fm: _floor_doc(x, fm) for fm, x in floors.items()}
        doc["excess"] = _excess(doc)
        doc["conditions"]["floor"] = ("floor paths run in the same lab, at the same packet rate "
                                      "(rate / messages per packet) and payload size, alternating with "
                                      "hftcap's paths in every round; excess = hftcap - floor, p50 and p99 "
                                      "of this run's merged histograms")
    if compare_snapshots:
        doc["snapshot_vs_delta"] = _compare_doc(cmp, snapshot_path, snapshot_levels)
    if json_file:
        Path(json_file).write_text(json.dumps(doc, indent=1) + "\n")
    if plot:
        from .plot import bench_plot
        bench_plot({m: acc[m]["hists"] for m in modes}, {m: _pm(m)[0] for m in modes},
                   doc["conditions"], plot)
    return doc


def _line_trial(cpu_a: int, cpu_b: int) -> dict:
    """One round's `floor line` between the sender's and the receiver's CPUs (~0.1 s, no lab)."""
    from . import floor
    try:
        return floor.run_line(cpu_a, cpu_b)
    except HftcapError as e:
        return {"absent": e.msg}


def _line_doc(lines: dict[str, list[dict]], cpu_a: int, cpu_b: int) -> dict:
    """The line's one-way p50 before each trial, per path (round order), and the median of all.
    On veth the sender's CPU runs the receive (the XDP program and copy mode's copy into the
    UMEM), so the frame the data thread reads after its dequeue stamp was written on cpu_a."""
    from . import floor
    if cpu_a == cpu_b:
        return {"absent": "sender and receiver share a CPU"}
    every = [x for v in lines.values() for x in v]
    ok = [x for x in every if "absent" not in x]
    if not ok:
        return {"absent": every[0]["absent"] if every else "no trial ran"}
    per = {m: [x.get("one_way_p50_ns") for x in v] for m, v in lines.items()}
    return {"cpu_a": cpu_a, "cpu_b": cpu_b, "span": floor.LINE_SPAN, "clock": floor.LINE_CLOCK,
            "one_way_p50_ns": round(statistics.median(x["one_way_p50_ns"] for x in ok), 1),
            "one_way_min_ns": min(x["one_way_min_ns"] for x in ok),
            "one_way_max_p50_ns": max(x["one_way_p50_ns"] for x in ok),
            "before_each_trial_p50_ns": per,
            "batches": ok[0]["batches_asked"], "round_trips_per_batch": ok[0]["round_trips_per_batch"],
            "measured": len(ok), "not_measured": [x["absent"] for x in every if "absent" in x],
            "why": "the frame: on veth the sender's CPU runs the receive and copies the frame into the "
                   "UMEM; the data thread reads it on the receiver's CPU after its dequeue stamp",
            "statistic": "before each trial: p50 over batches of (batch time / round trips / 2); "
                         "one_way_p50_ns is the median of those, per path in round order under "
                         "before_each_trial_p50_ns (None: that measurement was absent)"}


def _stamp_doc(trials: list[dict]) -> dict:
    """The stamp clock over a path's trials: its source, and for the TSC the calibration's worst
    error against clock_gettime(CLOCK_TAI) at the checks and the pairs' uncertainty."""
    src = {t["source"] for t in trials}
    d = {"source": src.pop() if len(src) == 1 else "mixed", "trials": len(trials)}
    tsc = [t for t in trials if t["source"] == "tsc"]
    if tsc:
        d.update({"tsc_hz": [round(t["tsc_hz"]) for t in tsc],
                  "checks": sum(t["checks"] for t in tsc),
                  "max_abs_error_ns": max(max(t["max_abs_error_ns"], t["start_error_ns"]) for t in tsc),
                  "pair_halfwidth_ns": max(t["pair_halfwidth_ns"] for t in tsc),
                  "check_every_ns": tsc[0]["check_every_ns"],
                  "error": "TSC fit - clock_gettime(CLOCK_TAI) at each check (a pair: the TAI read between "
                           "two TSC reads), worst over the trials; hops between two TSC stamps see only the "
                           "rate's error, hops from a kernel stamp (xdp, sw, ITCH) also this offset"})
    return d


WIDE = 110   # columns the one-table layout needs with four paths


def _hop_clock(h: str) -> str:
    return latency.HOP_BY_NAME[h].domain_short if h != "sender_to_book" else "tai-midnight"


def render(doc: dict, console) -> None:
    """The bench tables: p50 / p99 side by side on a wide terminal; on a narrow one or a pipe
    (80 columns) one table per percentile, the clocks in a line under them, so no cell wraps."""
    from rich.table import Table
    paths = list(doc["paths"])
    c = doc["conditions"]
    head = (f"hftcap bench: {c['rounds']} rounds x {c['seconds_per_trial']} s per path, "
            f"{c['message_rate']:,.0f} msg/s, {c['messages_per_packet']} msg/packet")
    hop_names = [h.name for h in latency.HOPS if any(h.name in doc["paths"][p]["hops"] for p in paths)]
    counters = (("sent msgs", "sent"), ("received msgs", "received"), ("lost msgs", "lost"),
                ("bytes (UDP payload)", "bytes"), ("data thread CPU s", "cpu_s"),
                ("CPU ns / message", "cpu_ns_per_message"))

    def cell(p, h, keys):
        v = doc["paths"][p]["hops"].get(h)
        return " / ".join(latency.fmt_ns(v[k]) for k in keys) if v else "[dim]-[/]"

    def counter_rows(t):
        for label, key in counters:
            t.add_row(label, *[f"{doc['paths'][p][key]:,}" if doc["paths"][p][key] is not None else "-"
                               for p in paths])

    if console.width >= WIDE:
        t = Table(title=head + " (p50 / p99)")
        t.add_column("hop (clock)")
        for p in paths:
            t.add_column(p, justify="right")
        for h in hop_names:
            t.add_row(f"{h} ({_hop_clock(h)})", *[cell(p, h, ("p50_ns", "p99_ns")) for p in paths])
        counter_rows(t)
        console.print(t)
    else:
        console.print(head, highlight=False)
        for title, key in (("p50", "p50_ns"), ("p99", "p99_ns")):
            t = Table(title=f"{title} per hop", title_justify="left")
            t.add_column("hop", no_wrap=True)
            for p in paths:
                t.add_column(p, justify="right", no_wrap=True)
            for h in hop_names:
                t.add_row(h, *[cell(p, h, (key,)) for p in paths])
            console.print(t)
        t = Table(title="counters", title_justify="left")
        t.add_column("", no_wrap=True)
        for p in paths:
            t.add_column(p, justify="right", no_wrap=True)
        counter_rows(t)
        console.print(t)
        clocks = {}
        for h in hop_names:
            clocks.setdefault(_hop_clock(h), []).append(h)
        console.print("clocks: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in clocks.items()), highlight=False)
    ref = doc["paths"].get("xdp-busy", {}).get("hops", {}).get("sender_to_book")
    if ref:
        parts = []
        for p in paths:
            v = doc["paths"][p]["hops"].get("sender_to_book")
            if v and p != "xdp-busy":
                parts.append(f"{p} / xdp-busy: p50 {v['p50_ns'] / ref['p50_ns']:.2f}x, p99 {v['p99_ns'] / ref['p99_ns']:.2f}x")
        if parts:
            console.print("sender_to_book ratios: " + "; ".join(parts))
    for p in paths:
        ks = doc["paths"][p].get("kernel_stages")
        if ks:
            console.print(f"{p} kernel stages (bcc tracepoints, CLOCK_MONOTONIC, p50 / p99 upper bounds): "
                          + "; ".join(f"{k} {latency.fmt_ns(v['p50_ns'])} / {latency.fmt_ns(v['p99_ns'])} (n={v['count']:,})"
                                      for k, v in ks.items() if v["count"]))
            a = doc["paths"][p]["kernel_stages_accounting"]
            console.print(f"{p} traced datagrams: returned {a['returned']:,} = matched {a['matched']:,} + "
                          + " + ".join(f"{k} {v:,}" for k, v in a["unmatched_by_reason"].items()))
    for p in paths:
        sc = doc["paths"][p].get("stamp_clock")
        if sc and sc["source"] == "tsc":
            console.print(f"{p} stamps: invariant TSC ({min(sc['tsc_hz']) / 1e6:,.3f} MHz fit) mapped to CLOCK_TAI; "
                          f"worst |fit - clock_gettime| {sc['max_abs_error_ns']:,} ns over {sc['checks']:,} checks "
                          f"(every {sc['check_every_ns'] / 1e6:.0f} ms; each pair +/- {sc['pair_halfwidth_ns']} ns)",
                          highlight=False)
        elif sc:
            console.print(f"{p} stamps: clock_gettime(CLOCK_TAI)", highlight=False)
        pc = doc["paths"][p].get("xdp_program_cost")
        if pc:
            console.print(f"{p} XDP program's own run time: {pc['ns_per_run']:,.0f} ns per run, mean of "
                          f"{pc['runs']:,} runs ({pc['clock']})")
        snd = (doc["paths"][p].get("sender") or {}).get("stamp_to_send_return")
        if snd:
            console.print(f"{p} exchange, stamp -> send call returned (CLOCK_TAI): p50 {latency.fmt_ns(snd['p50_ns'])}"
                          f" / p99 {latency.fmt_ns(snd['p99_ns'])} (n={snd['count']:,})")
    ln = doc.get("cpu_line")
    if ln and "absent" not in ln:
        each = "; ".join(f"{m} " + ", ".join("-" if v is None else f"{v:,.0f}" for v in vs)
                         for m, vs in ln["before_each_trial_p50_ns"].items())
        console.print(f"machine: a cache line written on CPU {ln['cpu_a']} (the sender's; veth runs the receive "
                      f"there) read on CPU {ln['cpu_b']} (the data thread's), one way, p50 before each trial: "
                      f"{each} ns (half a round trip, {ln['clock']}); the frame is such a line, and the host "
                      "moving vCPUs moves it", highlight=False)
    elif ln:
        console.print(f"machine: cache line between CPUs absent ({ln['absent']})", highlight=False)
    if doc.get("floor"):
        render_floor(doc, console)
    console.print("[dim]lab veth, copy-mode AF_XDP; noisy 2-core VM preempted by its host: read p50 and p99, "
                  "tails say more about the host than the code[/]")
    if doc.get("snapshot_vs_delta"):
        render_snapshots(doc["snapshot_vs_delta"], c, console)


def render_floor(doc: dict, console) -> None:
    from rich.table import Table
    t = Table(title="the floor (bare sender and receivers, same lab, rate and run; CLOCK_TAI, p50 / p99)")
    for col in ("floor path / hop", "p50 / p99", "count"):
        t.add_column(col, justify="left" if col.startswith("floor") else "right")
    for fm, f in doc["floor"].items():
        for h, v in f["hops"].items():
            t.add_row(f"{fm} {h}", f"{latency.fmt_ns(v['p50_ns'])} / {latency.fmt_ns(v['p99_ns'])}", f"{v['count']:,}")
        snd = f["sender"]["stamp_to_return"]
        if snd:
            t.add_row(f"{fm} sender stamp_to_return", f"{latency.fmt_ns(snd['p50_ns'])} / {latency.fmt_ns(snd['p99_ns'])}",
                      f"{snd['count']:,}")
        if f.get("xdp_program_cost"):
            pc = f["xdp_program_cost"]
            t.add_row(f"{fm} XDP program (mean, sched_clock)", f"{pc['ns_per_run']:,.0f} ns", f"{pc['runs']:,}")
        t.add_row(f"{fm} lost packets", f"{f['lost']:,} of {f['sent']:,}", "")
    console.print(t)
    x = Table(title="hftcap's excess over the floor (hftcap - floor, same run; p50 / p99)")
    for col in ("path", "hop", "hftcap", "floor", "excess"):
        x.add_column(col, justify="left" if col in ("path", "hop") else "right")
    for m, rows in doc.get("excess", {}).items():
        for hop, r in rows.items():
            if "mean_ns" in r:
                x.add_row(m, f"{hop} (mean)", f"{r['mean_ns']:,.0f} ns", f"{r['floor_mean_ns']:,.0f} ns",
                          f"{r['excess_mean_ns']:+,.0f} ns")
                continue
            x.add_row(m, f"{hop} vs {r['floor']}", f"{latency.fmt_ns(r['p50_ns'])} / {latency.fmt_ns(r['p99_ns'])}",
                      f"{latency.fmt_ns(r['floor_p50_ns'])} / {latency.fmt_ns(r['floor_p99_ns'])}",
                      f"{r['excess_p50_ns']:+,} / {r['excess_p99_ns']:+,} ns"
                      + (f" (median of rounds {r['excess_p50_median_of_rounds_ns']:+,})"
                         if r.get("excess_p50_median_of_rounds_ns") is not None else ""))
    console.print(x)


def render_snapshots(d: dict, c: dict, console) -> None:
    from rich.table import Table
    t = Table(title=f"deltas vs Book Snapshots (top {d['levels_per_side']} levels per side, "
                    f"{d['snapshot_message_bytes']} B per 'Z'): {d['path']}, {c['message_rate']:,.0f} updates/s, "
                    f"{c['messages_per_packet']} msg/packet")
    for col in ("", "delta", "snapshot", "snapshot / delta"):
        t.add_column(col, justify="left" if not col else "right")
    dl, sn, r = d["delta"], d["snapshot"], d["snapshot_over_delta"]

    def f(v, fmt="{:,}"):
        return "-" if v is None else fmt.format(v)

    def lat(x, q):
        return latency.fmt_ns(x["sender_to_book"][q]) if x["sender_to_book"] else "-"
    rows = [("book updates received", f(dl["book_updates"]), f(sn["book_updates"]), ""),
            ("lost messages", f(dl["lost_messages"]), f(sn["lost_messages"]), ""),
            ("packets", f(dl["packets"]), f(sn["packets"]), f(r["packets_per_update"], "{:.2f}x")),
            ("bytes (UDP payload)", f(dl["bytes"]), f(sn["bytes"]), ""),
            ("bytes / update", f(dl["bytes_per_update"]), f(sn["bytes_per_update"]), f(r["bytes_per_update"], "{:.2f}x")),
            ("CPU ns / update (data thread)", f(dl["cpu_ns_per_update"]), f(sn["cpu_ns_per_update"]),
             f(r["cpu_ns_per_update"], "{:.2f}x")),
            ("sender_to_book p50 (tai-midnight)", lat(dl, "p50_ns"), lat(sn, "p50_ns"), f(r["sender_to_book_p50"], "{:.2f}x")),
            ("sender_to_book p99 (tai-midnight)", lat(dl, "p99_ns"), lat(sn, "p99_ns"), f(r["sender_to_book_p99"], "{:.2f}x"))]
    for row in rows:
        t.add_row(*row)
    console.print(t)
    console.print("[dim]same generated stream and message rate on both sides; CPU = CLOCK_THREAD_CPUTIME_ID of the "
                  "data thread over whole trials (warm-up included); 'Z' is hftcap's own message, not ITCH 5.0[/]")
    if ALL_MODES[d["path"]][1] == "busy":
        console.print("[yellow]note:[/] a busy-polling data thread spins for the whole trial: its CPU per update is "
                      "the trial's length / updates, not the work (use --snapshot-path xdp-wakeup)")
