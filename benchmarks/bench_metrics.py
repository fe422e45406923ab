#!/usr/bin/env python3
"""Data-thread CPU per message with `listen --metrics` scraped every second vs without.

One lab, one run: trials alternate between "off" (no --metrics) and "on" (--metrics on
127.0.0.1, a scraper GETting /metrics every --interval seconds during the trial), the order
swapped every round so drift hits both alike. Each trial is a real `hftcap listen` (XDP, poll
wakeup, data thread pinned to --cpu-rx, so its CPU time is the work done, not spinning) and a
real `hftcap send` of the same packets from the exchange namespace (pinned to --cpu-tx);
listen's other threads (main, HTTP) run on --listen-cpus, off the data CPU. CPU =
CLOCK_THREAD_CPUTIME_ID of the data thread over the whole trial, divided by messages received.
Prints per-round values, medians, and the difference on / off. Never gates CI. Needs root.

    sudo .venv/bin/python benchmarks/bench_metrics.py [--rounds 6] [--packets 60000] [--rate 20000] [--recovery] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
HFTCAP = str(BIN / "hftcap")
FEED = "239.1.1.1:26400"


def _scraper(url: str, interval: float, stop: threading.Event, out: dict):
    while not stop.wait(interval):
        t = time.monotonic()
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read()
        out["scrapes"] += 1
        out["scrape_s"] += time.monotonic() - t
        out["bytes"] = len(body)


def trial(lb, metrics: bool, a) -> dict:
    cmd = ["taskset", "-c", a.listen_cpus, HFTCAP, "listen", "--netns", lb.host_ns, "-i", lb.host_if, "--feed", FEED, "--path", "xdp",
           "--poll", "wakeup", "--cpu", str(a.cpu_rx), "--json", "--duration", str(30 + a.packets / a.rate)]
    if metrics:
        cmd += ["--metrics", "127.0.0.1:0"]
    if a.recovery:       # recovery on (no loss: nothing asked), so scrapes carry its feed series too
        cmd += ["--rerequest", f"{lb.ex_addr}:26401"]
    li = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop, sc = threading.Event(), {"scrapes": 0, "scrape_s": 0.0, "bytes": 0}
    th = None
    try:
        line = ""
        for _ in range(3):               # the doctor's line, then "listening on"
            line = li.stderr.readline()
            if "listening on" in line or not line:
                break
        if "listening on" not in line:
            raise RuntimeError(f"listen did not start: {line}{li.stderr.read()}")
        if metrics:
            url = re.search(r"metrics at (\S+);", line).group(1)
            th = threading.Thread(target=_scraper, args=(url, a.interval, stop, sc), daemon=True)
            th.start()
        snd = subprocess.run(["taskset", "-c", str(a.cpu_tx), HFTCAP, "send", "--netns", lb.ex_ns, "--feed", FEED,
                              "--rate", str(a.rate), "--count", str(a.packets), "-k", str(a.k), "--max-seconds",
                              str(a.packets / a.rate + 30), "--json"], capture_output=True, text=True, timeout=120)
        if snd.returncode:
            raise RuntimeError(snd.stderr)
        stop.set()
        if th:
            th.join()
        li.send_signal(signal.SIGINT)
        out, err = li.communicate(timeout=30)
        r = json.loads(out)
    finally:
        stop.set()
        if li.poll() is None:
            li.kill()
            li.communicate()
    return {"metrics": metrics, "messages": r["messages"], "lost": r["gaps"], "cpu_s": r["data_thread_cpu_s"],
            "cpu_ns_per_message": round(r["data_thread_cpu_s"] * 1e9 / r["messages"], 2) if r["messages"] else None,
            "duration_s": r["duration_s"], **sc}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--packets", type=int, default=60_000)
    ap.add_argument("--rate", type=float, default=20_000, help="packets per second")
    ap.add_argument("-k", type=int, default=4, help="messages per packet")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    ap.add_argument("--cpu-rx", type=int, default=1)
    ap.add_argument("--cpu-tx", type=int, default=0)
    ap.add_argument("--listen-cpus", default="0", help="CPUs of listen's other threads (HTTP, main): off the "
                                                       "data CPU, as on a tuned host")
    ap.add_argument("--recovery", action="store_true", help="listen --rerequest in every trial: the scrapes then "
                                                                  "include the feed state and recovery series")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--lab", default="bmet")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_metrics: needs root (namespaces, XDP)")
    from hftcap.lab import topology as labmod
    lb = labmod.up(a.lab)
    trials = []
    try:
        for rnd in range(a.rounds):
            for metrics in ((False, True) if rnd % 2 == 0 else (True, False)):
                t = trial(lb, metrics, a)
                t["round"] = rnd
                trials.append(t)
                print(f"round {rnd} metrics {'on ' if metrics else 'off'} {t['cpu_ns_per_message']:>8} ns/msg "
                      f"({t['messages']:,} msgs, lost {t['lost']}, {t['scrapes']} scrapes)", flush=True)
    finally:
        labmod.down(a.lab)
    med = {}
    for on in (False, True):
        v = [t["cpu_ns_per_message"] for t in trials if t["metrics"] == on and t["cpu_ns_per_message"]]
        med["on" if on else "off"] = {"median_ns_per_message": round(statistics.median(v), 1), "min": min(v),
                                      "max": max(v),
                                      "per_round": v}
    diffs = [round(on["cpu_ns_per_message"] - off["cpu_ns_per_message"], 1)
             for on, off in zip([t for t in trials if t["metrics"]], [t for t in trials if not t["metrics"]])]
    summary = {**med, "on_minus_off_ns_per_message": {"median": statistics.median(diffs), "per_round": diffs},
               "scrapes_per_on_trial_median": statistics.median(t["scrapes"] for t in trials if t["metrics"]),
               "mean_scrape_ms": round(1e3 * sum(t["scrape_s"] for t in trials) /
                                       max(1, sum(t["scrapes"] for t in trials)), 2)}
    print(f"\ndata-thread CPU per message (CLOCK_THREAD_CPUTIME_ID, XDP wakeup, data thread on CPU {a.cpu_rx}; "
          f"lab veth; shared noisy 2-core VM): off median {med['off']['median_ns_per_message']} ns "
          f"[{med['off']['min']}..{med['off']['max']}], on (scrape every {a.interval} s) median "
          f"{med['on']['median_ns_per_message']} ns [{med['on']['min']}..{med['on']['max']}]; "
          f"paired on-off median {summary['on_minus_off_ns_per_message']['median']:+.2f} ns")
    doc = {"benchmark": "metrics_scrape_cpu_per_message", "conditions": {
        "kernel": os.uname().release, "rounds": a.rounds, "packets_per_trial": a.packets, "packet_rate": a.rate,
        "messages_per_packet": a.k, "scrape_interval_s": a.interval, "receiver_cpu": a.cpu_rx,
        "sender_cpu": a.cpu_tx, "listen_other_threads_cpus": a.listen_cpus, "path": "xdp", "poll": "wakeup", "interface": "veth (lab)",
        "order": "alternating, swapped every round", "clock": "CLOCK_THREAD_CPUTIME_ID",
        "recovery": a.recovery},
        "summary": summary, "trials": trials}
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
