#!/usr/bin/env python3
"""Live sender_to_book while snapshots load vs not (never gates CI). Needs root; makes its own lab.

The lab exchange publishes a generated stream at --rate messages/s for the whole run; rounds of
`hftcap listen --path xdp --itch-clock tai-midnight --duration S` alternate between idle and
loading: in a loading round a second process on the same host fetches and loads a spin of
--orders resting orders over loopback TCP, back to back (the lab's SnapshotServer building the
spin from a prefix in C, the SnapshotClient loading it into books through a Join, as
`listen --snapshot` does). The listener's own join is not involved: during its own load the
data thread only buffers and takes no latency samples, so this measures what the snapshot work
(TCP, spin build, load) costs a live feed on the same machine. Per round: sender_to_book p50 and
p99 (ns, tai-midnight: the sender's CLOCK_TAI stamp to the book update). Table: median over the
rounds of each kind. Shared noisy 2-core VM: compare only within one run.

    sudo .venv/bin/python benchmarks/bench_late_join_live.py [--rounds 6] [--orders 1000000] [--json out]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent
HFTCAP = str(BIN / "hftcap")
FEED = "239.1.1.1:26400"
HERE = Path(__file__).parent

LOADER = r"""
import struct, sys, time
sys.path.insert(0, sys.argv[1])
from bench_late_join import book_stream, one
n, seconds = int(sys.argv[2]), float(sys.argv[3])
msgs = book_stream(n)
stream = b"".join(struct.pack(">H", len(m)) + m for m in msgs)
print("ready", flush=True)
end, loads = time.monotonic() + seconds, 0
while time.monotonic() < end:
    one(msgs, stream, n)
    loads += 1
print(loads, flush=True)
"""


def listen_round(lb, seconds: float) -> dict:
    cp = subprocess.run([HFTCAP, "listen", "--netns", lb.host_ns, "-i", lb.host_if, "--feed", FEED, "--path", "xdp",
                         "--itch-clock", "tai-midnight", "--warmup", "0.3", "--duration", str(seconds), "--json"],
                        capture_output=True, text=True, timeout=seconds + 30)
    if cp.returncode:
        raise RuntimeError(cp.stderr)
    r = json.loads(cp.stdout)
    h = r["latency"]["sender_to_book"]
    return {"p50_ns": h["p50_ns"], "p99_ns": h["p99_ns"], "count": h["count"], "gaps": r["gaps"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    from hftcap.lab import topology
    name = "lj" + uuid.uuid4().hex[:5]
    lb = topology.up(name)
    total = a.rounds * (a.seconds + 25) + 20
    ex = subprocess.Popen([HFTCAP, "exchange", "--netns", lb.ex_ns, "--feed", FEED, "--seed", "3", "--stocks", "8",
                           "--messages", str(int(a.rate * total)), "--msg-rate", str(a.rate), "-k", "4",
                           "--duration", str(total), "--linger", "0", "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows = {"idle": [], "loading": []}
    try:
        for i in range(a.rounds):
            kind = "loading" if i % 2 else "idle"
            loader = None
            if kind == "loading":
                loader = subprocess.Popen([sys.executable, "-c", LOADER, str(HERE), str(a.orders), str(a.seconds + 1)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          cwd="/")  # the installed hftcap, not the checkout's sources
                if loader.stdout.readline().strip() != "ready":
                    raise RuntimeError(loader.stderr.read())
            r = listen_round(lb, a.seconds)
            if loader is not None:
                out, err = loader.communicate(timeout=120)
                if loader.returncode:
                    raise RuntimeError(f"loader failed: {err}")
                r["loads"] = int(out.strip().splitlines()[-1])
            rows[kind].append(r)
            print(f"round {i} {kind:8} sender_to_book p50 {r['p50_ns'] / 1e3:8.1f} us  p99 {r['p99_ns'] / 1e3:8.1f} us  "
                  f"samples {r['count']:,}  gaps {r['gaps']}" + (f"  loads {r['loads']}" if loader else ""),
                  file=sys.stderr)
    finally:
        ex.kill()
        ex.communicate()
        topology.down(name)
    res = {"clock": "sender_to_book: tai-midnight", "rate_msgs_per_s": a.rate, "orders_per_snapshot": a.orders,
           "round_seconds": a.seconds, "rounds": rows}
    for kind, rs in rows.items():
        if rs:
            res[kind] = {k: statistics.median(r[k] for r in rs) for k in ("p50_ns", "p99_ns")}
            print(f"{kind:8} median over {len(rs)} rounds: p50 {res[kind]['p50_ns'] / 1e3:.1f} us, "
                  f"p99 {res[kind]['p99_ns'] / 1e3:.1f} us", file=sys.stderr)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
