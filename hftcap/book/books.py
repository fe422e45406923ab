"""Order books from ITCH 5.0: the `Book` view of one stock and `hftcap book` offline replay.

`Books` wraps hftcap._core.Books (C: decoder, order-by-order books, seqlock snapshots).
Prices are integers with 4 implied decimals (`price_e4`); `format_price` renders them.
Snapshots (`book`, `trades`, `info`) are safe while another thread feeds the same books.
"""
from __future__ import annotations

import errno
import os
import struct
import sys
import time

from .. import _core
from ..errors import HftcapError
from ..receive.magic import is_pcapng  # not receive.pcapng: its imports are ~14 ms of a replay

# numpy is imported on first use (the views below, these dtypes): `hftcap book` prints its book
# without it and starts ~0.1 s sooner.
_DTYPES = {
    "LEVEL_DTYPE": [("price_e4", "<u4"), ("orders", "<u4"), ("shares", "<u8")],
    "TRADE_DTYPE": [("itch_ns", "<u8"), ("shares", "<u8"), ("price_e4", "<u4"), ("pad", "<u4")],
    "BBO_DTYPE": [("itch_ns", "<u8"), ("bid_price_e4", "<u4"), ("ask_price_e4", "<u4"),
                  ("bid_shares", "<u8"), ("ask_shares", "<u8")],
}


def __getattr__(name):
    if name in _DTYPES:
        return _dtype(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _dtype(name):
    import numpy as np
    return np.dtype(_DTYPES[name])


def format_price(price_e4: int) -> str:
    """123.4500 style: exactly 4 decimals, no float rounding."""
    p = int(price_e4)
    return f"{p // 10000}.{p % 10000:04d}"


def format_itch_ns(ns: int) -> str:
    """ns since midnight (itch_ns domain) as HH:MM:SS.nnnnnnnnn."""
    s, n = divmod(int(ns), 1_000_000_000)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}.{n:09d}"


class Book:
    """One stock's book: top levels per side best first, as numpy arrays. (A plain class, not a
    dataclass: `hftcap book` imports this module, and dataclasses costs it ~0.02-0.05 s.)"""
    __slots__ = ("locate", "symbol", "bid_price_e4", "bid_shares", "bid_orders", "ask_price_e4",
                 "ask_shares", "ask_orders", "info")

    def __init__(self, locate: int, symbol: str, bid_price_e4: np.ndarray, bid_shares: np.ndarray,
                 bid_orders: np.ndarray, ask_price_e4: np.ndarray, ask_shares: np.ndarray,
                 ask_orders: np.ndarray, info: dict | None = None):
        self.locate, self.symbol = locate, symbol
        self.bid_price_e4, self.bid_shares, self.bid_orders = bid_price_e4, bid_shares, bid_orders
        self.ask_price_e4, self.ask_shares, self.ask_orders = ask_price_e4, ask_shares, ask_orders
        self.info = {} if info is None else info

    def __repr__(self) -> str:
        return (f"Book(locate={self.locate}, symbol={self.symbol!r}, bbo={self.bbo}, "
                f"levels={len(self.bid_price_e4)}/{len(self.ask_price_e4)})")

    @property
    def state(self) -> str:
        """Trading state from H ('T', 'H', 'P', 'Q'), '' before any H."""
        return self.info.get("trading_state", "")

    @property
    def best_bid(self):
        """(price_e4, shares) or None."""
        return (int(self.bid_price_e4[0]), int(self.bid_shares[0])) if len(self.bid_price_e4) else None

    @property
    def best_ask(self):
        return (int(self.ask_price_e4[0]), int(self.ask_shares[0])) if len(self.ask_price_e4) else None

    @property
    def bbo(self):
        return self.best_bid, self.best_ask

    def levels(self, side: str):
        """[(price_e4, shares, orders)] best first; side 'bid' or 'ask'."""
        p, s, o = ((self.bid_price_e4, self.bid_shares, self.bid_orders) if side == "bid"
                   else (self.ask_price_e4, self.ask_shares, self.ask_orders))
        return [(int(a), int(b), int(c)) for a, b, c in zip(p, s, o)]


