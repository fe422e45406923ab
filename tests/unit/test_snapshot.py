"""hftcap's Book Snapshot 'Z' (not ITCH 5.0): the layout field by field, delta -> snapshot
conversion checked against the Python reference books message by message, the receiver's
table through the live consumer code (feed.c), and hostile snapshots."""
from __future__ import annotations

import pathlib
import struct
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from refmodel import RefBooks, decode, encode, frame, unframe  # noqa: E402

from hftcap import _core  # noqa: E402
from hftcap.feed import snapshots  # noqa: E402
from hftcap.book.books import Books  # noqa: E402
from hftcap.errors import UsageError  # noqa: E402
from bounds import bound

SESSION = b"SNAPTEST01"


def pkt(seq, msgs, count=None):
    body = b"".join(struct.pack(">H", len(m)) + m for m in msgs)
    return SESSION + struct.pack(">QH", seq, len(msgs) if count is None else count) + body


def packets(stream: bytes, k: int = 4):
    msgs = list(unframe(stream))
    return [pkt(1 + i, msgs[i:i + k]) for i in range(0, len(msgs), k)]


def parse_z(m: bytes):
    """Independent Python parse of the documented layout: (locate, tracking, ts, N, bids, asks)."""
    assert m[0:1] == b"Z"
    loc, trk = struct.unpack_from(">HH", m, 1)
    ts = int.from_bytes(m[5:11], "big")
    n = m[11]
    assert len(m) == 12 + 24 * n

    def side(off):
        lv = [struct.unpack_from(">III", m, off + 12 * i) for i in range(n)]
        out = [(p, s, o) for p, s, o in lv if s]
        assert lv[len(out):] == [(0, 0, 0)] * (n - len(out))  # empty levels: zero, at the end
        return out
    return loc, trk, ts, n, side(12), side(12 + 12 * n)


# ---------------------------------------------------------------- layout

def test_encode_field_by_field():
    m = _core.snap_encode(0x1234, 0xBEEF, 0x0102_0304_0506, 3,
                          [(100_0000, 500, 2), (99_9900, 70_000, 1)], [(100_0100, 1, 1)])
    assert len(m) == 12 + 24 * 3 == snapshots.snapshot_len(3)
    assert m[0:1] == b"Z"
    assert m[1:3] == b"\x12\x34" and m[3:5] == b"\xbe\xef"
    assert m[5:11] == bytes([1, 2, 3, 4, 5, 6])
    assert m[11] == 3
    bid = [struct.unpack_from(">III", m, 12 + 12 * i) for i in range(3)]
    ask = [struct.unpack_from(">III", m, 48 + 12 * i) for i in range(3)]
    assert bid == [(100_0000, 500, 2), (99_9900, 70_000, 1), (0, 0, 0)]
    assert ask == [(100_0100, 1, 1), (0, 0, 0), (0, 0, 0)]
    assert m[12 + 24:12 + 36] == bytes(12) and m[-24:] == bytes(24)


def test_encode_clamps_shares_and_rejects_bad_levels():
    m = _core.snap_encode(1, 0, 0, 1, [(1, 2**32 + 5, 3)], [])
    assert struct.unpack_from(">III", m, 12) == (1, 2**32 - 1, 3)
    for n in (0, _core.SNAP_MAX_LEVELS + 1):
        with pytest.raises(ValueError):
            _core.snap_encode(1, 0, 0, n, [], [])


def test_decode_field_by_field():
    n = 2
    m = (b"Z" + struct.pack(">HH", 7, 65535) + (86_399_999_999_999).to_bytes(6, "big") + bytes([n])
         + struct.pack(">III", 10_0000, 300, 3) + struct.pack(">III", 9_9999, 1, 1)
         + struct.pack(">III", 10_0001, 4_000_000_000, 65_536) + bytes(12))
    d = _core.snap_decode(m)
    assert d == {"type": "Z", "stock_locate": 7, "tracking_number": 65535, "timestamp_ns": 86_399_999_999_999,
                 "levels": 2, "bids": [(10_0000, 300, 3), (9_9999, 1, 1)], "asks": [(10_0001, 4_000_000_000, 65_536)]}


