"""Percentile plots (budget --plot, bench --plot) and bench's 80-column table: assertions on
the figure's data (lines, their points, axis ranges, labels, caption), not only on the file."""
from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import run_hftcap
from rich.console import Console

from hftcap import _core
from hftcap.measure import bench
from hftcap.measure import latency as L
from hftcap.measure import plot


def snap_of(values) -> L.HistSnapshot:
    h = _core.Histogram()
    h.record(np.ascontiguousarray(values, dtype=np.uint64))
    return L.HistSnapshot.from_histogram(h)


def _save(tmp_path, name, path, hops, **cond):
    c = {"path": path, "xdp_mode": "native", "bind_mode": "copy", "poll_mode": "wakeup", "cpu": 1,
         "interface": "veth", "message_rate": 50_000, "duration_s": 3.0,
         "clock_sources": {"user": "CLOCK_TAI", "itch": "tai-midnight"},
         "doctor": {"counts": {"pass": 9, "warn": 6, "fail": 0, "n/a": 7}}, **cond}
    p = tmp_path / name
    L.save_result(p, {path: hops}, c)
    return str(p)


def test_curve_follows_the_rank_rule():
    rng = np.random.default_rng(5)
    s = snap_of(rng.integers(1_000, 200_000, 20_011))
    x, y = plot.curve(s)
    assert x[0] == pytest.approx(math.log10(2)) and x[-1] == pytest.approx(4.0, abs=1e-3)
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)
    ref = L.percentiles(s.counts, s.min_ns, s.max_ns, [("p50", 500_000), ("p99", 990_000)])
    assert y[0] == ref["p50"]
    i99 = int(np.argmin(abs(x - 2.0)))
    assert x[i99] == pytest.approx(2.0, abs=1e-9) and y[i99] == ref["p99"]


def test_curve_stops_where_the_samples_stop():
    s = snap_of(np.arange(100, 100 + 150))       # 150 samples resolve up to 1 - 1/150
    x, y = plot.curve(s)
    assert x[-1] == pytest.approx(math.log10(150), abs=2e-3)
    assert y[-1] <= 249 and y[0] == 100 + 74


