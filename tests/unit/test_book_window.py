"""The order-reference index (a sliding window of directly indexed references, a hash table for
the rest): hostile reference patterns -- huge references, jumps past the window, references
below it, duplicates, references parked in the table above the window that a later slide
covers -- checked against tests/refmodel.py and with the invariant checker after every event.
Books(1024) gets the smallest window (2048 references), so these streams slide it often."""
import pathlib
import random
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from refmodel import encode, frame  # noqa: E402
from test_book_diff import compare  # noqa: E402

from hftcap import _core  # noqa: E402

WIN = 2048  # window of Books(1024) (HC_WIN_MIN in book.c)


def add(ref, side="B", shares=100, price=100_0000, loc=1, ts=1):
    return encode("A", loc, 0, ts, order_reference_number=ref, buy_sell_indicator=side,
                  shares=shares, stock="T", price_e4=price)


def hostile_refs_stream(seed, n):
    rng = random.Random(seed)
    msgs, used = [], [1]
    nxt = 1
    for i in range(n):
        ts = i + 1
        loc = rng.randrange(1, 4)
        k = rng.random()
        if k < 0.45:  # add: mostly dense increasing, sometimes a jump, huge, low or reused
            j = rng.random()
            if j < 0.75:
                nxt += rng.randrange(1, 4)
                ref = nxt
            elif j < 0.85:
                nxt += rng.randrange(WIN, 50 * WIN)
                ref = nxt
            elif j < 0.9:
                ref = rng.randrange(1 << 40, 1 << 64)
            elif j < 0.95:
                ref = rng.randrange(1, 5000)
            else:
                ref = rng.choice(used)  # duplicate when still live
            used.append(ref)
            msgs.append(add(ref, rng.choice("BS"), rng.choice([1, 100, 300]),
                            100_0000 + 100 * rng.randrange(-30, 30), loc, ts))
        else:
            ref = rng.choice(used[-3000:]) if rng.random() < 0.9 else rng.choice(used)
            t = rng.choice("XDECU")
            if t == "X":
                msgs.append(encode("X", loc, 0, ts, order_reference_number=ref,
                                   canceled_shares=rng.choice([1, 50, 100])))
            elif t == "D":
                msgs.append(encode("D", loc, 0, ts, order_reference_number=ref))
            elif t == "E":
                msgs.append(encode("E", loc, 0, ts, order_reference_number=ref,
                                   executed_shares=rng.choice([1, 100]), match_number=i))
            elif t == "C":
                msgs.append(encode("C", loc, 0, ts, order_reference_number=ref, executed_shares=50,
                                   match_number=i, printable="Y", execution_price_e4=5))
            else:
                nxt += 1
                new = nxt if rng.random() < 0.8 else \
                    rng.choice([rng.randrange(1, 1 << 64), nxt + 3 * WIN])
                used.append(new)
                msgs.append(encode("U", loc, 0, ts, original_order_reference_number=ref,
                                   new_order_reference_number=new, shares=rng.choice([0, 100]),
                                   price_e4=100_0000 + 100 * rng.randrange(-30, 30)))
    return frame(msgs)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hostile_references_match_reference(seed):
    b, ref = compare(hostile_refs_stream(seed, 30000), check_queues=True)
    assert ref.drops["duplicate_ref"] > 10 and ref.drops["unknown_ref"] > 10


def test_hostile_references_invariants_after_every_event():
    b = _core.Books(1024)
    applied, bad, code = b.feed_checked(hostile_refs_stream(4, 8000), allow_crossed=True)
    assert (applied, bad, code) == (8000, -1, 0)


def test_references_parked_above_the_window_are_found_after_it_slides_over_them():
    # Lone references a few windows above the current one are refused a jump (the window holds
    # live orders and nothing confirms the jump) and wait in the table above the window. A
    # dense walk up then slides the window over them: each must be pulled into it and found.
    msgs = [add(r, price=100_0000) for r in range(1, 101)]
    parked = [3 * WIN + 6, 5 * WIN + 77, 7 * WIN + 3, 9 * WIN + 1000, 30 * WIN]
    msgs += [add(r, price=100_0100 + i) for i, r in enumerate(parked)]
    msgs += [add(r, side="S", price=200_0000) for r in range(101, 12 * WIN, 16)]
    msgs += [encode("E", 1, 0, 9, order_reference_number=r, executed_shares=40, match_number=r)
             for r in parked]
    msgs += [encode("X", 1, 0, 9, order_reference_number=r, canceled_shares=1)
             for r in range(1, 12 * WIN, 7)]
    data = frame(msgs)
    b, ref = compare(data, check_queues=True)
    assert ref.drops["unknown_ref"] > 0 and ref.drops["duplicate_ref"] == 0
    assert b.check() == 0
    for i, r in enumerate(parked):
        assert b.level_orders(1, 0, 100_0100 + i) == [(r, 60)]
    b2 = _core.Books(1024)
    assert b2.feed_checked(data) == (len(msgs), -1, 0)


def test_one_stray_huge_reference_does_not_carry_the_window_away():
    msgs = [add(r) for r in range(1, 1001)] + [add((1 << 64) - 5)]
    msgs += [add(r) for r in range(1001, 8 * WIN)]
    msgs += [encode("D", 1, 0, 9, order_reference_number=r) for r in range(1, 8 * WIN)]
    msgs += [encode("D", 1, 0, 9, order_reference_number=(1 << 64) - 5)]
    b, ref = compare(frame(msgs))
    assert b.stats()["orders_live"] == 0 and b.check() == 0


def test_extreme_references():
    top = (1 << 64) - 1
    refs = [top, top - 1, 0, 1, top - WIN, 1 << 63, (1 << 63) - 1, WIN, WIN - 1, 2 * WIN]
    msgs = [add(r, price=100_0000 + i) for i, r in enumerate(refs)]
    msgs += [add(r, price=1) for r in refs]  # all duplicates
    msgs += [encode("X", 1, 0, 2, order_reference_number=r, canceled_shares=99) for r in refs]
    msgs += [encode("U", 1, 0, 3, original_order_reference_number=refs[i],
                    new_order_reference_number=refs[i - 1] if i else top - 2, shares=5, price_e4=7)
             for i in range(len(refs))]
    b, ref = compare(frame(msgs), check_queues=True)
    assert ref.drops["duplicate_ref"] == len(refs)
    assert b.check() == 0
