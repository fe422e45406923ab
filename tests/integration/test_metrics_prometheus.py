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

from listenproc import FEED, FEED_PORT, Listener, hftcap
from bounds import bound

pytestmark = [pytest.mark.root, pytest.mark.slow]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_on_free_port(argv_for, log_path: Path):
    """Start a server (Prometheus, node_exporter) on a port the kernel just gave out. The port is
    free when probed but released before the server binds it, so another process may take it in
    between: when the server then exits saying so (and only then), it is started again on a new
    port, at most 3 times. Waits (bounded) until its log says it listens, or it exited for another
    reason (the caller reports that). Returns (process, port, log file)."""
    for _ in range(3):
        port = _free_port()
        log = open(log_path, "w")
        p = subprocess.Popen(argv_for(port), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + bound(30)
        while p.poll() is None and 'msg="Listening on"' not in log_path.read_text():
            if time.monotonic() > deadline:
                return p, port, log
            time.sleep(0.05)
        if p.poll() is None or "address already in use" not in log_path.read_text():
            return p, port, log
        log.close()
    raise AssertionError(f"3 ports in a row were taken before {argv_for(0)[0]} bound them")


def _get(url: str, timeout=bound(5.0)):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class _Spawned:
    """A server _spawn_on_free_port started (self.p, its log self.log); stop() ends it."""

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


class Prom(_Spawned):
    def __init__(self, tmp: Path, target: str | dict):
        cfg = tmp / "prometheus.yml"
        jobs = target if isinstance(target, dict) else {"hftcap": target}
        cfg.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n" + "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['{t}']\n" for job, t in jobs.items()))
        self.p, self.port, self.log = _spawn_on_free_port(
            lambda port: [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'data'}",
                          f"--web.listen-address=127.0.0.1:{port}"], tmp / "prometheus.log")
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
                            ("hftcap_xsk_frames_total", "guess"),
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
    assert by_label["hftcap_xsk_frames_total"] == {k: float(v) for k, v in res["xsk_frames"].items()}
    assert res["xsk_frames"]["foreseen"] >= 1 and res["xsk_frames"]["not_foreseen"] == 0
    hops = {h: v["count"] for h, v in res["latency"].items() if "absent" not in v}
    assert set(hops) >= {"xdp_to_dequeue", "dequeue_to_decode", "decode_to_book", "xdp_to_book",
                         "sender_to_book"}
    assert by_label["hftcap_hop_latency_seconds_count"] == {h: float(n) for h, n in hops.items()}
    assert by_label["hftcap_hop_latency_seconds_bucket{le='+Inf'}"] == by_label["hftcap_hop_latency_seconds_count"]
    assert all(n == res["packets"] - res["end_of_session"] for h, n in hops.items() if h != "sender_to_book"), \
        {k: res[k] for k in ("packets", "end_of_session", "heartbeats", "duplicates", "negative_samples",
                             "drops", "xdp")} | {"hops": hops}
    assert by_label["hftcap_doctor_checks"] == {k: float(v) for k, v in res["doctor"]["counts"].items()}
    import hftcap
    dash = json.loads((Path(hftcap.__file__).parent / "ops" / "grafana-dashboard.json").read_text())
    used = {m for p in dash["panels"] for t in p.get("targets", []) for m in re.findall(r"\bhftcap_[a-z0-9_]+", t["expr"])}
    # the recovery, capture and snapshot series need --rerequest, --write, --snapshot (the next test)
    later = ("hftcap_recovery_", "hftcap_feed_state", "hftcap_capture_", "hftcap_snapshot_")
    assert {m for m in used if not m.startswith(later)} <= stored, used - stored
    assert len(info) == 1
    m = info[0]["metric"]
    assert (m["path"], m["xdp_mode"], m["bind_mode"], m["poll_mode"], m["interface"], m["itch_clock"],
            m["version"], m["nic_clock"], m["xdp_clock"]) == \
        ("xdp", res["xdp_mode"], res["bind_mode"], "wakeup", lab.host_if, "tai-midnight", hftcap.__version__,
         "none", "CLOCK_TAI")


