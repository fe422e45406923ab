"""hftcap's Book Snapshot message 'Z' (hftcap's own, NOT part of ITCH 5.0) and snapshot streams.

A snapshot stream is a delta stream in which every book message (A F E C X D U) is replaced by
one Z carrying the top N levels per side of that message's stock after it: the same number of
updates, so at the same message rate the same update rate. Other messages pass unchanged.
Layout (C: hftcap/_core/snap.h; DESIGN.md "Book Snapshot"): the 11-byte ITCH common header
(type 'Z', stock locate, tracking number, ts48), N (u8), then N bid and N ask levels best
first, each price u32 P4 | shares u32 | orders u32, empty levels all zero: 12 + 24 N bytes.

The receiver (hftcap._core.SnapTable, fed by the consumer in the data thread) keeps the last
Z of each stock; `SnapshotBooks` answers book()/symbols()/info() from it for stocks that have
one and from the order books otherwise, so listen, its live view and --json work unchanged.
"""
from __future__ import annotations

import struct

import numpy as np

from .. import _core
from ..book.books import LEVEL_DTYPE, Book, Books
from ..errors import UsageError

MODES = ("delta", "snapshot")
MAX_LEVELS = _core.SNAP_MAX_LEVELS
BOOK_TYPES = "AFECXDU"
HEADER = struct.Struct(">cHH6sB")  # type, locate, tracking, ts48, N
LEVEL = struct.Struct(">III")      # price_e4, shares, orders


def snapshot_len(levels: int) -> int:
    return HEADER.size + 2 * levels * LEVEL.size


def check_levels(levels: int) -> None:
    if not 1 <= levels <= MAX_LEVELS:
        raise UsageError(f"--levels {levels}: expected 1 to {MAX_LEVELS} levels per side",
                         hint="a Book Snapshot carries N bid and N ask levels, 12 + 24 N bytes")


def to_snapshots(stream: bytes, levels: int = 5) -> tuple[bytes, dict]:
    """(snapshot stream, conversion stats) of a NASDAQ-layout delta stream (C, GIL released)."""
    check_levels(levels)
    return _core.snap_convert(stream, levels)


def book_updates(messages_by_type: dict) -> int:
    """Book updates among received messages: A F E C X D U of a delta stream, Z of a snapshot one."""
    return sum(int(messages_by_type.get(t, 0)) for t in BOOK_TYPES + "Z")


class SnapshotBooks(Books):
    """Order books plus the table of Book Snapshots of the same capture. A stock that has had
    a Z is answered from its last Z (top levels only, as sent); any other from the books."""

    def __init__(self, core, snaps):
        super().__init__(core=core)
        self.snaps = snaps

    def _snap_locates(self) -> set[int]:
        return set(self.snaps.locates())

    def stats(self) -> dict:
        st = dict(self.core.stats())
        ss = self.snaps.stats()
        st["messages"] = dict(st["messages"])
        st["messages"]["Z"] = ss["messages"]
        st["snapshot_drops"] = ss["drops"]
        return st

    def symbols(self):
        known = self.core.symbols()
        seen = {loc for loc, _ in known}
        return known + [(loc, "") for loc in sorted(self._snap_locates() - seen)]

    def info(self, locate: int) -> dict:
        try:
            info = dict(self.core.info(locate))
        except KeyError:
            info = {"locate": locate, "symbol": "", "messages": 0, "trading_state": ""}
        try:
            sn = self.snaps.info(locate)
        except KeyError:
            return info
        info["messages"] = info.get("messages", 0) + sn["messages"]
        info["snapshot"] = sn
        info["bid_levels"], info["ask_levels"] = sn["bid_levels"], sn["ask_levels"]
        return info

    def book(self, locate: int, levels: int = 10) -> Book:
        try:
            bids_raw, asks_raw = self.snaps.book_raw(locate, levels)
        except KeyError:
            return super().book(locate, levels)
        bids = np.frombuffer(bids_raw, dtype=LEVEL_DTYPE)
        asks = np.frombuffer(asks_raw, dtype=LEVEL_DTYPE)
        info = self.info(locate)
        return Book(locate, info.get("symbol", ""),
                    bids["price_e4"].copy(), bids["shares"].copy(), bids["orders"].copy(),
                    asks["price_e4"].copy(), asks["shares"].copy(), asks["orders"].copy(), info)