def test_budget_plot_lines_axes_labels_caption(tmp_path):
    rng = np.random.default_rng(11)
    fast = snap_of(rng.integers(2_000, 9_000, 5_003))
    slow = snap_of(rng.integers(20_000, 400_000, 8_009))
    a = _save(tmp_path, "a.json", "xdp", {"xdp_to_book": fast, "sender_to_book": snap_of([50_000, 60_000]),
                                          "nic_to_book": L.Absent("no PHC: veth")}, kernel="6.18.0")
    b = _save(tmp_path, "b.json", "kernel", {"stack_to_book": slow}, poll_mode="busy")
    out = tmp_path / "p.png"
    fig = plot.budget_plot([a, b], str(out), None)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 2                                   # one per run and path, default hop each
    assert lines[0].get_label() == "A: xdp_to_book, xdp path, TAI (n=5,003)"
    assert lines[1].get_label() == "B: stack_to_book, kernel path, TAI (n=8,009)"
    for ln, s in zip(lines, (fast, slow)):
        x, y = plot.curve(s)
        assert np.array_equal(ln.get_xdata(), x) and np.array_equal(ln.get_ydata(), y)
    assert ax.get_yscale() == "log"
    assert ax.get_xlim() == pytest.approx((math.log10(2), 4.0))
    lo, hi = ax.get_ylim()
    ys = np.concatenate([ln.get_ydata() for ln in lines])
    assert lo == pytest.approx(ys.min() / 1.5) and hi == pytest.approx(ys.max() * 1.5)
    assert ys.min() == plot.curve(fast)[1][0] and ys.max() == plot.curve(slow)[1][-1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50%", "90%", "99%", "99.9%", "99.99%"]
    caption = "\n".join(t.get_text() for t in fig.texts)
    assert "A: a.json: path=xdp, xdp_mode=native" in caption and "kernel=6.18.0" in caption
    assert "B: b.json: path=kernel" in caption and "poll_mode=busy" in caption
    assert "doctor: 9 pass, 6 warn, 0 fail, 7 n/a" in caption and "itch=tai-midnight" in caption
    # chosen hops: every recorded hop of run A
    fig = plot.budget_plot([a], str(tmp_path / "h.png"), ["xdp_to_book", "sender_to_book", "nic_to_book"])
    assert [ln.get_label().split(" (n=")[0] for ln in fig.axes[0].get_lines()] == \
        ["A: xdp_to_book, xdp path, TAI", "A: sender_to_book, xdp path, lab: tai-midnight"]


def test_budget_cli_writes_svg_with_the_lines(tmp_path):
    rng = np.random.default_rng(2)
    a = _save(tmp_path, "a.json", "xdp", {"xdp_to_book": snap_of(rng.integers(3_000, 9_000, 1_001))})
    b = _save(tmp_path, "b.json", "xdp", {"xdp_to_book": snap_of(rng.integers(5_000, 20_000, 1_001))})
    out = tmp_path / "p.svg"
    cp = run_hftcap("budget", a, b, "--plot", out, check=True)
    assert "latency budget: xdp path" in cp.stdout
    ids = [g.get("id") for g in ET.parse(out).getroot().iter("{http://www.w3.org/2000/svg}g")]
    assert sorted(i for i in ids if i and i.startswith("hftcap-line-")) == ["hftcap-line-0", "hftcap-line-1"]
    cp = run_hftcap("budget", a, "--plot", tmp_path / "p.jpg")
    assert cp.returncode == 2 and "must end in .png or .svg" in cp.stderr
    cp = run_hftcap("budget", a, "--plot", out, "--hop", "nosuch")
    assert cp.returncode == 2 and "unknown hop 'nosuch'" in cp.stderr


def _bench_doc():
    hops = {h: {"p50_ns": 12_345 + i, "p99_ns": 1_234_567 + i, "p999_ns": 2_000_000, "max_ns": 3_000_000,
                "count": 1000} for i, h in enumerate(("xdp_to_dequeue", "dequeue_to_decode", "decode_to_book",
                                                       "xdp_to_book", "sender_to_book"))}
    khops = {h: v for h, v in {**hops, "stack_to_dequeue": hops["xdp_to_dequeue"],
                               "stack_to_book": hops["xdp_to_book"]}.items() if not h.startswith("xdp")}
    paths = {}
    for m in bench.PATH_MODES:
        paths[m] = {"hops": hops if m.startswith("xdp") else khops, "absent_hops": {}, "sent": 12_000_000,
                    "received": 11_999_999, "lost": 1, "gaps": 0, "cpu_s": 12.345678, "bytes": 987_654_321,
                    "packets": 3_000_000, "cpu_ns_per_message": 1234.5}
    cond = {"rounds": 3, "seconds_per_trial": 3.0, "message_rate": 50_000, "messages_per_packet": 4,
            "warmup_s": 0.5, "seed": 7, "stocks": 16, "order": "alternating", "kernel": "6.18",
            "interface": "veth (lab)", "receiver_cpu": 1, "sender_cpu": 0,
            "clocks": {"user": "CLOCK_TAI", "itch": "tai-midnight"}, "modes_obtained": {}}
    return {"conditions": cond, "paths": paths}


def test_bench_table_fits_80_columns_without_wrapping():
    buf = io.StringIO()
    con = Console(file=buf, width=80, force_terminal=False, color_system=None)
    bench.render(_bench_doc(), con)
    text = buf.getvalue()
    assert max(len(ln) for ln in text.splitlines()) <= 80
    rows = {ln.split("│")[1].strip(): ln for ln in text.splitlines() if ln.count("│") >= 5}
    for h in ("xdp_to_dequeue", "dequeue_to_decode", "decode_to_book", "sender_to_book", "stack_to_book"):
        assert h in rows, f"{h} split over lines:\n{text}"
    assert re.search(r"sender_to_book\s+│\s+12\.3 us\s+│\s+12\.3 us", text)
    assert re.search(r"sender_to_book\s+│\s+1\.23 ms", text)
    assert "987,654,321" in rows["bytes (UDP payload)"]
    flat = " ".join(text.split())
    assert "clocks: TAI: xdp_to_dequeue, dequeue_to_decode" in flat and "tai-midnight: sender_to_book" in flat
    wide = io.StringIO()
    bench.render(_bench_doc(), Console(file=wide, width=160, color_system=None))
    assert "12.3 us / 1.23 ms" in wide.getvalue()


def test_bench_plot_one_line_per_path(tmp_path):
    rng = np.random.default_rng(9)
    hists = {m: {"sender_to_book": snap_of(rng.integers(10_000 * (i + 1), 50_000 * (i + 1), 2_003)),
                 "nic_to_book": L.Absent("no PHC")} for i, m in enumerate(bench.PATH_MODES)}
    hists["kernel-block"]["sender_to_book"] = L.Absent("not run")
    fig = plot.bench_plot(hists, {m: p for m, (p, _) in bench.PATH_MODES.items()},
                          _bench_doc()["conditions"], str(tmp_path / "b.png"))
    lines = fig.axes[0].get_lines()
    assert [ln.get_label().split(" (n=")[0] for ln in lines] == [
        "xdp-busy: sender_to_book, xdp path, lab: tai-midnight",
        "xdp-wakeup: sender_to_book, xdp path, lab: tai-midnight",
        "kernel-busy: sender_to_book, kernel path, lab: tai-midnight"]
    assert lines[2].get_ydata()[0] > lines[0].get_ydata()[0]
    assert "3 rounds x 3.0 s per path" in fig.texts[0].get_text()
    assert (tmp_path / "b.png").stat().st_size > 10_000


def _capture(tmp_path, name, xdp_to_book, unrecorded=0):
    """A pcapng as listen --write writes it (xdp path): one IDB with hftcap's metadata, one EPB
    per packet with the stamps option; book - xdp of the recorded packets = xdp_to_book."""
    import struct
    from hftcap.receive import pcapng as P
    meta = {"path": "xdp", "feeds": ["239.1.1.1:26400"], "itch_clock": "none", "itch_epoch_tai_ns": 0,
            "phc_is_tai": False, "clocks": {"phc": None, "phc_reason": "veth has no PHC", "synced_to_tai": False,
                                            "sync_reason": "no PHC"}}
    idb = P.Interface("veth-t", "plot test", None, "xdp", 0, meta)
    out = P.header("plot test", [idb], 262144)
    frame = b"\x01" * 60
    t0 = 1_700_000_000_000_000_000
    vals = [(int(v), True) for v in xdp_to_book] + [(123, False)] * unrecorded
    for i, (v, rec) in enumerate(vals):
        xdp = t0 + i * 1000
        stamps = (0, xdp, 0, xdp + 10, xdp + 20, xdp + v, P.NO_ITCH)
        opt = struct.pack("<II", P.PEN, 1 << 24 | 1 << 8 | (0x10 if rec else 0) | 1) + struct.pack("<7Q", *stamps)
        body = struct.pack("<IIIII", 0, xdp >> 32, xdp & 0xffffffff, len(frame), len(frame)) + frame
        body += P._opt(P.OPT_CUSTOM_BIN, opt) + P._opt(0, b"")
        out += P._block(6, body)
    p = tmp_path / name
    p.write_bytes(out)
    return str(p)


def test_budget_plot_reads_captures(tmp_path):
    """budget --plot on a listen --write capture: the line is the xdp_to_book histogram of the
    stamps in the file (recorded packets only), labelled and captioned as the capture."""
    rng = np.random.default_rng(4)
    v = rng.integers(3_000, 90_000, 2_501)
    cap = _capture(tmp_path, "c.pcapng", v, unrecorded=17)
    fig = plot.budget_plot([cap], str(tmp_path / "c.png"), None)
    (ax,) = fig.axes
    (ln,) = ax.get_lines()
    assert ln.get_label() == "A: xdp_to_book, xdp path, TAI (n=2,501)"
    x, y = plot.curve(snap_of(v))
    assert np.array_equal(ln.get_xdata(), x) and np.array_equal(ln.get_ydata(), y)
    caption = "\n".join(t.get_text() for t in fig.texts)
    assert "A: c.pcapng: path=xdp" in caption and "pcapng capture, 2518 packets" in caption
    # a capture beside a result file, and the CLI end to end
    res = _save(tmp_path, "r.json", "xdp", {"xdp_to_book": snap_of(v[:100])})
    fig = plot.budget_plot([res, cap], str(tmp_path / "m.png"), ["xdp_to_book", "dequeue_to_decode"])
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == ["A: xdp_to_book, xdp path, TAI (n=100)", "B: xdp_to_book, xdp path, TAI (n=2,501)",
                      "B: dequeue_to_decode, xdp path, TAI (n=2,501)"]
    assert np.all(fig.axes[0].get_lines()[2].get_ydata() == 10)      # deq -> dec is 10 ns in every packet
    out = tmp_path / "c.svg"
    cp = run_hftcap("budget", cap, "--plot", out, check=True)
    assert "latency budget: xdp path" in cp.stdout and out.exists()
