"""Differential: C books vs tests/refmodel.py on long randomized streams, every stock, full depth."""
import pathlib
import struct
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from refmodel import RefBooks, decode, encode, frame, unframe  # noqa: E402
from test_book import nasty_stream  # noqa: E402

from hftcap import _core  # noqa: E402
from hftcap.lab import gen  # noqa: E402


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


def level_churn_stream(seed, n, prices=600):
    """Orders over `prices` distinct prices per side (bids below asks, never crossed), deleted,
    executed, cancelled and replaced at random: levels are created and emptied all the time, the
    level arrays grow past 64, 128, 256 and 512, and freed level slots are reused."""
    import random
    rng = random.Random(seed)
    live, msgs, ref = [], [], 0
    for i in range(n):
        ts = i + 1
        if not live or rng.random() < 0.5:
            ref += 1
            side = rng.choice("BS")
            tick = rng.randrange(prices)
            price = (100_0000 - 100 * tick) if side == "B" else (100_0100 + 100 * tick)
            msgs.append(encode("A", 1, 0, ts, order_reference_number=ref, buy_sell_indicator=side,
                               shares=rng.randrange(1, 500), stock="LVL", price_e4=price))
            live.append((ref, side))
            continue
        k = rng.randrange(len(live))
        r, side = live[k]
        t = rng.choice("DDEXU")
        if t == "D":
            msgs.append(encode("D", 1, 0, ts, order_reference_number=r))
            live[k] = live[-1]
            live.pop()
        elif t in "EX":  # a share each: partial until the order is gone (over-reduce clamps)
            kw = {"executed_shares": 1, "match_number": i} if t == "E" else {"canceled_shares": 1}
            msgs.append(encode(t, 1, 0, ts, order_reference_number=r, **kw))
        else:
            ref += 1
            tick = rng.randrange(prices)
            price = (100_0000 - 100 * tick) if side == "B" else (100_0100 + 100 * tick)
            msgs.append(encode("U", 1, 0, ts, original_order_reference_number=r,
                               new_order_reference_number=ref, shares=rng.randrange(1, 500),
                               price_e4=price))
            live[k] = (ref, side)
    return frame(msgs)


def test_level_churn_matches_reference():
    data = level_churn_stream(3, 60000)
    assert len(data) > 1 << 20  # long enough for the pipelined loop of Books.feed
    b, ref = compare(data, check_queues=True)
    bids, asks = ref.book(1)
    assert len(bids) > 512 and len(asks) > 512  # the level arrays grew past 512
    assert b.check() == 0


def test_level_churn_invariants_after_every_event():
    b = _core.Books(1024)
    applied, bad, code = b.feed_checked(level_churn_stream(4, 8000, prices=200))
    assert (applied, bad, code) == (8000, -1, 0)
