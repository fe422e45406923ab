"""Gap recovery (hftcap/_core/recovery.c) driven through hftcap._core.RecoveryLab: the data
thread's code with a caller-given clock and no socket; the lab exchange's own reply code
(Sender.reply) plays the re-request server. Every counter asserted is exact by construction."""
from __future__ import annotations

import random
import struct

import pytest

from hftcap import _core
from hftcap.book.books import Books
from hftcap.feed.recovery import RecoveryOptions, check, parse_server
from hftcap.errors import UsageError
from hftcap.lab import exchange as ex

SRV = ("10.0.0.1", 26401)
SRV2 = ("10.0.0.2", 26401)
MS = 1_000_000


def make_stream(messages=6000, k=8, seed=3, max_payload=0):
    stream = ex.generate(seed, 4, messages)
    kw = {"max_payload": max_payload} if max_payload else {}
    snd = _core.Sender(stream, messages_per_packet=k, clock="file", heartbeat_interval=0.0,
                       eos_count=1, **kw)
    blob, _ = snd.build(64 << 20)
    return stream, snd, [d for _, d in ex.parse_build(blob)]


def offline(stream):
    b = Books()
    b.core.feed(stream, final=True)
    return b


def books_equal(live_core, stream):
    ref = offline(stream)
    live = Books(core=live_core)
    assert dict(live.symbols()) == dict(ref.symbols())
    for loc, sym in ref.symbols():
        a, b = live.book(loc, 1000), ref.book(loc, 1000)
        assert a.levels("bid") == b.levels("bid") and a.levels("ask") == b.levels("ask"), sym
        assert live.info(loc)["messages"] == ref.info(loc)["messages"], sym


class Server:
    """Answers each new request of the lab after `rtt_ns` with Sender.reply (or not at all)."""

    def __init__(self, lab, snd, addr=SRV, rtt_ns=200_000, answer=True, index=0):
        self.lab, self.snd, self.addr, self.rtt, self.answer, self.index = lab, snd, addr, rtt_ns, answer, index
        self.seen = 0
        self.pending = []

    def step(self, now):
        sent = self.lab.sent()
        for srv, req in sent[self.seen:]:
            if self.answer and srv == self.index:
                rep, _ = self.snd.reply(req)
                if rep is not None:
                    self.pending.append((now + self.rtt, rep))
        self.seen = len(sent)
        due = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        for t, rep in due:
            self.lab.reply(rep, *self.addr, now)


def tick(lab, now, servers):
    """The lab's timers at `now`, then each re-request server's turn."""
    lab.tick(now)
    for s in servers:
        s.step(now)


def run(lab, pkts, servers, step_ns=20_000, now=MS, until_ns=200 * MS):
    for p in pkts:
        now += step_ns
        lab.packet(p, now)
        tick(lab, now, servers)
    end = now + until_ns
    while now < end:
        now += 100_000
        tick(lab, now, servers)
        if lab.report()["feeds"][0]["state"] in ("synced", "degraded") and not any(s.pending for s in servers):
            if lab.tick(now) is None:
                break
    return now


def feed(lab):
    r = lab.report()
    return r["feeds"][0], r["mold"], r["socket"]


def accounting(st):
    assert st["messages_missing"] == st["messages_late"] + st["messages_recovered"] + st["messages_lost"], st


@pytest.mark.parametrize("k", [1, 8])
def test_lossy_reordered_duplicated_stream_recovers_every_message_in_order(k):
    stream, snd, pkts = make_stream(k=k)
    rnd = random.Random(7)
    wire = []
    for i, p in enumerate(pkts):
        r = rnd.random()
        if r < 0.03 and i:                    # the first packet sets the session and start
            continue                      # lost
        wire.append(p)
        if r < 0.05:
            wire.append(p)                # duplicated
    for i in range(1, len(wire) - 1, 37):  # reordered pairs
        wire[i], wire[i + 1] = wire[i + 1], wire[i]
    lab = _core.RecoveryLab(RecoveryOptions(servers=[SRV]).core())
    srv = Server(lab, snd)
    run(lab, wire, [srv])
    f, m, _ = feed(lab)
    st = f["stats"]
    assert f["state"] == "synced" and st["gaps_lost"] == 0 and st["messages_lost"] == 0
    assert m["messages"] == 6000 and m["next"] == 6001 and m["gaps"] == 0
    assert st["messages_missing"] > 0 and st["messages_recovered"] > 0 and st["messages_late"] > 0
    accounting(st)
    assert st["drop_unrequested"] == st["drop_malformed"] == 0
    books_equal(lab.books(), stream)
    assert not Books(core=lab.books()).info(1)["suspect"]


