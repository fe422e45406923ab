"""The live view without a terminal: formatting, rates, key handling and whole frames rendered to
a fixed-size rich Console from a scripted source whose every number is known."""
from __future__ import annotations

import io
import re
import threading
import time

import numpy as np
import pytest
from rich.console import Console

from hftcap.view import tui
from hftcap.view.tui import (LiveView, RateMeter, changed_prices, fmt_bytes_rate, fmt_itch_time,
                        fmt_mid, fmt_ns, fmt_price, fmt_rate, levels_map, run_live, sparkline)
from tui_fake import FakeSource


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def stats(p50, p99, p999, mx, n):
    return {"p50": p50, "p99": p99, "p999": p999, "max": mx, "count": n}


class Scripted:
    """A LiveSource whose answers the test sets; it counts the calls it gets."""

    def __init__(self):
        self.calls = {"status": 0, "counters": 0, "book": 0, "reset": 0}
        self.packets = 1000
        self.syms = [(7, "AAPL", 500), (9, "MSFT", 900), (11, "ZVZZT", 0), (12, "SPY", 700)]
        self.books = {
            7: {"bids": np.array([[1894500, 300, 2], [1894400, 1200, 5], [1894300, 100, 1]],
                                 dtype=np.int64),
                "asks": np.array([[1894600, 500, 3], [1894800, 2500, 11]], dtype=np.int64),
                "state": "T", "last_trade_price_e4": 1894500, "volume": 123456},
            9: {"bids": np.array([[4151000, 100, 1]], dtype=np.int64),
                "asks": np.array([[4151300, 200, 2]], dtype=np.int64),
                "state": "H", "last_trade_price_e4": None, "volume": 0},
            12: {"bids": np.zeros((0, 3), dtype=np.int64), "asks": np.zeros((0, 3), dtype=np.int64),
                 "state": "T", "last_trade_price_e4": None, "volume": 0},
        }

    def status(self):
        self.calls["status"] += 1
        return {"interface": "veth-hc1", "netns": "hc-rx", "path": "xdp", "xdp_mode": "native",
                "bind_mode": "copy", "poll_mode": "busy", "cpu": 1, "queue": 0,
                "hw_clock": "none (veth has no PHC)", "ptp": "none", "uptime_s": 3723.9}

    def counters(self):
        self.calls["counters"] += 1
        return {"packets": self.packets, "messages": 4 * self.packets, "bytes": 200 * self.packets,
                "gaps": 3, "duplicates": 1, "drops": {"ring_full": 0, "bad_length": 2},
                "xdp": {"redirected": self.packets, "pass_not_feed": 5},
                "messages_by_type": {"A": 3 * self.packets, "D": self.packets}}

    def symbols(self):
        self.calls["symbols"] = self.calls.get("symbols", 0) + 1
        return list(self.syms)

    def book(self, locate, levels):
        self.calls["book"] += 1
        b = self.books[locate]
        return dict(b, bids=b["bids"][:levels].copy(), asks=b["asks"][:levels].copy())

    def trades(self, locate, n):
        return [(34_200_123_456_789, 1894500, 300), (34_200_000_001_000, 1894600, 100)][:n]

    def latency(self):
        return {
            "sender_to_book": {"domain": "tai-midnight", "absent": None,
                               "since_start": stats(9_530, 30_100, 44_200, 118_000, 5000),
                               "interval": stats(9_400, 29_000, 40_000, 61_000, 1200),
                               "spark": [9.1, 9.5, 9.3, 9.9]},
            "nic_to_xdp": {"domain": "PHC->TAI", "absent": "no PHC: veth has no hardware clock",
                           "since_start": None, "interval": None, "spark": []},
            "xdp_to_dequeue": {"domain": "TAI", "absent": None,
                               "since_start": stats(1_790, 7_290, 11_500, 2_400_000, 5000),
                               "interval": None, "spark": []},
            "decode_to_book": {"domain": "TAI", "absent": None,
                               "since_start": stats(0, 0, 0, 0, 0), "interval": None,
                               "spark": []},
        }

    def reset_latency(self):
        self.calls["reset"] += 1


def render_text(view, width, height, styles=False):
    con = Console(width=width, height=height, record=True, file=io.StringIO(),
                  color_system="standard" if styles else None, legacy_windows=False)
    con.print(view.render(width, height))
    return "\n".join(ln.rstrip() for ln in con.export_text(styles=styles).split("\n"))


