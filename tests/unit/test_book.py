"""Book semantics message by message, invariants after every event, snapshots under a
concurrent feed, BBO recording, and `hftcap book` (run_book) output."""
import json
import pathlib
import sys
import threading

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from refmodel import RefBooks, decode, encode, frame, unframe  # noqa: E402

from hftcap import _core  # noqa: E402
from hftcap.book import books as books_mod  # noqa: E402
from hftcap.lab import gen  # noqa: E402
from hftcap.errors import HftcapError  # noqa: E402


def A(ref, side="B", shares=100, price=100_0000, loc=1, ts=1):
    return encode("A", loc, 0, ts, order_reference_number=ref, buy_sell_indicator=side,
                  shares=shares, stock="TEST", price_e4=price)


def levels(b, loc=1, n=100):
    bk = books_mod.Books(core=b).book(loc, n)
    return bk.levels("bid"), bk.levels("ask")


def test_add_execute_cancel_delete_replace():
    b = _core.Books()
    b.feed(frame([
        encode("R", 1, 0, 1, stock="TEST", market_category="Q", round_lot_size=100, authenticity="P"),
        encode("H", 1, 0, 2, stock="TEST", trading_state="T"),
        A(1, "B", 300, 100_0000), A(2, "B", 200, 100_0000), A(3, "S", 500, 100_0100),
        encode("F", 1, 0, 3, order_reference_number=4, buy_sell_indicator="S", shares=50,
               stock="TEST", price_e4=100_0200, attribution="GSCO"),
    ]))
    assert levels(b) == ([(100_0000, 500, 2)], [(100_0100, 500, 1), (100_0200, 50, 1)])
    # E at the order's price; C at another price leaves the rest at the display price
    b.feed(frame([encode("E", 1, 0, 10, order_reference_number=1, executed_shares=100, match_number=1),
                  encode("C", 1, 0, 11, order_reference_number=3, executed_shares=100, match_number=2,
                         printable="Y", execution_price_e4=100_0050)]))
    assert levels(b) == ([(100_0000, 400, 2)], [(100_0100, 400, 1), (100_0200, 50, 1)])
    t = books_mod.Books(core=b).trades(1, 10)
    assert [(int(x["itch_ns"]), int(x["price_e4"]), int(x["shares"])) for x in t] == \
        [(10, 100_0000, 100), (11, 100_0050, 100)]
    # non-printable C: book effect, no trade
    b.feed(frame([encode("C", 1, 0, 12, order_reference_number=3, executed_shares=100,
                         match_number=3, printable="N", execution_price_e4=1)]))
    assert levels(b)[1][0] == (100_0100, 300, 1)
    info = b.info(1)
    assert info["volume"] == 200 and info["trades"] == 2 and info["last_trade_price_e4"] == 100_0050
    assert info["symbol"] == "TEST" and info["trading_state"] == "T"
    # X partial, then D
    b.feed(frame([encode("X", 1, 0, 13, order_reference_number=2, canceled_shares=150),
                  encode("D", 1, 0, 14, order_reference_number=4)]))
    assert levels(b) == ([(100_0000, 250, 2)], [(100_0100, 300, 1)])
    # U: old ref gone, new ref at the back of the new level, same side
    b.feed(frame([A(5, "B", 100, 99_9900), A(6, "B", 100, 99_9900),
                  encode("U", 1, 0, 15, original_order_reference_number=1,
                         new_order_reference_number=7, shares=80, price_e4=99_9900)]))
    assert b.level_orders(1, 0, 99_9900) == [(5, 100), (6, 100), (7, 80)]
    assert b.level_orders(1, 0, 100_0000) == [(2, 50)]
    # U to the same price also loses queue priority
    b.feed(frame([encode("U", 1, 0, 16, original_order_reference_number=5,
                         new_order_reference_number=8, shares=100, price_e4=99_9900)]))
    assert b.level_orders(1, 0, 99_9900) == [(6, 100), (7, 80), (8, 100)]
    st = b.stats()
    assert st["drops"]["unknown_ref"] == 0 and b.check() == 0


