"""ITCH 5.0 decoder: every type field by field against an encoder built from the spec tables,
extreme values, and every truncation / bad length / unknown type."""
import pathlib
import random
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from refmodel import LENGTHS, SPEC, encode, frame  # noqa: E402

from hftcap import _core  # noqa: E402

MAX_PRICE_E4 = 0x77359400  # 200,000.0000, the spec's maximum Price(4)


def random_fields(mtype, rng, extreme=False):
    f = {}
    for name, size, kind in SPEC[mtype]:
        if kind == "a":
            f[name] = "".join(rng.choice("ABCXYZ019 ") for _ in range(size)).rstrip(" ") or "Q"
        elif extreme:
            f[name] = MAX_PRICE_E4 if name.endswith("_e4") else (1 << (8 * size)) - 1
        else:
            f[name] = rng.randrange(1 << (8 * size))
    return f


def expected(mtype, fields, locate, tracking, ts):
    d = {"type": mtype, "stock_locate": locate, "tracking_number": tracking, "timestamp_ns": ts}
    for name, size, kind in SPEC[mtype]:
        v = fields[name]
        d[name] = v.ljust(size) if kind == "a" else v
    return d


def test_spec_lengths_match_table3():
    for t, fields in SPEC.items():
        assert 11 + sum(s for _, s, _ in fields) == LENGTHS[t], t
    assert len(SPEC) == 23


@pytest.mark.parametrize("mtype", sorted(SPEC))
def test_every_type_field_by_field(mtype):
    rng = random.Random(ord(mtype))
    for i in range(50):
        f = random_fields(mtype, rng)
        loc, trk, ts = rng.randrange(65536), rng.randrange(65536), rng.randrange(1 << 48)
        msg = encode(mtype, loc, trk, ts, **f)
        assert len(msg) == LENGTHS[mtype]
        assert _core.itch_decode(msg) == expected(mtype, f, loc, trk, ts)


@pytest.mark.parametrize("mtype", sorted(SPEC))
def test_extreme_values(mtype):
    f = random_fields(mtype, random.Random(1), extreme=True)
    msg = encode(mtype, 65535, 65535, (1 << 48) - 1, **f)
    d = _core.itch_decode(msg)
    assert d == expected(mtype, f, 65535, 65535, (1 << 48) - 1)
    if mtype in "AFU":
        assert d["price_e4"] == MAX_PRICE_E4 and d["shares"] == 0xFFFFFFFF
    if mtype == "Q":
        assert d["shares"] == (1 << 64) - 1  # u64 shares in the cross trade
    if mtype == "V":
        assert d["level1_e8"] == (1 << 64) - 1


@pytest.mark.parametrize("mtype", sorted(SPEC))
def test_truncation_at_every_byte_and_overlong(mtype):
    msg = encode(mtype, 7, 1, 123456789, **random_fields(mtype, random.Random(2)))
    with pytest.raises(ValueError, match="^empty$"):
        _core.itch_decode(b"")
    for k in range(1, len(msg)):
        with pytest.raises(ValueError, match="^truncated$"):
            _core.itch_decode(msg[:k])
    with pytest.raises(ValueError, match="^bad_length$"):
        _core.itch_decode(msg + b"\0")


def test_unknown_types():
    known = set(SPEC)
    for c in range(256):
        if chr(c) in known:
            continue
        with pytest.raises(ValueError, match="^unknown_type$"):
            _core.itch_decode(bytes([c]) + b"\0" * 30)


def test_stream_truncation_at_every_byte_counted_and_rest_decoded():
    """Each type truncated at every byte inside a NASDAQ-layout stream, each followed by a good
    message: every bad record is one counted drop and every good one is applied."""
    rng = random.Random(3)
    msgs, trunc, empty = [], 0, 0
    good = encode("S", 0, 0, 5, event_code="Q")
    for t in sorted(SPEC):
        full = encode(t, 1, 0, 9, **random_fields(t, rng))
        for k in range(len(full)):
            msgs.append(full[:k])
            msgs.append(good)
            if k == 0:
                empty += 1
            else:
                trunc += 1
    books = _core.Books()
    data = frame(msgs)
    assert books.feed(data) == len(data)
    st = books.stats()
    assert st["drops"]["truncated"] == trunc
    assert st["drops"]["empty"] == empty
    assert st["messages"]["S"] == trunc + empty
    assert sum(st["messages"].values()) == trunc + empty


def test_stream_unknown_type_and_bad_length_skipped_by_framing():
    a = encode("A", 1, 0, 1, order_reference_number=1, buy_sell_indicator="B", shares=100,
               stock="AAPL", price_e4=1_000_000)
    msgs = [b"Z" + b"\1" * 40, a + b"\0\0", encode("S", event_code="O"), b"z", a,
            bytes([0xFF]) * 3, encode("D", 1, 0, 2, order_reference_number=1)]
    books = _core.Books()
    books.feed(frame(msgs))
    st = books.stats()
    assert st["drops"]["unknown_type"] == 3
    assert st["drops"]["bad_length"] == 1
    assert st["messages"]["A"] == 1 and st["messages"]["D"] == 1 and st["messages"]["S"] == 1
    assert st["orders_live"] == 0 and st["drops"]["unknown_ref"] == 0


@pytest.mark.parametrize("cut", [1, 2, 3, 13])
def test_buffer_ending_mid_record(cut):
    a = encode("S", 0, 0, 1, event_code="O")
    data = frame([a, a])
    tail = frame([a])[:cut]  # ends inside the length prefix (cut 1) or inside the message
    books = _core.Books()
    assert books.feed(data + tail, final=False) == len(data)  # partial record left for later
    assert books.stats()["drops"]["file_truncated"] == 0
    books2 = _core.Books()
    assert books2.feed(data + tail) == len(data) + len(tail)
    st = books2.stats()
    assert st["drops"]["file_truncated"] == 1 and st["messages"]["S"] == 2


def test_decode_only_counts():
    msgs = [encode("S", event_code="O"), b"", b"Z", encode("B", 1, match_number=5)[:-1]]
    n, drops = _core.decode_only(frame(msgs) + b"\0")
    assert n == 1
    assert drops == {"empty": 1, "unknown_type": 1, "truncated": 1, "file_truncated": 1}
