#!/usr/bin/env python3
"""Whole-process replay of a file: `hftcap book` on .gz and plain against PyPI itch-book.

Generates an N-message stream (default 5 million, the basic 8-stock profile; --profile day for
the day shape), writes it plain and gzip (level 6, like NASDAQ's files), and times, alternating
run by run, each as a whole process (fork to exit, wall time CLOCK_MONOTONIC):
  hftcap-gz     hftcap book FILE.gz --json (the inflater thread + the books)
  itch-book-gz  itch2parquet verify FILE.gz (itch-book's replay of every book with its checks)
  hftcap-plain  hftcap book FILE --json (the file mapped, no copy)
  python-start  python -c "from hftcap import entry, _core" (interpreter start, the book route's
                imports, exit: what the whole process pays before and after its replay)
and inside one process (no start-up, no imports):
  feed-plain    Books().feed_file(FILE)     feed-gz  Books().feed_file(FILE.gz)
  feed-pcap     Books().feed_file(FILE.pcap): the same messages captured, 4 per MoldUDP64 frame
                (Ethernet/IPv4/UDP, classic pcap), the way a `listen --write` capture replays
  memory        Books().feed(bytes)         (the file already in memory: the in-memory figure)
Medians over --runs, and run-by-run ratios (each pair ran back to back). Before each run, what a
cache line written on CPU 0 costs to read on CPU 1 (`hftcap floor line`): the .gz replay hands
every inflated chunk from one thread to the other, and on a VM the host moves that cost. Never
part of the CI gate; the machine's load is recorded.
"""
from __future__ import annotations

import argparse
import gzip
import struct
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_book import run_json, setup_itch_book  # noqa: E402

INPROC = r"""
import json, sys, time
from hftcap import _core
path, gz, pcap = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
b = _core.Books(1 << 20); t = time.perf_counter_ns(); b.feed_file(path); out["feed_plain"] = time.perf_counter_ns() - t
b = _core.Books(1 << 20); t = time.perf_counter_ns(); b.feed_file(gz); out["feed_gz"] = time.perf_counter_ns() - t
b = _core.Books(1 << 20); t = time.perf_counter_ns(); b.feed_file(pcap); out["feed_pcap"] = time.perf_counter_ns() - t
out["live_pcap"] = b.stats()["orders_live"]
data = open(path, "rb").read()
b = _core.Books(1 << 20); t = time.perf_counter_ns(); b.feed(data); out["memory"] = time.perf_counter_ns() - t
out["live"] = b.stats()["orders_live"]
print(json.dumps(out))
"""