@pytest.mark.parametrize("n", [1, 5, 10, 32])
def test_round_trip(n):
    bids = [(200_0000 - 100 * i, 100 + i, 1 + i % 3) for i in range(n)]
    asks = [(200_0100 + 100 * i, 7 * i + 1, 2) for i in range(n - 1)]
    m = _core.snap_encode(65535, 1, 34_200_000_000_123, n, bids, asks)
    d = _core.snap_decode(m)
    assert (d["stock_locate"], d["tracking_number"], d["timestamp_ns"], d["levels"]) == (65535, 1, 34_200_000_000_123, n)
    assert d["bids"] == bids and d["asks"] == asks
    assert parse_z(m) == (65535, 1, 34_200_000_000_123, n, bids, asks)


# ---------------------------------------------------------------- hostile

def good_z(n=5):
    return _core.snap_encode(3, 0, 1000, n, [(100_0000 - i, 10 + i, 1) for i in range(n)],
                             [(100_0100 + i, 20 + i, 2) for i in range(n)])


def test_truncation_at_every_byte_is_a_drop_and_never_read_past():
    full = good_z(5)
    mv = memoryview(full)  # the bytes after the cut are still valid: reading past would succeed
    for cut in range(len(full)):
        with pytest.raises(ValueError) as e:
            _core.snap_decode(mv[:cut])
        assert str(e.value) == ("empty" if cut == 0 else "truncated")
    assert _core.snap_decode(mv)["levels"] == 5


def test_lying_levels_and_bad_levels():
    full = good_z(5)

    def with_n(n):
        return full[:11] + bytes([n]) + full[12:]
    with pytest.raises(ValueError, match="^truncated$"):   # N says 6: 12 + 144 > 132 bytes held
        _core.snap_decode(with_n(6))
    with pytest.raises(ValueError, match="^bad_length$"):  # N says 4: 12 + 96 < 132
        _core.snap_decode(with_n(4))
    for n in (0, 33, 255):
        with pytest.raises(ValueError, match="^bad_levels$"):
            _core.snap_decode(with_n(n))
    gap = bytearray(full)
    gap[12 + 12:12 + 24] = bytes(12)  # bid level 2 empty, level 3 not
    with pytest.raises(ValueError, match="^bad_level$"):
        _core.snap_decode(bytes(gap))
    junk = bytearray(full)
    junk[12 + 48 + 4:12 + 48 + 8] = bytes(4)  # bid level 5: shares 0 but price set
    with pytest.raises(ValueError, match="^bad_level$"):
        _core.snap_decode(bytes(junk))


def test_hostile_snapshots_through_the_consumer_are_counted_and_skipped():
    t = _core.SnapTable()
    good = good_z(5)
    later = _core.snap_encode(3, 0, 2000, 5, [(50_0000, 1, 1)], [])
    hostile = [good[:40], good[:11] + bytes([9]) + good[12:], good[:11] + bytes([0]) + good[12:],
               good + b"\x00", b"Z"]
    st = t.consume([pkt(1, [good]), pkt(2, hostile), pkt(2 + len(hostile), [later])], timing=True)
    assert st["messages"] == 2 + len(hostile) and st["books_drops"] == {} and st["books_messages"] == {}
    s = t.stats()
    assert s["messages"] == 2 and s["stocks"] == 1
    assert s["drops"] == {"empty": 0, "truncated": 3, "bad_length": 1, "bad_levels": 1, "bad_level": 0,
                          "not_snapshot": 0, "no_memory": 0}
    assert t.info(3)["itch_ns"] == 2000 and t.info(3)["messages"] == 2
    bids, asks = t.book_raw(3, 10)
    assert len(bids) == 16 and asks == b""


def test_a_mold_block_cut_short_is_not_decoded():
    """The Z's framing length says 40 while its N says 5 (132 bytes) and the datagram holds
    the rest: the consumer must decode within the block, count a drop, and go on."""
    good = good_z(5)
    blk = struct.pack(">H", 40) + good[:40]
    rest = good[40:]  # decoded as the next block's length + body: garbage the mold layer handles
    st = _core.SnapTable().consume([SESSION + struct.pack(">QH", 1, 1) + blk + rest])
    t = _core.SnapTable()
    t.consume([SESSION + struct.pack(">QH", 1, 1) + blk])
    assert t.stats()["messages"] == 0 and t.stats()["drops"]["truncated"] == 1
    assert st["messages"] == 1


