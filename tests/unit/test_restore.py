"""A join's hole and a restore after a gap declared lost, driven through the data thread's own
code: hftcap._core.RecoveryLab (consumer, books and a lab-mode recovery on the test's clock)
with a join armed on it (RecoveryLab.arm_join), the snapshot client (hftcap.feed.glimpse) over
loopback against the lab's snapshot server with the sender doubles of tests/doubles, and the
lab exchange's reply code (Sender.reply) as the re-request server. Counters are exact by
construction: the stream, the packets dropped and the snapshots' N are all chosen here."""
from __future__ import annotations

import struct
import sys
import threading
import time
from pathlib import Path

from hftcap import _core
from hftcap.book.books import Books
from hftcap.feed import glimpse
from hftcap.feed.recovery import RecoveryOptions
from hftcap.lab import exchange as ex
from hftcap.lab.snapshot_server import SnapshotServer

sys.path.insert(0, str(Path(__file__).parent.parent / "doubles"))
from soup_server import StepSender  # noqa: E402

SRV = ("10.0.0.1", 26401)
MS = 1_000_000
K = 8                 # messages per packet: packet i starts at sequence 1 + 8 i
N_MSGS = 6000


def make_stream():
    stream = ex.generate(3, 4, N_MSGS)
    snd = _core.Sender(stream, messages_per_packet=K, clock="file", heartbeat_interval=0.0, eos_count=1)
    blob, _ = snd.build(64 << 20)
    pkts = {}
    for _, d in ex.parse_build(blob):
        seq, count = struct.unpack(">QH", d[10:20])
        if 0 < count < 0xFFFF:
            pkts[seq] = d
    return stream, snd, pkts


STREAM, SND, PKTS = make_stream()
SESSION = PKTS[1][:10]


def packets(lo: int, hi: int) -> list[bytes]:
    """The data packets carrying sequences [lo, hi) (lo and hi on packet boundaries)."""
    assert (lo - 1) % K == 0 and (hi - 1) % K == 0
    return [PKTS[s] for s in range(lo, hi, K)]


def books_equal(live_core, stream) -> None:
    ref = Books()
    ref.core.feed(stream, final=True)
    live = Books(core=live_core)
    assert dict(live.symbols()) == dict(ref.symbols())
    for loc, sym in ref.symbols():
        a, b = live.book(loc, 1000), ref.book(loc, 1000)
        assert a.levels("bid") == b.levels("bid") and a.levels("ask") == b.levels("ask"), sym


class Rig:
    """The lab's data thread, driven from the test thread on a fake clock, a re-request
    server answering (or not) each request after 200 us, and the snapshot client."""

    def __init__(self, servers, answer=True, request_max=64, request_timeout_s=0.005, retries=2):
        o = RecoveryOptions(servers=servers, request_max=request_max, request_timeout_s=request_timeout_s,
                            request_retries=retries, gap_timeout_s=0.001)
        self.lab = _core.RecoveryLab(o.core())
        self.join = self.lab.arm_join(4096)
        self.books = self.lab.books()
        self.answer, self.now, self.seen, self.pending = answer, MS, 0, []

    def step(self, dt=100_000):
        self.now += dt
        self.lab.idle()
        self.lab.tick(self.now)
        sent = self.lab.sent()
        for _srv, req in sent[self.seen:]:
            if self.answer:
                rep, _ = SND.reply(req)
                if rep is not None:
                    self.pending.append((self.now + 200_000, rep))
        self.seen = len(sent)
        due = [p for p in self.pending if p[0] <= self.now]
        self.pending = [p for p in self.pending if p[0] > self.now]
        for _t, rep in due:
            self.lab.reply(rep, *SRV, self.now)

    def send(self, lo, hi):
        for p in packets(lo, hi):
            self.now += 20_000
            self.lab.packet(p, self.now)
            self.lab.tick(self.now)

    def until(self, cond, what, timeout_s=20.0):
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout_s} s: join {self.join.stats()}")
            self.step()
            time.sleep(0.0005)

    def hole(self):
        return self.lab.report()["feeds"][0]["hole"]

    def feed_state(self):
        return self.lab.report()["feeds"][0]["state"]

    def join_snapshot(self, spins):
        """A snapshot server on loopback spinning the stream at each of `spins`, and the snapshot
        client run against it until done (the server closed after, whatever happens)."""
        srv = SnapshotServer(StepSender(STREAM, spins), 0, host="127.0.0.1").start()
        try:
            c = client(self.join, self.books, srv.port).start()
            self.until(c.done.is_set, "the join")
        finally:
            srv.close()
        return c


