"""Live terminal view for `hftcap listen` (rich, alternate screen).

The view reads the capture only through `LiveSource` snapshots, from the UI thread, about
`refresh_hz` times a second; it never calls into the data path per message, so the data thread
only pays for the snapshot copies it already makes. Rates are counter deltas over a ~1 s window
of CLOCK_MONOTONIC wall time. Latency numbers come with their unit (ns/us/ms/s) and the hop's
clock domain; a hop whose clock is missing is shown as absent, never as 0.

Layout: 80x24 shows the status line, a ladder of at least a few levels, the latency panel
(p50/p99/p99.9/max since start) and 2-3 lines of counters; with more columns the recent trades,
sparklines, the last-interval columns and message rates by type are added, with more rows all
10 levels. Keys: '/' symbol Enter selects a stock, Tab or 'n' cycles through the most active,
'p' pauses the display (data keeps flowing), 'r' resets the histograms, 'q' or Ctrl-C quits.
"""
from __future__ import annotations

import math
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, Sequence

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.text import Text

# DESIGN.md, "Hops": display order; hops the source reports that are not listed go last.
HOP_ORDER = (
    "nic_to_xdp", "xdp_to_dequeue", "nic_to_stack", "stack_to_dequeue", "dequeue_to_decode",
    "decode_to_book", "xdp_to_book", "stack_to_book", "sender_to_book", "nic_to_book",
)
MAX_LEVELS = 10
ACTIVE_CYCLE = 10        # 'n' / Tab cycles through this many most active stocks
RATE_WINDOW_S = 1.0      # rates are deltas over at least this much monotonic time
MESSAGE_SHOW_S = 4.0     # how long a one-line message stays in the footer
SYMBOLS_EVERY_S = 1.0    # the symbol table (thousands of stocks) is read at most this often

_SPARK_UNICODE = "▁▂▃▄▅▆▇█"
_SPARK_ASCII = "_.-~=+*#"


