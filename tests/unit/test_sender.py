"""The MoldUDP64 publisher without a socket: Sender.build() runs the same schedule as run()
(cutting, injection, stamping, heartbeats, End of Session) into a buffer, so packets, sequence
numbers, timestamps, injection and pacing arithmetic are checked exactly, as non-root."""
from __future__ import annotations

import struct
import time

import pytest

from hftcap import _core
from hftcap.lab.exchange import (frame, itch_add, parse_build, parse_packet,
                             request_packet, synthetic_stream)

SESSION = b"HFTCAP0001"
NS_DAY = 86_400_000_000_000


def adds(n, ts_step_ns=1000, first_ts=0):
    return [itch_add(1, i + 1, b"B", 100, 1_000_000, ts_ns=first_ts + i * ts_step_ns) for i in range(n)]


def build(stream, cap=None, **kw):
    s = _core.Sender(stream, **kw)
    blob, st = s.build(cap if cap is not None else 4 * len(stream) + 64 * (2 * s.packets + 64))
    return s, parse_build(blob), st


def data(recs):
    return [(d, parse_packet(dg)) for d, dg in recs if 0 < int.from_bytes(dg[18:20], "big") < 0xFFFF]


def ts_of(msg):
    return int.from_bytes(msg[5:11], "big")


def without_ts(msg):
    return msg[:5] + msg[11:]


def tai_mod():
    return time.clock_gettime_ns(time.CLOCK_TAI) % NS_DAY


def test_header_and_blocks_exact():
    msgs = adds(10)
    s, recs, st = build(frame(msgs), messages_per_packet=3, eos_count=2, clock="file")
    assert (s.messages, s.packets) == (10, 4)
    assert len(recs) == 6
    expect = [(1, 3), (4, 3), (7, 3), (10, 1)]
    for (d, dg), (seq, count) in zip(recs[:4], expect):
        assert dg[:10] == SESSION
        assert struct.unpack(">QH", dg[10:20]) == (seq, count)
        _, _, _, blocks = parse_packet(dg)
        assert blocks == msgs[seq - 1:seq - 1 + count]  # clock="file": bytes untouched
        assert len(dg) == 20 + sum(2 + len(m) for m in blocks)
    for _, dg in recs[4:]:  # End of Session: count 0xFFFF, next expected sequence number, no blocks
        assert dg == SESSION + struct.pack(">QH", 11, 0xFFFF)
    assert st["packets_sent"] == 4 and st["messages_sent"] == 10 and st["eos_sent"] == 2
    assert st["first_seq"] == 1 and st["next_seq"] == 11
    assert st["bytes_sent"] == sum(len(dg) for _, dg in recs[:4])
    assert st["stop_reason"] == "done" and st["clock"] == "file"


def test_session_is_space_padded_and_first_seq_honoured():
    s, recs, _ = build(frame(adds(4)), session=b"ABC", first_seq=1000, messages_per_packet=2,
                       eos_count=0)
    assert [dg[:20] for _, dg in recs] == [b"ABC       " + struct.pack(">QH", 1000, 2),
                                         b"ABC       " + struct.pack(">QH", 1002, 2)]


def test_packets_never_exceed_the_payload_limit():
    msgs = adds(200)  # 36-byte adds: (1400 - 20) // 38 = 36 fit
    s, recs, st = build(frame(msgs), messages_per_packet=1000, eos_count=0)
    sizes = [len(dg) for _, dg in recs]
    assert max(sizes) <= 1400
    counts = [parse_packet(dg)[2] for _, dg in recs]
    assert counts == [36] * 5 + [20]
    seqs = [parse_packet(dg)[1] for _, dg in recs]
    assert seqs == [1 + 36 * i for i in range(6)]
    s2, recs2, _ = build(frame(msgs), messages_per_packet=10, max_payload=200, eos_count=0)
    assert all(len(dg) <= 200 for _, dg in recs2)
    assert [parse_packet(dg)[2] for _, dg in recs2] == [4] * 50  # 20 + 4 * 38 = 172, 5 would be 210


def test_sequence_numbers_consecutive_over_a_mixed_stream():
    stream = synthetic_stream(1001)
    s, recs, st = build(stream, messages_per_packet=7, eos_count=1)
    got = []
    for _, (sess, seq, count, blocks) in data(recs):
        assert seq == len(got) + 1
        got.extend(blocks)
    assert len(got) == 1001 and st["next_seq"] == 1002
    assert [m[:1] for m in got[:2]] == [b"S", b"R"] and got[-1][:1] == b"S" and got[-1][11:] == b"C"
    lens = {b"S": 12, b"R": 39, b"A": 36, b"D": 19}  # ITCH50.md table 3
    assert all(len(m) == lens[m[:1]] for m in got)