class Books:
    """Books for every stock of a stream. `core` wraps live books (hc_py_books_wrap)."""

    def __init__(self, expected_orders: int = 1 << 20, core=None, prefault: bool = True):
        """prefault=False: the big tables are faulted in where first written, not here (an
        offline replay, whose start-up is part of its time; live books keep it on)."""
        self.core = core if core is not None else _core.Books(expected_orders, prefault=prefault)

    # feeding (offline)
    def feed(self, data, final: bool = True) -> int:
        """Apply a bytes-like buffer in NASDAQ layout; returns bytes consumed (GIL released)."""
        return self.core.feed(data, final)

    def feed_file(self, path, progress=None, meanwhile=None) -> dict:
        """Apply a whole file: NASDAQ layout (plain/gzip), pcap or pcapng (auto-detected).
        The replay runs on a C thread of its own; meanwhile() (if given) runs once on this
        thread while it does, and progress(bytes_done_on_disk) at most every 100 ms."""
        return self.core.feed_file(os.fspath(path), progress, meanwhile=meanwhile)

    # snapshots
    def stats(self) -> dict:
        return self.core.stats()

    def symbols(self):
        return self.core.symbols()

    def locate(self, symbol: str) -> int:
        want = symbol.strip().upper()
        for loc, sym in self.core.symbols():
            if sym.upper() == want:
                return loc
        raise KeyError(symbol)

    def info(self, locate: int) -> dict:
        return self.core.info(locate)

    def unknown_refs(self) -> dict:
        """Unknown-reference drops per stock: {symbol: n}, or {"locate N": n} for a stock whose
        directory message (R) was not seen (a late join may see only its deletes)."""
        names = {loc: sym for loc, sym in self.core.symbols() if sym}
        return {names.get(loc, f"locate {loc}"): n for loc, n in sorted(self.core.unknown_refs().items())}

    def book(self, locate: int, levels: int = 10) -> Book:
        import numpy as np
        bids_raw, asks_raw = self.core.book_raw(locate, levels)
        bids = np.frombuffer(bids_raw, dtype=_dtype("LEVEL_DTYPE"))
        asks = np.frombuffer(asks_raw, dtype=_dtype("LEVEL_DTYPE"))
        info = self.core.info(locate)
        return Book(locate, info["symbol"],
                    bids["price_e4"].copy(), bids["shares"].copy(), bids["orders"].copy(),
                    asks["price_e4"].copy(), asks["shares"].copy(), asks["orders"].copy(), info)

    def levels(self, locate: int, levels: int = 10):
        """([(price_e4, shares, orders)] bids, asks) best first, without numpy."""
        raw = self.core.book_raw(locate, levels)
        return tuple([(p, s, o) for p, o, s in struct.iter_unpack("<IIQ", r)] for r in raw)

    def trades(self, locate: int, n: int = 32):
        """Most recent trades (E, printable C, P, Q), oldest first: itch_ns, shares, price_e4."""
        import numpy as np
        return np.frombuffer(self.core.trades_raw(locate, n), dtype=_dtype("TRADE_DTYPE"))

    def record_bbo(self, locate_or_symbol) -> None:
        self.core.record_bbo(locate_or_symbol)

    def bbo_changes(self):
        import numpy as np
        return np.frombuffer(self.core.bbo_raw(), dtype=_dtype("BBO_DTYPE"))

    def most_active(self):
        """(locate, symbol) of the stock with the most messages, or None."""
        best = None
        for loc, sym in self.core.symbols():
            n = self.core.info(loc)["messages"]
            if best is None or n > best[0]:
                best = (n, loc, sym)
        return (best[1], best[2]) if best else None