def test_unknown_refs_and_bad_input_counted_never_fatal():
    b = _core.Books()
    b.feed(frame([
        encode("E", 1, 0, 1, order_reference_number=99, executed_shares=1),
        encode("C", 1, 0, 1, order_reference_number=99, executed_shares=1, printable="Y"),
        encode("X", 1, 0, 1, order_reference_number=99, canceled_shares=1),
        encode("D", 1, 0, 1, order_reference_number=99),
        encode("U", 1, 0, 1, original_order_reference_number=99, new_order_reference_number=100,
               shares=1, price_e4=1),
        A(1), A(1),                     # duplicate
        A(2, side="Z"),                 # bad side
        A(3, shares=0),                 # zero shares
        encode("X", 1, 0, 2, order_reference_number=1, canceled_shares=1000),  # over-reduce
        A(4, "S", 10, 200_0000),
    ]))
    d = b.stats()["drops"]
    assert (d["unknown_ref"], d["duplicate_ref"], d["bad_side"], d["zero_shares"], d["over_reduce"]) \
        == (5, 1, 1, 1, 1)
    assert levels(b) == ([], [(200_0000, 10, 1)])
    assert b.stats()["orders_live"] == 1 and b.check() == 0


def test_unknown_refs_are_counted_per_stock():
    """Each stock counts the order messages naming it whose reference was not live (item 3 of
    the feed-integrity issue); the per-stock counts add up to the global unknown_ref drops."""
    b = _core.Books()
    b.feed(frame([
        encode("R", 1, 0, 1, stock="AAA", market_category="Q", round_lot_size=100, authenticity="P"),
        encode("R", 2, 0, 1, stock="BBB", market_category="Q", round_lot_size=100, authenticity="P"),
        encode("R", 3, 0, 1, stock="CCC", market_category="Q", round_lot_size=100, authenticity="P"),
        A(1, loc=1), A(2, loc=2),
        encode("E", 1, 0, 2, order_reference_number=99, executed_shares=1),
        encode("D", 1, 0, 2, order_reference_number=98),
        encode("U", 1, 0, 2, original_order_reference_number=97, new_order_reference_number=100,
               shares=1, price_e4=1),
        encode("X", 2, 0, 2, order_reference_number=96, canceled_shares=1),
        encode("C", 2, 0, 2, order_reference_number=95, executed_shares=1, printable="Y"),
        encode("D", 1, 0, 3, order_reference_number=1),           # live: not counted
        encode("D", 2, 0, 3, order_reference_number=1),           # gone now: counted on stock 2
    ]))
    assert [b.info(loc)["unknown_refs"] for loc in (1, 2, 3)] == [3, 3, 0]
    assert b.stats()["drops"]["unknown_ref"] == 6
    # a stock never seen (no R, no add) still has its count, by locate
    b.feed(frame([encode("D", 7, 0, 4, order_reference_number=94)]))
    assert b.unknown_refs() == {1: 3, 2: 3, 7: 1}
    assert books_mod.Books(core=b).unknown_refs() == {"AAA": 3, "BBB": 3, "locate 7": 1}


def test_unknown_refs_per_stock_add_up_on_a_nasty_stream():
    b = _core.Books(1024)
    data = nasty_stream(5, 20000)
    b.feed(data)
    total = b.stats()["drops"]["unknown_ref"]
    per = b.unknown_refs()
    assert total > 1000 and sum(per.values()) == total
    assert all(b.info(loc)["unknown_refs"] == per.get(loc, 0) for loc, _ in b.symbols())


def test_extreme_price_and_shares_on_book():
    b = _core.Books()
    b.feed(frame([A(1, "S", 0xFFFFFFFF, 0x77359400), A(2, "S", 0xFFFFFFFF, 0x77359400),
                  A(3, "B", 1, 1)]))
    assert levels(b) == ([(1, 1, 1)], [(0x77359400, 2 * 0xFFFFFFFF, 2)])


def test_broken_trade_counted_not_subtracted():
    b = _core.Books()
    b.feed(frame([encode("P", 1, 0, 1, shares=100, stock="TEST", price_e4=5, match_number=9),
                  encode("B", 1, 0, 2, match_number=9)]))
    assert b.stats()["broken_trades"] == 1 and b.info(1)["volume"] == 100