def test_timestamps_stamped_at_send_time_tai_midnight():
    msgs = adds(500, first_ts=123)
    before = tai_mod()
    s, recs, st = build(frame(msgs), messages_per_packet=4, clock="tai-midnight")
    after = tai_mod()
    stamps = []
    for _, (_, seq, count, blocks) in data(recs):
        pkt_ts = {ts_of(m) for m in blocks}
        assert len(pkt_ts) == 1  # one stamp per packet, on every message
        stamps.append(pkt_ts.pop())
        # nothing but the timestamp changed
        assert [without_ts(m) for m in blocks] == [without_ts(m) for m in msgs[seq - 1:seq - 1 + count]]
    if after > before:  # not across midnight TAI
        assert all(before <= t <= after for t in stamps)
    assert stamps == sorted(stamps)  # monotonic in send order
    assert st["first_stamp_itch_ns"] == stamps[0] and st["last_stamp_itch_ns"] == stamps[-1]
    assert st["clock"] == "tai-midnight"
    # the history (stream()) holds exactly the stamped bytes that were sent
    sent = b"".join(struct.pack(">H", len(m)) + m for _, (_, _, _, b) in data(recs) for m in b)
    assert s.stream() == sent


def test_utc_midnight_clock():
    before = time.clock_gettime_ns(time.CLOCK_REALTIME) % NS_DAY
    _, recs, st = build(frame(adds(3)), clock="utc-midnight")
    after = time.clock_gettime_ns(time.CLOCK_REALTIME) % NS_DAY
    t = ts_of(parse_packet(recs[0][1])[3][0])
    assert st["clock"] == "utc-midnight"
    if after > before:
        assert before <= t <= after


def _wire(recs):
    return [(parse_packet(dg)[1], parse_packet(dg)[2]) for _, dg in recs]


def test_injection_deterministic_for_a_seed_and_consistent():
    stream = frame(adds(3000))
    kw = dict(messages_per_packet=1, loss=0.05, dup=0.05, reorder=0.05, eos_count=0)
    _, r1, s1 = build(stream, seed=42, **kw)
    _, r2, s2 = build(stream, seed=42, **kw)
    _, r3, s3 = build(stream, seed=43, **kw)
    w1, w2, w3 = _wire(r1), _wire(r2), _wire(r3)
    assert w1 == w2
    drop_ts = ("first_stamp_itch_ns", "last_stamp_itch_ns", "elapsed_ns")
    assert {k: v for k, v in s1.items() if k not in drop_ts} == {k: v for k, v in s2.items() if k not in drop_ts}
    assert w1 != w3
    seqs = [q for q, _ in w1]
    # about 5 % each of 3000 (binomial: 150 +- 12); bounds at > 5 sigma
    for k in ("lost_packets", "duplicated_packets", "reordered_packets"):
        assert 80 <= s1[k] <= 220, (k, s1[k])
    assert s1["data_packets"] == 3000
    assert s1["packets_sent"] == len(w1) == 3000 - s1["lost_packets"] + s1["duplicated_packets"]
    assert s1["lost_messages"] == s1["lost_packets"]
    # every sequence number is either sent or lost, never both
    assert len(_lost(w1)) == s1["lost_packets"]
    # duplicates are adjacent copies
    dups = sum(1 for a, b in zip(r1, r1[1:]) if a[1] == b[1])
    assert dups == s1["duplicated_packets"]
    # reordering swaps with the next packet: a visible descent is always x+1 then x; a swap
    # whose partner was lost is invisible on the wire
    uniq = [q for i, q in enumerate(seqs) if i == 0 or q != seqs[i - 1]]
    descents = [(a, b) for a, b in zip(uniq, uniq[1:]) if b < a]
    assert all(a == b + 1 for a, b in descents)
    assert 0 < len(descents) <= s1["reordered_packets"]


def test_reorder_without_loss_is_exactly_visible():
    stream = frame(adds(3000))
    _, r, st = build(stream, messages_per_packet=1, dup=0.1, reorder=0.1, seed=9, eos_count=0)
    seqs = [q for q, _ in _wire(r)]
    uniq = [q for i, q in enumerate(seqs) if i == 0 or q != seqs[i - 1]]
    assert sorted(uniq) == list(range(1, 3001))
    descents = [(a, b) for a, b in zip(uniq, uniq[1:]) if b < a]
    assert all(a == b + 1 for a, b in descents)
    assert len(descents) == st["reordered_packets"] > 200
    assert len(seqs) - 3000 == st["duplicated_packets"] > 200


def _lost(wire):
    sent = {q for q, _ in wire}
    return set(range(1, 3001)) - sent