def _udp_payload(frame: bytes) -> bytes | None:
    """The UDP payload of an Ethernet/IPv4 frame (VLAN tags skipped), or None."""
    off, et = 14, int.from_bytes(frame[12:14], "big") if len(frame) >= 14 else 0
    while et in (0x8100, 0x88A8) and len(frame) >= off + 4:
        et, off = int.from_bytes(frame[off + 2:off + 4], "big"), off + 4
    if et != 0x0800 or len(frame) < off + 28 or frame[off + 9] != 17:
        return None
    ihl = (frame[off] & 15) * 4
    u = off + ihl
    ulen = int.from_bytes(frame[u + 4:u + 6], "big")
    if ulen < 8 or len(frame) < u + ulen:
        return None
    return frame[u + 8:u + ulen]


def recovery_interfaces(cap) -> list[int]:
    """The interfaces of a listen --write capture that hold recovery replies."""
    return [i for i, d in enumerate(cap.interfaces) if (d.get("hftcap") or {}).get("role") == "recovery"]


def feed_sequenced_capture(books: Books, cap) -> dict:
    """A listen --write capture with recovery replies (interface 1): the messages of the feed
    and of the replies in MoldUDP64 sequence order, as the live listener delivered them: a
    message waits for the ones before it, a duplicate is dropped, and a gap no later packet in
    the file fills is skipped at the end. Returns feed_file's dict (format pcapng)."""
    import struct
    st = {k: 0 for k in ("packets", "messages", "heartbeats", "end_of_session", "gaps", "gap_events",
                         "duplicates", "sessions", "drop_short", "drop_truncated", "drop_trailing")}
    st["recovery_packets"] = 0
    rec_if = set(recovery_interfaces(cap))
    session, nxt, held, out = None, None, {}, []

    def flush():
        nonlocal nxt
        while nxt in held:
            m = held.pop(nxt)
            out.append(struct.pack(">H", len(m)) + m)
            nxt += 1

    for p in cap.packets:
        pl = _udp_payload(p.data)
        if pl is None:
            continue
        st["packets"] += 1
        st["recovery_packets"] += p.iface in rec_if
        if len(pl) < 20:
            st["drop_short"] += 1
            continue
        sess, seq, count = pl[:10], *struct.unpack_from(">QH", pl, 10)
        if sess != session:
            if held:                       # a new session: what the old one left is lost
                st["gaps"] += max(held) + 1 - nxt
                st["gap_events"] += 1
                for s in sorted(held):
                    nxt = s
                    flush()
            session, nxt, held = sess, seq, {}
            st["sessions"] += 1
        if count in (0, 0xFFFF):
            st["heartbeats" if count == 0 else "end_of_session"] += 1
            continue
        off = 20
        for i in range(count):
            if off + 2 > len(pl):
                st["drop_truncated"] += 1
                break
            n = int.from_bytes(pl[off:off + 2], "big")
            if off + 2 + n > len(pl):
                st["drop_truncated"] += 1
                break
            s = seq + i
            if s < nxt or s in held:
                st["duplicates"] += 1
            else:
                held[s] = pl[off + 2:off + 2 + n]
            off += 2 + n
        else:
            if off != len(pl):
                st["drop_trailing"] += 1
        flush()
    while held:                            # gaps no packet in the file filled
        s = min(held)
        st["gaps"] += s - nxt
        st["gap_events"] += 1
        nxt = s
        flush()
    st["messages"] = len(out)
    books.feed(b"".join(out))
    return {"format": "pcapng", "mold": st}


