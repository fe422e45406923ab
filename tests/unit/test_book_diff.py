"""Differential: C books vs tests/refmodel.py on long randomized streams, every stock, full depth."""
import pathlib
import struct
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from refmodel import RefBooks, decode, unframe  # noqa: E402
from test_book import nasty_stream  # noqa: E402

from hftcap import _core, gen  # noqa: E402


def c_book(b, loc):
    raw_b, raw_a = b.book_raw(loc, 1 << 20)
    f = lambda r: [(p, s, o) for p, o, s in (struct.unpack_from("<IIQ", r, i) for i in range(0, len(r), 16))]
    return f(raw_b), f(raw_a)


def compare(data, check_queues=False):
    b = _core.Books(1024)  # small start: pools and the table grow during the run
    b.feed(data)
    ref = RefBooks()
    for m in unframe(data):
        ref.apply(decode(m))
    locs = {loc for loc, _ in b.symbols()}
    assert ref.locates() <= locs
    for loc in locs:
        assert c_book(b, loc) == ref.book(loc), loc
        info = b.info(loc)
        assert info["volume"] == ref.volume[loc]
        assert info["last_trade_price_e4"] == ref.last_price.get(loc, 0)
        if check_queues:
            for side in (0, 1):
                for p, _, _ in ref.book(loc)[side]:
                    assert b.level_orders(loc, side, p) == ref.queue(loc, side, p)
    st = b.stats()["drops"]
    for k in ("unknown_ref", "duplicate_ref", "over_reduce", "zero_shares", "bad_side"):
        assert st[k] == ref.drops[k], k
    assert b.check() in (0, -1000)
    return b, ref


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_stream_matches_reference(seed):
    b, ref = compare(gen.generate(seed, 5, 60000), check_queues=(seed == 1))
    assert sum(ref.drops.values()) == 0  # consistent stream: nothing dropped
    assert b.check() == 0


@pytest.mark.parametrize("seed", [7, 8])
def test_nasty_stream_matches_reference(seed):
    b, ref = compare(nasty_stream(seed, 40000), check_queues=True)
    assert ref.drops["unknown_ref"] > 1000 and ref.drops["duplicate_ref"] > 100
