"""listen --metrics scraped by a real Prometheus server (Debian's `prometheus`), started here on
127.0.0.1 with its own config and storage, against a lab run; the values it stored must be the
listener's final JSON, the histograms' counts its hop sample counts, the info labels its modes."""
from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from listenproc import FEED, Listener
from bounds import bound

pytestmark = [pytest.mark.root, pytest.mark.slow]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout=bound(5.0)):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class Prom:
    def __init__(self, tmp: Path, target: str):
        self.port = _free_port()
        cfg = tmp / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
                       "scrape_configs:\n  - job_name: hftcap\n    static_configs:\n"
                       f"      - targets: ['{target}']\n")
        self.log = open(tmp / "prometheus.log", "w")
        self.p = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'data'}",
                                   f"--web.listen-address=127.0.0.1:{self.port}"],
                                  stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + bound(30)
        while time.monotonic() < deadline:
            assert self.p.poll() is None, f"prometheus exited: {(tmp / 'prometheus.log').read_text()[-2000:]}"
            try:
                if "Ready" in _get(self.base + "/-/ready", bound(1)):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"prometheus did not become ready in {bound(30):.0f} s")

    def query(self, q: str, at: float | None = None) -> list[dict]:
        args = {"query": q}
        if at is not None:
            args["time"] = f"{at:.3f}"
        doc = json.loads(_get(f"{self.base}/api/v1/query?{urllib.parse.urlencode(args)}"))
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def scalar(self, q: str) -> float | None:
        r = self.query(q)
        return float(r[0]["value"][1]) if r else None

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def _wait(what: str, cond, timeout: float):
    timeout = bound(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus not installed (setup.sh installs it)")
def test_prometheus_scrapes_listen(lab, tmp_path):
    li = Listener(lab, "--metrics", "127.0.0.1:0", "--itch-clock", "tai-midnight", "--duration", 120).wait_ready()
    prom = None
    try:
        line = next(x for x in li.err_lines if "metrics at" in x)
        url = re.search(r"metrics at (http://127\.0\.0\.1:(\d+)/metrics)", line)
        assert url, line
        # the endpoint is on this (the root) namespace's loopback while the capture is in the lab's
        assert "hftcap_up 1.0" in _get(url.group(1))
        assert 'href="/metrics"' in _get(url.group(1)[:-len("metrics")])
        prom = Prom(tmp_path, f"127.0.0.1:{url.group(2)}")
        _wait("the first scrape", lambda: prom.scalar("up{job='hftcap'}") == 1.0, 30)
        subprocess.run([str(Path(li.cmd[0])), "send", "--netns", lab.ex_ns, "--feed", FEED, "--count", "400",
                        "--rate", "2000", "-k", "3", "--max-seconds", f"{bound(20):g}"], check=True, capture_output=True,
                       timeout=bound(60))
        # stable: two scrapes after the last packet agree (a scrape every second)
        seen = []

        def stable():
            r = prom.query("hftcap_packets_total")
            if not r:
                return False
            ts, v = float(r[0]["value"][0]), float(r[0]["value"][1])
            stamp = prom.query("timestamp(hftcap_packets_total)")
            seen.append((float(stamp[0]["value"][1]), v))
            scrapes = sorted(set(seen))
            return len(scrapes) >= 2 and scrapes[-1][1] == scrapes[-2][1] >= 400 and ts
        at = _wait("Prometheus to hold the final counters", stable, 30)
        vals = {}
        for q in ("hftcap_packets_total", "hftcap_bytes_total", "hftcap_messages_total",
                  "hftcap_moldudp64_missing_messages_total", "hftcap_moldudp64_duplicates_total",
                  "hftcap_moldudp64_last_sequence", "hftcap_moldudp64_end_of_session_total"):
            vals[q] = float(prom.query(q, at)[0]["value"][1])
        by_label = {}
        for q, lab_name in (("hftcap_itch_messages_total", "msg_type"), ("hftcap_drops_total", "reason"),
                            ("hftcap_xdp_program_packets_total", "counter"),
                            ("hftcap_hop_latency_seconds_count", "hop"),
                            ("hftcap_hop_latency_seconds_bucket{le='+Inf'}", "hop"),
                            ("hftcap_doctor_checks", "severity")):
            by_label[q] = {r["metric"][lab_name]: float(r["value"][1]) for r in prom.query(q, at)}
        info = prom.query("hftcap_info", at)
        stored = set(json.loads(_get(f"{prom.base}/api/v1/label/__name__/values"))["data"])
        li.p.send_signal(signal.SIGINT)
        res = li.result()
    finally:
        li.kill()
        if prom is not None:
            prom.stop()
    assert res["packets"] >= 400
    assert vals["hftcap_packets_total"] == res["packets"]
    assert vals["hftcap_bytes_total"] == res["bytes"]
    assert vals["hftcap_messages_total"] == res["messages"] == 1200
    assert vals["hftcap_moldudp64_missing_messages_total"] == res["gaps"] == 0
    assert vals["hftcap_moldudp64_duplicates_total"] == res["duplicates"]
    assert vals["hftcap_moldudp64_last_sequence"] == res["last_sequence"] == 1200
    assert vals["hftcap_moldudp64_end_of_session_total"] == res["end_of_session"]
    assert by_label["hftcap_itch_messages_total"] == {k: float(v) for k, v in res["messages_by_type"].items()}
    assert by_label["hftcap_drops_total"] == {k: float(v) for k, v in res["drops"].items()}
    assert by_label["hftcap_xdp_program_packets_total"] == {k: float(v) for k, v in res["xdp"].items()}
    hops = {h: v["count"] for h, v in res["latency"].items() if "absent" not in v}
    assert set(hops) >= {"xdp_to_dequeue", "dequeue_to_decode", "decode_to_book", "xdp_to_book",
                         "sender_to_book"}
    assert by_label["hftcap_hop_latency_seconds_count"] == {h: float(n) for h, n in hops.items()}
    assert by_label["hftcap_hop_latency_seconds_bucket{le='+Inf'}"] == by_label["hftcap_hop_latency_seconds_count"]
    assert all(n == res["packets"] - res["end_of_session"] for h, n in hops.items() if h != "sender_to_book")
    assert by_label["hftcap_doctor_checks"] == {k: float(v) for k, v in res["doctor"]["counts"].items()}
    import hftcap
    dash = json.loads((Path(hftcap.__file__).parent / "ops" / "grafana-dashboard.json").read_text())
    used = {m for p in dash["panels"] for t in p.get("targets", []) for m in re.findall(r"\bhftcap_[a-z0-9_]+", t["expr"])}
    assert used <= stored, used - stored
    assert len(info) == 1
    m = info[0]["metric"]
    assert (m["path"], m["xdp_mode"], m["bind_mode"], m["poll_mode"], m["interface"], m["itch_clock"],
            m["version"], m["nic_clock"], m["xdp_clock"]) == \
        ("xdp", res["xdp_mode"], res["bind_mode"], "wakeup", lab.host_if, "tai-midnight", hftcap.__version__,
         "none", "CLOCK_TAI")
