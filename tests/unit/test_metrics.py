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
    assert {s.labels["guess"]: s.value for s in fam["hftcap_xsk_frames"].samples if s.name.endswith("_total")} \
        == {"foreseen": 990, "not_foreseen": 11}
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
    # with --rerequest, --write and --snapshot: the feed, recovery, capture and snapshot series
    full = _fams(FakeSession({}, recovery=_gap_lab().report, capfile=CAP, snapshot=SNAP))
    exported |= {s.name for f in full.values() for s in f.samples}
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 12
    used = {m for e in exprs for m in re.findall(r"\bhftcap_[a-z0-9_]+", e)}
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for word in ("per second", "drops", "gaps", "sequence", "p50", "p99", "feed state", "recovery", "suspect",
                 "capture file", "snapshot"):
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


# ---- feed state, recovery, books' flags, capture, snapshot: from the dicts listen --json prints ----

FEED = "239.1.1.1:26400"


def _gap_lab():
    """A real recovery (C, lab mode) with one open gap, asked for: state recovering, counters set."""
    from hftcap import _core
    from hftcap.feed.recovery import RecoveryOptions
    from test_recovery import MS, SRV, make_stream
    stream, snd, pkts = make_stream()
    lab = _core.RecoveryLab(RecoveryOptions(servers=[SRV], request_max=10).core())
    lab.packet(pkts[0], MS)
    lab.packet(pkts[51], MS + 1)
    lab.tick(MS + 1 + 1_000_000)          # past the gap timeout: the requests go out
    return lab


def _fams(sess):
    reg = CollectorRegistry(auto_describe=False)
    reg.register(metrics.ListenCollector(sess))
    text = generate_latest(reg).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _series(fam, *labels):
    return {tuple(s.labels[k] for k in labels): s.value for s in fam.samples
            if not s.name.endswith(("_bucket", "_count", "_sum", "_created"))}


def test_feed_state_and_recovery_counters_equal_the_json_figures():
    from hftcap.feed import recovery
    lab = _gap_lab()
    raw = lab.report()
    rec = recovery.shape(raw, [FEED])["feeds"][FEED]
    assert rec["state"] == "recovering" and rec["gaps_seen"] == 1 and rec["requests_sent"] > 0
    fam = _fams(FakeSession({}, recovery=lab.report, books={"AAA": (True, False), "BBB": (False, True),
                                                               "CCC": (True, True)}))
    assert _series(fam["hftcap_feed_state"], "feed", "state") == {
        (FEED, "synced"): 0, (FEED, "gap_wait"): 0, (FEED, "recovering"): 1, (FEED, "degraded"): 0}
    checked = 0
    for key, spec in metrics.FEED_RECOVERY.items():
        f = fam[spec.name[:-6] if spec.kind == "counter" else spec.name]
        want = {(FEED, *(v for _, v in spec.labels)): float(rec[key])}
        got = {k: v for k, v in _series(f, "feed", *(n for n, _ in spec.labels)).items() if k in want}
        assert got == want, key
        checked += 1
    assert checked == len(metrics.FEED_RECOVERY) >= 20
    for key, spec in metrics.FEED_HOLE.items():          # the join hole's re-request figures
        f = fam[spec.name[:-6]]
        want = {(FEED, *(v for _, v in spec.labels)): float(rec["hole"][key])}
        got = {k: v for k, v in _series(f, "feed", *(n for n, _ in spec.labels)).items() if k in want}
        assert got == want, key
    outcomes = _series(fam["hftcap_recovery_messages"], "outcome")
    assert outcomes == {("late",): rec["messages_late"], ("recovered",): rec["messages_recovered"],
                        ("lost",): rec["messages_lost"]}
    assert _series(fam["hftcap_recovery_reply_drops"], "reason") == {
        (r,): 0.0 for r in ("unknown_source", "wrong_session", "unrequested", "malformed")}
    assert set(_series(fam["hftcap_recovery_socket_drops"], "reason")) == {
        ("unknown_source",), ("wrong_session",), ("unrequested",), ("malformed",)}
    val = {s.name: s.value for f in fam.values() for s in f.samples if not s.labels}
    assert val["hftcap_books_suspect_stocks"] == 2 and val["hftcap_books_incomplete_stocks"] == 2
    # the recovery-time histograms: one per feed, counts equal the JSON's sample counts (0 here:
    # the gap is still open), edges 2^10 .. 2^33 ns
    for name, key in (("hftcap_recovery_time_seconds", "recovery_time"),
                      ("hftcap_recovery_loss_declared_seconds", "loss_declared_after")):
        h = {s.name: s for s in fam[name].samples if not s.name.endswith("_bucket")}
        assert h[name + "_count"].value == rec[key]["count"] == 0 and h[name + "_count"].labels == {"feed": FEED}
        les = [float(s.labels["le"]) for s in fam[name].samples if s.name.endswith("_bucket")][:-1]
        assert les[0] == pytest.approx(2 ** 10 * 1e-9) and les[-1] == pytest.approx(2 ** 33 * 1e-9)