def nasty_stream(seed, n, n_locates=3):
    """Random messages over a small reference space: unknown refs, duplicates, over-reduces,
    zero shares, bad sides, crossing prices."""
    import random
    rng = random.Random(seed)
    msgs = []
    for i in range(n):
        loc = rng.randrange(1, n_locates + 1)
        ref = rng.randrange(1, 400)
        t = rng.choice("AAAAFXDEECUUPQ")
        ts = i + 1
        price = rng.choice([1, 100_0000 + 100 * rng.randrange(-20, 20), 0x77359400])
        if t in "AF":
            kw = dict(order_reference_number=ref, buy_sell_indicator=rng.choice("BBSSx"),
                      shares=rng.choice([0, 1, 100, 250, 0xFFFFFFFF]), stock="T", price_e4=price)
            if t == "F":
                kw["attribution"] = "MPID"
            msgs.append(encode(t, loc, 0, ts, **kw))
        elif t == "X":
            msgs.append(encode("X", loc, 0, ts, order_reference_number=ref,
                               canceled_shares=rng.choice([1, 50, 100, 10 ** 6])))
        elif t == "D":
            msgs.append(encode("D", loc, 0, ts, order_reference_number=ref))
        elif t in "EC":
            kw = dict(order_reference_number=ref, executed_shares=rng.choice([0, 1, 100, 10 ** 6]),
                      match_number=i)
            if t == "C":
                kw.update(printable=rng.choice("YN"), execution_price_e4=price)
            msgs.append(encode(t, loc, 0, ts, **kw))
        elif t == "U":
            msgs.append(encode("U", loc, 0, ts, original_order_reference_number=ref,
                               new_order_reference_number=rng.randrange(1, 400),
                               shares=rng.choice([0, 1, 300]), price_e4=price))
        elif t == "P":
            msgs.append(encode("P", loc, 0, ts, shares=rng.randrange(1000), stock="T",
                               price_e4=price, match_number=i))
        else:
            msgs.append(encode("Q", loc, 0, ts, shares=rng.choice([0, 10 ** 12]), stock="T",
                               cross_price_e4=price, match_number=i, cross_type="O"))
    return frame(msgs)


def test_invariants_after_every_event_generated_stream():
    b = _core.Books(1024)  # small table: the check walks all of it after every message
    applied, bad, code = b.feed_checked(gen.generate(11, 4, 30000))
    assert (applied, bad, code) == (30000, -1, 0)  # never crossed, always consistent


def test_invariants_after_every_event_nasty_stream():
    b = _core.Books(1024)  # small table: the check walks all of it after every message
    applied, bad, code = b.feed_checked(nasty_stream(5, 20000), allow_crossed=True)
    assert (bad, code) == (-1, 0) and applied == 20000
    assert b.stats()["drops"]["unknown_ref"] > 1000  # the stream really was nasty


def test_bbo_changes_match_reference():
    data = gen.generate(21, 3, 20000)
    b = _core.Books()
    b.record_bbo("ABVM")  # locate 2's ticker for every seed (first 4-letter ticker)
    b.feed(data)
    ref, last, want = RefBooks(), ((0, 0), (0, 0)), []
    for m in unframe(data):
        d = decode(m)
        ref.apply(d)
        bbo = ref.bbo(2)
        if d["stock_locate"] == 2 and bbo != last:
            want.append((d["timestamp_ns"], bbo[0][0], bbo[0][1], bbo[1][0], bbo[1][1]))
            last = bbo
    got = [(int(c["itch_ns"]), int(c["bid_price_e4"]), int(c["bid_shares"]), int(c["ask_price_e4"]),
            int(c["ask_shares"])) for c in books_mod.Books(core=b).bbo_changes()]
    assert len(want) > 100 and got == want


def test_snapshots_while_feeding(tmp_path):
    p = tmp_path / "big.itch"
    gen.write_file(p, 9, 2, 2_000_000)
    core = _core.Books()
    view = books_mod.Books(core=core)
    done = threading.Event()
    err = []

    def feeder():
        try:
            core.feed_file(str(p), chunk_bytes=1 << 16)
        except Exception as e:  # pragma: no cover - reported below
            err.append(e)
        finally:
            done.set()

    t = threading.Thread(target=feeder)
    t.start()
    snaps = 0
    while not done.is_set() or snaps == 0:
        try:
            bk = view.book(1, 20)
        except KeyError:
            continue
        bp, ap = bk.bid_price_e4, bk.ask_price_e4
        assert all(bp[i] > bp[i + 1] for i in range(len(bp) - 1))
        assert all(ap[i] < ap[i + 1] for i in range(len(ap) - 1))
        assert (bk.bid_shares > 0).all() and (bk.ask_shares > 0).all() and (bk.bid_orders > 0).all()
        if len(bp) and len(ap):
            assert bp[0] < ap[0]
        snaps += 1
    t.join()
    assert not err and snaps > 0
    assert sum(core.stats()["messages"].values()) == 2_000_000