def client(join, books, port, **kw):
    return glimpse.SnapshotClient(join, books.stats, "127.0.0.1", port, backoff_s=0.01, attempts=3, **kw)


def hole_requests(rig):
    return [struct.unpack(">10sQH", r)[1:] for _s, r in rig.lab.sent()]


def test_hole_after_the_snapshot_is_re_requested_then_the_buffer_spliced():
    rig = Rig([SRV])
    rig.send(2001, 3001)            # joined at 2001: the buffer holds 2001..3000
    c = rig.join_snapshot([1700])
    assert c.error is None and rig.join.state == "live"
    s = rig.join.stats()
    # N = 1701: the hole [1701, 2001) came in requests of at most 64 messages, one at a time
    assert (s["snapshot_next"], s["hole_first"], s["hole_end"]) == (1701, 1701, 2001)
    # each reply is one datagram's worth: the next request starts where it stopped
    want, first = [], 1701
    while first < 2001:
        want.append((first, min(64, 2001 - first)))
        rep, _ = SND.reply(struct.pack(">10sQH", SESSION, *want[-1]))
        first += struct.unpack(">H", rep[18:20])[0]
    assert hole_requests(rig) == want and len(want) > 5
    assert rig.hole() == {"holes": 1, "filled": 1, "failed": 0, "requests": len(want), "retries": 0,
                          "timeouts": 0, "failovers": 0, "replies": len(want), "messages": 300}
    assert (s["holes"], s["holes_filled"], s["holes_failed"], s["hole_messages"]) == (1, 1, 0, 300)
    assert (s["buffered"], s["applied"], s["discarded"], s["behind"], s["splices"]) == (1000, 1000, 0, 0, 1)
    assert c.tries == 1
    rec = rig.lab.report()["feeds"][0]["stats"]
    assert rec["messages_recovered"] == 0 and rec["requests_sent"] == 0, "a hole is not a gap"
    rig.send(3001, N_MSGS + 1)
    books_equal(rig.books, STREAM)


def test_hole_re_request_failing_fetches_a_new_snapshot():
    rig = Rig([SRV], answer=False, retries=2)
    rig.send(2001, 3001)
    c = rig.join_snapshot([1700, 2500])
    assert c.error is None and rig.join.state == "live"
    s = rig.join.stats()
    # one request, re-sent twice, each timing out: the hole failed, the next snapshot N = 2501
    assert hole_requests(rig) == [(1701, 64)] * 3
    assert rig.hole() == {"holes": 1, "filled": 0, "failed": 1, "requests": 3, "retries": 2, "timeouts": 3,
                          "failovers": 0, "replies": 0, "messages": 0}
    assert (s["holes"], s["holes_failed"], s["behind"], s["snapshot_next"]) == (1, 1, 1, 2501)
    assert (s["applied"], s["discarded"], s["clears"], s["splices"]) == (500, 500, 1, 1)
    assert c.tries == 2 and c.failures == ["behind: the join buffer started after the snapshot's sequence"]
    rig.send(3001, N_MSGS + 1)
    books_equal(rig.books, STREAM)


def test_hole_without_a_re_request_server_fetches_a_new_snapshot():
    rig = Rig([])
    rig.send(2001, 3001)
    c = rig.join_snapshot([1700, 2500])
    s = rig.join.stats()
    assert rig.join.state == "live" and rig.lab.sent() == []
    assert rig.hole()["holes"] == 0 and (s["holes"], s["behind"], s["snapshot_next"]) == (0, 1, 2501)
    rig.send(3001, N_MSGS + 1)
    books_equal(rig.books, STREAM)


