#!/usr/bin/env python3
"""Long recovery soak in the lab: RSS flat and books exact over minutes of lossy feed.

Needs root: makes its own lab (two namespaces and a veth pair, removed at the end). The exchange
sends --messages at --rate with --loss packet loss and its re-request server; `hftcap listen
--rerequest --symbol '*'` recovers every gap. The listener's resident memory (VmRSS) is sampled
every --sample seconds; at the end every stock's book is compared with `hftcap book` on the same
stream written to a file (same seed). Prints the figures and JSON: RSS at start of the soak (after
--warmup s), at the end, its range after the warm-up, the recovery counters, and how many books
equal the offline replay. Never part of the CI gate (the CI soak is 30 s: tests/integration/
test_recovery_soak.py). Times: CLOCK_MONOTONIC; conditions (load average) in the JSON."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent
FEED_GROUP, FEED_PORT = "239.1.1.1", 26400
FEED = f"{FEED_GROUP}:{FEED_PORT}"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600, help="length of the feed (10 min)")
    ap.add_argument("--rate", type=int, default=20_000, help="messages/s")
    ap.add_argument("--loss", type=float, default=0.001)
    ap.add_argument("--stocks", type=int, default=8)
    ap.add_argument("--path", default="xdp")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--sample", type=float, default=5.0)
    ap.add_argument("--request-timeout", type=float, default=0.05,
                    help="listen --request-timeout (s): sized for a preempted VM; the soak is about "
                         "exactness and memory, not reply speed")
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_soak: needs root (it makes a lab of namespaces)", file=sys.stderr)
        return 1
    from hftcap.lab import topology
    messages = int(a.rate * a.seconds)
    gen = ["--seed", "31", "--stocks", str(a.stocks), "--messages", str(messages)]
    tmp = Path(tempfile.mkdtemp(prefix="hftcap-soak."))
    stream = tmp / "stream.itch"
    subprocess.run([str(BIN / "hftcap"), "exchange", *gen, "--write", str(stream)], check=True,
                   capture_output=True, timeout=1800)
    name = "s" + uuid.uuid4().hex[:6]
    lab = topology.up(name)
    res = {"conditions": {"seconds": a.seconds, "rate_mps": a.rate, "messages": messages, "loss": a.loss,
                          "path": a.path, "stocks": a.stocks, "request_timeout_s": a.request_timeout,
                          "loadavg_before": os.getloadavg(), "clock": "CLOCK_MONOTONIC (samples)"}}
    li = ex = None
    try:
        li = subprocess.Popen([str(BIN / "hftcap"), "listen", "--netns", lab.host_ns, "-i", lab.host_if,
                               "--feed", FEED, "--path", a.path, "--json", "--symbol", "*",
                               "--duration", str(a.seconds + 300), "--request-timeout", str(a.request_timeout),
                               "--rerequest", f"{lab.ex_addr}:{FEED_PORT + 1}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = li.stderr.readline()
            if "listening on" in line or not line:
                break
        ex = subprocess.Popen([str(BIN / "hftcap"), "exchange", "--netns", lab.ex_ns, "--feed", FEED, *gen,
                               "--msg-rate", str(a.rate), "-k", "6", "--loss", str(a.loss), "--linger", "2",
                               "--json", "--duration", str(a.seconds * 2 + 120)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        samples = []
        while ex.poll() is None and time.monotonic() - t0 < a.seconds * 2 + 180:
            time.sleep(a.sample)                      # the sampling period of a measurement
            samples.append((round(time.monotonic() - t0, 1), rss_kib(li.pid)))
        out, err = ex.communicate(timeout=120)
        if ex.returncode:
            raise SystemExit(f"bench_soak: the exchange failed: {err.strip()}")
        sent = json.loads(out)
        li.send_signal(2)
        lout, lerr = li.communicate(timeout=300)
        if li.returncode:
            raise SystemExit(f"bench_soak: listen failed: {lerr.strip()[-2000:]}")
        live = json.loads(lout)
    finally:
        for p in (ex, li):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        topology.down(name)
    equal, differ = 0, []
    for sym, book in live["books"].items():
        off = json.loads(subprocess.run([str(BIN / "hftcap"), "book", str(stream), "--symbol", sym, "--json"],
                                        capture_output=True, text=True, check=True, timeout=600).stdout)
        if off["book"] == book:
            equal += 1
        else:
            differ.append(sym)
    stream.unlink()
    tmp.rmdir()
    after = [k for t, k in samples if t >= a.warmup]
    rec = live["recovery"]["feeds"][FEED]
    res.update({
        "rss_kib": {"start": after[0] if after else None, "end": after[-1] if after else None,
                    "min_after_warmup": min(after) if after else None,
                    "max_after_warmup": max(after) if after else None,
                    "growth_after_warmup": (max(after) - min(after)) if after else None, "samples": samples},
        "sent": {"messages_sent": sent["messages_sent"], "lost_packets": sent["lost_packets"],
                 "lost_messages": sent["lost_messages"]},
        "recovery": {k: rec[k] for k in ("state", "gaps_seen", "gaps_lost", "messages_recovered",
                                         "messages_late", "messages_lost", "requests_sent", "timeouts",
                                         "retries")},
        "messages": live["messages"], "books_equal": equal, "books_differ": differ,
        "books": len(live["books"]), "duration_s": live.get("duration_s"),
    })
    res["conditions"]["loadavg_after"] = os.getloadavg()
    r = res["rss_kib"]
    print(f"soak {a.seconds:g} s at {a.rate} msg/s, {a.loss:.2%} loss, {a.path}: RSS {r['start']} -> {r['end']} KiB "
          f"(range after {a.warmup:g} s warm-up {r['growth_after_warmup']} KiB); gaps {rec['gaps_seen']} seen, "
          f"{rec['gaps_lost']} lost, {rec['messages_recovered']} messages recovered; books equal {equal}/"
          f"{len(live['books'])}; load {res['conditions']['loadavg_before'][0]:.1f}->"
          f"{res['conditions']['loadavg_after'][0]:.1f}", file=sys.stderr)
    print(json.dumps({k: v for k, v in res.items()}, indent=1))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(res, indent=1) + "\n")
    return 0 if not differ and rec["gaps_lost"] == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