# -- formatting --------------------------------------------------------------------------------

def test_prices_have_four_implied_decimals():
    assert fmt_price(1234500) == "123.4500"
    assert fmt_price(1) == "0.0001"
    assert fmt_price(2_000_000_000) == "200000.0000"
    assert fmt_price(None) == "-"
    assert fmt_mid(1894500, 1894600) == "189.4550"
    assert fmt_mid(1894500, 1894501) == "189.45005"   # exact: a fifth decimal only when needed


def test_durations_carry_their_unit():
    assert [fmt_ns(v) for v in (0, 999, 1000, 9_994, 12_345, 999_499, 999_500, 1_234_567,
                                 2_000_000_000)] == \
        ["0ns", "999ns", "1.00us", "9.99us", "12.3us", "999us", "1.00ms", "1.23ms", "2.00s"]
    assert fmt_ns(None) == "-"


def test_rates_and_times():
    assert fmt_rate(950) == "950" and fmt_rate(12_345) == "12.3k" and fmt_rate(1_234_567) == "1.23M"
    assert fmt_bytes_rate(812) == "812 B/s" and fmt_bytes_rate(2_650_000) == "2.65 MB/s"
    assert fmt_itch_time(34_200_123_456_789) == "09:30:00.123456"


def test_sparkline_scales_between_min_and_max():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5], 10) == "▁▁▁"
    assert sparkline([0, 10], 1) == "▁"       # only the last `width` values
    assert sparkline([0, 10], 2, ascii_only=True) == "_#"
    assert sparkline([], 5) == ""
    assert sparkline([1, float("nan"), 3, None], 4) == "▁█"


def test_changed_levels_are_keyed_by_price():
    prev = levels_map(np.array([[100, 10, 1], [99, 20, 2], [98, 5, 1]]))
    cur = levels_map(np.array([[101, 7, 1], [100, 10, 1], [99, 25, 2], [98, 5, 2]]))
    assert changed_prices(prev, cur) == {101, 99, 98}
    assert changed_prices(None, cur) == set()     # first frame of a stock: nothing flagged


def test_rate_meter_uses_a_window_of_monotonic_time():
    m = RateMeter(window_s=1.0)
    assert m.rate("packets") is None
    for i in range(21):                            # 0.0 .. 2.0 s, 1000 packets/s, 'A' 3000/s
        m.add(10.0 + i * 0.1, {"packets": 1000 * i // 10, "messages": 0, "bytes": 0,
                               "messages_by_type": {"A": 300 * i}})
    assert m.span_s() == pytest.approx(1.0)
    assert m.rate("packets") == pytest.approx(1000.0)
    assert m.rate("type:A") == pytest.approx(3000.0)
    m.add(12.1, {"packets": 5, "messages": 0, "bytes": 0})    # source restarted: no rate
    assert m.rate("packets") is None


# -- frames --------------------------------------------------------------------------------------

def two_polls_rendered(symbol, dt, packets, width, height):
    """A view of `symbol` on a Scripted source polled, then polled again `dt` s and `packets`
    packets later, rendered at width x height: (text, lines); the lines fill the frame, no wider."""
    src, clock = Scripted(), Clock()
    view = LiveView(src, symbol, clock=clock)
    view.poll()
    clock.t += dt
    src.packets += packets
    view.poll()
    text = render_text(view, width, height)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == height and max(len(ln) for ln in lines) <= width
    return text, lines