class NodeExporter(_Spawned):
    """Debian's prometheus-node-exporter with only the textfile collector, on 127.0.0.1."""

    def __init__(self, tmp: Path, directory: Path):
        self.p, self.port, self.log = _spawn_on_free_port(
            lambda port: [NODE_EXPORTER, "--collector.disable-defaults", "--collector.textfile",
                          f"--collector.textfile.directory={directory}", f"--web.listen-address=127.0.0.1:{port}"],
            tmp / "node_exporter.log")
        self.url = f"http://127.0.0.1:{self.port}/metrics"

        def ready():
            assert self.p.poll() is None, f"node_exporter exited: {(tmp / 'node_exporter.log').read_text()[-2000:]}"
            try:
                return "node_textfile_scrape_error" in _get(self.url, 1)
            except OSError:
                return False
        _wait("node_exporter to answer", ready, 30)


def _by_labels(prom, q, at, *labels):
    return {tuple(r["metric"].get(k, "") for k in labels) if labels else (): float(r["value"][1])
            for r in prom.query(q, at)}


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus not installed (setup.sh installs it)")
@pytest.mark.skipif(not Path(NODE_EXPORTER).exists(),
                    reason="prometheus-node-exporter not installed (setup.sh installs it)")
def test_prometheus_lossy_run_with_rerequest_write_and_textfile(lab, tmp_path):
    """A lossy feed with --rerequest and --write: Prometheus holds feed state, recovery, books'
    flags and capture figures equal to listen's final JSON; node_exporter serves the textfile,
    whose last write (hftcap_up 0) Prometheus also stores, equal to the JSON too."""
    from hftcap.ops import metrics as M
    tf_dir = tmp_path / "textfile"
    tf_dir.mkdir()
    tf = tf_dir / "hftcap.prom"
    li = Listener(lab, "--metrics", "127.0.0.1:0", "--write", tmp_path / "cap.pcapng", "--duration", 120,
                  "--request-timeout", 0.05, "--rerequest", f"{lab.ex_addr}:{FEED_PORT + 1}",
                  "--metrics-textfile", tf, "--metrics-interval", 0.5).wait_ready()
    prom = node = None
    try:
        port = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", "".join(li.err_lines)).group(1)
        node = NodeExporter(tmp_path, tf_dir)
        prom = Prom(tmp_path, {"hftcap": f"127.0.0.1:{port}", "node": f"127.0.0.1:{node.port}"})
        _wait("the first scrapes", lambda: prom.scalar("up{job='hftcap'}") == 1.0 and
              prom.scalar("hftcap_up{job='node'}") == 1.0, 30)
        sent = json.loads(hftcap("exchange", "--netns", lab.ex_ns, "--feed", FEED, "--seed", 5, "--stocks", 6,
                                 "--messages", 30_000, "--msg-rate", 100_000, "-k", 6, "--json", "--loss", 0.01,
                                 "--dup", 0.005, "--reorder", 0.005, "--linger", 1.0))
        assert sent["lost_packets"] > 0
        watch = ("hftcap_packets_total{job='hftcap'}", "hftcap_recovery_requests_total{job='hftcap'}",
                 "hftcap_recovery_replies_total{job='hftcap'}", "hftcap_capture_packets_total{job='hftcap'}",
                 "hftcap_feed_state{job='hftcap', state='synced'}")
        seen = {}

        def stable():
            r = prom.query("timestamp(hftcap_packets_total{job='hftcap'})")
            if not r:
                return False
            ts = float(r[0]["value"][1])
            seen[ts] = tuple(float(prom.query(q, ts)[0]["value"][1]) for q in watch)
            last = [seen[t] for t in sorted(seen)[-2:]]
            return len(last) == 2 and last[0] == last[1] and last[1][-1] == 1.0 and ts
        at = _wait("Prometheus to hold the final figures", stable, 60)
        rec_q = {spec.name for spec in M.FEED_RECOVERY.values()}
        got = {q: _by_labels(prom, f"{{__name__='{q}', job='hftcap'}}", at, "feed", "outcome", "reason", "source")
               for q in rec_q}
        state = _by_labels(prom, "hftcap_feed_state{job='hftcap'}", at, "feed", "state")
        flags = {q: _by_labels(prom, q + "{job='hftcap'}", at)[()] for q in
                 ("hftcap_books_suspect_stocks", "hftcap_books_incomplete_stocks")}
        cap = {spec.name: _by_labels(prom, spec.name + "{job='hftcap'}", at)[()] for spec in M.CAPTURE.values()}
        rt = {q: _by_labels(prom, q + "{job='hftcap'}", at, "feed") for q in
              ("hftcap_recovery_time_seconds_count", "hftcap_recovery_loss_declared_seconds_count")}
        sock = _by_labels(prom, "hftcap_recovery_socket_drops_total{job='hftcap'}", at, "reason")
        stored = set(json.loads(_get(f"{prom.base}/api/v1/label/__name__/values"))["data"])
        li.p.send_signal(signal.SIGINT)
        res = li.result()
        # the textfile's final write (hftcap_up 0), through node_exporter into Prometheus
        at2 = _wait("Prometheus to store the textfile's final write",
                    lambda: prom.scalar("hftcap_up{job='node'}") == 0.0 and
                    float(prom.query("timestamp(hftcap_up{job='node'})")[0]["value"][1]), 30)
        node_pkts = _by_labels(prom, "hftcap_packets_total{job='node'}", at2)[()]
        node_rec = {q: _by_labels(prom, f"{{__name__='{q}', job='node'}}", at2, "feed", "outcome", "reason", "source")
                    for q in rec_q}
        node_cap = {spec.name: _by_labels(prom, spec.name + "{job='node'}", at2)[()] for spec in M.CAPTURE.values()}
        node_err = prom.scalar("node_textfile_scrape_error{job='node'}")
    finally:
        li.kill()
        for x in (prom, node):
            if x is not None:
                x.stop()
    rec = res["recovery"]["feeds"][FEED]
    assert rec["messages_recovered"] > 0 and rec["requests_sent"] > 0 and rec["replies"] > 0, rec
    assert res["feed_states"] == {FEED: "synced"}
    assert state == {(FEED, s): float(s == "synced") for s in M.FEED_STATES}

    def want(source):
        out = {}
        for key, spec in M.FEED_RECOVERY.items():
            lab_ = dict(spec.labels)
            out.setdefault(spec.name, {})[(FEED, lab_.get("outcome", ""), lab_.get("reason", ""), lab_.get("source", ""))] = float(source[key])
        return out
    assert got == want(rec)
    assert flags == {"hftcap_books_suspect_stocks": float(res["suspect_books"]),
                     "hftcap_books_incomplete_stocks": float(res["incomplete_books"])}
    assert res["suspect_books"] == res["incomplete_books"] == 0
    assert sock == {(k[5:],): float(v) for k, v in res["recovery"]["socket_drops"].items()}
    c = res["capture"]
    assert c["capture_drops"] == 0 and c["packets_captured"] == res["packets"]
    final_cap = {spec.name: float(c[k] if k != "files_begun" else len(c["files"])) for k, spec in M.CAPTURE.items()}
    # while running, the bytes lack only the Interface Statistics Blocks close() appends
    isb = final_cap["hftcap_capture_written_bytes_total"] - cap.pop("hftcap_capture_written_bytes_total")
    assert 0 < isb < 512, isb
    assert cap == {k: v for k, v in final_cap.items() if k != "hftcap_capture_written_bytes_total"}
    assert rt == {"hftcap_recovery_time_seconds_count": {(FEED,): float(rec["recovery_time"]["count"])},
                  "hftcap_recovery_loss_declared_seconds_count": {(FEED,): float(rec["loss_declared_after"]["count"])}}
    assert rec["recovery_time"]["count"] > 0
    # every metric the dashboard names is stored, but the snapshot's (no --snapshot here; the
    # unit test covers them)
    import hftcap as pkg
    dash = json.loads((Path(pkg.__file__).parent / "ops" / "grafana-dashboard.json").read_text())
    used = {m for p in dash["panels"] for t in p.get("targets", []) for m in re.findall(r"\bhftcap_[a-z0-9_]+", t["expr"])}
    assert {m for m in used if not m.startswith("hftcap_snapshot_")} <= stored, used - stored
    # the textfile: its last write is the final JSON, in the file and through node_exporter
    assert res["metrics_textfile"]["errors"] == 0 and res["metrics_textfile"]["writes"] >= 2
    assert node_err == 0.0 and node_pkts == res["packets"]
    assert node_rec == want(rec)
    assert node_cap == final_cap
    from prometheus_client.parser import text_string_to_metric_families
    fam = {f.name: f for f in text_string_to_metric_families(tf.read_text())}
    val = {s.name: s.value for f in fam.values() for s in f.samples if not s.labels}
    assert val["hftcap_up"] == 0 and val["hftcap_packets_total"] == res["packets"]
    assert val["hftcap_messages_total"] == res["messages"] == 30_000