def test_requests_wait_the_gap_timeout_are_capped_and_at_most_max_outstanding():
    stream, snd, pkts = make_stream(k=1)
    o = RecoveryOptions(servers=[SRV], request_max=10, max_outstanding=2, gap_timeout_s=0.001)
    lab = _core.RecoveryLab(o.core())
    lab.packet(pkts[0], MS)
    lab.packet(pkts[51], MS + 1)          # 2..51 missing: 50 messages
    f, _, _ = feed(lab)
    assert f["state"] == "gap_wait" and f["stats"]["gaps_seen"] == 1 and f["stats"]["messages_missing"] == 50
    assert lab.tick(MS + 999_999) is not None and lab.sent() == []   # not before the gap timeout
    lab.tick(MS + 1 + 1_000_000)
    reqs = [struct.unpack(">10sQH", r) for _, r in lab.sent()]
    assert reqs == [(b"HFTCAP0001", 2, 10), (b"HFTCAP0001", 12, 10)]
    assert feed(lab)[0]["state"] == "recovering"


def test_short_reply_asks_for_the_rest_at_once():
    stream, snd, pkts = make_stream(k=1, max_payload=200)   # a reply holds a few messages only
    lab = _core.RecoveryLab(RecoveryOptions(servers=[SRV], request_max=40, max_outstanding=1).core())
    lab.packet(pkts[0], MS)
    lab.packet(pkts[41], MS)
    lab.tick(2 * MS + 1)
    (srv, req), = lab.sent()
    rep, _ = snd.reply(req)
    n = struct.unpack(">H", rep[18:20])[0]
    assert 0 < n < 40
    lab.reply(rep, *SRV, 2 * MS + 2)
    second = struct.unpack(">10sQH", lab.sent()[1][1])
    assert second[1:] == (2 + n, 40 - n)
    assert feed(lab)[0]["stats"]["remainders"] == 1


def test_server_that_never_answers_declares_the_gap_lost_within_the_bound():
    stream, snd, pkts = make_stream(k=1)
    o = RecoveryOptions(servers=[SRV])
    lab = _core.RecoveryLab(o.core())
    lab.packet(pkts[0], MS)
    lab.packet(pkts[5], MS)               # 2..5 missing
    lab.packet(pkts[6], MS)
    bound = int((o.gap_timeout_s + o.declare_bound_s()) * 1e9)
    now = MS
    while feed(lab)[0]["state"] != "degraded":
        now += 100_000
        assert now - MS <= bound + 100_000, "not declared lost within the documented bound"
        lab.tick(now)
    assert now - MS > bound - 5 * MS, "declared lost before the retries were spent"
    f, m, _ = feed(lab)
    st = f["stats"]
    assert st["requests_sent"] == 5 and st["retries"] == 4 and st["timeouts"] == 5
    assert st["gaps_lost"] == 1 and st["messages_lost"] == 4 and f["lost"] == [(2, 4)]
    assert m["next"] == 8 and m["messages"] == 3   # the held messages 6 and 7 were applied
    for loc, _ in Books(core=lab.books()).symbols():
        assert Books(core=lab.books()).info(loc)["suspect"]
    accounting(st)


def test_failover_to_the_second_server_after_the_retries():
    stream, snd, pkts = make_stream(k=1)
    o = RecoveryOptions(servers=[SRV, SRV2], request_retries=1)
    lab = _core.RecoveryLab(o.core())
    s1 = Server(lab, snd, SRV, answer=False, index=0)
    s2 = Server(lab, snd, SRV2, index=1)
    run(lab, [pkts[0], pkts[3], pkts[4]], [s1, s2])
    f, m, _ = feed(lab)
    st = f["stats"]
    assert f["state"] == "synced" and m["next"] == 6
    assert st["failovers"] == 1 and st["timeouts"] == 2 and st["retries"] == 1
    assert st["messages_recovered"] == 2 and st["replies"] == 1
    assert [s for s, _ in lab.sent()] == [0, 0, 1]


def _gap_with_request(pkts, o=None):
    lab = _core.RecoveryLab((o or RecoveryOptions(servers=[SRV])).core())
    lab.packet(pkts[0], MS)
    lab.packet(pkts[4], MS)               # 2..4 missing
    lab.tick(3 * MS)
    (srv, req), = lab.sent()
    return lab, req


def test_hostile_replies_are_counted_by_reason_and_never_applied():
    stream, snd, pkts = make_stream(k=1)
    lab, req = _gap_with_request(pkts)
    good, _ = snd.reply(req)
    assert struct.unpack(">H", good[18:20])[0] == 3
    before = feed(lab)[1]["messages"]
    lab.reply(good, "10.9.9.9", 26401, 3 * MS)            # not a configured server
    lab.reply(good, SRV[0], 9999, 3 * MS)                  # right host, wrong port
    lab.reply(b"OTHERSESS0" + good[10:], *SRV, 3 * MS)     # another session
    unreq, _ = snd.reply(ex.request_packet(b"HFTCAP0001", 3, 2))
    lab.reply(unreq, *SRV, 3 * MS)                         # starts where nothing was asked
    lab.reply(good[:18] + struct.pack(">H", 5) + good[20:], *SRV, 3 * MS)  # count lies (5 > 3 blocks)
    lab.reply(good[:-1], *SRV, 3 * MS)                     # last block cut
    lab.reply(good + b"\0", *SRV, 3 * MS)                  # trailing byte
    lab.reply(good[:19], *SRV, 3 * MS)                     # shorter than a header
    lab.reply(good[:18] + b"\0\0", *SRV, 3 * MS)           # a heartbeat is no reply
    more = snd.reply(ex.request_packet(b"HFTCAP0001", 2, 6))[0]
    lab.reply(more, *SRV, 3 * MS)                          # more than asked for
    f, m, sock = feed(lab)
    assert sock["drop_unknown_source"] == 2 and sock["drop_wrong_session"] == 1
    assert sock["drop_malformed"] == 5
    assert f["stats"]["drop_unrequested"] == 2
    assert m["messages"] == before and m["next"] == 2 and f["state"] == "recovering"
    lab.reply(good, *SRV, 3 * MS)                          # the real one still works
    f, m, _ = feed(lab)
    assert m["next"] == 6 and f["state"] == "synced" and f["stats"]["messages_recovered"] == 3