# ---------------------------------------------------------------- conversion

def book_msgs(stream):
    return [m for m in unframe(stream) if m[:1] in b"AFECXDU"]


@pytest.mark.parametrize("levels", [1, 5, 10])
def test_every_snapshot_matches_the_reference_book(levels):
    """Each Z is the top N of its stock right after the delta it replaces (reference books in
    Python), with that delta's locate, tracking number and timestamp; other records pass
    unchanged and in order."""
    delta = _core.generate(11, 6, 4000)
    snap, st = snapshots.to_snapshots(delta, levels)
    din, sout = list(unframe(delta)), list(unframe(snap))
    assert len(sout) == len(din) == st["records"] == 4000
    nbook = len(book_msgs(delta))
    assert st["snapshots"] == nbook == sum(m[:1] == b"Z" for m in sout) and st["passed"] == 4000 - nbook
    assert st["book_drops"] == {} and st["shares_clamped"] == 0 and st["bytes_out"] == len(snap)
    ref = RefBooks()
    for d, s in zip(din, sout):
        dm = decode(d)
        ref.apply(dm)
        if d[:1] not in b"AFECXDU":
            assert s == d
            continue
        loc, trk, ts, n, bids, asks = parse_z(s)
        assert (loc, trk, ts, n) == (dm["stock_locate"], dm["tracking_number"], dm["timestamp_ns"], levels)
        rb, ra = ref.book(loc)
        assert (bids, asks) == (rb[:levels], ra[:levels])


def test_final_books_equal_last_snapshot_of_each_stock():
    delta = _core.generate(5, 16, 60_000)
    snap, st = snapshots.to_snapshots(delta, 5)
    b = Books()
    b.feed(delta)
    last = {}
    for m in unframe(snap):
        if m[:1] == b"Z":
            z = parse_z(m)
            last[z[0]] = z
    assert sorted(last) == [loc for loc, _ in b.symbols()] == list(range(1, 17))
    t = _core.SnapTable()
    assert t.feed(snap) == (60_000, st["snapshots"])
    assert t.stats()["drops"]["not_snapshot"] == st["passed"]
    for loc, z in last.items():
        bk = b.book(loc, 5)
        assert (z[4], z[5]) == (bk.levels("bid"), bk.levels("ask"))
        assert t.book_raw(loc, 5) == b.core.book_raw(loc, 5)


def test_conversion_edge_cases():
    # a book message for an unknown order still gives one Z (the stock's unchanged top)
    recs = [encode("R", 2, 0, 1, stock="EDGE", market_category="Q", round_lot_size=100, authenticity="P"),
            encode("A", 2, 0, 2, order_reference_number=1, buy_sell_indicator="B", shares=10, stock="EDGE",
                   price_e4=10_0000),
            encode("D", 9, 0, 3, order_reference_number=77)]
    bad = recs[1][:20]  # a truncated A passes unchanged: the receiver counts it like a delta receiver
    snap, st = snapshots.to_snapshots(frame(recs + [bad]) + b"\x00", 2)
    out = list(unframe(snap))
    assert st["snapshots"] == 2 and st["passed"] == 2 and st["tail_bytes"] == 1
    assert st["book_drops"] == {"truncated": 1, "unknown_ref": 1}
    assert out[0] == recs[0] and out[3] == bad
    assert parse_z(out[1])[4:] == ([(10_0000, 10, 1)], [])
    assert parse_z(out[2])[:2] == (9, 0) and parse_z(out[2])[4:] == ([], [])
    with pytest.raises(UsageError):
        snapshots.to_snapshots(b"", 0)
    with pytest.raises(UsageError):
        snapshots.to_snapshots(b"", 33)


# ---------------------------------------------------------------- the consumer (feed.c)