def test_gap_declared_lost_is_restored_from_a_snapshot():
    rig = Rig([])                   # no re-request server: a gap is lost after the gap timeout
    rig.send(1, 1001)
    gate = threading.Event()
    gate.set()
    events = []
    srv = SnapshotServer(StepSender(STREAM, [800, 1500], gate=gate), 0, host="127.0.0.1").start()
    try:
        c = client(rig.join, rig.books, srv.port, restore=True,
                   on_event=lambda kind, text: events.append(kind)).start()
        rig.until(c.joined.is_set, "the first join")
        gate.clear()                # the restore's snapshot waits until the test has looked
        assert rig.join.stats()["snapshot_next"] == 801 and rig.feed_state() == "synced"
        rig.send(1009, 2001)        # 1001..1008 never come
        rig.until(lambda: rig.feed_state() == "degraded", "the gap declared lost")
        b = Books(core=rig.books)
        assert b.info(1)["suspect"] and rig.join.stats()["rearms"] == 1
        rig.until(lambda: rig.join.state == "buffering" and c.restoring, "the restore under way")
        p = c.progress()   # what the live view shows meanwhile
        assert (p["phase"], p["state"], p["buffered"], p["restores"], p["rearms"]) == \
            ("restoring", "buffering", 1000 + 992, 0, 1)
        gate.set()
        rig.until(lambda: len(c.restore_log) == 1, "the restore")
    finally:
        c.stop()
        srv.close()
    s = rig.join.stats()
    assert rig.join.state == "live" and rig.feed_state() == "synced"
    assert not Books(core=rig.books).info(1)["suspect"]
    rec = rig.lab.report()["feeds"][0]["stats"]
    assert (rec["gaps_lost"], rec["messages_lost"]) == (1, 8)
    # re-armed at 1009: the buffer held 1009..2000; the snapshot N = 1501
    assert (s["rearms"], s["restores"], s["snapshot_next"], s["first_seq"]) == (1, 1, 1501, 1009)
    assert (s["applied"], s["discarded"]) == (200 + 500, 800 + 492)
    assert s["clears"] == 1 and 0 < s["restore_ns_last"] == s["restore_ns_max"] == s["restore_ns_sum"]
    res = c.result()["restores"]
    assert (res["started"], res["completed"], res["in_progress"], res["error"]) == (1, 1, False, None)
    assert events == ["restoring", "restored"]
    p = c.progress()
    assert (p["phase"], p["restores"], p["orders_loaded"], p["bytes"]) == ("live", 1, None, None)
    rig.send(2001, N_MSGS + 1)
    books_equal(rig.books, STREAM)


def _first_join_with_a_loss(skip_from: int, spins: list[int]):
    rig = Rig([])                   # no re-request server: the gap is lost after the gap timeout
    rig.send(1, skip_from)
    rig.send(skip_from + K, 1001)   # one packet (8 messages) never comes
    rig.until(lambda: rig.lab.report()["feeds"][0]["stats"]["gaps_lost"] == 1, "the gap declared lost")
    assert rig.feed_state() == "degraded"   # (no book yet: the join buffers from the first packet)
    c = rig.join_snapshot(spins)
    assert c.error is None and rig.join.state == "live"
    return rig, c


def test_loss_below_n_during_the_first_join_is_covered_by_the_snapshot():
    rig, c = _first_join_with_a_loss(401, [800])
    s = rig.join.stats()
    assert (s["snapshot_next"], s["lost_upto"], s["lost_after_n"], s["behind"]) == (801, 409, 0, 0)
    assert (s["buffered"], s["applied"], s["discarded"]) == (992, 200, 792)
    assert rig.feed_state() == "synced" and not Books(core=rig.books).info(1)["suspect"]
    assert (s["rearms"], s["restores"]) == (0, 0), "a first join is not a restore"
    rig.send(1001, N_MSGS + 1)
    books_equal(rig.books, STREAM)


def test_loss_at_or_after_n_during_the_join_refuses_that_snapshot():
    rig, c = _first_join_with_a_loss(905, [800, 1000])
    s = rig.join.stats()
    # N = 801 would miss 905..912: refused; the next snapshot's N = 1001 covers the loss
    assert (s["lost_upto"], s["lost_after_n"], s["behind"], s["snapshot_next"]) == (913, 1, 1, 1001)
    assert (s["applied"], s["discarded"], s["clears"], s["splices"]) == (0, 992, 1, 1)
    assert c.tries == 2 and rig.feed_state() == "synced" and not Books(core=rig.books).info(1)["suspect"]
    rig.send(1001, N_MSGS + 1)
    books_equal(rig.books, STREAM)


def test_join_while_the_feed_only_heartbeats_splices_at_the_heartbeats_sequence():
    rig = Rig([])
    rig.now += 20_000
    rig.lab.packet(SESSION + struct.pack(">QH", 2001, 0), rig.now)  # a heartbeat: next is 2001
    c = rig.join_snapshot([2000])
    s = rig.join.stats()
    assert c.error is None and rig.join.state == "live"
    assert (s["snapshot_next"], s["buffered"], s["applied"], s["behind"]) == (2001, 0, 0, 0)
    rig.send(2001, N_MSGS + 1)
    books_equal(rig.books, STREAM)
