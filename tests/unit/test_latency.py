"""hftcap.measure.latency: percentile accuracy against numpy, hop table, intervals, result files and
the `hftcap budget` renderer.

Accuracy reference: numpy.percentile(..., method="inverted_cdf") -- the smallest sample whose
empirical CDF reaches q, i.e. the ceil(q*N)-th smallest sample. It returns a real sample (no
interpolation between two samples that may sit in different buckets), which is exactly what the
histogram's rank walk selects, so the difference is the bucketing error alone. N is prime
(100003) so q*N is never an integer and float rounding cannot move numpy's rank."""
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from hftcap import _core
from hftcap.measure import latency as L
from hftcap.errors import HftcapError

N = 100_003
MAX_NS = L.geometry().max_ns
QS = [(name, ppm / 10_000) for name, ppm in L.PERCENTILES]   # percent for numpy


def hist_of(values) -> _core.Histogram:
    h = _core.Histogram()
    h.record(np.ascontiguousarray(values, dtype=np.uint64))
    return h


def sample_sets():
    rng = np.random.default_rng(20261125)
    g = L.geometry()
    edges_idx = rng.integers(256, g.overflow_index, N // 2)
    return {
        "uniform": rng.integers(10, 2_000_000, N, dtype=np.uint64),
        "lognormal": rng.lognormal(np.log(5_000), 1.2, N).astype(np.uint64) + 10,
        "pareto": ((rng.pareto(1.1, N) + 1) * 800).clip(10, MAX_NS).astype(np.uint64),
        "single": np.full(N, 123_457, dtype=np.uint64),
        "bucket_edges": np.concatenate([g.low[edges_idx], g.high[edges_idx] - 1,
                                        g.low[rng.integers(256, g.overflow_index, 1)]]),
        "extremes": np.where(rng.random(N) < 0.5, 10, MAX_NS).astype(np.uint64),
        "small_exact": rng.integers(0, 256, N, dtype=np.uint64),
    }


@pytest.mark.parametrize("name,values", list(sample_sets().items()))
def test_percentiles_within_one_percent_of_numpy(name, values):
    assert values.size == N
    st = L.hop_stats("xdp", "xdp_to_dequeue", hist_of(values))
    assert st.count == N and st.absent is None
    assert st.max == int(values.max()) and st.min == int(values.min())
    got = st.to_dict()
    for pname, pct in QS:
        ref = int(np.percentile(values, pct, method="inverted_cdf"))
        rel = abs(got[pname] - ref) / max(ref, 1)
        assert rel <= 0.01, f"{name} {pname}: {got[pname]} vs numpy {ref}"
        assert rel <= 1 / 256 + 1e-12, f"{name} {pname}: beyond half a bucket"
        if ref < 256 or name == "single":
            assert got[pname] == ref, "exact buckets / clamped single value must be exact"


def test_rank_rule_is_inverted_cdf_on_small_exact_values():
    """Values below 256 ns are exact, so every percentile equals numpy's (N prime)."""
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 7, 101, 9973):
        v = rng.integers(0, 256, n, dtype=np.uint64)
        p = L.percentiles(np.frombuffer(hist_of(v), dtype=np.uint64))
        for pname, pct in QS:
            assert p[pname] == int(np.percentile(v, pct, method="inverted_cdf")), (n, pname)


def test_empty_is_absent_never_zero():
    h = _core.Histogram()
    assert L.percentiles(np.frombuffer(h, dtype=np.uint64)) == {n: None for n, _ in L.PERCENTILES}
    st = L.hop_stats("kernel", "stack_to_dequeue", h)
    assert st.absent == "no samples" and st.count == 0
    assert (st.p50, st.p99, st.max, st.min, st.mean) == (None,) * 5
    st = L.hop_stats("xdp", "nic_to_xdp", L.Absent("no PHC: veth has no PHC"))
    assert st.absent == "no PHC: veth has no PHC" and st.p50 is None


