"""Offline inputs: NASDAQ layout plain and gzip, pcap (both byte orders, usec/nsec), pcapng,
MoldUDP64 hostile packets (lying counts, zero-length blocks), non-ITCH frames, truncated files.
Captures are written here with struct; the expected counts follow from how they are built."""
import gzip
import pathlib
import struct
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from refmodel import encode, frame, unframe  # noqa: E402

from hftcap import _core  # noqa: E402
from hftcap.lab import gen  # noqa: E402


def add(ref, loc=1, side="B", shares=100, price=1_000_000):
    return encode("A", loc, 0, ref, order_reference_number=ref, buy_sell_indicator=side,
                  shares=shares, stock="TEST", price_e4=price)


def mold(seq, blocks, count=None, session=b"SESSION001"):
    body = b"".join(struct.pack(">H", len(b)) + b for b in blocks)
    return session + struct.pack(">QH", seq, len(blocks) if count is None else count) + body


def udp_frame(payload, vlan=0, proto=17, frag=0):
    udp = struct.pack(">HHHH", 40000, 26400, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, frag, 64, proto, 0,
                     bytes([10, 0, 0, 1]), bytes([233, 54, 12, 1])) + udp
    eth = b"\x01\x00\x5e\x36\x0c\x01" + b"\x02\x00\x00\x00\x00\x01"
    for _ in range(vlan):
        eth += struct.pack(">HH", 0x8100, 100)
    return eth + struct.pack(">H", 0x0800) + ip


def pcap(frames, endian="<", nsec=False):
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)]
    for i, f in enumerate(frames):
        out.append(struct.pack(endian + "IIII", 1700000000 + i, 0, len(f), len(f)) + f)
    return b"".join(out)


def pcapng(frames, endian="<"):
    def block(btype, body):
        pad = (-len(body)) % 4
        n = 12 + len(body) + pad
        return struct.pack(endian + "II", btype, n) + body + b"\0" * pad + struct.pack(endian + "I", n)
    out = [block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1)),
           block(1, struct.pack(endian + "HHI", 1, 0, 65535))]
    for f in frames:
        out.append(block(6, struct.pack(endian + "IIIII", 0, 0, 0, len(f), len(f)) + f))
    return b"".join(out)


def session_frames():
    """12 packets; known expected counters (see test)."""
    frames = [
        udp_frame(mold(1, [add(1), add(2, side="S", price=1_000_100)])),
        udp_frame(mold(3, [add(3), b""], count=2), vlan=1),           # zero-length block
        udp_frame(mold(5, [add(4), add(5)], count=5)),                 # lies: 3 more promised
        udp_frame(mold(10, [encode("D", 1, 0, 9, order_reference_number=1)]), vlan=2),
        udp_frame(mold(11, [b"Z" * 20, add(6)])),                      # unknown type
        udp_frame(mold(13, [add(7)[:-1]])),                           # truncated message
        udp_frame(b"short"),                                           # not even a Mold header
        udp_frame(mold(14, [add(8)]), proto=6),                        # TCP: not mold
        udp_frame(mold(14, [add(8)]), frag=0x2000),                    # IP fragment
        b"\x00" * 10,                                                  # runt
        udp_frame(mold(14, [add(9), encode("X", 1, 0, 9, order_reference_number=9,
                                           canceled_shares=40)])),
        udp_frame(mold(16, [], count=0)),                              # heartbeat
    ]
    return frames


def _book(books):
    raw_b, raw_a = books.book_raw(1, 10)
    unpack = lambda r: [struct.unpack_from("<IIQ", r, i) for i in range(0, len(r), 16)]
    return [(p, s, o) for p, o, s in unpack(raw_b)], [(p, s, o) for p, o, s in unpack(raw_a)]


# Applied adds: refs 1-6 and 9 (4 and 5 arrive in the lying packet before the walk stops);
# ref 7 is truncated, ref 8 only travels in non-Mold frames. Ref 1 is deleted, 9 partly cancelled.
# not_mold: TCP, fragment, runt; mold_malformed: the 5-byte UDP payload.
def check_counts(books, feed):
    st = books.stats()
    assert st["messages"]["A"] == 7
    d = st["drops"]
    assert (d["empty"], d["mold_truncated"], d["unknown_type"], d["truncated"], d["not_mold"],
            d["mold_malformed"]) == (1, 3, 1, 1, 3, 1)
    assert st["messages"]["D"] == 1 and st["messages"]["X"] == 1
    assert st["orders_live"] == 6
    assert feed["mold"]["heartbeats"] == 1
    bids, asks = _book(books)
    assert bids == [(1_000_000, 100 * 4 + 60, 5)]
    assert asks == [(1_000_100, 100, 1)]


@pytest.mark.parametrize("kind", ["pcap-le", "pcap-be-ns", "pcapng-le", "pcapng-be", "pcap-gz"])
def test_capture_with_hostile_mold(tmp_path, kind):
    frames = session_frames()
    if kind == "pcap-le":
        data = pcap(frames)
    elif kind == "pcap-be-ns":
        data = pcap(frames, ">", nsec=True)
    elif kind == "pcapng-le":
        data = pcapng(frames)
    elif kind == "pcapng-be":
        data = pcapng(frames, ">")
    else:
        data = gzip.compress(pcap(frames))
    p = tmp_path / "cap"
    p.write_bytes(data)
    books = _core.Books()
    feed = books.feed_file(str(p))
    assert feed["format"] == ("pcapng" if kind.startswith("pcapng") else "pcap")
    check_counts(books, feed)
    assert books.check() == 0


