"""The Prometheus collector and endpoint without a capture: exposition text parsed back,
power-of-two histogram buckets against the samples, names against the conventions and the
Grafana dashboard, the HTTP server on 127.0.0.1."""
from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from doubles.fakesession import FakeSession, hist_snap
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import hftcap
from hftcap.errors import UsageError
from hftcap.measure import latency as L
from hftcap.ops import metrics
from hftcap.ops.doctor import Check, Report
from bounds import bound

DASHBOARD = Path(hftcap.__file__).parent / "ops" / "grafana-dashboard.json"
SAMPLES = [10, 63, 64, 65, 127, 128, 255, 256, 257, 300, 1000, 4095, 4096, 2**24 - 1, 2**24, 2**24 + 1000, 10**8]


def _families(hops=None, doctor=None):
    hops = hops or {"xdp_to_dequeue": hist_snap(SAMPLES), "nic_to_xdp": L.Absent("no PHC"),
                    "decode_to_book": hist_snap([50, 60])}
    reg = CollectorRegistry(auto_describe=False)
    reg.register(metrics.ListenCollector(FakeSession(hops), doctor))
    text = generate_latest(reg).decode()
    return text, {f.name: f for f in text_string_to_metric_families(text)}


def test_histogram_buckets_are_powers_of_two_from_the_c_histogram():
    text, fam = _families()
    h = fam["hftcap_hop_latency_seconds"]
    by_hop = {}
    for s in h.samples:
        by_hop.setdefault(s.labels["hop"], []).append(s)
    assert set(by_hop) == {"xdp_to_dequeue", "decode_to_book"}       # an absent hop has no series
    got = {s.labels["le"]: s.value for s in by_hop["xdp_to_dequeue"] if s.name.endswith("_bucket")}
    a = np.array(SAMPLES)
    edges = [2 ** k for k in range(6, 25)]
    assert len(edges) == 19 and edges[0] == 64 and edges[-1] == 16_777_216
    for e in edges:
        # exact single-ns buckets below 256 ns count samples <= e; from 256 ns on a bucket
        # starts at e, so the samples below it (hftcap.ops.metrics docstring)
        want = int((a <= e).sum()) if e < 256 else int((a < e).sum())
        (le,) = [k for k in got if k != "+Inf" and float(k) == pytest.approx(e * 1e-9, rel=1e-12)]
        assert got[le] == want, e
    assert got["+Inf"] == len(SAMPLES)
    vals = {s.name: s.value for s in by_hop["xdp_to_dequeue"] if not s.name.endswith("_bucket")}
    assert vals["hftcap_hop_latency_seconds_count"] == len(SAMPLES)
    assert vals["hftcap_hop_latency_seconds_sum"] == pytest.approx(sum(SAMPLES) * 1e-9)
    les = [float(s.labels["le"]) for s in by_hop["xdp_to_dequeue"] if s.name.endswith("_bucket")]
    assert les == sorted(les) and les[0] == pytest.approx(64e-9) and les[-2] == pytest.approx(2**24 * 1e-9)


def test_counters_info_and_doctor():
    rep = Report("/", "veth9", None, None, [Check("a", "a", "pass", ""), Check("b", "b", "warn", ""),
                                          Check("c", "c", "warn", "")])
    text, fam = _families(doctor=rep)
    val = {s.name: s.value for f in fam.values() for s in f.samples if not s.labels}
    assert val["hftcap_packets_total"] == 1001 and val["hftcap_bytes_total"] == 70_070
    assert val["hftcap_moldudp64_missing_messages_total"] == 7 and val["hftcap_moldudp64_gaps_total"] == 2
    assert val["hftcap_moldudp64_last_sequence"] == 4011 and val["hftcap_book_orders_live"] == 42
    drops = {s.labels["reason"]: s.value for s in fam["hftcap_drops"].samples}
    assert drops == {"mold_short": 4, "bad_feed": 0, "itch_unknown_type": 1}
    assert {s.labels["msg_type"]: s.value for s in fam["hftcap_itch_messages"].samples} == {"A": 3000, "D": 1004}
    assert {s.labels["severity"]: s.value for s in fam["hftcap_doctor_checks"].samples} == \
        {"pass": 1, "warn": 2, "fail": 0, "n/a": 0}
    neg = {s.labels["hop"]: s.value for s in fam["hftcap_hop_negative_samples"].samples}
    assert neg == {"xdp_to_dequeue": 2, "decode_to_book": 0}
    (info,) = fam["hftcap_info"].samples
    assert info.value == 1 and info.labels == {
        "version": hftcap.__version__, "path": "xdp", "xdp_mode": "native", "bind_mode": "copy",
        "poll_mode": "wakeup", "interface": "veth9", "user_clock": "CLOCK_TAI", "xdp_clock": "CLOCK_TAI",
        "itch_clock": "tai-midnight", "nic_clock": "none"}
    for f in fam.values():
        assert f.name.startswith("hftcap_")
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples)
        assert len(f.samples) <= 100, f"{f.name}: {len(f.samples)} series"


def test_dashboard_queries_name_exported_metrics():
    text, fam = _families(doctor=Report("/", None, None, None, [Check("a", "a", "pass", "")]))
    exported = {s.name for f in fam.values() for s in f.samples}
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 12
    used = {m for e in exprs for m in re.findall(r"\bhftcap_[a-z0-9_]+", e)}
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for word in ("per second", "drops", "gaps", "sequence", "p50", "p99"):
        assert word in titles


def test_parse_addr():
    assert metrics.parse_addr("9464") == ("127.0.0.1", 9464)
    assert metrics.parse_addr("0.0.0.0:9464") == ("0.0.0.0", 9464)
    assert metrics.parse_addr("[::1]:9") == ("::1", 9)
    for bad in ("x", "host:9464", "127.0.0.1:70000", "-1", ""):
        with pytest.raises(UsageError):
            metrics.parse_addr(bad)


def test_server_on_loopback_serves_landing_page_and_metrics():
    srv = metrics.MetricsServer("127.0.0.1", 0)
    try:
        assert srv.httpd.socket.getsockname()[0] == "127.0.0.1"
        srv.serve(metrics.ListenCollector(FakeSession({"decode_to_book": hist_snap([70])})))
        body = urllib.request.urlopen(srv.url, timeout=bound(5)).read().decode()
        assert "hftcap_packets_total 1001.0" in body
        assert 'href="/metrics"' in urllib.request.urlopen(srv.url[:-len("metrics")], timeout=bound(5)).read().decode()
    finally:
        srv.close()
    other = metrics.MetricsServer("127.0.0.1", 0)
    port = other.port
    try:
        from hftcap.errors import HftcapError
        with pytest.raises(HftcapError, match="cannot serve metrics on 127.0.0.1"):
            metrics.MetricsServer("127.0.0.1", port)
    finally:
        other.close()


def test_listen_metrics_bad_address_is_a_usage_error():
    from conftest import run_hftcap
    cp = run_hftcap("listen", "-i", "lo", "--feed", "239.1.1.1:26400", "--metrics", "nohost:99")
    assert cp.returncode == 2 and cp.stderr.startswith("hftcap: error: bad --metrics 'nohost:99'")
    assert "hint: " in cp.stderr and "Traceback" not in cp.stderr