def _feed_with_progress(books: Books, path: str, console, meanwhile=None) -> dict:
    """The whole file into the books, a progress bar on a terminal after the first second;
    meanwhile() runs while the replay's thread works (not for a sequenced capture)."""
    if is_pcapng(path):
        from ..receive import pcapng
        if recovery_interfaces(pcapng.read(path, interfaces_only=True)):
            return feed_sequenced_capture(books, pcapng.read(path))
    size = os.path.getsize(path)
    t0 = time.monotonic()
    state = {"bar": None, "task": None}

    def progress(done):
        if state["bar"] is None:
            if time.monotonic() - t0 < 1.0:
                return
            from rich.progress import (BarColumn, DownloadColumn, Progress,
                                       TimeRemainingColumn, TransferSpeedColumn)
            state["bar"] = Progress("[progress.description]{task.description}", BarColumn(),
                                    DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                    console=console, transient=True)
            state["bar"].start()
            state["task"] = state["bar"].add_task(os.path.basename(path), total=size)
        state["bar"].update(state["task"], completed=done)

    use_bar = console is not None and console.is_terminal
    try:
        return books.feed_file(path, progress if use_bar else None, meanwhile)
    finally:
        if state["bar"] is not None:
            state["bar"].stop()


def _read_hint(e: OSError) -> str:
    if e.errno == errno.EPIPE:
        return "the file is cut short (an interrupted download?): the books above that point were built"
    if e.errno == errno.EBADMSG:
        return "the file is damaged or not gzip: check it with gzip -t"
    return "is the file a complete ITCH file or capture?"