def test_late_and_duplicate_answers_are_harmless():
    stream, snd, pkts = make_stream(k=1)
    lab, req = _gap_with_request(pkts)
    rep, _ = snd.reply(req)
    lab.tick(3 * MS + 5 * MS)                              # timed out: asked again
    assert len(lab.sent()) == 2 and feed(lab)[0]["stats"]["timeouts"] == 1
    lab.reply(rep, *SRV, 9 * MS)                           # the first answer, late
    lab.reply(rep, *SRV, 9 * MS)                           # and the answer to the retry
    f, m, _ = feed(lab)
    st = f["stats"]
    assert st["replies"] == 1 and st["replies_late"] == 1 and st["messages_recovered"] == 3
    assert m["messages"] == 5 and m["next"] == 6 and f["state"] == "synced"
    lab.packet(pkts[2], 10 * MS)                           # the lost packet itself, very late
    assert feed(lab)[1]["messages"] == 5 and feed(lab)[1]["duplicates"] == 1


def test_late_live_packet_fills_the_gap_before_any_request():
    stream, snd, pkts = make_stream(k=1)
    lab = _core.RecoveryLab(RecoveryOptions(servers=[SRV]).core())
    for i in (0, 2, 3, 1, 4):
        lab.packet(pkts[i], MS)
    lab.tick(10 * MS)
    f, m, _ = feed(lab)
    assert lab.sent() == [] and f["state"] == "synced" and m["next"] == 6
    assert f["stats"]["messages_late"] == 1 and f["stats"]["messages_missing"] == 1
    assert f["stats"]["episodes"] == 1 and f["stats"]["reorder_peak"] == 2


def test_session_change_is_reported_and_not_merged():
    stream, snd, pkts = make_stream(k=1)
    lab = _core.RecoveryLab(RecoveryOptions(servers=[SRV]).core())
    lab.packet(pkts[0], MS)
    lab.packet(pkts[3], MS)                                # 2..3 missing in the old session
    new = b"NEWSESS001" + struct.pack(">Q", 1) + pkts[0][18:]
    lab.packet(new, 2 * MS)
    f, m, _ = feed(lab)
    assert f["stats"]["session_changes"] == 1
    assert f["stats"]["gaps_lost"] == 1 and f["lost"] == [(2, 2)]   # the old holes can't be asked for
    assert m["next"] == 2
    old_reply = snd.reply(ex.request_packet(b"HFTCAP0001", 2, 2))[0]
    lab.reply(old_reply, *SRV, 2 * MS)
    assert feed(lab)[2]["drop_wrong_session"] == 1


def test_sequence_far_backwards_is_not_a_duplicate_and_not_merged():
    stream, snd, pkts = make_stream(k=1)
    lab = _core.RecoveryLab(RecoveryOptions(servers=[SRV], reorder_buffer=16).core())
    for p in pkts[:40]:
        lab.packet(p, MS)
    lab.packet(pkts[2], MS)                                # 38 behind, window 16
    lab.packet(pkts[35], MS)                               # inside the window: a duplicate
    f, m, _ = feed(lab)
    assert f["stats"]["backwards"] == 1 and m["duplicates"] == 1 and m["next"] == 41


def test_reorder_buffer_overflow_declares_the_oldest_hole_lost_at_once():
    stream, snd, pkts = make_stream(k=1)
    lab = _core.RecoveryLab(RecoveryOptions(servers=[SRV], reorder_buffer=16).core())
    lab.packet(pkts[0], MS)
    for p in pkts[2:30]:                                   # 2 missing; 28 ahead > 16 slots
        lab.packet(p, MS)
    f, m, _ = feed(lab)
    assert f["lost"] == [(2, 1)] and f["state"] == "degraded" and f["stats"]["overflows"] == 1
    assert m["next"] == 31 and m["messages"] == 29
    accounting(f["stats"])


def test_option_checks():
    assert parse_server("10.0.0.1:26401") == ("10.0.0.1", 26401)
    for bad in ("10.0.0.1", "host:1", "239.1.1.1:5", "10.0.0.1:0"):
        with pytest.raises(UsageError):
            parse_server(bad)
    for o in (RecoveryOptions(request_max=2001), RecoveryOptions(max_outstanding=0),
              RecoveryOptions(reorder_buffer=8), RecoveryOptions(servers=[SRV, SRV])):
        with pytest.raises(UsageError):
            check(o)