def test_recovery_time_histogram_counts_an_episode():
    """A gap filled by a late packet: one recovery-time sample, in the bucket of its duration."""
    from hftcap import _core
    from hftcap.feed.recovery import RecoveryOptions
    from test_recovery import MS, SRV, make_stream
    stream, snd, pkts = make_stream()
    lab = _core.RecoveryLab(RecoveryOptions(servers=[SRV]).core())
    lab.packet(pkts[0], MS)
    lab.packet(pkts[2], MS)
    lab.packet(pkts[1], MS + 300_000)      # the late packet, 300 us after the gap was seen
    lab.tick(MS + 300_001)
    fam = _fams(FakeSession({}, recovery=lab.report))
    b = {float(s.labels["le"]): s.value for s in fam["hftcap_recovery_time_seconds"].samples
         if s.name.endswith("_bucket")}
    assert b[float("inf")] == 1
    assert b[2 ** 18 * 1e-9] == 0 and b[2 ** 19 * 1e-9] == 1      # 262 us < 300 us <= 524 us
    assert _series(fam["hftcap_feed_state"], "state")[("synced",)] == 1
    assert _series(fam["hftcap_recovery_messages"], "outcome")[("late",)] > 0


def test_every_figure_the_c_reports_is_mapped_or_skipped():
    """A counter added to hc_recov_stats (or to recovery.shape) must get its one table line in
    hftcap.ops.metrics (or be listed as skipped): this fails until it does."""
    from hftcap.feed import recovery
    rec = recovery.shape(_gap_lab().report(), [FEED])
    fig = rec["feeds"][FEED]
    unmapped = set(fig) - set(metrics.FEED_RECOVERY) - metrics.FEED_RECOVERY_SKIP
    assert not unmapped, f"map these in hftcap/ops/metrics.py FEED_RECOVERY: {sorted(unmapped)}"
    assert set(fig["hole"]) == set(metrics.FEED_HOLE), "map the join hole's figures in FEED_HOLE"
    for line, lfig in (fig.get("lines") or {}).items():      # with A/B lines (listen --feed-b)
        if isinstance(lfig, dict):
            unmapped = set(lfig) - set(metrics.FEED_LINE) - metrics.FEED_LINE_SKIP
            assert not unmapped, f"map these in hftcap/ops/metrics.py FEED_LINE: {sorted(unmapped)}"
    assert set(rec["socket_drops"]) <= set(metrics.SOCKET_DROPS)


def test_a_per_line_counter_is_one_mapping_line(monkeypatch):
    """The A/B lines' figures (recovery.feeds[FEED].lines = {"a": {...}, "b": {...}, "events": [...],
    "clock": ...}, the shape of branch ab) come out with feed and line labels; a new key appears
    with one FEED_LINE line; unmapped keys stay out."""
    from hftcap.feed import recovery
    lab = _gap_lab()

    def shaped(raw, feeds):
        out = recovery_shape(raw, feeds)
        out["feeds"][FEED]["lines"] = {
            "a": {"packets": 10, "wins": 9, "downtime_ns": 1_500_000_000, "state": "up", "new_figure": 3},
            "b": {"packets": 7, "wins": 1, "downtime_ns": 0, "state": "down", "new_figure": 1},
            "events": [{"tai_ns": 1, "line": "b", "event": "down", "silent_ns": 5}], "clock": "CLOCK_TAI"}
        return out
    recovery_shape = recovery.shape
    monkeypatch.setattr(recovery, "shape", shaped)
    fam = _fams(FakeSession({}, recovery=lab.report))
    assert _series(fam["hftcap_feed_line_packets"], "feed", "line") == {(FEED, "a"): 10, (FEED, "b"): 7}
    assert _series(fam["hftcap_feed_line_wins"], "line") == {("a",): 9, ("b",): 1}
    assert _series(fam["hftcap_feed_line_downtime_seconds"], "line") == {("a",): 1.5, ("b",): 0}
    assert _series(fam["hftcap_feed_line_state"], "line", "state") == {
        ("a", "up"): 1, ("a", "down"): 0, ("b", "up"): 0, ("b", "down"): 1}
    assert not [n for n in fam if "new_figure" in n]
    monkeypatch.setitem(metrics.FEED_LINE, "new_figure",
                        metrics.Spec("hftcap_feed_line_new_figures_total", "A figure added later"))
    fam = _fams(FakeSession({}, recovery=lab.report))
    assert _series(fam["hftcap_feed_line_new_figures"], "feed", "line") == {(FEED, "a"): 3, (FEED, "b"): 1}


CAP = {"packets_captured": 990, "capture_drops": 10, "packets_seen": 1000, "bytes_written": 123_456,
       "ring_bytes": 1 << 20, "snaplen": 262144, "rotations_late": 0, "files_begun": 3,
       "capture_drops_late": 4, "writer_cpu": 0, "blocks_written": 1012,
       "recovery": {"packets_seen": 12, "packets_captured": 11, "capture_drops": 1}}