def test_injection_extremes():
    stream = frame(adds(50))
    _, recs, st = build(stream, loss=1.0, eos_count=1)
    assert st["lost_packets"] == 50 and st["packets_sent"] == 0
    assert [dg for _, dg in recs] == [SESSION + struct.pack(">QH", 51, 0xFFFF)]
    _, recs, st = build(stream, dup=1.0, eos_count=0)
    assert _wire(recs) == [(i // 2 + 1, 1) for i in range(100)]
    assert st["duplicated_packets"] == 50
    _, recs, st = build(stream, reorder=1.0, eos_count=0)
    seqs = [q for q, _ in _wire(recs)]
    assert seqs == [x for i in range(1, 51, 2) for x in (i + 1, i)]  # pairs swapped
    assert st["reordered_packets"] == 25


def test_pacing_deadlines_absolute():
    assert _core.send_deadline_ns("packets", 1000.0, 7, 0) == 7_000_000
    assert _core.send_deadline_ns("messages", 3.0, 0, 10) == 3_333_333_333
    assert _core.send_deadline_ns("none", 0.0, 5, 5) == 0
    # no drift: the millionth packet at 1e6 pps is due at exactly 1 s
    assert _core.send_deadline_ns("packets", 1e6, 1_000_000, 0) == 1_000_000_000
    _, recs, _ = build(frame(adds(40)), messages_per_packet=4, pace="messages", rate=2000.0, eos_count=0)
    assert [d for d, _ in recs] == [i * 4 * 500_000 for i in range(10)]
    _, recs, _ = build(frame(adds(10)), pace="packets", rate=100.0, eos_count=0)
    assert [d for d, _ in recs] == [i * 10_000_000 for i in range(10)]


def test_file_pace_speed_and_heartbeats():
    ts = [34_200_000_000_000 + x for x in (0, 1_000_000, 2_000_000, 3_502_000_000)]  # 09:30 + ...
    msgs = [itch_add(1, i + 1, b"S", 10, 500_000, ts_ns=t) for i, t in enumerate(ts)]
    _, recs, st = build(frame(msgs), pace="file", speed=2.0, heartbeat_interval=1.0, eos_count=1,
                        clock="file")
    kinds = [(d, int.from_bytes(dg[10:18], "big"), int.from_bytes(dg[18:20], "big")) for d, dg in recs]
    assert kinds == [
        (0, 1, 1), (500_000, 2, 1), (1_000_000, 3, 1),
        (1_001_000_000, 4, 0),  # idle for > 1 s: a heartbeat carrying the next sequence number
        (1_751_000_000, 4, 1),  # (3.502 s - 0) / 2
        (1_751_000_000, 5, 0xFFFF),
    ]
    assert st["heartbeats_sent"] == 1
    _, recs, st = build(frame(msgs), pace="file", speed=0.5, heartbeat_interval=1.0, eos_count=0,
                        clock="file")
    hb = [d for d, dg in recs if dg[18:20] == b"\0\0"]
    assert hb == [1_004_000_000, 2_004_000_000, 3_004_000_000, 4_004_000_000, 5_004_000_000,
                  6_004_000_000]  # every second of a 7.004 s gap


def test_time_and_count_bounds():
    _, recs, st = build(frame(adds(100)), pace="packets", rate=10.0, max_seconds=2.0, eos_count=2)
    assert st["stop_reason"] == "max_time"
    assert [d for d, _ in recs[:21]] == [i * 100_000_000 for i in range(21)]  # 0 .. 2.0 s inclusive
    # cut short by time: End of Session still follows, carrying the next sequence number
    assert [dg for _, dg in recs[21:]] == [SESSION + struct.pack(">QH", 22, 0xFFFF)] * 2
    assert st["next_seq"] == 22 and st["eos_sent"] == 2
    _, recs, st = build(frame(adds(100)), max_packets=7, eos_count=1)
    assert st["data_packets"] == 7 and st["next_seq"] == 8
    assert recs[-1][1] == SESSION + struct.pack(">QH", 8, 0xFFFF)
    _, recs, st = build(frame(adds(100)), cap=500)
    assert st["stop_reason"] == "buffer_full"


def test_rerequest_reply():
    msgs = adds(100)
    s, recs, _ = build(frame(msgs), messages_per_packet=5, loss=0.3, seed=3)
    sent = {}
    hist = s.stream()
    o = 0
    for i in range(100):  # the history, stamped
        n = int.from_bytes(hist[o:o + 2], "big")
        sent[i + 1] = hist[o + 2:o + 2 + n]
        o += 2 + n
    rep, st = s.reply(request_packet(SESSION, 17, 6))
    sess, seq, count, blocks = parse_packet(rep)
    assert (sess, seq, count) == (SESSION, 17, 6)
    assert blocks == [sent[q] for q in range(17, 23)]
    assert [without_ts(b) for b in blocks] == [without_ts(m) for m in msgs[16:22]]
    assert st["reply_messages"] == 6
    # at most one datagram's worth, and never past what was sent
    rep, _ = s.reply(request_packet(SESSION, 1, 0xFFFE))
    assert len(rep) <= 1400 and parse_packet(rep)[2] == 36
    rep, _ = s.reply(request_packet(SESSION, 98, 10))
    assert parse_packet(rep)[2] == 3
    for req, key in ((request_packet(SESSION, 101, 1), "unknown_range"),
                     (request_packet(SESSION, 0, 1), "unknown_range"),
                     (request_packet(b"OTHERSESS1", 5, 1), "wrong_session"),
                     (request_packet(SESSION, 5, 0), "bad_request"),
                     (request_packet(SESSION, 5, 1) + b"x", "bad_request")):
        rep, st = s.reply(req)
        assert rep is None and st[key] == 1, (req, st)


def test_nothing_replied_before_it_was_sent():
    s = _core.Sender(frame(adds(10)))
    rep, st = s.reply(request_packet(SESSION, 1, 1))
    assert rep is None and st["unknown_range"] == 1


def test_bad_streams_and_parameters_rejected():
    good = frame(adds(3))
    with pytest.raises(ValueError):
        _core.Sender(good[:-1])  # a record runs past the end
    with pytest.raises(ValueError):
        _core.Sender(frame([b"A" * 1500]))  # cannot fit one packet
    assert _core.stream_count(good) == 3
    for i in range(1, len(good)):
        if i not in (38, 76):
            with pytest.raises(ValueError):
                _core.stream_count(good[:i])
    for kw in ({"messages_per_packet": 0}, {"first_seq": 0}, {"pace": "packets"}, {"pace": "bogus"},
               {"loss": 1.5}, {"clock": "gps"}, {"session": b"12345678901"}, {"eos_count": 99}):
        with pytest.raises(ValueError):
            _core.Sender(good, **kw)


def test_empty_stream_sends_only_end_of_session():
    _, recs, st = build(b"", eos_count=2)
    assert [dg for _, dg in recs] == [SESSION + struct.pack(">QH", 1, 0xFFFF)] * 2
    assert st["data_packets"] == 0


def test_netns_missing_is_one_line_error():
    from hftcap.errors import HftcapError
    from hftcap.lab.exchange import run_send
    with pytest.raises(HftcapError) as e:
        run_send("hftcap-no-such-ns-x", "239.1.1.1:26400", 10, 1, 1)
    assert "does not exist" in e.value.msg and e.value.hint


def test_usage_errors():
    from hftcap.errors import UsageError
    from hftcap.lab.exchange import run_exchange, run_send
    with pytest.raises(UsageError):
        run_send(None, "10.0.0.1:26400", 10, 1, 1)  # not multicast
    with pytest.raises(UsageError):
        run_send(None, "239.1.1.1:26400", 10, 1, 34)
    with pytest.raises(UsageError):
        run_exchange(None, "239.1.1.1:26400", b"", msg_rate=10, speed=1)
    with pytest.raises(UsageError):
        run_exchange(None, "239.1.1.1:26400", b"", loss=2)


def test_write_nasdaq_layout(tmp_path):
    from hftcap.lab.exchange import read_itch_file, run_exchange
    stream = synthetic_stream(50)
    for name in ("x.itch", "x.itch.gz"):
        p = str(tmp_path / name)
        r = run_exchange(None, "239.1.1.1:26400", stream, write=p)
        assert r["messages"] == 50 and r["bytes"] == len(stream)
        assert read_itch_file(p) == stream
        assert read_itch_file(p, max_messages=7) == frame(parse_packet(
            SESSION + struct.pack(">QH", 1, 50) + stream)[3][:7])


def test_generator_source():
    """The built-in generator when this build has it (hftcap.lab.gen), else a one-line error."""
    from hftcap.errors import HftcapError
    from hftcap.lab.exchange import run_exchange
    try:
        import hftcap.lab.gen  # noqa: F401
    except ImportError:
        with pytest.raises(HftcapError) as e:
            run_exchange(None, "239.1.1.1:26400", {"seed": 1, "stocks": 3, "messages": 100}, write="/dev/null")
        assert "generator" in e.value.msg and "--file" in e.value.hint
        return
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        r = run_exchange(None, "239.1.1.1:26400", {"seed": 5, "stocks": 3, "messages": 1000},
                         write=f"{d}/g.itch")
        assert r["messages"] >= 1000
        run_exchange(None, "239.1.1.1:26400", {"seed": 5, "stocks": 3, "messages": 1000},
                             write=f"{d}/h.itch")
        assert open(f"{d}/g.itch", "rb").read() == open(f"{d}/h.itch", "rb").read()
