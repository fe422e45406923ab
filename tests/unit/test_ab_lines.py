"""A/B line arbitration (hftcap/_core/recovery.c) driven through hftcap._core.RecoveryLab with
both lines: the lab exchange's own Sender builds the two lines (each with its own seeded loss,
duplication and reordering) in wire order, the B line delayed by a few packets, and a Python
model of "the first copy wins" gives every per-line counter exactly."""
from __future__ import annotations

import struct

from hftcap import _core
from hftcap.feed.recovery import RecoveryOptions, shape_lines
from hftcap.lab import exchange as ex

from refmodel import unframe
from sequences import runs
from test_recovery import SRV, MS, Server, books_equal, tick

STEP = 20_000       # ns between two datagrams on the lab clock
LAG = 8             # the B line runs this many datagrams behind A (160 us, below the gap timeout)


def build_lines(messages=6000, k=8, seed=5, **kw):
    stream = ex.generate(seed, 4, messages)
    snd = _core.Sender(stream, messages_per_packet=k, clock="file", heartbeat_interval=0.0, eos_count=1,
                       line_b=True, seed=seed, seed_b=seed + 1000, **kw)
    blob, st = snd.build(64 << 20)
    recs, o = [], 0
    while o < len(blob):
        d, ln = struct.unpack_from("<QI", blob, o)
        recs.append((ln >> 31, d, blob[o + 12:o + 12 + (ln & 0x7FFFFFFF)]))
        o += 12 + (ln & 0x7FFFFFFF)
    return stream, snd, st, recs


def lagged(recs, lag=LAG):
    """Wire order with every B datagram held back until `lag` more A datagrams went by."""
    out, held = [], []
    for line, _, dg in recs:
        if line == 0:
            out.append((0, dg))
            held = [[n - 1, d] for n, d in held]
            while held and held[0][0] <= 0:
                out.append((1, held.pop(0)[1]))
        else:
            held.append([lag, dg])
    out += [(1, d) for _, d in held]
    return out


def lost_set(snd, line):
    return {s for first, n in snd.lost(line) for s in range(first, first + n)}


def model(order, t0=MS):
    """Per line: packets, messages, wins, duplicates, gaps, gap_messages, by first arrival, and
    the lag samples of copies behind the other line's first (datagram i arrives at t0 + (i+1) STEP)."""
    seen, high = {}, 0   # high: one past the highest sequence any line showed so far
    lags = {0: [], 1: []}
    st = {ln: dict(packets=0, messages=0, wins=0, duplicates=0, filled=0, gaps=0, gap_messages=0, next=0)
          for ln in (0, 1)}
    for i, (ln, dg) in enumerate(order):
        t = t0 + (i + 1) * STEP
        _, seq, count, msgs = ex.parse_packet(dg)
        s = st[ln]
        s["packets"] += 1
        end = seq if count in (0, 0xFFFF) else seq + count
        if s["next"] and seq > s["next"]:
            s["gaps"] += 1
            s["gap_messages"] += seq - s["next"]
        s["next"] = max(s["next"], end)
        before, high = high, max(high, end)
        if count in (0, 0xFFFF):
            continue
        s["messages"] += count
        for q in range(seq, seq + count):
            if q in seen:
                s["duplicates"] += 1
                if seen[q][0] != ln:
                    lags[ln].append(t - seen[q][1])
            else:
                seen[q] = (ln, t)
                s["wins"] += 1
                s["filled"] += q < before   # it was missing: a later one had been seen
    for ln in (0, 1):
        st[ln]["lags"] = lags[ln]
    return st


def lab_for(servers=(), **kw):
    o = RecoveryOptions(servers=list(servers), **kw)
    return _core.RecoveryLab({**o.core(), "ab_mask": 1})


def drive(lab, order, servers=(), now=MS, until_ns=200 * MS):
    for ln, dg in order:
        now += STEP
        lab.packet(dg, now, ln)
        tick(lab, now, servers)
    end = now + until_ns
    while now < end:
        now += 100_000
        tick(lab, now, servers)
    return now


