"""The generator's "day" profile: the shape of a real NASDAQ day (ITCH50.md, "Real trading
days") measured on a small instance by an independent walk of the stream, and books equal to the
reference model on it."""
import bisect
import pathlib
import struct
import sys
from collections import Counter, defaultdict

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from refmodel import unframe  # noqa: E402
from test_book_diff import compare  # noqa: E402

from hftcap import _core  # noqa: E402
from hftcap.lab import gen  # noqa: E402
from bounds import bound

STOCKS, MESSAGES = 300, 300_000


def _q(sorted_values, f):
    return sorted_values[min(len(sorted_values) - 1, int(f * len(sorted_values)))]


def day_shape(data):
    """Mix (regular session), peak live orders, references, depth from the inside of every order
    message (levels strictly better on its side, before it applies) and order lifetimes."""
    u16, u32, u64 = (lambda m, o: struct.unpack_from(">H", m, o)[0],
                     lambda m, o: struct.unpack_from(">I", m, o)[0],
                     lambda m, o: struct.unpack_from(">Q", m, o)[0])
    mix, live, born, lives = Counter(), {}, {}, []
    levels, count = defaultdict(list), Counter()
    depths, peak, adds, lower, prev, refs = [], 0, 0, 0, None, []
    session, k, events = False, 0, []

    def depth(loc, side, p):
        lv = levels[loc, side]
        i = bisect.bisect_left(lv, p)
        return len(lv) - i - (i < len(lv) and lv[i] == p) if side == "B" else i

    def rest(ref, loc, side, p, shares):
        live[ref] = (loc, side, p, shares)
        born[ref] = k
        refs.append(ref)
        if not count[loc, side, p]:
            bisect.insort(levels[loc, side], p)
        count[loc, side, p] += 1

    def gone(ref):
        loc, side, p, _ = live.pop(ref)
        lives.append(k - born.pop(ref))
        count[loc, side, p] -= 1
        if not count[loc, side, p]:
            lv = levels[loc, side]
            del lv[bisect.bisect_left(lv, p)]

    for m in unframe(data):
        k += 1
        t = chr(m[0])
        if t == "S":
            events.append(chr(m[11]))
            session = session or m[11:12] == b"Q"
            continue
        if session:
            mix[t] += 1
        if t in "AF":
            ref, side, p, loc = u64(m, 11), chr(m[19]), u32(m, 32), u16(m, 1)
            if session:
                adds += 1
                lower += prev is not None and ref < prev
                depths.append(depth(loc, side, p))
            prev = ref
            rest(ref, loc, side, p, u32(m, 20))
        elif t in "DEXCU":
            ref = u64(m, 11)
            loc, side, p, shares = live[ref]
            if session:
                depths.append(depth(loc, side, p))
            if t in "DU":
                gone(ref)
                if t == "U":
                    rest(u64(m, 19), loc, side, u32(m, 31), u32(m, 27))
            elif u32(m, 19) >= shares:
                gone(ref)
            else:
                live[ref] = (loc, side, p, shares - u32(m, 19))
        peak = max(peak, len(live))
    total, newest = sum(mix.values()), max(refs)
    depths.sort()
    lives.sort()
    return {"messages": k, "events": events, "mix": {t: 100 * c / total for t, c in mix.items()},
            "peak_live": peak, "lower": lower / adds, "used": len(refs) / (max(refs) - min(refs) + 1),
            "depth": {f: _q(depths, f) for f in (0.5, 0.9, 0.99)},
            "life_median": _q(lives, 0.5), "old_live": sum(1 for r in live if r < newest / 4),
            "live_end": len(live), "long_lived": sum(1 for x in lives if x > k / 2) + len(live),
            "orders": len(refs)}


@pytest.fixture(scope="module")
def day():
    return gen.generate(5, STOCKS, MESSAGES, "day")


def test_day_is_deterministic_and_exact(day):
    assert gen.generate(5, STOCKS, MESSAGES, "day") == day
    assert gen.generate(6, STOCKS, MESSAGES, "day") != day
    assert gen.generate(5, STOCKS, MESSAGES) != day  # the basic profile is another stream
    assert len(list(unframe(day))) == MESSAGES


def test_day_shape(day):
    s = day_shape(day)
    assert s["messages"] == MESSAGES
    assert s["events"] == ["O", "S", "Q", "M", "E", "C"]
    mix = s["mix"]
    # ITCH50.md, 2019-12-30: A 43.6 F 0.55 D 42.6 U 8.05 E 2.13 X 1.04 C 0.04 I 1.50 P 0.45 (%)
    for t, want in {"A": 43.6, "F": 0.55, "D": 42.6, "U": 8.05, "E": 2.13, "X": 1.04,
                    "I": 1.50, "P": 0.45}.items():
        assert abs(mix[t] - want) <= 0.1 * want + 0.05, (t, mix[t], want)
    assert 0 < mix["C"] < 0.2 and sum(mix.get(t, 0) for t in "QYL") < 0.2
    # live orders: the pre-open rests messages / 28 of them, the day adds to that
    assert MESSAGES / 28 <= s["peak_live"] <= MESSAGES / 18, s["peak_live"]
    # references: ~26 % of adds lower than the previous add, ~45 % of the span used
    assert 0.20 <= s["lower"] <= 0.32, s["lower"]
    assert 0.38 <= s["used"] <= 0.52, s["used"]
    # depth from the inside: real median 1, p90 14, p99 ~200 (levels)
    d = s["depth"]
    assert d[0.5] == 1 and 8 <= d[0.9] <= 20 and d[0.99] >= 40, d
    # lifetimes: most orders die young, a few percent live for most of the stream, and many
    # live orders at the end are far older than the newest references
    assert s["life_median"] < MESSAGES / 100, s["life_median"]
    assert 0.02 <= s["long_lived"] / s["orders"] <= 0.15
    assert s["old_live"] >= s["live_end"] / 3


def test_day_books_match_reference(day):
    b, ref = compare(gen.generate(9, 200, 120_000, "day"), check_queues=True)
    assert sum(ref.drops.values()) == 0  # consistent stream: nothing dropped
    assert b.check() == 0


def test_day_invariants_after_every_message():
    data = gen.generate(11, 20, 20_000, "day")
    b = _core.Books(1024)
    assert b.feed_checked(data) == (20_000, -1, 0)


def test_day_bad_parameters():
    with pytest.raises(ValueError):
        gen.generate(1, 0, 100, "day")
    with pytest.raises(ValueError):
        gen.generate(1, 100, gen.min_messages(100, "day") - 1, "day")
    with pytest.raises(ValueError):
        gen.generate(1, 16385, 10 ** 6, "day")
    with pytest.raises(ValueError):
        gen.generate(1, 10, 1000, "night")
    assert len(list(unframe(gen.generate(1, 100, gen.min_messages(100, "day"), "day")))) == \
        gen.min_messages(100, "day")


def test_exchange_profile_day_writes_the_day_stream(tmp_path):
    """`hftcap exchange --profile day --write F` (no network): the generator's bytes, 8,900
    stocks unless --stocks says otherwise."""
    import subprocess
    exe = str(pathlib.Path(sys.executable).parent / "hftcap")
    p = tmp_path / "day.itch"
    cp = subprocess.run([exe, "exchange", "--profile", "day", "--seed", "4", "--messages", "40000",
                         "--write", str(p), "--json"], capture_output=True, text=True, timeout=bound(120))
    assert cp.returncode == 0, cp.stderr
    assert p.read_bytes() == gen.generate(4, gen.DAY_STOCKS, 40000, "day")
    assert "profile=day" in cp.stdout and "stocks=8900" in cp.stdout