@pytest.mark.parametrize("timing", [False, True])
def test_consumer_applies_snapshot_stream(timing):
    delta = _core.generate(3, 8, 20_000)
    snap, st = snapshots.to_snapshots(delta, 5)
    pk = packets(snap, 4)
    t = _core.SnapTable()
    r = t.consume(pk, timing=timing)
    assert r["messages"] == 20_000 and r["gaps"] == 0 and r["packets"] == len(pk)
    assert r["books_drops"] == {}
    assert not set(r["books_messages"]) & set("AFECXDUZ")  # book updates all went to the table
    assert sum(r["books_messages"].values()) == st["passed"]
    assert t.stats()["messages"] == st["snapshots"] and not any(t.stats()["drops"].values())
    if timing:  # the Z apply is timed as decode -> book, one sample per packet
        assert r["decode_to_book_samples"] == r["dequeue_to_decode_samples"] == len(pk)
    b = Books()
    b.feed(delta)
    sb = snapshots.SnapshotBooks(b.core, t)
    for loc, sym in b.symbols():
        assert sb.book(loc, 5).levels("bid") == b.book(loc, 5).levels("bid")
        assert sb.book(loc, 5).levels("ask") == b.book(loc, 5).levels("ask")
        assert sb.book(loc, 5).symbol == sym


def test_delta_stream_through_consumer_leaves_the_table_empty():
    delta = _core.generate(3, 8, 20_000)
    t = _core.SnapTable()
    r = t.consume(packets(delta, 8))
    assert t.stats() == {"messages": 0, "stocks": 0, "drops": dict.fromkeys(_core.SNAP_DROP_NAMES, 0)}
    ref = Books()
    ref.feed(delta)
    want = {k: v for k, v in ref.stats()["messages"].items() if v}
    assert r["books_messages"] == want and r["books_drops"] == {}


def test_snapshot_books_view():
    t = _core.SnapTable()
    b = Books()
    b.feed(frame([encode("R", 1, 0, 1, stock="AAA", market_category="Q", round_lot_size=100, authenticity="P"),
                  encode("R", 2, 0, 1, stock="BBB", market_category="Q", round_lot_size=100, authenticity="P"),
                  encode("A", 2, 0, 2, order_reference_number=1, buy_sell_indicator="S", shares=5, stock="BBB",
                         price_e4=20_0000)]))
    t.feed(frame([_core.snap_encode(1, 0, 5, 2, [(10_0000, 100, 2)], [(10_0100, 50, 1)]),
                  _core.snap_encode(4, 0, 6, 1, [], [(1, 1, 1)])]))
    sb = snapshots.SnapshotBooks(b.core, t)
    assert sb.symbols() == [(1, "AAA"), (2, "BBB"), (4, "")]
    bk = sb.book(1, 10)
    assert bk.symbol == "AAA" and bk.levels("bid") == [(10_0000, 100, 2)] and bk.levels("ask") == [(10_0100, 50, 1)]
    assert bk.info["snapshot"]["levels"] == 2 and bk.info["messages"] == 2  # R + Z
    assert sb.book(2, 10).levels("ask") == [(20_0000, 5, 1)]  # no Z: the order book
    assert sb.book(4, 1).levels("ask") == [(1, 1, 1)]
    assert sb.stats()["messages"]["Z"] == 2 and sb.locate("AAA") == 1


def test_exchange_writes_the_snapshot_stream(tmp_path):
    from hftcap.lab.exchange import run_exchange
    out = tmp_path / "snap.itch"
    r = run_exchange(None, "239.1.1.1:26400", {"seed": 4, "stocks": 4, "messages": 5000}, write=str(out),
                     mode="snapshot", snapshot_levels=3)
    want, st = _core.snap_convert(_core.generate(4, 4, 5000), 3)
    assert out.read_bytes() == want
    assert r["mode"] == "snapshot" and r["snapshot_levels"] == 3 and r["messages"] == 5000
    assert r["conversion"]["snapshots"] == st["snapshots"] and r["conversion"]["delta_bytes"] < len(want)
    with pytest.raises(UsageError):
        run_exchange(None, "239.1.1.1:26400", None, write=str(out), mode="full")
    with pytest.raises(UsageError):
        run_exchange(None, "239.1.1.1:26400", None, write=str(out), mode="snapshot", snapshot_levels=0)


def test_snapshot_path_under_asan_ubsan(tmp_path):
    """tests/c/snap_fuzz.c: mutated snapshot packets through feed.c + snap.c under sanitizers."""
    from sanitized import ROOT, build_and_run
    run = build_and_run(tmp_path, ROOT / "tests" / "c" / "snap_fuzz.c",
                        ["feed", "snap", "book", "itch", "mold", "hist", "gen", "join", "spin", "recovery"], libs=["-lm"], timeout=bound(120))
    assert run.stdout.startswith("ok: ")