def _check_readable(path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise HftcapError(f"{path}: no such file",
                          hint="give a NASDAQ ITCH 5.0 file (plain or .gz), a pcap or a pcapng") from None
    except IsADirectoryError:
        raise HftcapError(f"{path}: is a directory", hint="give a file, not a directory") from None
    except OSError as e:
        raise HftcapError(f"{path}: cannot read: {e.strerror}", hint="check the file's permissions") from None


def _levels_json(bids, asks) -> dict:
    return {"bids": [[format_price(p), s, o] for p, s, o in bids],
            "asks": [[format_price(p), s, o] for p, s, o in asks]}


def _book_json(book: Book) -> dict:
    return _levels_json(book.levels("bid"), book.levels("ask"))


def run_book(path, symbol=None, levels=10, bbo=False, json_out=False, console=None) -> int:
    """`hftcap book FILE [--symbol S] [--levels N] [--bbo] [--json]`: replay a file into the
    books and print the final book of one stock, message counts by type and drops by reason.
    Returns the exit code; raises HftcapError for a missing/unreadable file or unknown symbol."""
    path = os.fspath(path)
    if levels < 1:
        raise HftcapError(f"--levels must be at least 1 (got {levels})", code=2)
    if console is None and (not json_out or sys.stdout.isatty()):
        from rich.console import Console  # the table, or the progress bar on a terminal
        console = Console(stderr=False)
    _check_readable(path)
    books = Books(prefault=False)
    if bbo and symbol:
        books.record_bbo(symbol.strip().upper()[:8])
    # json (~10 ms of imports, most of it re) loads on this thread while the replay's C thread
    # works; a Python thread of its own, alive at exit, could crash the interpreter's shutdown
    t0 = time.monotonic()
    try:
        feed = _feed_with_progress(books, path, console,
                                   (lambda: __import__("json")) if json_out else None)
    except OSError as e:
        raise HftcapError(f"{path}: {e.strerror or e}", hint=_read_hint(e)) from None
    elapsed = time.monotonic() - t0
    stats = books.stats()
    note = None
    if symbol:
        try:
            locate = books.locate(symbol)
        except KeyError:
            known = [s for _, s in books.symbols()][:8]
            raise HftcapError(f"symbol {symbol!r} not in {path}",
                              hint=("symbols in the file include: " + ", ".join(known)) if known
                              else "the file has no stock directory (R) messages") from None
        sym = books.info(locate)["symbol"]
    else:
        pick = books.most_active()
        if pick is None:
            raise HftcapError(f"no stock messages in {path}",
                              hint="is this an ITCH 5.0 file, or a capture of MoldUDP64 ITCH?")
        locate, sym = pick
        note = f"no --symbol given: showing the most active stock, {sym} (locate {locate})"
        if bbo:  # BBO changes are recorded while feeding: a second pass for the chosen stock
            books = Books()
            books.record_bbo(locate)
            feed = _feed_with_progress(books, path, console)
            stats = books.stats()
    bids, asks = books.levels(locate, levels)
    info = books.info(locate)
    changes = books.bbo_changes() if bbo else None
    msgs = {k: v for k, v in stats["messages"].items() if v}
    total = sum(stats["messages"].values())

    if json_out:
        import json
        out = {"symbol": sym, "locate": locate, "file": path, "format": feed["format"],
               "messages": msgs, "drops": stats["drops"], "book": _levels_json(bids, asks),
               "trading_state": info["trading_state"], "volume": info["volume"],
               "last_trade_price": format_price(info["last_trade_price_e4"]) if info["trades"] else None,
               "orders_live": info["orders_live"], "broken_trades": stats["broken_trades"],
               "broken_trades_note": "busted matches are counted, not subtracted from volume",
               "replay_seconds_monotonic": round(elapsed, 6)}
        if feed["format"] != "nasdaq":
            out["mold"] = feed["mold"]
        if note:
            out["note"] = note
        if changes is not None:
            out["bbo"] = [{"itch_ns": int(c["itch_ns"]),
                           "bid": [format_price(c["bid_price_e4"]), int(c["bid_shares"])] if c["bid_shares"] else None,
                           "ask": [format_price(c["ask_price_e4"]), int(c["ask_shares"])] if c["ask_shares"] else None}
                          for c in changes]
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
        return 0

    from rich.table import Table
    if note:
        console.print(f"[yellow]{note}[/]")
    if changes is not None:
        t = Table(title=f"{sym}: best bid/offer changes ({len(changes)})")
        for c in ("itch time (ns since midnight)", "bid shares", "bid", "ask", "ask shares"):
            t.add_column(c, justify="right")
        for c in changes:
            t.add_row(format_itch_ns(c["itch_ns"]),
                      str(c["bid_shares"]) if c["bid_shares"] else "-",
                      format_price(c["bid_price_e4"]) if c["bid_shares"] else "-",
                      format_price(c["ask_price_e4"]) if c["ask_shares"] else "-",
                      str(c["ask_shares"]) if c["ask_shares"] else "-")
        console.print(t)
    t = Table(title=f"{sym} (locate {locate}) state {info['trading_state'] or '?'}: "
                    f"top {levels} levels at end of file")
    for c in ("bid orders", "bid shares", "bid", "ask", "ask shares", "ask orders"):
        t.add_column(c, justify="right")
    for i in range(max(len(bids), len(asks))):
        b = bids[i] if i < len(bids) else None
        a = asks[i] if i < len(asks) else None
        t.add_row(str(b[2]) if b else "", str(b[1]) if b else "", format_price(b[0]) if b else "",
                  format_price(a[0]) if a else "", str(a[1]) if a else "", str(a[2]) if a else "")
    console.print(t)
    last = format_price(info["last_trade_price_e4"]) if info["trades"] else "-"
    console.print(f"last trade {last}, volume {info['volume']} shares "
                  f"(E + printable C + P + Q; {stats['broken_trades']} B busts counted, not subtracted)")
    console.print("messages: " + ", ".join(f"{k} {v}" for k, v in sorted(msgs.items())) +
                  f" (total {total}, {feed['format']} layout, replayed in {elapsed:.2f} s monotonic)")
    d = {k: v for k, v in stats["drops"].items() if v}
    console.print("drops: " + (", ".join(f"{k} {v}" for k, v in d.items()) if d else "none"))
    if feed["format"] != "nasdaq":
        m = feed["mold"]
        console.print(f"moldudp64: {m['packets']} packets, {m['messages']} messages, "
                      f"{m['gaps']} missing, {m['duplicates']} duplicates")
    return 0