class LiveSource(Protocol):
    """What the view reads. Every call returns a copy (a snapshot); none may block for long.

    status() -> dict: interface, netns (str|None), path ('xdp'|'kernel'), xdp_mode, bind_mode,
        poll_mode, cpu (int|None), queue (int), hw_clock (str), ptp (str), uptime_s (float)
    counters() -> dict: packets, messages, bytes, gaps, duplicates (ints), drops {reason: int},
        xdp {name: int}, messages_by_type {'A': int, ...}
    symbols() -> [(locate, symbol, messages applied to that stock so far)]
    book(locate, levels) -> dict: bids, asks (int64 arrays (k, 3): price_e4, shares, orders,
        best first), state (ITCH trading state letter), last_trade_price_e4 (int|None), volume
    trades(locate, n) -> [(itch_ns, price_e4, shares)], newest first
    latency() -> {hop: {'domain': str, 'absent': reason str or None,
        'since_start': {'p50','p99','p999','max','count'} (ns ints),
        'interval': same over the last interval or None,
        'spark': [float], the hop's p50 over recent intervals, oldest first (any unit: the view
                 only scales it between its own min and max)}}
    reset_latency() -> None
    """

    def status(self) -> dict: ...
    def counters(self) -> dict: ...
    def symbols(self) -> list: ...
    def book(self, locate: int, levels: int) -> dict: ...
    def trades(self, locate: int, n: int) -> list: ...
    def latency(self) -> dict: ...
    def reset_latency(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Formatting (pure functions, unit-tested)

def fmt_price(price_e4: Optional[int]) -> str:
    """ITCH price with its 4 implied decimals: 1234500 -> '123.4500'."""
    if price_e4 is None:
        return "-"
    p = int(price_e4)
    sign = "-" if p < 0 else ""
    p = abs(p)
    return f"{sign}{p // 10000}.{p % 10000:04d}"


def fmt_mid(bid_e4: int, ask_e4: int) -> str:
    """Exact mid price: 4 decimals, a 5th ('5') only when the sum of bid and ask is odd."""
    s = int(bid_e4) + int(ask_e4)
    text = fmt_price(s // 2)
    return text + "5" if s % 2 else text


def fmt_ns(ns: Optional[float]) -> str:
    """A duration with its unit, 3 significant digits: 850ns, 12.3us, 1.23ms, 2.00s."""
    if ns is None:
        return "-"
    v = float(ns)
    if v < 1e3:
        return f"{v:.0f}ns"
    for div, unit in ((1e3, "us"), (1e6, "ms"), (1e9, "s")):
        x = v / div
        if x < 999.5 or unit == "s":
            if x < 9.995:
                return f"{x:.2f}{unit}"
            if x < 99.95:
                return f"{x:.1f}{unit}"
            return f"{x:.0f}{unit}"
    return f"{v:.0f}ns"  # unreachable


def fmt_int(n: Optional[int]) -> str:
    return "-" if n is None else f"{int(n):,}"


def fmt_rate(x: Optional[float]) -> str:
    """A per-second rate, compact: 950, 12.3k, 1.23M."""
    if x is None:
        return "-"
    if x < 1e3:
        return f"{x:.0f}"
    for div, unit in ((1e3, "k"), (1e6, "M"), (1e9, "G")):
        y = x / div
        if y < 999.5 or unit == "G":
            return f"{y:.3g}{unit}" if y < 100 else f"{y:.0f}{unit}"
    return f"{x:.0f}"


def fmt_bytes_rate(x: Optional[float]) -> str:
    """Bytes per second in decimal units: 812 B/s, 12.3 kB/s, 1.23 MB/s."""
    if x is None:
        return "- B/s"
    for div, unit in ((1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")):
        if x >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.0f} B/s"


def fmt_uptime(s: Optional[float]) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def fmt_itch_time(itch_ns: int) -> str:
    """ITCH timestamp (ns since midnight, exchange clock) as HH:MM:SS.uuuuuu."""
    ns = int(itch_ns)
    s, frac = divmod(ns, 1_000_000_000)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{frac // 1000:06d}"


def sparkline(values: Sequence[float], width: int, ascii_only: bool = False) -> str:
    """The last `width` values drawn as bars scaled between their own min and max."""
    chars = _SPARK_ASCII if ascii_only else _SPARK_UNICODE
    vals = [float(v) for v in list(values)[-width:] if v is not None and math.isfinite(v)] \
        if width > 0 else []
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi <= lo:
        return chars[0] * len(vals)
    top = len(chars) - 1
    return "".join(chars[int(round((v - lo) / (hi - lo) * top))] for v in vals)


def levels_map(arr: Any) -> dict:
    """Book side array (k, 3) -> {price_e4: (shares, orders)}."""
    if arr is None:
        return {}
    return {int(r[0]): (int(r[1]), int(r[2])) for r in arr}


def changed_prices(prev: Optional[dict], cur: dict) -> set:
    """Prices whose level is new or whose shares/orders differ from the previous frame."""
    if prev is None:
        return set()
    return {p for p, v in cur.items() if prev.get(p) != v}


# ---------------------------------------------------------------------------------------------
# Rates

class RateMeter:
    """Per-second rates of monotonically increasing counters over a window of monotonic time."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window_s = window_s
        self._samples: deque = deque()

    def reset(self) -> None:
        self._samples.clear()

    def add(self, t_mono: float, counters: Mapping[str, Any]) -> None:
        flat = {k: int(counters.get(k, 0)) for k in ("packets", "messages", "bytes")}
        for typ, n in (counters.get("messages_by_type") or {}).items():
            flat["type:" + typ] = int(n)
        self._samples.append((t_mono, flat))
        while len(self._samples) >= 2 and self._samples[1][0] <= t_mono - self.window_s:
            self._samples.popleft()

    def span_s(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        return self._samples[-1][0] - self._samples[0][0]

    def rate(self, key: str) -> Optional[float]:
        """Counts per second for `key` (packets, messages, bytes, type:A ...); None if unknown."""
        dt = self.span_s()
        if dt <= 0:
            return None
        old, new = self._samples[0][1], self._samples[-1][1]
        if key not in new:
            return None
        d = new[key] - old.get(key, 0)
        return d / dt if d >= 0 else None   # a counter that went back (source reset): no rate


# ---------------------------------------------------------------------------------------------
# The view: state, key handling, one frame of data, rendering

@dataclass
class Frame:
    """Everything one frame shows, read from the source in one go."""
    t_mono: float
    status: dict
    counters: dict
    latency: dict
    symbol: Optional[str]
    locate: Optional[int]
    book: Optional[dict]
    trades: list
    changed_bids: set = field(default_factory=set)
    changed_asks: set = field(default_factory=set)
    poll_ms: float = 0.0


class LiveView:
    """State of the live view; `poll()` reads the source, `render()` draws the last frame."""

    def __init__(self, source: LiveSource, symbol: Optional[str] = None, *,
                 clock=time.monotonic, title: str = "hftcap listen"):
        self.source = source
        self.title = title
        self.clock = clock
        self.symbol: Optional[str] = symbol.strip().upper() if symbol else None
        self.paused = False
        self.typing: Optional[str] = None      # text after '/', None when not typing
        self.message: Optional[str] = None
        self.message_t = 0.0
        self.rates = RateMeter()
        self.frame: Optional[Frame] = None
        self._symbols: list = []
        self._symbols_t: Optional[float] = None
        self._prev_levels: Optional[tuple] = None  # (locate, bids map, asks map)
        self.dirty = False      # selection changed or histograms reset since the last poll

    # -- data ----------------------------------------------------------------------------------
    def _refresh_symbols(self, force: bool = False) -> None:
        now = self.clock()
        if force or self._symbols_t is None or now - self._symbols_t >= SYMBOLS_EVERY_S:
            self._symbols = [(int(loc), str(sym).strip(), int(n))
                             for loc, sym, n in self.source.symbols()]
            self._symbols_t = now

    def _most_active(self) -> list:
        ranked = sorted(self._symbols, key=lambda s: (-s[2], s[1]))[:ACTIVE_CYCLE]
        return [s[1] for s in ranked if s[2] > 0] or [s[1] for s in ranked]

    def _locate_of(self, symbol: Optional[str]) -> Optional[int]:
        for loc, sym, _ in self._symbols:
            if sym == symbol:
                return loc
        return None

    def poll(self, force: bool = False) -> Optional[Frame]:
        """Read one snapshot from the source (nothing while paused unless `force`)."""
        if self.paused and self.frame is not None and not force:
            return self.frame
        self.dirty = False
        t0 = self.clock()
        src = self.source
        status = src.status()
        counters = src.counters()
        self.rates.add(t0, counters)
        self._refresh_symbols()
        if self.symbol is None:
            active = self._most_active()
            if active:
                self.symbol = active[0]
        locate = self._locate_of(self.symbol)
        book, trades = None, []
        changed_b: set = set()
        changed_a: set = set()
        if locate is not None:
            book = src.book(locate, MAX_LEVELS)
            trades = list(src.trades(locate, 40))
            bids, asks = levels_map(book.get("bids")), levels_map(book.get("asks"))
            prev = self._prev_levels
            if prev is not None and prev[0] == locate:
                changed_b, changed_a = changed_prices(prev[1], bids), changed_prices(prev[2], asks)
            self._prev_levels = (locate, bids, asks)
        latency = src.latency()
        t1 = self.clock()
        self.frame = Frame(t0, status, counters, latency, self.symbol, locate, book, trades,
                           changed_b, changed_a, (t1 - t0) * 1e3)
        return self.frame

    # -- keys ----------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.message, self.message_t = text, self.clock()

    def select(self, symbol: str) -> bool:
        """Select a stock by symbol; an unknown one leaves the selection as it was."""
        sym = symbol.strip().upper()
        self._refresh_symbols(force=True)
        if self._locate_of(sym) is None:
            self.say(f"unknown symbol {sym!r}: keeping {self.symbol or 'none'}")
            return False
        self.symbol = sym
        self.message = None
        self.dirty = True
        return True

    def cycle(self) -> None:
        """Next of the most active stocks (by messages applied so far)."""
        self._refresh_symbols(force=True)
        active = self._most_active()
        if not active:
            self.say("no stocks seen yet")
            return
        i = active.index(self.symbol) + 1 if self.symbol in active else 0
        self.symbol = active[i % len(active)]
        self.message = None
        self.dirty = True

    def handle_keys(self, data: str) -> bool:
        """Apply a chunk of terminal input; False means quit."""
        if data.startswith("\x1b") and len(data) > 1:   # an escape sequence (arrow keys...)
            if self.typing is not None and data.startswith("\x1b\x1b"):
                self.typing = None
            return True
        for ch in data:
            if ch == "\x03":                               # Ctrl-C when ISIG is off
                return False
            if self.typing is not None:
                if ch in "\r\n":
                    text, self.typing = self.typing, None
                    if text:
                        self.select(text)
                elif ch == "\x1b":
                    self.typing = None
                elif ch in "\x7f\x08":
                    self.typing = self.typing[:-1]
                elif ch.isprintable() and not ch.isspace() and len(self.typing) < 8:
                    self.typing += ch.upper()
                continue
            if ch == "q":
                return False
            if ch == "/":
                self.typing = ""
                self.message = None
            elif ch in "\tn":
                self.cycle()
            elif ch == "p":
                self.paused = not self.paused
                if not self.paused:
                    self.rates.reset()    # the pause is not part of any rate window
            elif ch == "r":
                self.source.reset_latency()
                self.dirty = True
                self.say("latency histograms reset")
        return True

    # -- rendering -----------------------------------------------------------------------------
    def render(self, width: int, height: int, *, ascii_only: bool = False) -> RenderableType:
        return render_frame(self, width, height, ascii_only=ascii_only)


def _status_lines(st: Mapping[str, Any], width: int, paused: bool, title: str) -> list:
    path = st.get("path") or "-"
    iface = str(st.get("interface") or "-")
    if st.get("netns"):
        iface += f" (netns {st['netns']})"
    path_txt = f"path {path}"
    if path == "xdp" and st.get("xdp_mode"):
        path_txt += f" {st['xdp_mode']}"
    if st.get("bind_mode"):
        path_txt += f" bind {st['bind_mode']}"
    cpu = st.get("cpu")
    items = [
        Text("PAUSED", style="bold reverse yellow") if paused else None,
        Text(title, style="bold"),
        Text(f"if {iface}"),
        Text(path_txt),
        Text(f"poll {st.get('poll_mode') or '-'}"),
        Text(f"cpu {cpu if cpu is not None else 'any'} queue {st.get('queue', '-')}"),
        Text(f"hw clock {st.get('hw_clock') or '-'}"),
        Text(f"ptp {st.get('ptp') or '-'}"),
        Text(f"up {fmt_uptime(st.get('uptime_s'))}"),
        Text(f"XDP program {st['xdp_program']}") if st.get("xdp_program") else None,
    ]
    sep = "  "
    lines: list = []
    cur = Text()
    for it in items:
        if it is None:
            continue
        if cur.cell_len and cur.cell_len + len(sep) + it.cell_len > width:
            lines.append(cur)
            cur = Text()
        if cur.cell_len:
            cur.append(sep)
        cur.append_text(it)
    if cur.cell_len:
        lines.append(cur)
    for ln in lines:
        ln.append(" " * max(0, width - ln.cell_len))
        ln.stylize("on grey23")
    return lines


def _cell(c: Any) -> Text:
    return c if isinstance(c, Text) else Text(str(c))


def _grid(header: Sequence[Sequence[str]], justify: str, rows: Sequence[Sequence[Any]],
          gap: int = 1, header_style: str = "dim") -> list:
    """A borderless table as Text lines (one Text per line; rich's Table measures every cell
    several times, which costs more than the rest of the frame). `justify`: one 'l' or 'r' per
    column; `header`: header rows of strings."""
    cells = [[_cell(c) for c in r] for r in rows]
    ncol = len(justify)
    widths = [0] * ncol
    for hr in header:
        for i, name in enumerate(hr):
            widths[i] = max(widths[i], len(name))
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], c.cell_len)
    sep = " " * gap
    out = []
    for hr in header:
        line = Text(style=header_style)
        for i, name in enumerate(hr):
            if i:
                line.append(sep)
            line.append(name.rjust(widths[i]) if justify[i] == "r" else name.ljust(widths[i]))
        out.append(line)
    for r in cells:
        line = Text()
        for i, c in enumerate(r):
            if i:
                line.append(sep)
            pad = " " * (widths[i] - c.cell_len)
            if justify[i] == "r":
                line.append(pad)
                line.append_text(c)
            else:
                line.append_text(c)
                line.append(pad)
        out.append(line)
    return out


def _hstack(blocks: Sequence[Sequence[Text]], gap: int) -> list:
    """Blocks of Text lines side by side, each padded to its own widest line."""
    blocks = [b for b in blocks if b]
    widths = [max(t.cell_len for t in b) for b in blocks]
    rows = max((len(b) for b in blocks), default=0)
    out = []
    for i in range(rows):
        line = Text()
        for k, (b, w) in enumerate(zip(blocks, widths)):
            if k:
                line.append(" " * gap)
            t = b[i] if i < len(b) else Text("")
            line.append_text(t)
            if k < len(blocks) - 1:
                line.append(" " * (w - t.cell_len))
        out.append(line)
    return out


def _book_header(fr: Frame) -> Text:
    t = Text()
    if fr.symbol is None:
        t.append("no stock selected yet (waiting for data)", style="dim")
        return t
    t.append(fr.symbol, style="bold cyan")
    if fr.locate is None:
        t.append("  not seen on the feed yet", style="yellow")
        return t
    b = fr.book or {}
    bids, asks = b.get("bids"), b.get("asks")
    state = b.get("state")
    if isinstance(state, bytes):
        state = state.decode("ascii", "replace")
    t.append(f" #{fr.locate}", style="dim")
    t.append(f"  state {state or '-'}")
    if b.get("suspect"):
        t.append("  SUSPECT: a gap was lost, this book may be wrong ", style="bold white on red")
    if bids is not None and len(bids) and asks is not None and len(asks):
        bb, ba = int(bids[0][0]), int(asks[0][0])
        t.append(f"  spread {fmt_price(ba - bb)}  mid {fmt_mid(bb, ba)}")
    else:
        t.append("  spread -  mid -")
    t.append(f"  last {fmt_price(b.get('last_trade_price_e4'))}")
    t.append(f"  vol {fmt_int(b.get('volume'))}")
    return t


def _ladder(fr: Frame, levels: int) -> list:
    """Header line, column names, then `levels` rows: bids left (best first), asks right."""
    b = fr.book or {}
    bids = b.get("bids") if b.get("bids") is not None else []
    asks = b.get("asks") if b.get("asks") is not None else []
    rows = []
    for i in range(levels):
        cells: list = []
        for side, arr, changed, style in (("b", bids, fr.changed_bids, "green"),
                                          ("a", asks, fr.changed_asks, "red")):
            if i < len(arr):
                p, sh, n = (int(x) for x in arr[i][:3])
                st = f"bold reverse {style}" if p in changed else style
                trip = [Text(fmt_int(n), style=st), Text(fmt_int(sh), style=st),
                        Text(fmt_price(p), style=st)]
            else:
                trip = ["", "", ""]
            cells += trip if side == "b" else trip[::-1]
        rows.append(cells[:3] + [Text("│", style="dim")] + cells[3:])
    grid = _grid([["orders", "shares", "bid", "", "ask", "shares", "orders"]], "rrrllrr", rows)
    return [_book_header(fr)] + grid


def _trades(fr: Frame, rows: int) -> list:
    body = [[fmt_itch_time(t), fmt_price(p), fmt_int(n)] for t, p, n in fr.trades[:rows]]
    if not body:
        body = [[Text("no trades yet", style="dim"), "", ""]]
    return _grid([["trade time (itch)", "price", "shares"]], "lrr", body)


def _hop_items(lat: Mapping[str, Any]) -> list:
    order = {h: i for i, h in enumerate(HOP_ORDER)}
    return sorted(lat.items(), key=lambda kv: order.get(kv[0], len(order)))


def _stats_cells(st: Optional[Mapping[str, Any]], with_count: bool, p999: bool = True) -> list:
    keys = ["p50", "p99"] + (["p999"] if p999 else []) + ["max"]
    if not st or not st.get("count"):
        cells = [Text("-", style="dim") for _ in keys]
        n = "-" if not st else "0"          # no stats at all vs. no samples yet
        return cells + ([Text(n, style="dim")] if with_count else [])
    cells = [Text(fmt_ns(st.get(k))) for k in keys]
    return cells + ([Text(fmt_int(st.get("count")))] if with_count else [])


def _latency(fr: Frame, width: int, *, wide: bool, spark_w: int, ascii_only: bool,
             absent_rows: bool) -> list:
    """The latency panel: a title line, the table, and (compact) a line of absent reasons."""
    hops = _hop_items(fr.latency)
    title = Text("latency per hop", style="bold")
    if width >= 70:
        title.append(" (each in its own clock domain; units ns/us/ms)", style="dim")
    p999 = width >= 66
    with_count = width >= 76
    stat_names = ["p50", "p99"] + (["p99.9"] if p999 else []) + ["max"]
    head1: list = ["", ""]
    head2: list = ["hop", "domain"]
    justify = "ll"
    if wide:
        head1 += ["last interval", "", "", "", "", ""]
        head2 += ["p50", "p99", "p99.9", "max", "n", "│"]
        justify += "rrrrrl"
    since = stat_names + (["samples"] if with_count else [])
    head1 += ["since start"] + [""] * (len(since) - 1)
    head2 += since
    justify += "r" * len(since)
    if spark_w > 0:
        head1.append("")
        head2.append("p50 history")
        justify += "l"
    rows: list = []
    absent_list: list = []
    for hop, h in hops:
        reason = h.get("absent")
        domain = str(h.get("domain") or "-")[:16]
        row: list = [Text(hop, style="dim" if reason else ""), Text(domain, style="dim")]
        if reason:
            absent_list.append((hop, str(reason)))
            if not absent_rows:
                continue
            cells: list = []
            if wide:
                cells += [Text("absent", style="yellow"), "", "", "", "", Text("│", style="dim")]
            cells += [Text("absent", style="yellow")] + [""] * (len(since) - 1)
            row += cells
            if spark_w > 0:
                row.append(Text(str(reason), style="dim"))
        else:
            if wide:
                row += _stats_cells(h.get("interval"), True) + [Text("│", style="dim")]
            row += _stats_cells(h.get("since_start"), with_count, p999)
            if spark_w > 0:
                row.append(Text(sparkline(h.get("spark") or [], spark_w, ascii_only),
                                style="magenta"))
        rows.append(row)
    out: list = [title] + _grid([head1, head2] if wide else [head2], justify, rows)
    if not hops:
        out.append(Text("no hops reported", style="dim"))
    if absent_list and (not absent_rows or spark_w == 0):
        if absent_rows:
            text = "absent: " + "; ".join(sorted({r for _, r in absent_list}))
        else:
            text = "absent: " + ", ".join(f"{h} ({r})" for h, r in absent_list)
        out.append(Text(text, style="dim"))
    return out


def _type_keys(c: Mapping[str, Any]) -> list:
    return ["type:" + t for t in sorted((c.get("messages_by_type") or {}))]


def _counters_compact(fr: Frame, rates: RateMeter, width: int, n_lines: int) -> list:
    """Rates, totals and (third line, when there is room) XDP counters and drops by reason."""
    c = fr.counters
    drops = c.get("drops") or {}
    xdp = c.get("xdp") or {}
    l1 = Text()
    l1.append("rate ", style="bold")
    l1.append(f"{fmt_rate(rates.rate('packets'))} pkt/s  {fmt_rate(rates.rate('messages'))} msg/s  "
              f"{fmt_bytes_rate(rates.rate('bytes'))}")
    by_type = sorted(((t[5:], rates.rate(t)) for t in _type_keys(c)),
                     key=lambda kv: -(kv[1] or 0))
    if by_type and width >= 60:
        l1.append("  by type/s ", style="dim")
        l1.append(" ".join(f"{t} {fmt_rate(r)}" for t, r in by_type if r))
    l2 = Text()
    _join_text(l2, c.get("join"))
    for r in (c.get("recovery") or {}).values():  # first: the line is cut at the width
        l2.append(r["state"], style=FEED_STATE_STYLE.get(r["state"], ""))
        l2.append(f" rec {r['messages_recovered']:,} ")
        l2.append(f"lost {r['gaps_lost']:,}", style="bold red" if r["gaps_lost"] else "")
        for k, st in (r.get("lines") or {}).items():
            l2.append(f" {k.upper()} {st}", style="bold red" if st == "down" else "green")
        l2.append("  ")
    l2.append("total ", style="bold")
    l2.append(f"pkt {fmt_int(c.get('packets'))}  msg {fmt_int(c.get('messages'))}  "
              f"gaps {fmt_int(c.get('gaps'))}  dup {fmt_int(c.get('duplicates'))}  ")
    ndrop = sum(int(v) for v in drops.values())
    l2.append(f"drops {ndrop:,}", style="bold red" if ndrop else "")

    l3 = Text() if n_lines >= 3 else l2
    if n_lines >= 3:
        l3.append("xdp ", style="bold")
    elif xdp:
        l3.append("  xdp ")
    if xdp:
        l3.append(" ".join(f"{k} {int(v):,}" for k, v in xdp.items()))
    nz = [(k, int(v)) for k, v in drops.items() if int(v)]
    if nz:
        l3.append("  drops " + ", ".join(f"{k} {v:,}" for k, v in nz), style="red")
    return [l1, l2] if l3 is l2 else [l1, l2, l3]


FEED_STATE_STYLE = {"synced": "bold green", "gap_wait": "yellow", "recovering": "bold yellow",
                    "degraded": "bold white on red"}
JOIN_STYLE = {"loading": "bold black on yellow", "restoring": "bold black on yellow"}


def _join_text(t: Text, j: Optional[Mapping[str, Any]]) -> None:
    """The snapshot join of the feed: while its books load (late join) or reload (restore after
    a gap declared lost), the progress of the load under way; once live, how many restores."""
    if not j:
        return
    if j["phase"] == "live":
        if j.get("restores"):
            t.append(f"restored {j['restores']:,}  ", style="cyan")
        return
    t.append(j["phase"].upper(), style=JOIN_STYLE.get(j["phase"], ""))
    if j.get("hole_left"):
        t.append(f" hole {j['hole_left']:,} left")
    else:
        t.append(f" {fmt_int(j.get('orders_loaded'))} orders {fmt_int(j.get('bytes'))} B")
    t.append(f" buf {fmt_int(j.get('buffered'))}  ")


def _counters_wide(fr: Frame, rates: RateMeter, max_rows: int) -> list:
    c = fr.counters
    rows: list = [["packets", fmt_int(c.get("packets")), fmt_rate(rates.rate("packets"))],
                  ["messages", fmt_int(c.get("messages")), fmt_rate(rates.rate("messages"))],
                  ["bytes", fmt_int(c.get("bytes")), fmt_bytes_rate(rates.rate("bytes"))],
                  ["gaps", fmt_int(c.get("gaps")), ""],
                  ["duplicates", fmt_int(c.get("duplicates")), ""]]
    for feed, r in (c.get("recovery") or {}).items():
        rows.append([Text(r["state"], style=FEED_STATE_STYLE.get(r["state"], "")),
                     Text(f"lost {r['gaps_lost']:,}", style="bold red" if r["gaps_lost"] else ""),
                     f"rec {r['messages_recovered']:,}"])
        if r.get("lines"):
            rows.append(["lines"] + [Text(f"{k.upper()} {st}", style="bold red" if st == "down" else "green")
                                     for k, st in r["lines"].items()])
    rest = [("drop " + k, int(v), "bold red" if int(v) else "")
            for k, v in (c.get("drops") or {}).items()]
    rest += [("xdp " + k, int(v), "") for k, v in (c.get("xdp") or {}).items()]
    room = max_rows - 6 - sum(1 + bool(r.get("lines")) for r in (c.get("recovery") or {}).values())
    if len(rest) > room:   # not all fit: keep the non-zero ones first
        rest = sorted(rest, key=lambda r: r[1] == 0)[:max(room, 0)]
    rows += [[Text(name, style=st), Text(f"{v:,}", style=st), ""] for name, v, st in rest]
    return _grid([["counter", "total", "/s"]], "lrr", rows)


def _by_type(fr: Frame, rates: RateMeter, max_rows: int) -> list:
    by = sorted(((k[5:], rates.rate(k)) for k in _type_keys(fr.counters)),
                key=lambda kv: -(kv[1] or 0))
    return _grid([["type", "msg/s"]], "lr", [[t, fmt_rate(r)] for t, r in by[:max_rows]])


def _footer(view: LiveView, fr: Optional[Frame], width: int) -> Text:
    t = Text()
    if view.typing is not None:
        t.append("symbol: ", style="bold")
        t.append(view.typing + "_", style="bold reverse")
        t.append("  Enter select  Esc cancel", style="dim")
        return t
    if view.message and view.clock() - view.message_t < MESSAGE_SHOW_S:
        t.append(view.message, style="bold yellow")
        return t
    if view.paused:
        t.append("PAUSED ", style="bold reverse yellow")
    t.append("/ symbol  n/Tab next active  p pause  r reset hist  q quit", style="dim")
    if fr is not None and width >= 100:
        t.append(f"   rates over {view.rates.span_s():.1f}s monotonic; "
                 f"snapshot {fr.poll_ms:.1f} ms", style="dim")
    return t


_TO_ASCII = str.maketrans({"│": "|", "…": "~"})


class _Screen:
    """Text lines cropped to the screen: the body on top, the footer on the last row; no line
    ever wraps (longer lines end in an ellipsis). `ascii_only` for terminals without UTF-8."""

    def __init__(self, body: Sequence[Text], footer: Text, ascii_only: bool = False):
        self.body, self.footer, self.ascii_only = body, footer, ascii_only

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or console.height
        lines = list(self.body[:max(0, height - 1)])
        lines += [Text("")] * (height - 1 - len(lines)) + [self.footer]
        for t in lines:
            if self.ascii_only:   # one character for one: the style spans stay where they are
                t = Text(t.plain.translate(_TO_ASCII), style=t.style, spans=t.spans)
            t.no_wrap, t.end = True, "\n"
            t.overflow = "crop" if self.ascii_only else "ellipsis"
            yield t


def render_frame(view: LiveView, width: int, height: int, *,
                 ascii_only: bool = False) -> RenderableType:
    """One screen (width x height cells) for the view's current frame."""
    fr = view.frame
    footer = _footer(view, fr, width)
    if fr is None:
        return _Screen([Text("waiting for the first snapshot...")], footer, ascii_only)
    status = _status_lines(fr.status, width, view.paused, view.title)
    hops = len(fr.latency)
    n_absent = sum(1 for h in fr.latency.values() if h.get("absent"))
    wide = width >= 150 and height >= 34
    body: list = list(status)
    if wide:
        # status | ladder, trades, counters, by type side by side | latency | footer
        top_rows = MAX_LEVELS + 2
        lat_rows = 1 + 2 + hops
        spare = height - len(status) - 1 - top_rows - 1 - lat_rows - 1
        trade_rows = MAX_LEVELS + max(0, min(spare, 10))
        blocks = [_ladder(fr, MAX_LEVELS), [Text("")] + _trades(fr, trade_rows),
                  [Text("")] + _counters_wide(fr, view.rates, max(top_rows, trade_rows + 1))]
        if width - 142 >= 14:
            blocks.append([Text("")] + _by_type(fr, view.rates, max(top_rows, trade_rows)))
        jline = Text()  # the snapshot join's line (loading / restoring), in the blank line's place
        _join_text(jline, fr.counters.get("join"))
        body += [jline] + _hstack(blocks, gap=2) + [Text("")]
        body += _latency(fr, width, wide=True, spark_w=max(0, min(30, width - 136)),
                         ascii_only=ascii_only, absent_rows=True)
    else:
        # status | ladder (+ trades) | latency | 2-3 counter lines | footer
        spark_w = min(24, width - 92) if width >= 100 else 0
        fixed = len(status) + 1 + 1 + 2 + 2 + 1      # ladder header + names, latency title +
        absent_rows = height - fixed - hops >= 5 + (0 if spark_w else 1)   # names, counters, footer
        lat_rows = hops if absent_rows else hops - n_absent + (1 if n_absent else 0)
        if absent_rows and n_absent and not spark_w:
            lat_rows += 1
        avail = height - fixed - lat_rows            # ladder levels (+ a third counter line)
        n_counter_lines = 3 if avail >= 7 else 2
        levels = max(1, min(MAX_LEVELS, avail - (n_counter_lines - 2)))
        ladder = _ladder(fr, levels)
        if width >= 100:  # the stock's header line on its own, so it does not widen the ladder
            body += [ladder[0]] + _hstack([ladder[1:], _trades(fr, levels)], gap=3)
        else:
            body += ladder
        body += _latency(fr, width, wide=False, spark_w=spark_w, ascii_only=ascii_only,
                         absent_rows=absent_rows)
        body += _counters_compact(fr, view.rates, width, n_counter_lines)
    return _Screen(body, footer, ascii_only)


# ---------------------------------------------------------------------------------------------
# Terminal input and the loop

class _Keys:
    """Terminal input in cbreak mode (no echo, no line buffering, Ctrl-C still a signal).

    The terminal settings are restored on every exit from the `with` block."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stdin
        self.fd: Optional[int] = None
        self._saved = None

    def __enter__(self) -> "_Keys":
        try:
            fd = self.stream.fileno()
        except (AttributeError, ValueError, OSError):
            return self
        if not os.isatty(fd):
            return self
        import termios
        import tty
        self._saved = termios.tcgetattr(fd)
        self.fd = fd
        tty.setcbreak(fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None and self.fd is not None:
            import termios
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def read(self, timeout: float, stop_event: Optional[threading.Event]) -> str:
        """Input that arrives within `timeout` seconds ('' if none)."""
        if self.fd is None:
            if stop_event is not None:
                stop_event.wait(timeout)
            else:
                time.sleep(timeout)
            return ""
        r, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not r:
            return ""
        data = os.read(self.fd, 1024)
        if not data:                     # EOF on the terminal: nothing more will come
            self.fd = None
            return ""
        return data.decode("utf-8", "replace")


class _Terminate(Exception):
    pass


def _raise_terminate(signum, frame):
    raise _Terminate()


def run_live(source: LiveSource, *, symbol: Optional[str] = None, refresh_hz: float = 10,
             stop_event: Optional[threading.Event] = None, max_seconds: Optional[float] = None,
             console: Optional[Console] = None, title: str = "hftcap listen") -> None:
    """Run the live view until 'q', Ctrl-C, `stop_event` or `max_seconds`; then return.

    The caller owns the capture (setup and teardown); this only reads `source` snapshots.
    The terminal (cbreak mode, alternate screen) is restored on every exit. When called from
    the main thread with SIGTERM at its default, SIGTERM restores the terminal and raises
    SystemExit(143), so the caller's finally blocks still run."""
    console = console or Console()
    view = LiveView(source, symbol, title=title)
    period = 1.0 / max(0.5, float(refresh_hz))
    ascii_only = not (console.encoding or "").lower().startswith("utf")
    t_end = time.monotonic() + max_seconds if max_seconds else None
    out_fd = None
    try:
        if console.is_terminal:
            out_fd = console.file.fileno()
    except (AttributeError, ValueError, OSError):
        out_fd = None

    drawn = {"frame": None, "size": None, "t": 0.0}

    def draw(live: Live, force: bool = False) -> None:
        if out_fd is not None:
            try:     # follow resizes; ignores COLUMNS/LINES that may be stale in the environment
                console.size = os.get_terminal_size(out_fd)
            except OSError:
                pass
        size, now = (console.width, console.height), time.monotonic()
        # While paused nothing changes: redraw only for a key, a resize, or once a second.
        if not force and view.frame is drawn["frame"] and size == drawn["size"] \
                and now - drawn["t"] < 1.0:
            return
        drawn.update(frame=view.frame, size=size, t=now)
        live.update(view.render(size[0], size[1], ascii_only=ascii_only), refresh=True)

    old_term = None
    try:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
            old_term = signal.signal(signal.SIGTERM, _raise_terminate)
        with _Keys() as keys, Live(console=console, screen=True, auto_refresh=False,
                                   redirect_stdout=False, redirect_stderr=False) as live:
            next_t = time.monotonic()
            while True:
                if stop_event is not None and stop_event.is_set():
                    return
                now = time.monotonic()
                if t_end is not None and now >= t_end:
                    return
                view.poll()
                draw(live)
                next_t += period
                if next_t < now:
                    next_t = now + period
                while True:
                    timeout = next_t - time.monotonic()
                    if t_end is not None:
                        timeout = min(timeout, t_end - time.monotonic())
                    if timeout <= 0 or (stop_event is not None and stop_event.is_set()):
                        break
                    data = keys.read(min(timeout, period), stop_event)
                    if data:
                        if not view.handle_keys(data):
                            return
                        if view.dirty:
                            view.poll(force=True)
                        draw(live, force=True)      # echo typing and selections at once
    except KeyboardInterrupt:
        return
    except _Terminate:
        # The terminal is restored by now; exit with the conventional status while still
        # running the caller's finally blocks (capture teardown).
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