def test_pcap_truncated_last_record(tmp_path):
    frames = [udp_frame(mold(1, [add(1)])), udp_frame(mold(2, [add(2)]))]
    data = pcap(frames)
    p = tmp_path / "t.pcap"
    p.write_bytes(data[:-5])
    books = _core.Books()
    books.feed_file(str(p))
    st = books.stats()
    assert st["messages"]["A"] == 1 and st["drops"]["file_truncated"] == 1


def test_pcapng_corrupt_block_stops_counted(tmp_path):
    frames = [udp_frame(mold(1, [add(1)]))]
    data = pcapng(frames) + struct.pack("<II", 6, 7) + b"\0" * 20  # length not a multiple of 4
    p = tmp_path / "c.pcapng"
    p.write_bytes(data)
    books = _core.Books()
    books.feed_file(str(p))
    st = books.stats()
    assert st["messages"]["A"] == 1 and st["drops"]["bad_capture"] == 1


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("cut", [0, 1, 7])
def test_nasdaq_file_plain_gzip_and_truncated(tmp_path, compress, cut):
    data = gen.generate(5, 3, 20000)
    tail = frame([add(10 ** 9)])[:cut] if cut else b""
    p = tmp_path / "f.itch"
    p.write_bytes(gzip.compress(data + tail) if compress else data + tail)
    a, b = _core.Books(), _core.Books()
    feed = a.feed_file(str(p), chunk_bytes=4096)  # many small steps: records straddle chunks
    b.feed(data)
    assert feed["format"] == "nasdaq"
    sa, sb = a.stats(), b.stats()
    assert sa["messages"] == sb["messages"]
    assert sa["drops"]["file_truncated"] == (1 if cut else 0)
    assert sum(sa["messages"].values()) == 20000
    for loc, _ in b.symbols():
        assert a.book_raw(loc, 1000) == b.book_raw(loc, 1000)


def books_state(b):
    st = b.stats()
    return st, {loc: (sym, b.book_raw(loc, 1 << 20), b.info(loc)["volume"]) for loc, sym in b.symbols()}


# ~5 MiB of the day profile: a capture of it is several of the reader's 1 MiB stages, so the
# stage is drained mid-step (records carried to the next stage) and flushed at every step's end
DAY = gen.generate(4, 300, 160_000, "day")


def day_frames(k=4, overlap_every=37, drop=None):
    """MoldUDP64 frames of k records of DAY (sequence from 1). Every overlap_every-th frame is
    sent twice, then a frame of its last 2 blocks and the next frame's first 2, then the next
    frame whole: 8 duplicates each. drop: the index of a frame never sent (a gap)."""
    msgs = list(unframe(DAY))
    packets = [(i + 1, msgs[i:i + k]) for i in range(0, len(msgs), k)]
    frames, dups = [], 0
    for j, (seq, blocks) in enumerate(packets):
        if j == drop:
            continue
        frames.append(udp_frame(mold(seq, blocks)))
        if j % overlap_every == 5 and j + 1 < len(packets) and j + 1 != drop:
            frames.append(udp_frame(mold(seq, blocks)))
            frames.append(udp_frame(mold(seq + 2, blocks[2:] + packets[j + 1][1][:2])))
            dups += 8
    return frames, dups, msgs


@pytest.mark.parametrize("kind", ["pcap", "pcapng", "pcap-gz", "pcap-small-steps", "pcap-gap"])
def test_day_capture_gives_the_books_of_its_stream(tmp_path, kind):
    drop = 1234 if kind == "pcap-gap" else None
    frames, dups, msgs = day_frames(drop=drop)
    data = pcapng(frames) if kind == "pcapng" else pcap(frames)
    assert len(data) > 4 << 20
    p = tmp_path / "day.cap"
    p.write_bytes(gzip.compress(data, 1) if kind == "pcap-gz" else data)
    got = _core.Books(1024)
    feed = got.feed_file(str(p), **({"chunk_bytes": 100_000} if kind == "pcap-small-steps" else {}))
    want = _core.Books(1024)
    want.feed(frame(msgs[:drop * 4] + msgs[drop * 4 + 4:]) if drop is not None else DAY)
    assert books_state(got) == books_state(want)
    m = feed["mold"]
    assert m["duplicates"] == dups and m["gaps"] == (4 if drop is not None else 0)
    assert m["messages"] == len(msgs) - (4 if drop is not None else 0)
    assert got.check() == 0


def test_progress_callback_and_missing_file(tmp_path):
    p = tmp_path / "g.itch"
    gen.write_file(p, 1, 2, 300000)
    calls = []
    books = _core.Books()
    feed = books.feed_file(str(p), progress=calls.append, chunk_bytes=1 << 16)
    assert feed["bytes"] == p.stat().st_size
    assert calls and calls == sorted(calls) and calls[-1] <= p.stat().st_size
    with pytest.raises(FileNotFoundError):
        books.feed_file(str(tmp_path / "missing"))