def check_lines(rep, order):
    want = model(order)
    for ln, key in ((0, "a"), (1, "b")):
        got = rep["feeds"][0]["lines"][key]
        for f in ("packets", "messages", "wins", "duplicates", "filled", "gaps", "gap_messages"):
            assert got[f] == want[ln][f], (key, f, got[f], want[ln][f])
        assert got["messages"] == got["wins"] + got["duplicates"]
        assert got["state"] == "up" and got["down_events"] == 0 and got["other_session"] == 0
        lag, lags = shape_lines(rep["feeds"][0]["lines"])[key]["lag"], want[ln]["lags"]
        assert got["late_copies"] == lag["count"] == len(lags)
        if lags:
            assert (lag["min_ns"], lag["max_ns"]) == (min(lags), max(lags)), key
    a, b, st = rep["feeds"][0]["lines"]["a"], rep["feeds"][0]["lines"]["b"], rep["feeds"][0]["stats"]
    assert a["filled"] + b["filled"] == st["messages_late"]
    assert st["messages_missing"] == st["messages_late"] + st["messages_recovered"] + st["messages_lost"]
    per_gap = ("gaps_filled_a", "gaps_filled_b", "gaps_filled_server", "gaps_filled_mixed", "gaps_with_loss")
    assert sum(st[k] for k in per_gap) == st["gaps_seen"], {k: st[k] for k in per_gap}


def test_no_server_loses_exactly_what_both_lines_missed():
    stream, snd, st, recs = build_lines(loss=0.03, dup=0.01, reorder=0.01, loss_b=0.03, dup_b=0.01, reorder_b=0.01)
    both = lost_set(snd, 0) & lost_set(snd, 1)
    assert st["lost_packets"] > 5 and st["line_b"]["lost_packets"] > 5 and both, "the seed must make both lose"
    assert lost_set(snd, 0) - both and lost_set(snd, 1) - both, "and each line lose what the other has"
    lab = lab_for()
    order = lagged(recs)
    drive(lab, order)
    rep = lab.report()
    f = rep["feeds"][0]
    assert [[a, a + n - 1] for a, n in f["lost"]] == runs(both)
    assert f["stats"]["messages_lost"] == len(both) and f["stats"]["gaps_lost"] == len(runs(both))
    assert f["state"] == "degraded" and f["stats"]["requests_sent"] == 0
    assert rep["mold"]["messages"] == 6000 - len(both) and rep["mold"]["next"] == 6001
    check_lines(rep, order)
    want = model(order)
    assert want[0]["wins"] + want[1]["wins"] == 6000 - len(both)
    assert want[1]["wins"] > 0 and f["lines"]["b"]["filled"] > 0, "the B line must have filled some of A's holes"
    assert f["stats"]["gaps_filled_b"] > 0 and f["stats"]["gaps_filled_server"] == 0
    assert f["stats"]["gaps_with_loss"] >= len(runs(both))
    lag = shape_lines(f["lines"])["b"]["lag"]
    assert lag["count"] > 1000 and lag["min_ns"] >= LAG * STEP, "B runs LAG datagrams behind A"
    # the books saw exactly the stream without the messages both lines missed
    msgs = [m for i, m in enumerate(unframe(stream)) if i + 1 not in both]
    books_equal(lab.books(), ex.frame(msgs))


def test_server_is_asked_only_for_what_both_lines_missed():
    stream, snd, st, recs = build_lines(loss=0.03, reorder=0.01, loss_b=0.03, dup_b=0.01)
    both = lost_set(snd, 0) & lost_set(snd, 1)
    assert both and lost_set(snd, 0) - both and lost_set(snd, 1) - both
    lab = lab_for([SRV])
    srv = Server(lab, snd)
    order = lagged(recs)
    drive(lab, order, [srv])
    rep = lab.report()
    f = rep["feeds"][0]["stats"]
    assert f["gaps_lost"] == 0 and f["messages_lost"] == 0 and rep["feeds"][0]["state"] == "synced"
    asked = set()
    for _, req in lab.sent():
        seq, count = struct.unpack(">QH", req[10:20])
        asked |= set(range(seq, seq + count))
    assert asked == both, (sorted(asked - both), sorted(both - asked))
    assert f["messages_recovered"] == len(both)
    assert f["gaps_with_loss"] == 0 and f["gaps_filled_server"] + f["gaps_filled_mixed"] >= len(runs(both))
    assert f["gaps_filled_b"] > 0
    assert rep["mold"]["messages"] == 6000
    check_lines(rep, order)
    books_equal(lab.books(), stream)


