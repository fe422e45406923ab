"""Deterministic ITCH 5.0 streams in NASDAQ file layout (the C generator in _core/gen.c).

The same (seed, stocks, messages) gives the same bytes on every run: S 'O', R and H 'T' per
stock (locates 1..stocks, stock 1 the most active), S 'Q', consistent order flow (A/F, X, D,
E, C, U, P, Q; no crossed book, no reference to a dead order), S 'C'; exactly `messages`
messages.
"""
from __future__ import annotations

import gzip as _gzip
import os

from .. import _core

MAX_STOCKS = 8192


def generate(seed: int, stocks: int, messages: int) -> bytes:
    """The stream as bytes (u16 BE length before each message)."""
    return _core.generate(int(seed), int(stocks), int(messages))


def write_file(path: str | os.PathLike, seed: int, stocks: int, messages: int,
               gzip: bool = False) -> int:
    """Write the stream to `path` (gzip-compressed when gzip=True); returns bytes written."""
    data = generate(seed, stocks, messages)
    if gzip:
        with _gzip.open(path, "wb", compresslevel=1) as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return os.path.getsize(path)