def test_frame_80x24_content():
    text, lines = two_polls_rendered("aapl", 0.5, 500, 80, 24)
    assert lines[0].startswith("hftcap listen  if veth-hc1 (netns hc-rx)  path xdp native "
                               "bind copy")
    assert "up 1:02:03" in text and "hw clock none (veth has no PHC)" in text
    assert "AAPL #7  state T  spread 0.0100  mid 189.4550  last 189.4500  vol 123,456" in text
    assert re.search(r"^\s+2\s+300 189\.4500 │ 189\.4600\s+500\s+3$", text, re.M)
    assert re.search(r"^\s+5\s+1,200 189\.4400 │ 189\.4800\s+2,500\s+11$", text, re.M)
    assert re.search(r"^\s+1\s+100 189\.4300 │\s*$", text, re.M)       # one side shorter
    # Latency: DESIGN.md's hop order, units on every number, absent hops say so and show no 0.
    hop_lines = [ln for ln in lines if ln.split()[:1] and ln.split()[0] in tui.HOP_ORDER]
    assert [ln.split()[0] for ln in hop_lines] == ["nic_to_xdp", "xdp_to_dequeue",
                                                   "decode_to_book", "sender_to_book"]
    assert hop_lines[0].split() == ["nic_to_xdp", "PHC->TAI", "absent"]
    assert hop_lines[1].split() == ["xdp_to_dequeue", "TAI", "1.79us", "7.29us", "11.5us",
                                    "2.40ms", "5,000"]
    assert hop_lines[2].split() == ["decode_to_book", "TAI", "-", "-", "-", "-", "0"]
    assert hop_lines[3].split() == ["sender_to_book", "tai-midnight", "9.53us", "30.1us",
                                    "44.2us", "118us", "5,000"]
    assert "absent: no PHC: veth has no hardware clock" in text
    # Counters: rates are deltas over the measured 0.5 s; totals as read.
    assert "rate 1k pkt/s  4k msg/s  200 kB/s  by type/s A 3k D 1k" in text
    assert lines[21] == "total pkt 1,500  msg 6,000  gaps 3  dup 1  drops 2"
    assert lines[22] == "xdp redirected 1,500 pass_not_feed 5  drops bad_length 2"
    assert lines[23].startswith("/ symbol  n/Tab next active  p pause  r reset hist  q quit")


def test_frame_160x48_shows_intervals_trades_and_types():
    text, lines = two_polls_rendered("AAPL", 1.0, 1000, 160, 48)
    assert "last interval" in text and "since start" in text and "p50 history" in text
    row = next(ln for ln in lines if ln.startswith("sender_to_book"))
    assert row.split()[:15] == ["sender_to_book", "tai-midnight", "9.40us", "29.0us", "40.0us",
                                "61.0us", "1,200", "│", "9.53us", "30.1us", "44.2us", "118us",
                                "5,000", sparkline([9.1, 9.5, 9.3, 9.9], 30)]
    row = next(ln for ln in lines if ln.startswith("xdp_to_dequeue"))
    assert row.split()[2:8] == ["-", "-", "-", "-", "-", "│"]       # no interval yet
    row = next(ln for ln in lines if ln.startswith("nic_to_xdp"))
    assert row.split()[2:5] == ["absent", "│", "absent"] and "no PHC: veth has no" in row
    assert "09:30:00.123456   189.4500    300" in text
    assert re.search(r"packets\s+2,000\s+1k\b", text)
    assert re.search(r"drop bad_length\s+2\b", text) and re.search(r"xdp pass_not_feed\s+5\b", text)
    assert re.search(r"\bA\s+3k\b", text) and re.search(r"\bD\s+1k\b", text)


def test_changed_level_is_highlighted():
    src = Scripted()
    view = LiveView(src, "AAPL", clock=Clock())
    view.poll()
    b = src.books[7]["bids"]
    b[1, 1] = 1500                                  # 189.4400: 1,200 -> 1,500 shares
    view.poll()
    assert view.frame.changed_bids == {1894400} and view.frame.changed_asks == set()
    text = render_text(view, 80, 24, styles=True)
    changed = next(ln for ln in text.split("\n") if "189.4400" in ln)
    same = next(ln for ln in text.split("\n") if "189.4300" in ln)
    assert "\x1b[1;7;32m" in changed and "\x1b[1;7;32m" not in same


def test_symbol_table_read_at_most_once_a_second_unless_a_key_needs_it():
    src, clock = Scripted(), Clock()
    view = LiveView(src, "AAPL", clock=clock)
    for _ in range(8):                               # 8 frames in 0.875 s
        view.poll()
        clock.t += 0.125
    assert src.calls["symbols"] == 1
    view.poll()                                      # 1.0 s after the first read
    assert src.calls["symbols"] == 2
    view.handle_keys("n")
    assert src.calls["symbols"] == 3


def test_unknown_and_unseen_symbols():
    view = LiveView(Scripted(), "NOPE", clock=Clock())
    view.poll()
    assert "NOPE  not seen on the feed yet" in render_text(view, 80, 24)
    assert view.handle_keys("/zz\n")
    assert view.symbol == "NOPE" and view.message == "unknown symbol 'ZZ': keeping NOPE"