def test_line_b_down_then_up_books_exact():
    # 6000 messages at 200k msg/s: 30 ms; the B line is silent from 8 ms for 12 ms
    stream, snd, st, recs = build_lines(pace="messages", rate=200_000.0, outage_b_start=0.008,
                                        outage_b_seconds=0.012)
    assert st["line_b"]["outage_packets"] > 0 and not st["lost_packets"]
    lab = lab_for(line_down_timeout_s=0.004)
    t0 = MS
    last_b = first_back = detect = None
    for line, d, dg in recs:
        now = t0 + d + (1 if line else 0)
        lab.packet(dg, now, line)
        lab.tick(now)
        if line == 1 and d < 8_000_000:
            last_b = now
        elif line == 1 and first_back is None:
            first_back = now
        elif line == 0 and detect is None and last_b is not None and now > last_b + 4_000_000:
            detect = now
    rep = lab.report()
    b = rep["feeds"][0]["lines"]["b"]
    assert b["down_events"] == 1 and b["up_events"] == 1 and b["state"] == "up"
    assert b["downtime_ns"] == first_back - last_b
    ev = rep["feeds"][0]["lines"]["events"]
    assert ev == [(detect, "b", detect - last_b, "down"), (first_back, "b", first_back - last_b, "up")]
    assert rep["feeds"][0]["lines"]["a"]["down_events"] == 0
    assert rep["feeds"][0]["stats"]["gaps_lost"] == 0 and rep["feeds"][0]["state"] == "synced"
    assert b["gaps"] == 1 and b["gap_messages"] == sum(n for _, n in snd.lost(1))
    books_equal(lab.books(), stream)


def test_foreign_session_on_b_is_counted_not_merged():
    stream, snd, st, recs = build_lines()
    other = _core.Sender(stream, messages_per_packet=8, clock="file", heartbeat_interval=0.0, eos_count=1,
                         session=b"OTHER00001")
    blob, _ = other.build(64 << 20)
    foreign = [d for _, d in ex.parse_build(blob)]
    lab = lab_for()
    now = MS
    a = [dg for line, _, dg in recs if line == 0]
    for i, dg in enumerate(a):
        now += STEP
        lab.packet(dg, now, 0)
        if i < len(foreign):
            now += STEP
            lab.packet(foreign[i], now, 1)
    rep = lab.report()
    b = rep["feeds"][0]["lines"]["b"]
    assert b["other_session"] == len(foreign) and b["wins"] == 0 and b["messages"] == 0
    assert rep["feeds"][0]["stats"]["session_changes"] == 0
    assert rep["mold"]["messages"] == 6000
    books_equal(lab.books(), stream)


def test_session_moves_with_the_line_that_moves_stale_line_not_merged():
    """A moves to a new session; B still sends the old one (stale: counted, not merged), then moves
    too and is merged again. The feed changes session once, never back."""
    stream = ex.generate(7, 4, 2000)

    def lines(session):
        snd = _core.Sender(stream, messages_per_packet=8, clock="file", heartbeat_interval=0.0, eos_count=0,
                           session=session)
        blob, _ = snd.build(16 << 20)
        return [d for _, d in ex.parse_build(blob)]

    old, new = lines(b"SESSION001"), lines(b"SESSION002")
    lab = lab_for()
    now = MS
    for dg in old[:100]:                       # both lines on the old session
        for ln in (0, 1):
            now += STEP
            lab.packet(dg, now, ln)
    for dg in new[:50]:                        # A moved; B still trails on the old one
        now += STEP
        lab.packet(dg, now, 0)
    for dg in old[100:150]:
        now += STEP
        lab.packet(dg, now, 1)
    for i, dg in enumerate(new[50:]):          # B moves too
        now += STEP
        lab.packet(dg, now, 0)
        now += STEP
        lab.packet(new[i] if i < 50 else dg, now, 1)
    rep = lab.report()
    f = rep["feeds"][0]
    assert f["stats"]["session_changes"] == 1
    a, b = f["lines"]["a"], f["lines"]["b"]
    assert b["other_session"] == 50 and a["other_session"] == 0
    assert rep["mold"]["messages"] == 800 + 2000 and rep["mold"]["next"] == 2001
    # B carried old[:100] and new[:50] + new[100:] (200 packets), each after A's copy
    assert b["messages"] == b["duplicates"] == 800 + 1600 and b["wins"] == 0
    assert a["wins"] == 2800 and a["duplicates"] == 0


