#!/usr/bin/env python3
"""Packets per second received WITHOUT LOSS on the lab veth, per receive mode.

Modes: AF_XDP busy-poll, AF_XDP wakeup, kernel socket busy-poll, kernel socket blocking
(poll()). For each offered rate (packets/s, 1 message of 50 bytes per packet, N packets), every
mode is run in turn (alternating, so machine noise hits all alike), for several rounds. A trial is
lossless when the receiver got every message (gaps, revealed by the End of Session packets, = 0).
The result per mode and round is the highest lossless offered rate; the table shows the median
over rounds and the sender's achieved rate. Sender pinned to CPU 0 (taskset), receiver's data
thread to CPU 1 (--cpu). Needs root; makes its own lab and removes it.

    sudo .venv/bin/python benchmarks/bench_capture.py [--rounds 3] [--packets 100000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HFTCAP = str(BIN / "hftcap")
FEED = "239.1.1.1:26400"
MODES = {"xdp-busy": ("xdp", "busy"), "xdp-wakeup": ("xdp", "wakeup"),
         "kernel-busy": ("kernel", "busy"), "kernel-block": ("kernel", "wakeup")}


def send_then_stop(li, lb, rate, packets, cpu_tx, max_seconds, *send_args):
    """While `hftcap listen` (li, already listening) receives: `hftcap send` of `packets` at `rate`
    from the lab's exchange, pinned to cpu_tx, bounded by max_seconds (the run's timeout 30 s
    more); then SIGINT to listen (max_seconds to exit). Answers (send's JSON, listen's JSON)."""
    snd = subprocess.run(["taskset", "-c", str(cpu_tx), HFTCAP, "send", "--netns", lb.ex_ns, "--feed", FEED,
                          "--rate", str(rate), "--count", str(packets), *send_args,
                          "--max-seconds", str(max_seconds), "--json"],
                         capture_output=True, text=True, timeout=max_seconds + 30)
    if snd.returncode:
        raise RuntimeError(snd.stderr)
    sent = json.loads(snd.stdout)
    li.send_signal(2)
    out, _ = li.communicate(timeout=max_seconds)
    return sent, json.loads(out)


def trial(lb, path, poll, rate, packets, cpu_rx, cpu_tx):
    li = subprocess.Popen([HFTCAP, "listen", "--netns", lb.host_ns, "-i", lb.host_if, "--feed", FEED,
                           "--path", path, "--poll", poll, "--cpu", str(cpu_rx), "--json",
                           "--duration", str(3 + packets / max(rate, 1))],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = li.stderr.readline()
        if line.startswith("hftcap: doctor:"):
            line = li.stderr.readline()
        if "listening on" not in line:
            raise RuntimeError(f"listen did not start: {line}{li.stderr.read()}")
        sent, r = send_then_stop(li, lb, rate, packets, cpu_tx, 30)
    finally:
        if li.poll() is None:
            li.kill()
            li.communicate()
    # The data phase only: from the first to the last data packet's send-time stamp (the sender's
    # own elapsed time also covers its End of Session tail).
    span_ns = (sent["last_stamp_itch_ns"] - sent["first_stamp_itch_ns"]) % 86_400_000_000_000
    achieved = (sent["data_packets"] - 1) / (span_ns / 1e9) if span_ns else sent["packet_rate_pps"]
    return {"offered_pps": rate, "achieved_pps": round(achieved, 1), "sent": sent["messages_sent"],
            "received": r["messages"], "lost": r["gaps"], "cpu_s": r["data_thread_cpu_s"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--rates", default="100000,200000,400000,600000,800000,1000000,0",
                    help="offered packet rates; 0 = as fast as the sender goes")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--lab", default="bcap")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_capture: needs root (namespaces, XDP)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hftcap import lab as labmod
    rates = [int(x) for x in a.rates.split(",")]
    lb = labmod.up(a.lab)
    trials = []
    try:
        for rnd in range(a.rounds):
            for rate in rates:
                for mode, (path, poll) in MODES.items():
                    t = trial(lb, path, poll, rate, a.packets, cpu_rx=1, cpu_tx=0)
                    t.update(mode=mode, round=rnd)
                    trials.append(t)
                    print(f"round {rnd} {mode:13s} offered {rate or 'max':>8} achieved {t['achieved_pps']:>10,.0f} pps "
                          f"received {t['received']:>7,}/{t['sent']:,} lost {t['lost']:,}", flush=True)
    finally:
        labmod.down(a.lab)
    summary = {}
    for mode in MODES:
        best = []
        for rnd in range(a.rounds):
            ok = [t["achieved_pps"] for t in trials if t["mode"] == mode and t["round"] == rnd and t["lost"] == 0]
            best.append(max(ok) if ok else 0.0)
        summary[mode] = {"lossless_pps_median": statistics.median(best), "lossless_pps_per_round": best}
    base = summary["kernel-block"]["lossless_pps_median"] or None
    print("\nhighest sender rate received without loss (median over rounds; the rate is the sender's data "
          "phase, first to last send-time stamp, CLOCK_TAI; lab veth, copy-mode AF_XDP; 1 msg/packet; noisy 2-core VM)")
    print(f"{'mode':14s} {'lossless pps':>14s} {'vs kernel-block':>16s}")
    for mode, s in summary.items():
        ratio = f"{s['lossless_pps_median'] / base:.2f}x" if base else "-"
        print(f"{mode:14s} {s['lossless_pps_median']:>14,.0f} {ratio:>16s}")
    doc = {"benchmark": "capture_lossless_pps", "conditions": {
        "kernel": os.uname().release, "packets_per_trial": a.packets, "rounds": a.rounds,
        "sender_cpu": 0, "receiver_cpu": 1, "interface": "veth (lab)", "messages_per_packet": 1,
        "clock": "CLOCK_MONOTONIC"}, "summary": summary, "trials": trials}
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