def test_overflow_percentile_and_mean():
    v = np.array([100] * 9 + [MAX_NS * 3], dtype=np.uint64)
    st = L.hop_stats("xdp", "xdp_to_book", hist_of(v))
    assert st.p50 == 100 and st.p99 == MAX_NS + 1 and st.max == MAX_NS * 3
    assert st.overflow == 1 and st.mean == 100.0       # mean over in-range samples
    assert L.fmt_ns(st.p99) == ">10 s" and L.fmt_ns(None) == "-"
    assert [L.fmt_ns(x) for x in (7, 1_234, 56_789, 987_654_321, 2_500_000_000)] == \
        ["7 ns", "1.23 us", "56.8 us", "988 ms", "2.50 s"]


def test_hop_table_matches_design_md():
    design = (Path(__file__).resolve().parents[2] / "DESIGN.md").read_text()
    table = design.split("## Hops")[1].split("\n## ")[0]
    rows = [r for r in table.splitlines() if r.startswith("| `")]
    parsed = []
    for r in rows:
        cells = [c.strip() for c in r.strip().strip("|").split("|")]
        parsed.append((cells[0].strip("`"), cells[1], cells[3]))
    assert [p[0] for p in parsed] == [h.name for h in L.HOPS]
    for (name, path, domain), h in zip(parsed, L.HOPS):
        assert h.domain == domain, name
        assert h.paths == (("xdp", "kernel") if path == "both" else (path,)), name
        assert h.needs_phc == domain.startswith("PHC")
    assert [h.name for h in L.hops_for("kernel")] == [
        "nic_to_stack", "stack_to_dequeue", "dequeue_to_decode", "decode_to_book",
        "stack_to_book", "sender_to_book", "nic_to_book"]
    with pytest.raises(ValueError):
        L.hop_stats("kernel", "nic_to_xdp", hist_of([1]))


def test_hop_absent_reason_from_clocks():
    none = {"phc": None, "phc_reason": "veth has no PHC"}
    unsynced = {"phc": "/dev/ptp0", "synced_to_tai": False, "sync_reason": "phc2sys is not running"}
    synced = {"phc": "/dev/ptp0", "synced_to_tai": True}
    assert L.hop_absent_reason("nic_to_xdp", none) == "no PHC: veth has no PHC"
    assert L.hop_absent_reason("nic_to_book", unsynced) == \
        "PHC not synced to TAI: phc2sys is not running"
    assert L.hop_absent_reason("nic_to_stack", synced) is None
    for clocks in (none, unsynced, synced, None):
        assert L.hop_absent_reason("xdp_to_dequeue", clocks) is None


def test_interval_from_two_snapshots_and_reset():
    rng = np.random.default_rng(11)
    first = rng.lognormal(8, 1, 5003).astype(np.uint64)
    second = rng.lognormal(10, 1, 7001).astype(np.uint64)
    h = hist_of(first)
    a = L.HistSnapshot.from_histogram(h)
    h.record(second)
    b = L.HistSnapshot.from_histogram(h)
    inter = L.interval_counts(a, b)
    assert np.array_equal(inter, np.frombuffer(hist_of(second), dtype=np.uint64))
    st = L.interval_stats("xdp", "decode_to_book", a, b)
    assert st.count == second.size
    for pname, pct in QS:
        ref = int(np.percentile(second, pct, method="inverted_cdf"))
        assert abs(st.to_dict()[pname] - ref) / ref <= 1 / 256
    assert abs(st.max - int(second.max())) / int(second.max()) <= 1 / 256
    # the consumer reset the histogram (warm-up discard) between the snapshots
    h.reset()
    h.record(first[:17])
    c = L.HistSnapshot.from_histogram(h)
    assert L.interval_counts(b, c).sum() == 17
    assert np.array_equal(L.interval_counts(b, c), c.counts)