def write_pcap(path: Path, data: bytes, k: int = 4) -> None:
    """data (NASDAQ file layout) as a classic pcap of MoldUDP64 frames of k records each."""
    head = b"\x01\x00\x5e\x36\x0c\x01\x02\x00\x00\x00\x00\x01\x08\x00"
    out, off, seq, i = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)], 0, 1, 0
    while off < len(data):
        start, n = off, 0
        while off < len(data) and n < k:
            off += 2 + int.from_bytes(data[off:off + 2], "big")
            n += 1
        payload = b"HFTCAP0001" + struct.pack(">QH", seq, n) + data[start:off]
        udp = struct.pack(">HHHH", 40000, 26400, 8 + len(payload), 0) + payload
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\x0a\0\0\x01",
                         b"\xe9\x36\x0c\x01")
        f = head + ip + udp
        out.append(struct.pack("<IIII", 1700000000 + i // 1000000, i % 1000000, len(f), len(f)) + f)
        seq, i = seq + n, i + 1
    path.write_bytes(b"".join(out))


def whole(cmd) -> int:
    t = time.perf_counter_ns()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd="/")
    e = time.perf_counter_ns() - t
    if r.returncode not in (0, 1):  # itch2parquet verify exits 1 when a check fails (reported)
        raise SystemExit(f"{cmd[0]} failed: {r.stderr[-300:]}")
    return e


def cpu_line() -> float | None:
    """One `hftcap floor line` between CPUs 0 and 1 (~0.1 s), or None where there are not two."""
    from hftcap.errors import HftcapError
    from hftcap.measure import floor
    try:
        return floor.run_line(0, 1)["one_way_p50_ns"]
    except HftcapError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5_000_000)
    ap.add_argument("--profile", choices=("basic", "day"), default="basic")
    ap.add_argument("--stocks", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", default="bench-out/bench_book")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    from hftcap import _core
    from hftcap.lab import gen

    stocks = a.stocks if a.stocks is not None else (gen.DAY_STOCKS if a.profile == "day" else 8)
    work = Path(a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = work / f"file-{a.profile}-s{a.seed}-k{stocks}-n{a.messages}.itch"
    gz = base.with_suffix(".itch.gz")
    pcap = base.with_suffix(".pcap")
    if not gz.exists() or not pcap.exists():
        data = gen.generate(a.seed, stocks, a.messages, a.profile)
        base.write_bytes(data)
        with gzip.open(gz, "wb", compresslevel=6) as f:
            f.write(data)
        write_pcap(pcap, data)
        del data
    ib_py, reason = setup_itch_book(work)
    if ib_py is None:
        raise SystemExit(f"itch-book not available: {reason}")
    itch2parquet = str(Path(ib_py).parent / "itch2parquet")
    hftcap = str(Path(sys.executable).parent / "hftcap")
    n = a.messages
    res = {k: [] for k in ("hftcap_gz", "itch_book_gz", "hftcap_plain", "python_start", "feed_plain", "feed_gz",
                           "feed_pcap", "memory")}
    lines = []
    load_before = os.getloadavg()
    for i in range(a.runs):
        lines.append(cpu_line())
        res["hftcap_gz"].append(whole([hftcap, "book", str(gz), "--json"]))
        res["itch_book_gz"].append(whole([itch2parquet, "verify", str(gz), "--date", "2019-12-30"]))
        res["hftcap_plain"].append(whole([hftcap, "book", str(base), "--json"]))
        res["python_start"].append(whole([sys.executable, "-c", "from hftcap import entry, _core"]))
        out, err = run_json([sys.executable, "-c", INPROC, str(base), str(gz), str(pcap)])
        assert out, err
        assert out["live_pcap"] == out["live"], out  # the capture rebuilds the same books
        for k in ("feed_plain", "feed_gz", "feed_pcap", "memory"):
            res[k].append(out[k])
        print(f"run {i + 1}/{a.runs}: " + ", ".join(f"{k} {v[-1] / 1e6:.0f} ms" for k, v in res.items()) +
              (f"; cache line CPU 0 -> 1 {lines[-1]:.0f} ns" if lines[-1] is not None else ""))
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"\n{n} messages, profile {a.profile}, {stocks} stocks; plain {base.stat().st_size / 2**20:.0f} MiB, "
          f"gzip -6 {gz.stat().st_size / 2**20:.0f} MiB; inflater {_core.inflater()}; median of {a.runs} "
          "alternating runs, wall time CLOCK_MONOTONIC:")
    for k, v in med.items():
        print(f"  {k:13s} {v / 1e6:8.1f} ms  {v / n:7.1f} ns/msg")
    ratios = {"gz_whole_process_vs_itch_book": med["itch_book_gz"] / med["hftcap_gz"],
              "plain_feed_file_vs_memory": med["feed_plain"] / med["memory"],
              "gz_feed_file_vs_memory": med["feed_gz"] / med["memory"],
              "pcap_feed_file_vs_plain_feed_file": med["feed_pcap"] / med["feed_plain"],
              "plain_whole_process_vs_memory": med["hftcap_plain"] / med["memory"],
              "plain_whole_process_minus_python_start_vs_memory":
                  (med["hftcap_plain"] - med["python_start"]) / med["memory"]}
    per_run = {"gz_whole_process_vs_itch_book": [i / h for i, h in zip(res["itch_book_gz"], res["hftcap_gz"])],
               "plain_whole_process_vs_memory": [h / m for h, m in zip(res["hftcap_plain"], res["memory"])]}
    g = per_run["gz_whole_process_vs_itch_book"]
    print(f"  whole process on .gz: hftcap {ratios['gz_whole_process_vs_itch_book']:.2f}x itch-book's speed "
          f"(ratio of the medians; run by run {min(g):.2f}x to {max(g):.2f}x, median {statistics.median(g):.2f}x)")
    print(f"  feed_file plain / in memory: {ratios['plain_feed_file_vs_memory']:.2f}; .gz / in memory: "
          f"{ratios['gz_feed_file_vs_memory']:.2f}; whole process plain / in memory "
          f"{ratios['plain_whole_process_vs_memory']:.2f} (includes Python start-up and imports), without the "
          f"python-start figure {ratios['plain_whole_process_minus_python_start_vs_memory']:.2f}")
    print(f"  feed_file of the same messages as a pcap capture ({pcap.stat().st_size / 2**20:.0f} MiB, 4 per "
          f"MoldUDP64 frame) / of the plain file: {ratios['pcap_feed_file_vs_plain_feed_file']:.2f}")
    got = [x for x in lines if x is not None]
    if got:
        print(f"  a cache line written on CPU 0, read on CPU 1, before each run: "
              + ", ".join("-" if x is None else f"{x:.0f}" for x in lines) + " ns one way (p50; CLOCK_MONOTONIC)")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs, shared)")
    if a.json:
        Path(a.json).write_text(json.dumps({"bench": "bench_file", "messages": n, "profile": a.profile,
                                            "stocks": stocks, "runs_ns": res, "median_ns": med,
                                            "ratios": ratios, "ratios_per_run": per_run,
                                            "cpu_line_one_way_p50_ns_before_each_run": lines,
                                            "inflater": _core.inflater(),
                                            "load_average": [load_before, load_after]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