def test_options_are_checked_before_anything_opens():
    import pytest
    from hftcap.errors import UsageError
    from hftcap.receive.options import ListenOptions, check_options, parse_feed
    a, a2, b = parse_feed("239.1.1.1:26400"), parse_feed("239.1.1.2:26400"), parse_feed("239.1.2.1:26400")
    rec = RecoveryOptions()
    check_options(ListenOptions("eth0", [a, a2], feeds_b=[b], recovery=rec))   # the second feed has no B line
    with pytest.raises(UsageError, match="2 --feed-b for 1 --feed"):
        check_options(ListenOptions("eth0", [a], feeds_b=[b, a2], recovery=rec))
    with pytest.raises(UsageError, match="same group and port"):
        check_options(ListenOptions("eth0", [a, a2], feeds_b=[a2], recovery=rec))
    with pytest.raises(UsageError, match="--line-down-timeout"):
        check_options(ListenOptions("eth0", [a], feeds_b=[b], recovery=RecoveryOptions(line_down_timeout_s=0)))
    with pytest.raises(UsageError, match="are for the B line"):
        ex.run_exchange(None, "239.1.1.1:26400", b"", loss_b=0.1)
    with pytest.raises(UsageError, match="--loss-b 2"):
        ex.run_exchange(None, "239.1.1.1:26400", b"", feed_b="239.1.2.1:26400", loss_b=2)
    with pytest.raises(UsageError, match="same group and port as --feed"):
        ex.run_exchange(None, "239.1.1.1:26400", b"", feed_b="239.1.1.1:26400")
    with pytest.raises(ValueError):   # a B line value for a feed with no B line: the capture refuses it
        _core.Capture("lo", 1, [("239.1.1.1", 26400)], feeds_b=[("239.1.2.1", 26400)])


def test_b_line_packet_for_a_feed_without_one_is_a_bad_feed_drop():
    stream, snd, st, recs = build_lines(messages=200)
    lab = _core.RecoveryLab(RecoveryOptions().core())          # no ab_mask: feed 0 has no B line
    for line, _, dg in recs:
        lab.packet(dg, MS, line)
    rep = lab.report()
    assert rep["feeds"][0]["lines"] is None
    assert rep["mold"]["messages"] == 200 and rep["mold"]["duplicates"] == 0   # B never merged


def test_next_timer_is_the_request_timeout_not_now_while_a_gap_is_asked_for():
    """With one hole asked for and later packets parked behind it, nothing is due until the
    request times out (a timer due 'now' would make the wakeup-mode loop spin)."""
    stream = ex.generate(3, 4, 400)
    snd = _core.Sender(stream, messages_per_packet=8, clock="file", heartbeat_interval=0.0, eos_count=0)
    blob, _ = snd.build(4 << 20)
    pkts = [d for _, d in ex.parse_build(blob)]
    lab = _core.RecoveryLab(RecoveryOptions(servers=[SRV]).core())   # 1 ms gap, 5 ms request timeout
    now = MS
    for i, dg in enumerate(pkts[:20]):
        if i != 5:
            now += STEP
            lab.packet(dg, now)
    lab.tick(now + 1_000_000)                                       # the gap's timeout: asked for
    assert len(lab.sent()) == 1
    now += 1_000_000
    for dg in pkts[20:30]:                                           # more parked behind the hole
        now += STEP
        lab.packet(dg, now)
        assert lab.tick(now) > 0, "a timer due now while nothing is: a busy loop"
    assert len(lab.sent()) == 1