def test_parse_export_records():
    h1, h2 = hist_of([5, 50, 500]), _core.Histogram()
    snaps = L.parse_export(_core.hist_export([h1, h2]))
    assert len(snaps) == 2
    assert (snaps[0].count, snaps[0].min_ns, snaps[0].max_ns, snaps[0].sum_ns) == (3, 5, 500, 555)
    assert snaps[1].count == 0 and snaps[1].min_ns is None
    with pytest.raises(ValueError):
        L.parse_export(b"\0" * 16)


def _result(tmp_path, name="run.json", **cond):
    rng = np.random.default_rng(3)
    xdp = {
        "nic_to_xdp": L.Absent("no PHC: veth has no PHC"),
        "xdp_to_dequeue": hist_of(rng.integers(800, 5000, 1009)),
        "decode_to_book": hist_of(rng.integers(50, 400, 1009)),
        "sender_to_book": hist_of(rng.integers(20_000, 90_000, 1009)),
        "xdp_to_book": _core.Histogram(),             # present but never recorded
    }
    conditions = {"path": "xdp", "xdp_mode": "drv", "bind_mode": "zerocopy", "poll_mode": "busy",
                  "cpu": 1, "interface": "veth-rx", "message_rate": 100_000,
                  "duration_s": 10, "clock_sources": {"phc": None}, "operator_note": "lab", **cond}
    p = tmp_path / name
    doc = L.save_result(p, {"xdp": xdp}, conditions)
    return p, xdp, doc


def test_save_load_round_trip(tmp_path):
    p, xdp, doc = _result(tmp_path)
    raw = json.loads(p.read_text())
    assert raw == json.loads(json.dumps(doc))
    entry = raw["paths"]["xdp"]["xdp_to_dequeue"]
    counts = np.frombuffer(xdp["xdp_to_dequeue"], dtype=np.uint64)
    assert entry["counts"] == [[int(i), int(counts[i])] for i in np.flatnonzero(counts)]
    assert raw["conditions"]["kernel"] and re.match(r"\d{4}-\d\d-\d\dT", raw["conditions"]["time"])
    assert raw["conditions"]["operator_note"] == "lab"
    r = L.load_result(p)
    for hop in ("xdp_to_dequeue", "decode_to_book", "sender_to_book"):
        h = xdp[hop]
        s = r.hops["xdp"][hop]
        assert np.array_equal(s.counts, np.frombuffer(h, dtype=np.uint64))
        assert (s.min_ns, s.max_ns, s.sum_ns) == (h.min, h.max, h.sum)
        assert L.hop_stats("xdp", hop, s) == L.hop_stats("xdp", hop, h)
    assert r.hops["xdp"]["nic_to_xdp"] == L.Absent("no PHC: veth has no PHC")
    assert L.hop_stats("xdp", "xdp_to_book", r.hops["xdp"]["xdp_to_book"]).absent == "no samples"
    assert r.domains["xdp"]["nic_to_xdp"] == "PHC->TAI"
    assert r.conditions["xdp_mode"] == "drv"


def test_load_rejects_bad_files(tmp_path):
    p, _, doc = _result(tmp_path)
    bad = tmp_path / "bad.json"
    cases = [
        ("{", "not JSON"),
        (json.dumps({"format": "other"}), "not an hftcap latency result"),
        (json.dumps({**doc, "version": 99}), "version 99"),
        (json.dumps({**doc, "geometry": {**doc["geometry"], "buckets": 5}}), "geometry"),
        (json.dumps({**doc, "paths": {"xdp": {"xdp_to_book": {"domain": "TAI",
                                                              "counts": [[99999, 1]]}}}}),
         "malformed"),
        (json.dumps({**doc, "paths": {"kernel": {"nic_to_xdp": {"absent": "x",
                                                                "domain": "TAI"}}}}),
         "malformed"),
    ]
    for text, msg in cases:
        bad.write_text(text)
        with pytest.raises(HftcapError, match=msg):
            L.load_result(bad)
    with pytest.raises(HftcapError, match="cannot read"):
        L.load_result(tmp_path / "missing.json")


