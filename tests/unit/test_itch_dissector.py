"""The Wireshark ITCH 5.0 dissector (hftcap/feed/lua/itch50.lua) under tshark's own MoldUDP64
dissector equals `hftcap decode --json`, field by field, for a capture holding every message
type with random and extreme values; and `hftcap decode`'s filters."""
from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import run_hftcap  # noqa: E402
from refmodel import SPEC, encode  # noqa: E402

from hftcap.feed.wireshark import tshark_args  # noqa: E402
from bounds import bound

PORT = 26477


def fields(mtype, rng, extreme):
    f = {}
    for name, size, kind in SPEC[mtype]:
        if kind == "a":
            f[name] = ("Z" * size if extreme else
                       "".join(rng.choice("ABCXYZ019") for _ in range(rng.randrange(1, size + 1))))
        else:
            f[name] = (1 << (8 * size)) - 1 if extreme else rng.randrange(1 << (8 * size))
    return f


def stream():
    """Every type twice (random, extreme), plus zero and all-space values for one of each."""
    rng = random.Random(12)
    msgs = []
    for t in sorted(SPEC):
        msgs.append(encode(t, rng.randrange(1, 65536), rng.randrange(65536), rng.randrange(1 << 48),
                           **fields(t, rng, False)))
        msgs.append(encode(t, 65535, 65535, (1 << 48) - 1, **fields(t, rng, True)))
        msgs.append(encode(t, 0, 0, 0))   # integers 0, alpha all spaces
    return msgs


def pcap(path: Path, msgs, k=3):
    """Classic pcap of Ethernet/IPv4/UDP/MoldUDP64, k messages a packet, written here."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    seq = 1
    for i in range(0, len(msgs), k):
        blk = msgs[i:i + k]
        mold = b"TESTSESS01" + struct.pack(">QH", seq, len(blk)) + b"".join(
            struct.pack(">H", len(m)) + m for m in blk)
        seq += len(blk)
        udp = struct.pack(">HHHH", 40000, PORT, 8 + len(mold), 0) + mold
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 1, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([239, 1, 1, 1])) + udp
        frame = bytes.fromhex("01005e010101") + bytes(6) + b"\x08\x00" + ip
        out += struct.pack("<IIII", 1, i, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))


def tshark_messages(path):
    cp = subprocess.run(["tshark", *tshark_args(PORT), "-r", str(path), "-T", "json", "--no-duplicate-keys"],
                        capture_output=True, text=True, timeout=bound(120))
    errs = [x for x in cp.stderr.splitlines() if x.strip() and "Running as user" not in x]
    assert cp.returncode == 0 and not errs, cp.stderr
    assert "Lua Error" not in cp.stdout, cp.stdout[cp.stdout.index("Lua Error"):][:300]
    out = []
    for pkt in json.loads(cp.stdout):
        mold = pkt["_source"]["layers"]["moldudp64"]
        items = mold["itch50"] if isinstance(mold["itch50"], list) else [mold["itch50"]]
        seqs = mold["moldudp64.msgblock"]
        seqs = seqs if isinstance(seqs, list) else [seqs]
        for it, blk in zip(items, seqs, strict=True):
            out.append({**it, "moldudp64.msgseq": blk["moldudp64.msgseq"]})
    return out


def test_lua_dissector_equals_decode_json(tmp_path):
    msgs = stream()
    cap = tmp_path / "all.pcap"
    pcap(cap, msgs)
    dec = [json.loads(x) for x in run_hftcap("decode", cap, "--json", check=True).stdout.splitlines()]
    assert len(dec) == len(msgs) == 3 * 23
    assert {d["type"] for d in dec} == set(SPEC)
    assert [d["sequence"] for d in dec] == list(range(1, len(msgs) + 1))
    ws = tshark_messages(cap)
    assert len(ws) == len(dec)
    for d, w in zip(dec, ws):
        assert w["moldudp64.msgseq"] == str(d["sequence"])
        for k, v in d.items():
            if k in ("frame", "session", "sequence"):
                continue
            got = w.get(f"itch50.{k}")
            assert got is not None, f"{d['type']}: tshark has no itch50.{k}"
            assert got == str(v), f"{d['type']} {k}: tshark {got!r}, decode {v!r}"
        assert len([x for x in w if x.startswith("itch50.")]) == len(d) - 3, d["type"]   # nothing more


def test_filters_and_text(tmp_path):
    rng = random.Random(3)
    msgs = [encode("R", 7, 0, 1, stock="AAPL"), encode("R", 8, 0, 2, stock="MSFT"),
            encode("A", 7, 0, 3, order_reference_number=1, buy_sell_indicator="B", shares=100, stock="AAPL",
                   price_e4=1895000),
            encode("A", 8, 0, 4, order_reference_number=2, buy_sell_indicator="S", shares=5, stock="MSFT",
                   price_e4=10),
            encode("E", 7, 0, 5, order_reference_number=1, executed_shares=10, match_number=rng.randrange(99)),
            encode("D", 8, 0, 6, order_reference_number=2)]
    cap = tmp_path / "f.pcap"
    pcap(cap, msgs, k=2)
    aapl = [json.loads(x) for x in run_hftcap("decode", cap, "--json", "--symbol", "AAPL", check=True).stdout.split("\n") if x]
    assert [d["type"] for d in aapl] == ["R", "A", "E"]     # E has no stock: its locate names it
    adds = run_hftcap("decode", cap, "--type", "A,D", check=True).stdout.splitlines()
    assert len(adds) == 3 and "price_e4=1895000 (189.5000)" in adds[0] and "stock='AAPL'" in adds[0]
    assert adds[0].startswith("frame 2 TESTSESS01:3 00:00:00.000000003 (3 ns) A Add Order")
    for flt, frames in (('itch50.stock == "AAPL"', ["1", "2"]), ('itch50.type == "D"', ["3"]),
                        ("itch50.price_e4 == 1895000", ["2"])):
        cp = subprocess.run(["tshark", *tshark_args(PORT), "-r", str(cap), "-Y", flt, "-T", "fields",
                             "-e", "frame.number"], capture_output=True, text=True, timeout=bound(60))
        assert cp.stdout.split() == frames, (flt, cp.stdout, cp.stderr)
    bad = run_hftcap("decode", cap, "--type", "Z")
    assert bad.returncode == 2 and "unknown ITCH 5.0 message type 'Z'" in bad.stderr
    # NASDAQ file layout gives the same messages without framing keys
    nq = tmp_path / "f.itch"
    nq.write_bytes(b"".join(struct.pack(">H", len(m)) + m for m in msgs))
    plain = [json.loads(x) for x in run_hftcap("decode", nq, "--json", check=True).stdout.splitlines()]
    framed = [json.loads(x) for x in run_hftcap("decode", cap, "--json", check=True).stdout.splitlines()]
    assert plain == [{k: v for k, v in d.items() if k not in ("frame", "session", "sequence")} for d in framed]


@pytest.mark.parametrize("cut", [1, 11, 30])
def test_undecodable_message_is_a_line_not_a_crash(tmp_path, cut):
    m = encode("A", 1, 0, 1, stock="X")[:cut]
    cap = tmp_path / "bad.pcap"
    pcap(cap, [m])
    cp = run_hftcap("decode", cap, "--json", check=True)
    (d,) = [json.loads(x) for x in cp.stdout.splitlines()]
    assert d["error"] and d["length"] == cut
