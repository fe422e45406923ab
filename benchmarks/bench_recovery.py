#!/usr/bin/env python3
"""Gap recovery in the lab: what it costs and how fast it fills.

Needs root: makes its own lab (two namespaces and a veth pair, removed at the end), runs
`hftcap exchange` (generator, --msg-rate, its re-request server on the feed port + 1) into
`hftcap listen --json` and reads the listener's figures:
  loss L (each of --losses):   recovery time p50/p99 (gap seen -> nothing missing, CLOCK_TAI,
                               per episode) and messages recovered per second of run
  steady state, no loss:       dequeue_to_decode + decode_to_book p50 (CLOCK_TAI) and the data
                               thread's CPU ns per message (CLOCK_THREAD_CPUTIME_ID), with
                               --rerequest vs without, alternating run by run (--runs each)
  --ab (each of --losses):     A/B lines, loss L on each, no server: gap seen -> filled by the
                               other line p50/p99, the B line's lag behind A's first copy p50/p99
                               (arrival stamps, CLOCK_TAI), messages B brought first / filled (a hole seen) per second, and the
                               messages lost against what both lines missed (the exchange's record)
Medians over the runs. Never part of the CI gate: on a shared 2-core VM these numbers are noisy
and the JSON carries the load average before and after."""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent
FEED_GROUP, FEED_PORT = "239.1.1.1", 26400
FEED = f"{FEED_GROUP}:{FEED_PORT}"
FEED_B = f"239.1.2.1:{FEED_PORT}"


def run_pair(lab, messages, rate, loss, rerequest, path, ab=False):
    cmd = [str(BIN / "hftcap"), "listen", "--netns", lab.host_ns, "-i", lab.host_if, "--feed", FEED, "--json",
           "--path", path, "--duration", str(messages / rate + 30)]
    if rerequest:
        cmd += ["--rerequest", f"{lab.ex_addr}:{FEED_PORT + 1}"]
    exb = []
    if ab:
        cmd += ["--feed-b", FEED_B]
        exb = ["--feed-b", FEED_B, "--loss-b", str(loss), "--rerequest-port", "0"]
    li = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = li.stderr.readline()
        if "listening on" in line or not line:
            break
    ex = subprocess.run([str(BIN / "hftcap"), "exchange", "--netns", lab.ex_ns, "--feed", FEED, "--seed", "5",
                         "--stocks", "8", "--messages", str(messages), "--msg-rate", str(rate), "-k", "6",
                         "--loss", str(loss), "--linger", "1", "--json", *exb], capture_output=True, text=True,
                        timeout=600)
    li.send_signal(signal.SIGINT)
    out, err = li.communicate(timeout=120)
    if li.returncode or ex.returncode:
        raise SystemExit(f"bench_recovery: a run failed: {ex.stderr}{err}")
    return json.loads(ex.stdout), json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--rate", type=float, default=100_000, help="messages/s")
    ap.add_argument("--losses", default="0.001,0.01")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--path", default="xdp")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--ab", action="store_true", help="only the A/B case (no server), at each of --losses")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_recovery: needs root (it makes a lab of namespaces)", file=sys.stderr)
        return 1
    from hftcap.lab import topology
    name = "b" + uuid.uuid4().hex[:6]
    lab = topology.up(name)
    res = {"conditions": {"messages": a.messages, "rate_mps": a.rate, "path": a.path, "runs": a.runs,
                          "loadavg_before": os.getloadavg(), "clock": "CLOCK_TAI (recovery, hops); "
                          "CLOCK_THREAD_CPUTIME_ID (cpu)"}, "loss": {}, "steady": {}}
    try:
        if a.ab:
            res["ab"] = {}
            for loss in map(float, a.losses.split(",")):
                runs = []
                for _ in range(a.runs):
                    sent, live = run_pair(lab, a.messages, a.rate, loss, False, a.path, ab=True)
                    r = live["recovery"]["feeds"][FEED]
                    la = {x for f, t in sent["lost_ranges"] for x in range(f, t + 1)}
                    lb = {x for f, t in sent["line_b"]["lost_ranges"] for x in range(f, t + 1)}
                    runs.append({"filled_p50_ns": r["recovery_time"]["p50_ns"] or 0,
                                 "filled_p99_ns": r["recovery_time"]["p99_ns"] or 0,
                                 "b_lag_p50_ns": r["lines"]["b"]["lag"]["p50_ns"] or 0,
                                 "b_lag_p99_ns": r["lines"]["b"]["lag"]["p99_ns"] or 0,
                                 "b_first_per_s": r["lines"]["b"]["wins"] / live["duration_s"],
                                 "b_filled_per_s": r["lines"]["b"]["filled"] / live["duration_s"],
                                 "messages_lost": r["messages_lost"], "both_lines_missed": len(la & lb)})
                res["ab"][str(loss)] = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
                res["ab"][str(loss)]["runs"] = runs
            raise StopIteration
        for loss in map(float, a.losses.split(",")):
            p50, p99, per_s, lost = [], [], [], []
            for _ in range(a.runs):
                sent, live = run_pair(lab, a.messages, a.rate, loss, True, a.path)
                r = live["recovery"]["feeds"][FEED]
                p50.append(r["recovery_time"]["p50_ns"] or 0)
                p99.append(r["recovery_time"]["p99_ns"] or 0)
                per_s.append(r["messages_recovered"] / live["duration_s"])
                lost.append(r["gaps_lost"])
            res["loss"][str(loss)] = {"recovery_p50_ns": statistics.median(p50),
                                      "recovery_p99_ns": statistics.median(p99),
                                      "recovered_messages_per_s": round(statistics.median(per_s), 1),
                                      "gaps_lost": lost}
        steady = {True: [], False: []}
        for i in range(2 * a.runs):
            rr = i % 2 == 0
            _, live = run_pair(lab, a.messages, a.rate, 0.0, rr, a.path)
            lat = live["latency"]
            steady[rr].append({"hops_p50_ns": lat["dequeue_to_decode"]["p50_ns"] + lat["decode_to_book"]["p50_ns"],
                               "cpu_ns_per_msg": live["data_thread_cpu_s"] * 1e9 / max(1, live["messages"])})
        for rr, runs in steady.items():
            res["steady"]["with_rerequest" if rr else "without"] = {
                "hops_p50_ns": statistics.median(x["hops_p50_ns"] for x in runs),
                "cpu_ns_per_msg": round(statistics.median(x["cpu_ns_per_msg"] for x in runs), 1)}
        w, wo = res["steady"]["with_rerequest"], res["steady"]["without"]
        res["steady"]["cpu_ratio"] = round(w["cpu_ns_per_msg"] / wo["cpu_ns_per_msg"], 3)
        res["steady"]["hops_ratio"] = round(w["hops_p50_ns"] / wo["hops_p50_ns"], 3)
    except StopIteration:  # --ab: that case only
        pass
    finally:
        topology.down(name)
    res["conditions"]["loadavg_after"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