SNAP = {"state": "live", "attempts": 2, "orders_loaded": 500, "messages_loaded": 520, "bytes": 20_000,
        "load_ms": 12.5, "join_to_synced_ms": 20.0, "buffered": 40, "buffered_applied": 30,
        "buffered_discarded": 10, "buffer_overwritten": 0, "buffer_capacity": 1 << 20, "behind": 0,
        "clears": 0, "end_of_snapshot_sequence": 99, "framing": {}, "error": None, "failures": []}


def test_capture_and_snapshot_figures():
    cap, snap = dict(CAP), dict(SNAP)
    fam = _fams(FakeSession({}, capfile=cap, snapshot=snap))
    val = {s.name: s.value for f in fam.values() for s in f.samples if not s.labels}
    assert val["hftcap_capture_packets_total"] == 990 and val["hftcap_capture_drops_total"] == 10
    assert val["hftcap_capture_written_bytes_total"] == 123_456 and val["hftcap_capture_files_total"] == 3
    assert val["hftcap_capture_seen_packets_total"] == 1000 and val["hftcap_capture_ring_bytes"] == 1 << 20
    assert val["hftcap_capture_drops_late_total"] == 4
    assert val["hftcap_capture_recovery_seen_packets_total"] == 12
    assert val["hftcap_capture_recovery_packets_total"] == 11 and val["hftcap_capture_recovery_drops_total"] == 1
    assert val["hftcap_snapshot_load_seconds"] == pytest.approx(0.0125)
    assert val["hftcap_snapshot_join_to_synced_seconds"] == pytest.approx(0.020)
    assert val["hftcap_snapshot_orders_loaded"] == 500 and val["hftcap_snapshot_buffered_messages_applied"] == 30
    assert val["hftcap_snapshot_buffered_messages_discarded"] == 10 and val["hftcap_snapshot_attempts_total"] == 2
    assert _series(fam["hftcap_snapshot_state"], "state") == {("buffering",): 0, ("ready",): 0, ("hole",): 0,
                                                              ("live",): 1, ("behind",): 0}
    assert "hftcap_feed_state" not in fam          # no --rerequest: no recovery series
    snap["load_ms"] = None                           # not loaded yet: no value, not a 0
    assert "hftcap_snapshot_load_seconds" not in _fams(FakeSession({}, snapshot=snap))


# ---- node_exporter textfile ----

def test_textfile_is_written_atomically_and_parses(tmp_path):
    path = tmp_path / "hftcap.prom"
    w = metrics.TextfileWriter(str(path), 0.1)
    sess = FakeSession({"decode_to_book": hist_snap([70, 80])})
    w.start(metrics.ListenCollector(sess))
    try:
        deadline = __import__("time").monotonic() + 10
        while w.writes < 2:                              # the thread rewrites it every interval
            assert __import__("time").monotonic() < deadline, "textfile not rewritten in 10 s"
            __import__("time").sleep(0.02)
    finally:
        out = w.close(final=True)
    assert out["writes"] >= 3 and out["errors"] == 0 and out["path"] == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hftcap.prom"]     # no temp file left
    fam = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    val = {s.name: s.value for f in fam.values() for s in f.samples if not s.labels}
    assert val["hftcap_packets_total"] == 1001 and val["hftcap_up"] == 0      # the final write
    assert {s.labels["hop"] for s in fam["hftcap_hop_latency_seconds"].samples} == {"decode_to_book"}


def test_textfile_write_error_is_counted_not_raised(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    w = metrics.TextfileWriter(str(d / "x.prom"), 5)
    w.start(metrics.ListenCollector(FakeSession({})))
    d.rename(tmp_path / "gone")                      # the directory vanishes under the writer
    out = w.close(final=True)
    assert out["errors"] >= 1 and "x.prom" in out["last_error"]


@pytest.mark.parametrize("path,interval,msg", [("x.txt", 10, "must end in .prom"),
                                               ("/nonexistent-dir/x.prom", 10, "not a writable directory"),
                                               ("x.prom", 0, "bad --metrics-interval")])
def test_textfile_options_are_checked(tmp_path, path, interval, msg):
    p = path if path.startswith("/") else str(tmp_path / path)
    with pytest.raises(UsageError, match=msg):
        metrics.check_textfile(p, interval)


def test_listen_metrics_textfile_bad_name_is_a_usage_error(tmp_path):
    from conftest import run_hftcap
    cp = run_hftcap("listen", "-i", "lo", "--feed", "239.1.1.1:26400", "--metrics-textfile", tmp_path / "m.txt")
    assert cp.returncode == 2 and cp.stderr.startswith(f"hftcap: error: bad --metrics-textfile '{tmp_path / 'm.txt'}'")
    assert "hint: node_exporter's textfile collector reads only *.prom files" in cp.stderr
    assert "Traceback" not in cp.stderr