def render(files, **kw):
    buf = io.StringIO()
    con = Console(file=buf, width=220, color_system=None, force_terminal=False)
    assert L.run_budget([str(f) for f in files], console=con, **kw) == 0
    return buf.getvalue()


def rows_of(text, hop):
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines()
            if line.startswith("│") and line.split("│")[1].strip() == hop]


def test_budget_single_run(tmp_path):
    p, xdp, _ = _result(tmp_path)
    out = render([p])
    st = L.hop_stats("xdp", "xdp_to_dequeue", xdp["xdp_to_dequeue"])
    [row] = rows_of(out, "xdp_to_dequeue")
    assert row == ["xdp_to_dequeue", "1009", L.fmt_ns(st.p50), L.fmt_ns(st.p99),
                   L.fmt_ns(st.p99_9), L.fmt_ns(st.max), "TAI"]
    for hop, reason in (("nic_to_xdp", "no PHC: veth has no PHC"), ("xdp_to_book", "no samples"),
                        ("dequeue_to_decode", "not recorded")):
        [row] = rows_of(out, hop)
        assert f"absent ({reason})" in row
        assert not any(re.fullmatch(r"0(\.0+)?( \w+)?", c) for c in row), row
    [row] = rows_of(out, "nic_to_xdp")
    assert row[-1] == "PHC->TAI"
    assert "kernel path" not in out
    # conditions printed under the table
    assert out.index("conditions") > out.index("sender_to_book")
    for key, val in (("xdp_mode", "drv"), ("bind_mode", "zerocopy"), ("interface", "veth-rx"),
                     ("message_rate", "100000"), ("operator_note", "lab")):
        assert re.search(rf"│ {key}\s+│ {val}\s", out), key


def test_budget_side_by_side_and_domains_never_mixed(tmp_path):
    a, xa, _ = _result(tmp_path, "a.json")
    b, xb, _ = _result(tmp_path, "b.json", xdp_mode="skb",
                       hop_domains={"sender_to_book": "exchange ITCH clock"})
    out = render([a, b])
    assert "run A" in out and "run B" in out
    # same domain: one hop, both runs in the same rows
    rows = rows_of(out, "xdp_to_dequeue")
    assert len(rows) == 1
    st = L.hop_stats("xdp", "xdp_to_dequeue", xa["xdp_to_dequeue"])
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if "│ xdp_to_dequeue" in line)
    p50 = [c.strip() for c in lines[i + 1].split("│")[1:-1]]
    assert p50[1:4] == ["p50", L.fmt_ns(st.p50), L.fmt_ns(st.p50)]
    # different domains: two rows, each carrying one run's numbers and one domain
    rows = rows_of(out, "sender_to_book")
    assert [r[-1] for r in rows] == ["lab: tai-midnight", "exchange ITCH clock"]
    assert rows[0][2] == "1009" and rows[0][3] == "-"
    assert rows[1][2] == "-" and rows[1][3] == "1009"
    assert re.search(r"│ xdp_mode\s+│ drv\s+│ skb\s", out)


def test_budget_json(tmp_path):
    p, xdp, _ = _result(tmp_path)
    buf = io.StringIO()
    con = Console(file=buf, width=100)
    assert L.run_budget([str(p)], console=con, json_out=True) == 0
    doc = json.loads(buf.getvalue())
    hops = {h["hop"]: h for h in doc["runs"][0]["hops"]}
    assert hops["nic_to_xdp"]["absent"] == "no PHC: veth has no PHC"
    assert hops["nic_to_xdp"]["p50"] is None
    st = L.hop_stats("xdp", "sender_to_book", xdp["sender_to_book"])
    assert hops["sender_to_book"]["p99.9"] == st.p99_9 and hops["sender_to_book"]["count"] == 1009
    assert doc["runs"][0]["conditions"]["cpu"] == 1


def test_budget_errors(tmp_path):
    with pytest.raises(HftcapError) as e:
        L.run_budget([])
    assert e.value.code == 2
    with pytest.raises(HftcapError, match="cannot read"):
        L.run_budget([str(tmp_path / "nope.json")])
