"""The snapshot client (hftcap.feed.glimpse) and server (hftcap.lab.snapshot_server) over
loopback, with a standalone Join playing the data thread: joins that must equal a full replay,
a rejected login, a server that dies mid-snapshot, hostile framing counted exactly, and a spin
of one million resting orders."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from hftcap import _core
from hftcap.feed import glimpse, soupbin
from hftcap.lab.snapshot_server import SnapshotServer

sys.path.insert(0, str(Path(__file__).parent.parent / "doubles"))
from soup_server import PrefixSender, ScriptedServer  # noqa: E402
from bounds import bound
from refmodel import unframe


def packet(seq: int, msgs: list[bytes]) -> bytes:
    return b"HFTCAP0001" + struct.pack(">QH", seq, len(msgs)) + b"".join(struct.pack(">H", len(m)) + m for m in msgs)


def feed(join, msgs, lo, hi, k=8):
    """Packets of messages [lo, hi] (1-based sequences) into the join, as the data thread would."""
    seq = lo
    while seq <= hi:
        ms = msgs[seq - 1:min(hi, seq - 1 + k)]
        join.packet(packet(seq, ms))
        seq += len(ms)


def same_books(a, b) -> None:
    assert [s for _, s in a.symbols()] == [s for _, s in b.symbols()]
    for loc, sym in a.symbols():
        assert a.book_raw(loc, 100000) == b.book_raw(loc, 100000), sym
        ia, ib = a.info(loc), b.info(loc)
        assert (ia["trading_state"], ia["orders_live"]) == (ib["trading_state"], ib["orders_live"]), sym


def client(join, books, port, **kw):
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("attempts", 2)
    return glimpse.SnapshotClient(join, books.stats, "127.0.0.1", port, **kw)


STREAM = bytes(_core.generate(5, 6, 40_000))
MSGS = list(unframe(STREAM))


def run_join(server_port, join, books, **kw):
    c = client(join, books, server_port, **kw).start()
    # While the client loads, play the data thread: poll between (no) packets until it is done.
    while not c.done.wait(0.005):
        join.poll()
    return c


def join_against(srv, **kw):
    """A fresh Join (a 4096-message buffer) on fresh books, run against `srv`, which is closed
    after whatever happens: (the client, the join, the books)."""
    try:
        books = _core.Books()
        join = _core.Join(4096, books)
        c = run_join(srv.port, join, books, **kw)
    finally:
        srv.close()
    return c, join, books


def test_late_join_over_tcp_equals_full_replay():
    k = 15_000
    srv = SnapshotServer(PrefixSender(STREAM, k), 0, host="127.0.0.1").start()
    try:
        books = _core.Books()
        join = _core.Join(1 << 16, books)
        feed(join, MSGS, 12_001, 20_000)  # the live feed, buffered from before N = 15001
        c = run_join(srv.port, join, books)
    finally:
        res = srv.close()
    assert c.error is None and join.state == "live"
    s = join.stats()
    assert (s["snapshot_next"], s["discarded"], s["applied"]) == (15_001, 3_000, 5_000)
    feed(join, MSGS, 20_001, len(MSGS))
    full = _core.Books()
    full.feed(STREAM)
    same_books(full, books)
    assert res["logins_accepted"] == 1 and res["snapshots"] == 1 and res["logouts"] == 1
    assert c.result()["orders_loaded"] == res["spins"][0]["orders"] > 0


def test_login_rejected_is_not_retried():
    srv = SnapshotServer(PrefixSender(STREAM, 100), 0, host="127.0.0.1", user="alice", password="secret").start()
    try:
        books = _core.Books()
        join = _core.Join(4096, books)
        c = run_join(srv.port, join, books, user="alice", password="wrong", attempts=4)
    finally:
        res = srv.close()
    assert c.rejected == "login rejected: not authorised (user or password)"
    assert c.tries == 1 and res["logins_rejected"] == 1 and res["snapshots"] == 0
    assert join.state == "buffering" and c.failed.is_set()


def test_connection_refused_retries_then_one_error():
    s = __import__("socket").socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    books = _core.Books()
    join = _core.Join(4096, books)
    c = run_join(port, join, books, attempts=3)
    assert c.tries == 3 and len(c.failures) == 3 and "refused" in c.failures[0].lower()
    assert c.error.startswith("no snapshot after 3 attempts")


def spin_of(n: int) -> bytes:
    data, _ = _core.spin_build(STREAM, n, 1)
    return data


ACCEPT = soupbin.login_accepted("HFTCAP0001", 1)


def test_server_dies_mid_snapshot_counts_and_retries_into_cleared_books():
    spin = spin_of(20_000)
    srv = ScriptedServer(ACCEPT + spin[:len(spin) // 2 + 1])  # cut inside a packet
    c, join, _ = join_against(srv, attempts=2)
    assert c.failures == ["connection closed by the server mid-snapshot"] * 2
    s = join.stats()
    assert (s["loads"], s["clears"]) == (2, 1), "the second load starts from cleared books"
    assert join.state == "buffering" and c.error.startswith("no snapshot after 2 attempts")


@pytest.mark.parametrize("name,tail,counter", [
    ("zero length", b"\x00\x00S", "bad_length"),
    ("unknown type", soupbin.packet(b"Q", b"xyz"), "unknown_type"),
    ("end of session before G", soupbin.packet(b"Z"), "end_of_session"),
    ("bad end of snapshot", soupbin.packet(b"S", b"G" + b"12x".rjust(20)), "bad_end"),
])
def test_hostile_framing_closes_and_counts(name, tail, counter):
    good = soupbin.packet(b"H") + soupbin.packet(b"+", b"hello")
    lying = soupbin.packet(b"S", MSGS[20][:-1] if len(MSGS[20]) > 20 else MSGS[20] + b"\0")
    srv = ScriptedServer(ACCEPT + good + lying + tail)
    c, join, books = join_against(srv, attempts=2)
    soup = join.stats()["soup"]
    assert soup[counter] == 2, soup  # once per attempt, the connection closed each time
    assert soup["heartbeats"] == 2 and soup["debug"] == 2 and soup["sequenced"] == 2 + 2 * (counter == "bad_end")
    assert sum(v for k, v in soup.items() if k in ("bad_length", "unknown_type", "end_of_session", "bad_end")) == 2
    drops = books.stats()["drops"]
    assert drops["truncated"] + drops["bad_length"] == 2, "the lying S message is a counted ITCH drop"
    assert all(f.startswith("hostile framing: ") for f in c.failures) and join.state == "buffering"


def test_stalled_server_times_out():
    srv = ScriptedServer(ACCEPT, hold=True)
    c, _, _ = join_against(srv, attempts=1, dead_after_s=0.3)
    assert c.failures == ["server silent for 0.3 s (heartbeat timeout)"]


def test_behind_snapshot_is_fetched_again():
    """The ring starts after N: the books go back to the loader, which snapshots again."""
    srv = SnapshotServer(PrefixSender(STREAM, 10_000), 0, host="127.0.0.1").start()
    try:
        books = _core.Books()
        join = _core.Join(4096, books)
        feed(join, MSGS, 12_001, 13_000)
        c = run_join(srv.port, join, books, attempts=2)
    finally:
        srv.close()
    s = join.stats()
    assert s["behind"] == 2 and s["loads"] == 2 and s["clears"] == 1 and s["applied"] == 0
    assert c.failures == ["behind: the join buffer started after the snapshot's sequence"] * 2


def test_one_million_resting_orders_load_and_join():
    n = 1_000_000
    R = bytes(b"R" + struct.pack(">HH", 1, 0) + bytes(6) + b"MILL    " + b"QN" + struct.pack(">I", 100)
              + b"NCZ PNN1N" + struct.pack(">I", 0) + b"N")
    msgs = [R] + [b"A" + struct.pack(">HH", 1, 0) + bytes(6) + struct.pack(">Q1sI8sI", i + 1, b"B" if i % 2 else b"S",
                  100, b"MILL    ", 1_000_000 + (i % 500) * 100 + (0 if i % 2 else 60_000)) for i in range(n)]
    msgs += [b"D" + struct.pack(">HH", 1, 0) + bytes(6) + struct.pack(">Q", i + 1) for i in range(0, 2000, 2)]
    stream = b"".join(struct.pack(">H", len(m)) + m for m in msgs)
    srv = SnapshotServer(PrefixSender(stream, n + 1), 0, host="127.0.0.1").start()
    try:
        books = _core.Books(expected_orders=n)
        join = _core.Join(1 << 12, books)
        feed(join, msgs, n - 100, len(msgs))
        c = run_join(srv.port, join, books, total_timeout_s=300)
    finally:
        res = srv.close()
    assert c.error is None and join.state == "live", c.failures
    assert res["spins"][0]["orders"] == n and c.result()["orders_loaded"] == n
    s = join.stats()
    assert (s["snapshot_next"], s["discarded"], s["applied"]) == (n + 2, 102, 1000)  # [n-100, n+1] < N
    full = _core.Books(expected_orders=n)
    full.feed(stream)
    same_books(full, books)
    assert books.stats()["orders_live"] == n - 1000


def raw_login(port, user="", password=""):
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=bound(10))
    s.sendall(soupbin.login_request(user, password, "", 1))
    return s


def read_until(s, reader, pred, timeout=bound(10.0)):
    import time
    end = time.monotonic() + timeout
    got = []
    while time.monotonic() < end:
        data = s.recv(1 << 20)
        if not data:
            return got, True
        reader.feed(data)
        for p in reader.packets():
            got.append(p)
            if pred(p):
                return got, False
    raise AssertionError("server did not answer in time")


def test_server_several_clients_heartbeats_and_timeouts():
    srv = SnapshotServer(PrefixSender(STREAM, 5_000), 0, host="127.0.0.1", heartbeat_s=0.05,
                         dead_after_s=0.3).start()
    try:
        socks = [raw_login(srv.port) for _ in range(3)]
        ends = set()
        for s in socks:
            r = soupbin.Reader()
            got, _ = read_until(s, r, lambda p: p[0] == b"S" and p[1][:1] == b"G")
            assert got[0][0] == b"A" and soupbin.parse_login_accepted(got[0][1]) == ("HFTCAP0001", 1)
            ends.add(int(got[-1][1][1:].decode()))
        assert ends == {5_001}
        # One logs out; the two others go silent and are dropped after dead_after_s, hearing
        # server heartbeats until then.
        socks[0].sendall(soupbin.packet(b"O"))
        for s in socks[1:]:
            got, closed = read_until(s, soupbin.Reader(), lambda p: False, timeout=bound(10))
            assert closed and {k for k, _ in got} == {b"H"}, "heartbeats, then closed"
        for s in socks:
            s.close()
    finally:
        res = srv.close()
    assert res["snapshots"] == 3 and res["logouts"] == 1 and res["client_timeouts"] == 2
    assert res["heartbeats_sent"] >= 1


def test_server_refuses_a_packet_before_login_and_a_wrong_session():
    import socket
    srv = SnapshotServer(PrefixSender(STREAM, 100), 0, host="127.0.0.1").start()
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=bound(10))
        s.sendall(soupbin.packet(b"R"))
        assert s.recv(100) == b""  # closed without a word
        s.close()
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=bound(10))
        s.sendall(soupbin.login_request("", "", "OTHER", 1))
        assert s.recv(100) == soupbin.login_rejected(b"S")
        s.close()
    finally:
        res = srv.close()
    assert res["protocol_errors"] == 1 and res["logins_rejected"] == 1 and res["snapshots"] == 0


def test_rearm_restores_dirty_books_and_refuses_a_stale_snapshot():
    """The restore after a gap declared lost reuses the hand-over: the data thread re-arms, the
    loader clears the stale books; a snapshot behind what was applied is refused (stale)."""
    books = _core.Books()
    join = _core.Join(1 << 16, books)
    feed(join, MSGS, 9_001, 12_000)
    join.load_begin()
    assert join.load(spin_of(10_000))[0] == 1
    join.hand_over(10_001)
    join.poll()
    feed(join, MSGS, 12_001, 25_000)
    feed(join, MSGS, 25_101, 30_000)  # 100 messages lost for good: the books are wrong now
    join.rearm()                      # what issue 10's `degraded` will do
    assert join.state == "buffering"
    feed(join, MSGS, 30_001, 31_000)
    join.load_begin()                 # clears the stale books
    assert join.load(spin_of(20_000))[0] == 1
    join.hand_over(20_001)            # N below the 30,000 already applied
    join.poll()
    assert join.state == "behind" and join.stats()["stale"] == 1
    join.load_begin()
    assert join.load(spin_of(30_500))[0] == 1
    join.hand_over(30_501)
    join.poll()
    assert join.state == "live"
    s = join.stats()
    assert (s["loads"], s["clears"], s["splices"], s["behind"], s["stale"]) == (3, 2, 2, 1, 1)
    feed(join, MSGS, 31_001, len(MSGS))
    full = _core.Books()
    full.feed(STREAM)
    same_books(full, books)