def test_keys():
    src = Scripted()
    clock = Clock()
    view = LiveView(src, None, clock=clock)
    view.poll()
    assert view.symbol == "MSFT"                    # most active first when none is given
    assert view.handle_keys("/sp")
    assert view.typing == "SP" and "symbol: SP_" in render_text(view, 80, 24)
    assert view.handle_keys("y\x7fY\r") and view.symbol == "SPY" and view.typing is None
    assert view.dirty
    view.poll()
    assert "SPY #12" in render_text(view, 80, 24)
    # n / Tab: by messages so far, most first; stocks with no messages are not in the cycle.
    seen = []
    for k in "n\tnn":
        view.handle_keys(k)
        seen.append(view.symbol)
    assert seen == ["AAPL", "MSFT", "SPY", "AAPL"]
    # q inside the prompt is a letter; Esc cancels
    assert view.handle_keys("/q") and view.typing == "Q"
    assert view.handle_keys("\x1b") and view.typing is None
    # r resets the source's histograms
    assert view.handle_keys("r") and src.calls["reset"] == 1
    # p pauses: the source is not read while paused; unpausing restarts the rate window
    n = src.calls["counters"]
    assert view.handle_keys("p") and view.paused
    view.poll()
    view.poll()
    assert src.calls["counters"] == n and "PAUSED" in render_text(view, 80, 24)
    assert view.handle_keys("p") and not view.paused and view.rates.span_s() == 0
    assert view.handle_keys("\x1b[A")               # an arrow key does nothing
    assert view.handle_keys("q") is False
    assert view.handle_keys("\x03") is False


def test_every_size_from_40x12_renders_without_overflow():
    src = FakeSource(seed=5)
    view = LiveView(src, "TSLA")
    view.poll()
    for w, h in ((40, 12), (60, 20), (80, 24), (100, 30), (120, 40), (150, 34), (200, 60)):
        lines = render_text(view, w, h).rstrip("\n").split("\n")
        assert len(lines) == h and max(len(ln) for ln in lines) <= w, (w, h)
        assert lines[-1].startswith("/ symbol  n/Tab"), (w, h)


def test_run_live_returns_on_stop_event_without_a_terminal():
    src = Scripted()
    stop = threading.Event()
    con = Console(file=io.StringIO(), width=80, height=24, force_terminal=False)
    threading.Timer(0.35, stop.set).start()
    t0 = time.monotonic()
    run_live(src, symbol="AAPL", refresh_hz=20, stop_event=stop, console=con)
    dt = time.monotonic() - t0
    assert 0.3 < dt < 2.0
    assert 4 <= src.calls["counters"] <= 12           # ~20 frames a second for 0.35 s
    t0 = time.monotonic()
    run_live(src, refresh_hz=10, max_seconds=0.3, console=con)
    assert 0.25 < time.monotonic() - t0 < 1.5


def test_fake_source_moves():
    clock = Clock(0.0)
    src = FakeSource(seed=2, clock=clock)
    c1 = src.counters()
    clock.t += 0.5
    c2 = src.counters()
    assert c2["packets"] > c1["packets"] and c2["messages"] > c2["packets"]
    assert sum(c2["messages_by_type"].values()) == c2["messages"]
    lat = src.latency()
    assert lat["nic_to_xdp"]["absent"] and lat["xdp_to_dequeue"]["since_start"]["count"] > 0
    st = lat["xdp_to_dequeue"]["since_start"]
    assert st["p50"] <= st["p99"] <= st["p999"] <= st["max"]
    src.reset_latency()
    assert src.latency()["xdp_to_dequeue"]["since_start"]["count"] == 0
    loc = next(loc for loc, s, _ in src.symbols() if s == "AAPL")
    book = src.book(loc, 10)
    assert book["bids"].shape[1] == 3 and len(book["bids"]) == 10
    assert book["bids"][0, 0] < book["asks"][0, 0]
    assert list(book["bids"][:, 0]) == sorted(book["bids"][:, 0], reverse=True)


