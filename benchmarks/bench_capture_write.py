#!/usr/bin/env python3
"""What `listen --write` costs the data thread, and whether it keeps up.

1. ring put (no lab): ns per hc_capring_put of one frame (80, 199, 1400 bytes), n puts in a
   burst smaller than the ring while the writer thread drains it to a file, the data thread's
   exact work per packet with --write. Median and p99 over reps.
2. lab (AF_XDP wakeup, data thread pinned to --cpu-rx, sender on --cpu-tx): for each offered
   rate, listen without and with --write (default 256 MiB ring), alternating, for several
   rounds: messages lost, capture drops, data-thread CPU ns per packet (CLOCK_THREAD_CPUTIME_ID;
   the difference with/without is the added cost, noise included), bytes written per second of
   sending. The highest offered rate every round received without loss is reported.
Shared, noisy 2-core VM: compare within one run only. Needs root; makes its own lab.

    sudo .venv/bin/python benchmarks/bench_capture_write.py [--rounds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HFTCAP = str(BIN / "hftcap")
FEED = "239.1.1.1:26400"


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def ring_put(reps: int, n: int, ring_mib: int = 256) -> dict:
    from hftcap import _core
    from hftcap.receive import pcapng
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for flen in (80, 199, 1400):
            idb = pcapng.Interface("bench", "ring put benchmark", None, "xdp", 0)
            w = _core.PcapngWriter(os.path.join(d, f"b{flen}.pcapng"), pcapng.header("bench", [idb], 262144), [1],
                                   ring_bytes=ring_mib << 20)
            per = []
            n_f = min(n, (w.ring_bytes // 2) // (104 + flen))   # a burst fills at most half the ring
            for _ in range(reps):
                before = w.stats()["capture_drops"]
                ns = w.bench_put(n_f, flen)
                if w.stats()["capture_drops"] != before:
                    raise RuntimeError("the ring filled during a burst: lower --put-burst")
                per.append(ns / n_f)
                while w.stats()["written"] < w.stats()["seen"]:   # let the writer drain
                    time.sleep(0.01)
            w.close()
            st = w.stats()
            out[str(flen)] = {"ns_per_put_median": round(statistics.median(per), 2),
                              "ns_per_put_p99": round(q(per, 0.99), 2), "reps": reps, "burst": n_f,
                              "written": st["written"], "capture_drops": st["capture_drops"]}
    return out


def trial(lb, rate, packets, k, cpu_rx, cpu_tx, write: str | None):
    cmd = [HFTCAP, "listen", "--netns", lb.host_ns, "-i", lb.host_if, "--feed", FEED, "--cpu", str(cpu_rx),
           "--json", "--duration", str(5 + packets / max(rate, 1))]
    if write:
        cmd += ["--write", write]
    li = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = li.stderr.readline()
        if "listening on" not in line:
            raise RuntimeError(f"listen did not start: {line}{li.stderr.read()}")
        snd = subprocess.run(["taskset", "-c", str(cpu_tx), HFTCAP, "send", "--netns", lb.ex_ns, "--feed", FEED,
                              "--rate", str(rate), "--count", str(packets), "-k", str(k), "--max-seconds", "60",
                              "--json"], capture_output=True, text=True, timeout=90)
        if snd.returncode:
            raise RuntimeError(snd.stderr)
        sent = json.loads(snd.stdout)
        li.send_signal(2)
        out, _ = li.communicate(timeout=60)
        r = json.loads(out)
    finally:
        if li.poll() is None:
            li.kill()
            li.communicate()
    span_ns = (sent["last_stamp_itch_ns"] - sent["first_stamp_itch_ns"]) % 86_400_000_000_000
    c = r.get("capture") or {}
    return {"offered_pps": rate, "write": bool(write),
            "achieved_pps": round((sent["data_packets"] - 1) / (span_ns / 1e9), 1) if span_ns else None,
            "sent_messages": sent["messages_sent"], "received_messages": r["messages"], "lost": r["gaps"],
            "packets": r["packets"], "cpu_ns_per_packet": round(r["data_thread_cpu_s"] * 1e9 / max(r["packets"], 1), 1),
            "capture_drops": c.get("capture_drops"), "packets_captured": c.get("packets_captured"),
            "bytes_written": c.get("bytes_written"),
            "bytes_per_s": round(c["bytes_written"] / (span_ns / 1e9)) if c and span_ns else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("-k", type=int, default=4, help="messages per packet")
    ap.add_argument("--rates", default="50000,100000,200000,300000")
    ap.add_argument("--put-reps", type=int, default=30)
    ap.add_argument("--put-burst", type=int, default=200_000)
    ap.add_argument("--cpu-rx", type=int, default=1)
    ap.add_argument("--cpu-tx", type=int, default=0)
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--put-only", action="store_true", help="only the ring-put part (no lab)")
    ap.add_argument("--lab", default="bcw")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_capture_write: needs root (namespaces, XDP)")
    doc = {"conditions": {"kernel": os.uname().release, "cpus": os.cpu_count(), "path": "xdp", "poll": "wakeup",
                          "cpu_rx": a.cpu_rx, "cpu_tx": a.cpu_tx, "k": a.k, "packets": a.packets,
                          "rounds": a.rounds, "ring": "256 MiB (default)",
                          "note": "shared noisy 2-core VM; medians over alternating trials"}}
    doc["ring_put"] = {}
    for mib in (256, 4):
        doc["ring_put"][f"{mib} MiB"] = ring_put(a.put_reps, a.put_burst, mib)
        print(f"ring put into a {mib} MiB ring, data-thread CPU ns per packet (median / p99 over reps):")
        for flen, v in doc["ring_put"][f"{mib} MiB"].items():
            print(f"  {flen:>5} B frame: {v['ns_per_put_median']:6.2f} / {v['ns_per_put_p99']:6.2f}  (burst {v['burst']})")
    if a.put_only:
        if a.json_out:
            Path(a.json_out).write_text(json.dumps(doc, indent=1) + "\n")
        return
    from hftcap.lab import topology as labmod
    rates = [int(x) for x in a.rates.split(",")]
    lb = labmod.up(a.lab)
    trials = []
    with tempfile.TemporaryDirectory() as d:
        try:
            for rnd in range(a.rounds):
                for rate in rates:
                    for write in ((False, True) if rnd % 2 == 0 else (True, False)):
                        path = os.path.join(d, "w.pcapng") if write else None
                        t = trial(lb, rate, a.packets, a.k, a.cpu_rx, a.cpu_tx, path)
                        t["round"] = rnd
                        trials.append(t)
                        if path and os.path.exists(path):
                            os.unlink(path)
                        print(f"round {rnd + 1} rate {rate:>7} write {str(write):5} lost {t['lost']:>6} "
                              f"capture drops {t['capture_drops']} cpu {t['cpu_ns_per_packet']} ns/pkt", flush=True)
        finally:
            labmod.down(a.lab)
    summary = {}
    for rate in rates:
        row = {}
        for write in (False, True):
            ts = [t for t in trials if t["offered_pps"] == rate and t["write"] == write]
            row["write" if write else "plain"] = {
                "lossless_rounds": sum(t["lost"] == 0 for t in ts), "rounds": len(ts),
                "cpu_ns_per_packet_median": statistics.median(t["cpu_ns_per_packet"] for t in ts),
                "achieved_pps_median": statistics.median(t["achieved_pps"] or 0 for t in ts),
                **({"capture_drops_max": max(t["capture_drops"] for t in ts),
                    "bytes_per_s_median": statistics.median(t["bytes_per_s"] for t in ts)} if write else {})}
        row["added_cpu_ns_per_packet"] = round(row["write"]["cpu_ns_per_packet_median"]
                                               - row["plain"]["cpu_ns_per_packet_median"], 1)
        summary[str(rate)] = row
    lossless = [r for r in rates if all(summary[str(r)][m]["lossless_rounds"] == summary[str(r)][m]["rounds"]
                                        for m in ("plain", "write"))]
    doc.update({"trials": trials, "by_rate": summary, "highest_lossless_pps": max(lossless) if lossless else None})
    print(f"\n{'offered':>8} {'lossless plain/write':>21} {'cpu ns/pkt plain':>17} {'write':>7} {'added':>7} "
          f"{'capture drops':>13} {'MB/s written':>12}")
    for rate in rates:
        s = summary[str(rate)]
        print(f"{rate:>8} {s['plain']['lossless_rounds']:>10}/{s['write']['lossless_rounds']:<10} "
              f"{s['plain']['cpu_ns_per_packet_median']:>17} {s['write']['cpu_ns_per_packet_median']:>7} "
              f"{s['added_cpu_ns_per_packet']:>7} {s['write']['capture_drops_max']:>13} "
              f"{s['write']['bytes_per_s_median'] / 1e6:>12.2f}")
    print(f"highest rate lossless in every round, with and without --write: {doc['highest_lossless_pps']} pps")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
