#!/usr/bin/env python3
"""ITCH 5.0 decode and decode+books throughput on a generated file, against PyPI itch-book.

Generates an N-message file with hftcap's deterministic generator (default 10 million
messages, 8 stocks; --profile day: the shape of a real NASDAQ day, 8,900 stocks, see
hftcap/lab/gen.py), and on one pinned core times, alternating run by run, each in its own process
that reads the whole file into memory first:
  decode      hftcap._core.decode_only(buf): every message decoded into struct hc_itch_msg
  books       hftcap._core.Books().feed(buf): decode + order-by-order books for every stock
  itch-book   itch_book._core.Session([], 0, []).feed(buf) (its C++ core: parse + apply for
              all symbols, no output table), in its own venv under the work dir
Each figure is wall time from time.perf_counter_ns (CLOCK_MONOTONIC) around one call over the
whole in-memory buffer; file reading and process start are excluded. Peak RSS is the
process's ru_maxrss (getrusage), the file's bytes in memory included (the same for all three).
Medians over --runs.
Memory floor (--memory-floor, on by default with --profile day): in its own process each run,
numpy gathers 4 M int64 from random 64-byte lines of a buffer of --floor-mib MiB (independent
loads, as many in flight as the core allows) and from a 1 MiB buffer (in cache); the difference
is what one random cache line from memory costs this core at full memory-level parallelism. A
day book touches several such lines per message (the order, its slot, its level, the top of
its side, the stock), so ns/msg cannot go below a few times this figure on this machine.
Never part of the CI gate. On a shared or virtual machine the numbers are noisy: the JSON
records the load average before and after. The default 8 stocks keep the whole book in cache;
--stocks 1000 (800k live orders) shows the cache-missing regime of a full NASDAQ day. For the
live path (feed.c: decode a packet, then hc_books_apply each message, cold caches) see
bench_book_live.c.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ITCH_BOOK_RUNNER = r"""
import json, resource, sys, time
from itch_book._core import Session
data = open(sys.argv[1], "rb").read()
s = Session([], 0, [])
t = time.perf_counter_ns(); s.feed(data); e = time.perf_counter_ns() - t
st = s.stats()
print(json.dumps({"ns": e, "messages": st["messages"], "live_orders": st["live_orders"],
                  "missing_ref": st["missing_ref"], "crossed_books": st["crossed_books"],
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

MEMORY_RUNNER = r"""
import json, sys, time
import numpy as np
def gather(mib):
    n = mib << 17  # int64s in mib MiB
    a = np.ones(n, dtype=np.int64)
    idx = np.random.default_rng(1).integers(0, n >> 3, 4_000_000, dtype=np.int64) << 3
    out = np.empty(len(idx), dtype=np.int64)
    a.take(idx, out=out)
    ts = []
    for _ in range(3):
        t = time.perf_counter_ns(); a.take(idx, out=out); ts.append(time.perf_counter_ns() - t)
    return sorted(ts)[1] / len(idx)
big, small = gather(int(sys.argv[1])), gather(1)
print(json.dumps({"ns_per_line": big - small, "ns_per_gather_big": big, "ns_per_gather_in_cache": small}))
"""

HFTCAP_RUNNER = r"""
import json, resource, sys, time
from hftcap import _core
data = open(sys.argv[1], "rb").read()
if sys.argv[2] == "decode":
    t = time.perf_counter_ns(); decoded, drops = _core.decode_only(data); e = time.perf_counter_ns() - t
    out = {"decoded": decoded, "drops": sum(drops.values())}
else:
    b = _core.Books(int(sys.argv[3]))
    t = time.perf_counter_ns(); b.feed(data); e = time.perf_counter_ns() - t
    st = b.stats()
    out = {"live_orders": st["orders_live"], "peak_orders": st["orders_peak"],
           "drops": sum(st["drops"].values())}
out.update(ns=e, maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print(json.dumps(out))
"""


def run_json(cmd):
    # cwd /: `import hftcap` must find the installed package, not a source tree in the cwd
    r = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
    if r.returncode:
        return None, r.stderr.strip()[-300:]
    return json.loads(r.stdout), None


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def setup_itch_book(workdir: Path):
    """Returns (python path, None) or (None, reason)."""
    venv = workdir / "itch-book-venv"
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import itch_book._core"],
                                      capture_output=True).returncode == 0:
        return py, None
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if r.returncode:
        return None, f"python -m venv failed: {r.stderr.strip()[-300:]}"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "itch-book"], capture_output=True,
                       text=True, timeout=600)
    if r.returncode:
        return None, f"pip install itch-book failed: {r.stderr.strip()[-300:]}"
    return py, None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000_000)
    ap.add_argument("--stocks", type=int, default=None, help="default 8 (basic), 8,900 (day)")
    ap.add_argument("--profile", choices=("basic", "day"), default="basic")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the last one)")
    ap.add_argument("--expected-orders", type=int, default=1 << 20,
                    help="hc_books_new pool/table sizing (default 1M orders, the live default)")
    ap.add_argument("--workdir", default="bench-out/bench_book")
    ap.add_argument("--no-itch-book", action="store_true")
    ap.add_argument("--memory-floor", action=argparse.BooleanOptionalAction, default=None,
                    help="measure a random cache line's cost from memory (default: on with --profile day)")
    ap.add_argument("--floor-mib", type=int, default=256, help="buffer of the memory floor (MiB)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    a = ap.parse_args()

    from hftcap.lab import gen

    stocks = a.stocks if a.stocks is not None else (gen.DAY_STOCKS if a.profile == "day" else 8)
    work = Path(a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cpu = a.cpu if a.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    tag = "" if a.profile == "basic" else f"-{a.profile}"
    path = work / f"gen{tag}-s{a.seed}-k{stocks}-n{a.messages}.itch"
    if not path.exists():
        t = time.perf_counter_ns()
        gen.write_file(path, a.seed, stocks, a.messages, profile=a.profile)
        print(f"generated {path} ({path.stat().st_size} bytes) in {(time.perf_counter_ns() - t) / 1e9:.2f} s")
    n = a.messages

    ib_py, ib_reason = (None, "disabled with --no-itch-book") if a.no_itch_book else setup_itch_book(work)
    if ib_py is None:
        print(f"itch-book: not compared: {ib_reason}")

    floor_on = a.memory_floor if a.memory_floor is not None else a.profile == "day"
    floor_runs = []
    load_before = os.getloadavg()
    res = {"decode": [], "books": [], "itch_book": []}
    rss = {"decode": [], "books": [], "itch_book": []}
    check = {}
    py = sys.executable
    for i in range(a.runs):
        out, err = run_json([py, "-c", HFTCAP_RUNNER, str(path), "decode"])
        assert out and out["decoded"] == n and not out["drops"], (out, err)
        res["decode"].append(out["ns"])
        rss["decode"].append(out["maxrss_kib"])

        out, err = run_json([py, "-c", HFTCAP_RUNNER, str(path), "books", str(a.expected_orders)])
        assert out, err
        res["books"].append(out["ns"])
        rss["books"].append(out["maxrss_kib"])
        check["hftcap_live_orders"] = out["live_orders"]
        check["hftcap_peak_orders"] = out["peak_orders"]
        check["hftcap_drops"] = out["drops"]

        if ib_py is not None:
            out, err = run_json([str(ib_py), "-c", ITCH_BOOK_RUNNER, str(path)])
            if out is None:
                ib_reason = f"itch-book run failed: {err}"
                print(ib_reason)
                ib_py = None
            else:
                res["itch_book"].append(out["ns"])
                rss["itch_book"].append(out["maxrss_kib"])
                check["itch_book_live_orders"] = out["live_orders"]
                check["itch_book_missing_ref"] = out["missing_ref"]
                check["itch_book_messages"] = out["messages"]
        if floor_on:
            out, err = run_json([py, "-c", MEMORY_RUNNER, str(a.floor_mib)])
            assert out, err
            floor_runs.append(out)
        print(f"run {i + 1}/{a.runs}: decode {res['decode'][-1] / n:.2f} ns/msg, books "
              f"{res['books'][-1] / n:.2f} ns/msg" +
              (f", itch-book {res['itch_book'][-1] / n:.2f} ns/msg" if res["itch_book"] else ""))
    load_after = os.getloadavg()

    summary = {}
    for k, v in res.items():
        if v:
            med = statistics.median(v)
            summary[k] = {"median_ns_per_msg": med / n, "median_msgs_per_s": n / (med / 1e9),
                          "peak_rss_mib": max(rss[k]) / 1024, "runs_ns": v}
    print(f"\n{n} messages, profile {a.profile}, {stocks} stocks, seed {a.seed}, in memory, one core "
          f"(cpu {cpu}), median of {a.runs} alternating runs, wall time CLOCK_MONOTONIC; peak RSS "
          f"includes the file's {path.stat().st_size / 2**20:.0f} MiB in memory:")
    for k, s in summary.items():
        print(f"  {k:10s} {s['median_ns_per_msg']:7.2f} ns/msg  {s['median_msgs_per_s'] / 1e6:7.2f} M msg/s"
              f"  peak RSS {s['peak_rss_mib']:7.0f} MiB")
    ratio = None
    per_run = [ib / bk for ib, bk in zip(res["itch_book"], res["books"])]  # each pair back to back
    if "itch_book" in summary:
        ratio = summary["itch_book"]["median_ns_per_msg"] / summary["books"]["median_ns_per_msg"]
        print(f"  hftcap decode+books is {ratio:.2f}x itch-book's throughput (ratio of the medians; "
              f"run by run, each pair back to back: {min(per_run):.2f}x to {max(per_run):.2f}x, median "
              f"{statistics.median(per_run):.2f}x)")
        print(f"  cross-check: live orders at end hftcap {check['hftcap_live_orders']}, "
              f"itch-book {check['itch_book_live_orders']} (hftcap peak {check['hftcap_peak_orders']})")
    floor = None
    if floor_runs:
        floor = {k: statistics.median(r[k] for r in floor_runs) for k in floor_runs[0]}
        floor["buffer_mib"] = a.floor_mib
        print(f"  memory floor: one random 64-byte line from a {a.floor_mib} MiB buffer costs "
              f"{floor['ns_per_line']:.2f} ns at full memory-level parallelism (numpy gather "
              f"{floor['ns_per_gather_big']:.2f} ns minus {floor['ns_per_gather_in_cache']:.2f} ns in "
              f"cache; median of {len(floor_runs)}): a message that misses on k lines costs at least "
              f"k x that")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} CPUs: other work on the machine skews these numbers)")
    if a.json:
        doc = {"bench": "bench_book", "messages": n, "profile": a.profile, "stocks": stocks, "seed": a.seed,
               "runs": a.runs, "cpu": cpu, "cpu_model": cpu_model(), "cpus": os.cpu_count(),
               "python": platform.python_version(), "clock": "CLOCK_MONOTONIC (time.perf_counter_ns)",
               "expected_orders": a.expected_orders, "results": summary,
               "ratio_books_vs_itch_book": ratio, "itch_book_not_compared": ib_reason if ratio is None else None,
               "ratio_per_run": per_run or None,
               "cross_check": check, "memory_floor": floor, "load_average_before": load_before, "load_average_after": load_after}
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
