"""MoldUDP64 sequencing in the C consumer: exact counts for every framing and sequence case."""
from __future__ import annotations

import struct

import pytest

from hftcap import _core

SESSION = b"SESSION001"


def pkt(seq, msgs, session=SESSION, count=None, tail=b""):
    body = b"".join(struct.pack(">H", len(m)) + m for m in msgs)
    n = len(msgs) if count is None else count
    return session + struct.pack(">QH", seq, n) + body + tail


def msgs(k, size=12):
    return [bytes([65 + i % 26]) * size for i in range(k)]


def test_known_workload():
    st = _core.consume([pkt(1 + 7 * i, msgs(7)) for i in range(23)])
    assert st["packets"] == 23 and st["messages"] == 161
    assert st["gaps"] == 0 and st["duplicates"] == 0 and st["last_sequence"] == 161
    assert not any(st["drops"].values())


def test_gap_then_late_packet_is_a_duplicate():
    st = _core.consume([pkt(1, msgs(3)), pkt(10, msgs(2)), pkt(4, msgs(3))])
    assert st["gaps"] == 6 and st["gap_events"] == 1
    assert st["messages"] == 5 and st["duplicates"] == 3 and st["last_sequence"] == 11


def test_overlap_delivers_only_new_blocks():
    st = _core.consume([pkt(1, msgs(5)), pkt(3, msgs(6))])
    assert st["messages"] == 8 and st["duplicates"] == 3 and st["last_sequence"] == 8


def test_heartbeat_reveals_tail_loss_and_end_of_session():
    st = _core.consume([pkt(1, msgs(2)), pkt(6, [], count=0), pkt(6, [], count=0xFFFF)])
    assert st["heartbeats"] == 1 and st["end_of_session"] == 1
    assert st["gaps"] == 3 and st["messages"] == 2


def test_short_packet_counted():
    st = _core.consume([b"", b"x" * 19, pkt(1, msgs(1))])
    assert st["drops"]["mold_short"] == 2 and st["messages"] == 1 and st["packets"] == 3


@pytest.mark.parametrize("cut", range(1, 40))
def test_truncation_never_reads_past_and_stream_continues(cut):
    full = pkt(1, msgs(3))  # 20 + 3 * 14 = 62 bytes
    st = _core.consume([full[:-cut], pkt(4, msgs(2))])
    whole_blocks = max(0, (len(full) - cut - 20) // 14)
    assert st["messages"] == whole_blocks + 2
    assert st["drops"]["mold_truncated"] == 3 - whole_blocks
    assert st["gaps"] == 0  # truncated blocks are counted once, as drops
    assert st["last_sequence"] == 5


def test_lying_count_and_zero_length_blocks():
    st = _core.consume([pkt(1, msgs(2), count=50), pkt(51, [b"", b"", b"A"])])
    assert st["drops"]["mold_truncated"] == 48 and st["messages"] == 5
    assert st["last_sequence"] == 53


def test_trailing_bytes_counted():
    st = _core.consume([pkt(1, msgs(2), tail=b"\x00\x01\x02")])
    assert st["messages"] == 2 and st["drops"]["mold_trailing"] == 1


def test_new_session_restarts_sequence():
    st = _core.consume([pkt(1, msgs(4)), pkt(1, msgs(2), session=b"SESSION002")])
    assert st["sessions"] == 2 and st["messages"] == 6 and st["duplicates"] == 0