def test_feed_refused_while_feeding_and_on_wrapped_books():
    core = _core.Books()
    with pytest.raises(TypeError):
        core.feed("not bytes")


def test_run_book_json_matches_reference(tmp_path, capsys):
    data = gen.generate(4, 3, 50000)
    p = tmp_path / "day.itch.gz"
    import gzip
    p.write_bytes(gzip.compress(data))
    assert books_mod.run_book(p, symbol="nob", levels=5, json_out=True) == 0
    out = json.loads(capsys.readouterr().out)
    ref = RefBooks()
    for m in unframe(data):
        ref.apply(decode(m))
    bids, asks = ref.book(3)
    fmt = books_mod.format_price
    assert out["symbol"] == "NOB"
    assert out["book"]["bids"] == [[fmt(p_), s, o] for p_, s, o in bids[:5]]
    assert out["book"]["asks"] == [[fmt(p_), s, o] for p_, s, o in asks[:5]]
    assert sum(out["messages"].values()) == 50000
    assert set(out["drops"]) >= {"unknown_type", "truncated", "unknown_ref"}
    assert all(len(x[0].split(".")[1]) == 4 for x in out["book"]["bids"])


def test_run_book_json_starts_no_python_thread(tmp_path, capsys, monkeypatch):
    """`hftcap book --json` loads json while the replay's C thread works, never on a Python
    thread of its own: such a thread, alive at exit, can corrupt the interpreter's shutdown
    (a CI run's `hftcap book` died in malloc_consolidate)."""
    import _thread
    started = []

    def record(*a, **k):
        started.append(a)
        raise AssertionError("a Python thread was started")
    monkeypatch.setattr(_thread, "start_new_thread", record)
    monkeypatch.setattr(threading, "_start_new_thread", record)
    p = tmp_path / "day.itch"
    gen.write_file(p, 4, 3, 20000)
    assert books_mod.run_book(p, symbol="nob", json_out=True) == 0
    assert not started
    assert json.loads(capsys.readouterr().out)["symbol"] == "NOB"


def test_feed_file_runs_meanwhile_once_and_an_exception_stops_the_replay(tmp_path):
    p = tmp_path / "day.itch"
    gen.write_file(p, 4, 3, 200000)
    calls = []
    b = _core.Books()
    res = b.feed_file(str(p), meanwhile=lambda: calls.append(threading.get_ident()))
    assert calls == [threading.get_ident()] and res["bytes"] == p.stat().st_size
    assert sum(b.stats()["messages"].values()) == 200000

    def boom():
        raise ValueError("meanwhile failed")
    c = _core.Books()
    with pytest.raises(ValueError, match="meanwhile failed"):
        c.feed_file(str(p), chunk_bytes=4096, meanwhile=boom)
    # the replay was stopped and joined (how far it got depends on the host): the books are
    # free again, and what it applied is a prefix of the file
    got = sum(c.stats()["messages"].values())
    c.feed_file(str(p))
    assert sum(c.stats()["messages"].values()) == got + 200000


def test_run_book_default_symbol_and_bbo(tmp_path, capsys):
    p = tmp_path / "day.itch"
    gen.write_file(p, 4, 3, 20000)
    assert books_mod.run_book(p, bbo=True, json_out=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert "most active" in out["note"] and out["symbol"] == "BVM"
    assert len(out["bbo"]) > 10 and all(c["itch_ns"] > 0 for c in out["bbo"])


def test_run_book_errors(tmp_path):
    with pytest.raises(HftcapError) as e:
        books_mod.run_book(tmp_path / "nope.itch")
    assert "no such file" in e.value.msg and e.value.hint
    p = tmp_path / "day.itch"
    gen.write_file(p, 4, 2, 1000)
    with pytest.raises(HftcapError) as e:
        books_mod.run_book(p, symbol="ZZZZZ")
    assert "not in" in e.value.msg and "BVM" in e.value.hint


def test_format_price():
    assert books_mod.format_price(1234500) == "123.4500"
    assert books_mod.format_price(0x77359400) == "200000.0000"
    assert books_mod.format_price(1) == "0.0001"