def test_all_ten_hops_at_80x24_fold_absent_ones_into_one_line():
    src = Scripted()
    present = stats(1_000, 2_000, 3_000, 4_000, 10)
    lat = {}
    for i, hop in enumerate(tui.HOP_ORDER):
        if i % 2:
            lat[hop] = {"domain": "TAI", "absent": None, "since_start": present,
                        "interval": None, "spark": []}
        else:
            lat[hop] = {"domain": "PHC->TAI", "absent": "not on this path",
                        "since_start": None, "interval": None, "spark": []}
    src.latency = lambda: lat
    src.books[7]["bids"] = np.array([[1894500 - 100 * k, 100, 1] for k in range(10)],
                                    dtype=np.int64)
    src.books[7]["asks"] = np.array([[1894600 + 100 * k, 100, 1] for k in range(10)],
                                    dtype=np.int64)
    view = LiveView(src, "AAPL", clock=Clock())
    view.poll()
    lines = render_text(view, 80, 24).split("\n")
    shown = [ln.split()[0] for ln in lines if ln.split()[:1] and ln.split()[0] in lat]
    assert shown == list(tui.HOP_ORDER[1::2])          # the present hops, in order
    absent_line = next(ln for ln in lines if ln.startswith("absent: "))
    assert absent_line.startswith("absent: nic_to_xdp (not on this path), nic_to_stack (not")
    ladder_rows = [ln for ln in lines if " │ " in ln]
    assert len(ladder_rows) >= 5
    assert lines[23].startswith("/ symbol")


def test_ascii_only_terminal_gets_no_box_or_block_characters():
    src = FakeSource(seed=4)
    view = LiveView(src, "SPY")
    view.poll()
    for w, h in ((80, 24), (160, 48)):
        con = Console(width=w, height=h, record=True, file=io.StringIO(), color_system=None)
        con.print(view.render(w, h, ascii_only=True))
        text = con.export_text()
        assert text.isascii(), [c for c in text if not c.isascii()][:5]
        assert re.search(r"\d+\.\d{4} \| \d+\.\d{4}", text)


class _Degraded(FakeSource):
    """A source whose feed lost a gap: recovery figures and a suspect book."""

    def counters(self) -> dict:
        c = super().counters()
        c["recovery"] = {"239.1.1.1:26400": {"state": "degraded", "gaps_seen": 9, "messages_recovered": 40,
                                             "messages_late": 3, "gaps_lost": 2, "requests_sent": 17}}
        return c

    def book(self, locate: int, levels: int) -> dict:
        return dict(super().book(locate, levels), suspect=True)


def test_degraded_feed_state_recovery_counters_and_suspect_mark():
    size = (80, 24)
    view = LiveView(_Degraded(), None)
    view.poll()
    text = render_text(view, *size)
    assert "SUSPECT: a gap was lost" in text
    assert "degraded rec 40 lost 2" in text
    styled = render_text(view, *size, styles=True)
    assert "\x1b[1;37;41mdegraded" in styled, "the degraded state is not marked in red"


class _Restoring(_Degraded):
    """A feed whose lost gap is being restored from a snapshot: the load under way."""

    def counters(self) -> dict:
        c = super().counters()
        c["join"] = {"feed": "239.1.1.1:26400", "phase": "restoring", "state": "buffering",
                     "orders_loaded": 4321, "messages_loaded": 4400, "bytes": 187_654, "buffered": 900,
                     "restores": 2, "rearms": 3, "hole_messages": 0, "hole_left": 0}
        return c


def test_restoring_feed_shows_the_snapshot_progress():
    for size in ((80, 24), (160, 48)):
        view = LiveView(_Restoring(), None)
        view.poll()
        text = render_text(view, *size)
        assert "RESTORING 4,321 orders 187,654 B buf 900" in text, size
        styled = render_text(view, *size, styles=True)
        assert "\x1b[1;30;43mRESTORING" in styled, "the restore is not marked"


class _Restored(FakeSource):
    def counters(self) -> dict:
        c = super().counters()
        c["join"] = {"feed": "239.1.1.1:26400", "phase": "live", "state": "live", "orders_loaded": None,
                     "messages_loaded": None, "bytes": None, "buffered": 10, "restores": 2, "rearms": 2,
                     "hole_messages": 0, "hole_left": 0}
        return c


def test_restored_feed_says_how_many_restores_and_no_progress():
    view = LiveView(_Restored(), None)
    view.poll()
    text = render_text(view, 80, 24)
    assert "restored 2" in text and "RESTORING" not in text and "LOADING" not in text
