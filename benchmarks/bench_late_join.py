"""Late-join benchmark (never gates CI): snapshot load time and join-to-synced time for a spin
of N resting orders, over loopback TCP from the lab's SnapshotServer into a standalone Join
(this thread plays the data thread: it polls between buffered packets). Times are
CLOCK_MONOTONIC; load = Login Accepted .. End of Snapshot (the server building the spin
included, reported apart as server_build_ms); join-to-synced = first
buffered live message .. books live; restore = the join re-armed (as after a gap declared
lost) .. books live again from a second snapshot of the same size. Repeated, medians and max
reported, JSON on stdout.

  .venv/bin/python benchmarks/bench_late_join.py --orders 100000 1000000 --repeat 3"""
from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "doubles"))

from hftcap import _core  # noqa: E402
from hftcap.feed import glimpse  # noqa: E402
from hftcap.lab.snapshot_server import SnapshotServer  # noqa: E402
from soup_server import StepSender  # noqa: E402


def book_stream(n: int) -> list[bytes]:
    r = (b"R" + struct.pack(">HH", 1, 0) + bytes(6) + b"BENCH   " + b"QN" + struct.pack(">I", 100)
         + b"NCZ PNN1N" + struct.pack(">I", 0) + b"N")
    return [r] + [b"A" + struct.pack(">HH", 1, 0) + bytes(6) + struct.pack(
        ">Q1sI8sI", i + 1, b"B" if i % 2 else b"S", 100, b"BENCH   ",
        1_000_000 + (i % 1000) * 100 + (0 if i % 2 else 200_000)) for i in range(n)]


def one(msgs, stream, n):
    srv = SnapshotServer(StepSender(stream, [len(msgs) - 50, len(msgs)]), 0, host="127.0.0.1").start()
    try:
        books = _core.Books(expected_orders=n)
        join = _core.Join(1 << 16, books)
        seq = len(msgs) - 100
        for i in range(seq, len(msgs) + 1, 10):
            ms = msgs[i - 1:i + 9]
            join.packet(b"HFTCAP0001" + struct.pack(">QH", i, len(ms)) + b"".join(
                struct.pack(">H", len(m)) + m for m in ms))
        c = glimpse.SnapshotClient(join, books.stats, "127.0.0.1", srv.port, total_timeout_s=600,
                                   restore=True).start()
        while not c.joined.wait(0.0005):
            join.poll()
            assert not c.done.is_set(), c.result()
        r = c.result()
        join.rearm()   # as the data thread does on a gap declared lost
        while join.stats()["restores"] < 1:
            join.poll()
            assert not c.done.is_set(), c.result()
            c.stop_event.wait(0.0005)
        restore_ms = join.stats()["restore_ns_last"] / 1e6
        c.stop()
    finally:
        spins = srv.close()["spins"]
    assert r["state"] == "live", r
    spin = spins[0]
    return {"load_ms": r["load_ms"], "join_to_synced_ms": r["join_to_synced_ms"], "bytes": r["bytes"],
            "orders": r["orders_loaded"], "server_build_ms": spin["build_ns"] / 1e6, "restore_ms": restore_ms}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    out = {"clock": "CLOCK_MONOTONIC", "transport": "loopback TCP", "results": []}
    for n in a.orders:
        msgs = book_stream(n)
        stream = b"".join(struct.pack(">H", len(m)) + m for m in msgs)
        runs = [one(msgs, stream, n) for _ in range(a.repeat)]
        row = {"orders": n, "bytes": runs[0]["bytes"], "runs": a.repeat}
        for k in ("load_ms", "join_to_synced_ms", "server_build_ms", "restore_ms"):
            v = [r[k] for r in runs]
            row[k] = {"median": round(statistics.median(v), 2), "max": round(max(v), 2)}
        out["results"].append(row)
        print(f"{n:>9,} orders  {row['bytes'] / 1e6:6.1f} MB  load {row['load_ms']['median']:8.1f} ms "
              f"(max {row['load_ms']['max']:.1f})  join->synced {row['join_to_synced_ms']['median']:8.1f} ms  "
              f"server spin build {row['server_build_ms']['median']:7.1f} ms  "
              f"restore (re-arm->synced) {row['restore_ms']['median']:8.1f} ms", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
