"""Deterministic ITCH 5.0 streams in NASDAQ file layout (the C generator in _core/gen.c).

The same (seed, stocks, messages, profile) gives the same bytes on every run. Profiles:
  basic  S 'O', R and H 'T' per stock (locates 1..stocks, stock 1 the most active), S 'Q',
         consistent order flow (A/F, X, D, E, C, U, P, Q; no crossed book, no reference to a
         dead order), S 'C'; a few hundred live orders per stock.
  day    the shape of a real NASDAQ day (ITCH50.md, "Real trading days"; gen.h says how):
         8,900 stocks by default with Zipf-like activity, the real message mix, long-lived
         orders rested before the open (messages / 28, at most 1.8 M), most orders dying
         within a few messages, non-monotonic references, updates deep in the book.
Exactly `messages` messages in both.
"""
from __future__ import annotations

import gzip as _gzip
import os

from .. import _core

MAX_STOCKS = 8192
PROFILES = ("basic", "day")
MAX_STOCKS_BY_PROFILE = {"basic": MAX_STOCKS, "day": 16384}
DAY_STOCKS = 8900


def min_messages(stocks: int, profile: str = "basic") -> int:
    """The fewest messages a stream of `stocks` stocks can have (directory, states, events)."""
    return 3 * stocks + 16 if profile == "day" else 2 * stocks + 3


def generate(seed: int, stocks: int, messages: int, profile: str = "basic") -> bytes:
    """The stream as bytes (u16 BE length before each message). ValueError on bad parameters."""
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r}: expected one of {', '.join(PROFILES)}")
    return _core.generate(int(seed), int(stocks), int(messages), profile == "day")


def write_file(path: str | os.PathLike, seed: int, stocks: int, messages: int,
               gzip: bool = False, profile: str = "basic") -> int:
    """Write the stream to `path` (gzip-compressed when gzip=True); returns bytes written."""
    data = generate(seed, stocks, messages, profile)
    if gzip:
        with _gzip.open(path, "wb", compresslevel=1) as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return os.path.getsize(path)
