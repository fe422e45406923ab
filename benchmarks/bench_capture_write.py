#!/usr/bin/env python3
"""What `listen --write` costs the data thread, and whether it keeps up.

1. ring put (no lab): the data thread's exact work per packet with --write, in CPU ns (median
   and p99 over reps of a burst) and in instructions (callgrind, repeatable on a noisy host:
   the difference of two burst lengths, so fixed costs cancel), for frames of 80, 199, 1400 B:
   - "descriptor": the AF_XDP path (hc_capring_put_xsk, the frame hold, reclaim per batch of
     64): a burst of 8,192, fewer than the frames the hold has, while the writer copies the
     frames out of a stand-in UMEM to a file;
   - "copy": hc_capring_put, the kernel path's copy of the packet into the ring (the AF_XDP
     path's before the descriptor ring).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_capture import FEED, HFTCAP, send_then_stop  # noqa: E402


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def ring_put(reps: int, n: int, mode: str, ring_mib: int = 256) -> dict:
    from hftcap import _core
    from hftcap.receive import pcapng
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for flen in (80, 199, 1400):
            idb = pcapng.Interface("bench", "ring put benchmark", None, "xdp", 0)
            w = _core.PcapngWriter(os.path.join(d, f"b{flen}.pcapng"), pcapng.header("bench", [idb], 262144), [1],
                                   ring_bytes=ring_mib << 20, writer_cpu=0)
            put = w.bench_put_xsk if mode == "descriptor" else w.bench_put
            rec = 128 if mode == "descriptor" else 112 + flen
            n_f = min(n, 8192 if mode == "descriptor" else n, (w.ring_bytes // 2) // rec)
            per = []
            for _ in range(reps):
                before = w.stats()["capture_drops"]
                ns = put(n_f, flen)
                if w.stats()["capture_drops"] != before:
                    raise RuntimeError("the ring filled (or the hold ran out) during a burst")
                per.append(ns / n_f)
                while w.stats()["written"] < w.stats()["seen"]:   # let the writer drain
                    time.sleep(0.01)
            w.close()
            st = w.stats()
            out[str(flen)] = {"ns_per_put_median": round(statistics.median(per), 2),
                              "ns_per_put_p99": round(q(per, 0.99), 2), "reps": reps, "burst": n_f,
                              "written": st["written"], "capture_drops": st["capture_drops"]}
    return out


CG_SCRIPT = """
import os, sys, tempfile
from hftcap import _core
from hftcap.receive import pcapng
mode, n, flen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = tempfile.mkdtemp()
w = _core.PcapngWriter(os.path.join(d, "c.pcapng"), pcapng.header("b", [pcapng.Interface("b", "b", None, "xdp", 0)],
                       262144), [1], ring_bytes=16 << 20)
(w.bench_put_xsk if mode == "descriptor" else w.bench_put)(n, flen)
w.close()
assert w.stats()["capture_drops"] == 0
os.unlink(os.path.join(d, "c.pcapng")); os.rmdir(d)
"""


def callgrind_put(flen: int, mode: str, n1: int = 2000, n2: int = 10000) -> float | None:
    """Instructions per put: callgrind's count inside the bench function (the data thread only)
    for bursts of n2 and n1 puts, differenced. None without valgrind."""
    import shutil
    if not shutil.which("valgrind"):
        return None
    fn = "Writer_bench_put_xsk" if mode == "descriptor" else "Writer_bench_put"
    irs = []
    with tempfile.TemporaryDirectory() as d:
        for n in (n1, n2):
            outf = os.path.join(d, f"cg.{n}")
            cp = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={outf}",
                                 f"--toggle-collect={fn}", sys.executable, "-c", CG_SCRIPT, mode, str(n), str(flen)],
                                capture_output=True, text=True, timeout=600, cwd=d)
            if cp.returncode:
                raise RuntimeError(cp.stderr[-2000:])
            line = [ln for ln in cp.stderr.splitlines() if "Collected :" in ln]
            irs.append(int(line[-1].split(":")[-1]))
    return round((irs[1] - irs[0]) / (n2 - n1), 1)


def trial(lb, rate, packets, k, cpu_rx, cpu_tx, write: str | None):
    cmd = [HFTCAP, "listen", "--netns", lb.host_ns, "-i", lb.host_if, "--feed", FEED, "--cpu", str(cpu_rx),
           "--json", "--duration", str(5 + packets / max(rate, 1))]
    if write:
        cmd += ["--write", write]
    li = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        for _ in range(8):                      # the doctor's line comes first
            line = li.stderr.readline()
            seen += line
            if "listening on" in line or not line:
                break
        if "listening on" not in line:
            raise RuntimeError(f"listen did not start: {seen}{li.stderr.read()}")
        sent, r = send_then_stop(li, lb, rate, packets, cpu_tx, 60, "-k", str(k))
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
            "capture_drops": c.get("capture_drops"), "capture_drops_late": c.get("capture_drops_late"),
            "packets_captured": c.get("packets_captured"), "writer_cpu": c.get("writer_cpu"),
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
    ap.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    ap.add_argument("--lab", default="bcw")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_capture_write: needs root (namespaces, XDP)")
    doc = {"conditions": {"kernel": os.uname().release, "cpus": os.cpu_count(), "path": "xdp", "poll": "wakeup",
                          "cpu_rx": a.cpu_rx, "cpu_tx": a.cpu_tx, "k": a.k, "packets": a.packets,
                          "rounds": a.rounds, "capture_buffer": "256 MiB (default)", "writer_cpu": "default (not --cpu-rx)",
                          "loadavg_start": os.getloadavg(),
                          "note": "shared noisy 2-core VM; medians over alternating trials"}}
    doc["ring_put"] = {}
    for mode in ("descriptor", "copy"):
        doc["ring_put"][mode] = ring_put(a.put_reps, a.put_burst, mode)
        print(f"{mode}: data-thread CPU ns per packet (median / p99 over {a.put_reps} bursts), "
              f"instructions per packet (callgrind):")
        for flen, v in doc["ring_put"][mode].items():
            v["instructions_per_put"] = None if a.no_callgrind else callgrind_put(int(flen), mode)
            print(f"  {flen:>5} B frame: {v['ns_per_put_median']:6.2f} / {v['ns_per_put_p99']:6.2f} ns"
                  f"  (burst {v['burst']})  {v['instructions_per_put']} instructions", flush=True)
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
    doc["conditions"]["loadavg_end"] = os.getloadavg()
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
