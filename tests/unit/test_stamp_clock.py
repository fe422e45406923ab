"""The data thread's stamp clock (hc_time.h): the TSC calibration maths on synthetic pairs
(exact up to the stated rounding), the sources a fresh clock reports, and a timed consumer run
with either source giving the same hop sample counts and the same books."""
from __future__ import annotations

import struct

import pytest

from hftcap import _core
from hftcap.book.books import Books

SESSION = b"STAMPTEST1"


def _exact(tsc, tsc0, tai0, num, den):
    """The synthetic clock: tai = tai0 + (tsc - tsc0) * num / den, rounded to nearest."""
    d = tsc - tsc0
    q, r = divmod(abs(d) * num * 2 + den, 2 * den)
    return tai0 + q if d >= 0 else tai0 - q


# (num, den): ns per tick as a fraction: 2.5 GHz, this VM's 2596.138 MHz, 1 GHz, 3.3 GHz, 100 MHz
RATES = [(2, 5), (1_000_000, 2_596_138), (1, 1), (10, 33), (10, 1)]


@pytest.mark.parametrize("num,den", RATES)
def test_tsc_fit_maps_readings_within_one_ns(num, den):
    tsc_a, tai_a = 123_456_789_012, 37_000_000_000_000_000_000 // 1000  # any origin
    span = 52_000_000 * den // num  # ~20 ms (the start fit's baseline) of ticks
    tsc_b = tsc_a + span
    tai_b = _exact(tsc_b, tsc_a, tai_a, num, den)
    second = 1_000_000_000 * den // num
    readings = [tsc_b, tsc_b + 1, tsc_b + 26, tsc_b + second, tsc_b + 100 * second,
                tsc_a, tsc_a + span // 2, tsc_b - 7, tsc_b - 10 * second]
    got = _core.tsc_fit(tsc_a, tai_a, tsc_b, tai_b, readings)
    want = [_exact(t, tsc_a, tai_a, num, den) for t in readings]
    # The bound: 0.5 ns for rounding the result, 0.5 ns for the synthetic clock's own rounding,
    # and the second pair's rounding (<= 0.5 ns over the baseline) carried as a rate error to the
    # reading's distance from the anchor; the fit's own resolution (2^-49 ns per tick) adds
    # d * 2^-49 ns, d ticks from the anchor.
    for t, g, w in zip(readings, got, want):
        dist = abs(t - tsc_b) * num / den  # ns from the anchor
        bound = 1 + 0.5 * dist / (span * num / den) + abs(t - tsc_b) * 2.0 ** -49
        assert abs(g - w) <= bound, (t, g, w)


def test_tsc_fit_is_exact_when_the_pairs_are():
    # 0.4 ns per tick, pairs exact: every reading lands on its exact ns (rounded to nearest; the
    # fit's 2^-49 ns/tick resolution is 0.004 ns at 2.5e12 ticks, 1,000 s)
    got = _core.tsc_fit(1000, 5_000, 1000 + 50_000_000, 5_000 + 20_000_000,
                        [1000, 1001, 1003, 1000 + 2_500_000_000_000, 0])
    assert got == [5_000, 5_000, 5_001, 5_000 + 1_000_000_000_000, 4_600]


def test_tsc_fit_refuses_pairs_out_of_order():
    with pytest.raises(ValueError):
        _core.tsc_fit(10, 10, 10, 20, [])
    with pytest.raises(ValueError):
        _core.tsc_fit(10, 20, 20, 20, [])


def test_stamp_clock_sources():
    assert _core.stamp_clock("clock")["source"] == "clock"
    auto = _core.stamp_clock("auto")
    assert auto["source"] == ("tsc" if _core.TSC_INVARIANT else "clock")
    with pytest.raises(ValueError):
        _core.stamp_clock("hpet")
    if _core.TSC_INVARIANT:
        k = _core.stamp_clock("tsc")
        assert k["tsc_hz"] > 1e8 and k["checks"] == 0 and k["pair_halfwidth_ns"] >= 0
    else:
        with pytest.raises(OSError):
            _core.stamp_clock("tsc")


def _pkt(seq, msgs, count=None):
    body = b"".join(struct.pack(">H", len(m)) + m for m in msgs)
    return SESSION + struct.pack(">QH", seq, len(msgs) if count is None else count) + body


def _packets():
    data = _core.generate(5, 8, 20_000)
    msgs, o = [], 0
    while o < len(data):
        n = struct.unpack_from(">H", data, o)[0]
        msgs.append(data[o + 2:o + 2 + n])
        o += 2 + n
    pk = [_pkt(1 + i, msgs[i:i + 4]) for i in range(0, len(msgs), 4)]
    timed = len(pk)
    # no new message, so no sample: a duplicate, a heartbeat, a packet whose only block is cut
    pk.insert(10, pk[3])
    pk.insert(20, _pkt(1 + 4 * 19, [], count=0))
    pk.append(_pkt(len(msgs) + 1, [b"A" * 36])[:-20])
    return pk, timed


def _books_state(b: Books):
    out = {}
    for loc, sym in b.symbols():
        out[sym] = (b.levels(loc, 50), b.info(loc)["orders_live"], b.info(loc)["volume"])
    return out, b.stats()["messages"], b.stats()["drops"]


@pytest.mark.skipif(not _core.TSC_INVARIANT, reason="this CPU has no invariant TSC (constant_tsc, nonstop_tsc)")
def test_both_stamp_sources_give_the_same_samples_and_books():
    pk, timed = _packets()
    res, state = {}, {}
    for src in ("tsc", "clock"):
        b = Books()
        res[src] = _core.consume_timed(pk, b.core, src)
        state[src] = _books_state(b)
        assert res[src]["clock"]["source"] == src
        assert res[src]["samples"]["dequeue_to_decode"] == res[src]["samples"]["decode_to_book"] == timed
        assert res[src]["negative"] == 0
    assert res["tsc"]["samples"] == res["clock"]["samples"]
    assert res["tsc"]["messages"] == res["clock"]["messages"] == 20_000
    assert state["tsc"] == state["clock"]
    ref = Books()
    ref.feed(_core.generate(5, 8, 20_000))
    assert state["tsc"][0] == _books_state(ref)[0]  # the same books as the file replay


def test_bench_refuses_tsc_without_an_invariant_tsc_before_any_lab(monkeypatch):
    """`bench --stamp tsc` on a CPU without an invariant TSC (a TCG guest's CPU model): one usage
    error with the hint, raised by the argument checks (before any lab or trial)."""
    from hftcap import _core
    from hftcap.errors import UsageError
    from hftcap.measure import bench
    monkeypatch.setattr(_core, "TSC_INVARIANT", False)
    monkeypatch.setattr(bench, "require_root", lambda what: None)
    with pytest.raises(UsageError) as e:
        bench.run_bench(paths=["xdp-busy"], stamps=["tsc", "clock"])
    assert "TSC is not invariant" in str(e.value) and "--stamp clock" in e.value.hint
