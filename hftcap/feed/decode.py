"""`hftcap decode FILE`: every ITCH 5.0 message of a NASDAQ-layout file, a pcap or a pcapng
(plain or gzip), one per line with every field by its spec name (snake_case, as
hftcap._core.itch_decode gives them), MoldUDP64 session and sequence where there is one.

Alpha fields are shown without their right padding (what the Wireshark dissector
hftcap/wireshark/itch50.lua shows too); integer prices keep their implied decimals in the
name (`price_e4`, `level1_e8`). Reading is streaming: a day file never sits in memory."""
from __future__ import annotations

import gzip
import json
import struct
import sys
from typing import IO, Iterator

from ..errors import HftcapError, UsageError

NAMES = {"S": "System Event", "R": "Stock Directory", "H": "Stock Trading Action",
         "Y": "Reg SHO Short Sale Price Test Restricted Indicator", "L": "Market Participant Position",
         "V": "MWCB Decline Level", "W": "MWCB Status", "K": "IPO Quoting Period Update",
         "J": "LULD Auction Collar", "h": "Operational Halt", "A": "Add Order - no MPID attribution",
         "F": "Add Order - with MPID attribution", "E": "Order Executed", "C": "Order Executed With Price",
         "X": "Order Cancel", "D": "Order Delete", "U": "Order Replace", "P": "Trade (non-cross)",
         "Q": "Cross Trade", "B": "Broken Trade", "I": "Net Order Imbalance Indicator (NOII)",
         "N": "Retail Price Improvement Indicator (RPII)", "O": "Direct Listing with Capital Raise Price Discovery"}


def _open(path: str) -> IO[bytes]:
    try:
        f = open(path, "rb")
    except OSError as e:
        raise HftcapError(f"cannot read {path}: {e.strerror}") from None
    if f.read(2) == b"\x1f\x8b":
        f.seek(0)
        return gzip.open(f)
    f.seek(0)
    return f


def _read(f: IO[bytes], n: int) -> bytes | None:
    b = f.read(n)
    return b if len(b) == n else None


def _frames_pcap(f: IO[bytes], magic: bytes) -> Iterator[tuple[int, int, bytes]]:
    bo = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    sub = 1 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1000   # ns or us
    hdr = _read(f, 20)
    if hdr is None:
        return
    linktype = struct.unpack(bo + "I", hdr[16:20])[0]
    while (rh := _read(f, 16)) is not None:
        sec, frac, incl = struct.unpack(bo + "III", rh[:12])
        data = _read(f, incl)
        if data is None:
            return
        yield linktype, sec * 1_000_000_000 + frac * sub, data


def _tsresol_ns(body: bytes, bo: str) -> tuple[float, int]:
    """(ns per unit, if_tsoffset in ns) of an IDB body."""
    res, offset, off = 1000.0, 0, 8
    while off + 4 <= len(body):
        code, ln = struct.unpack_from(bo + "HH", body, off)
        v = body[off + 4:off + 4 + ln]
        if code == 0:
            break
        if code == 9 and ln == 1:
            res = (2.0 ** -(v[0] & 0x7F) if v[0] & 0x80 else 10.0 ** -v[0]) * 1e9
        elif code == 14 and ln == 8:
            offset = struct.unpack(bo + "q", v)[0] * 1_000_000_000
        off += 4 + ln + (-ln % 4)
    return res, offset


def _frames_pcapng(f: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    bo = "<"
    links: list[tuple[int, float, int]] = []
    while (h := _read(f, 8)) is not None:
        btype = struct.unpack("<I", h[:4])[0]
        if btype == 0x0A0D0D0A:
            magic = _read(f, 4)
            if magic is None:
                return
            bo = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
            blen = struct.unpack(bo + "I", h[4:8])[0]
            body = _read(f, blen - 12)
        else:
            btype = struct.unpack(bo + "I", h[:4])[0]
            blen = struct.unpack(bo + "I", h[4:8])[0]
            if blen < 12:
                return
            body = _read(f, blen - 8)
        if body is None:
            return
        if btype == 1:
            links.append((struct.unpack(bo + "H", body[:2])[0], *_tsresol_ns(body, bo)))
        elif btype == 6 and len(body) >= 20:
            iface, hi, lo, cap = struct.unpack(bo + "IIII", body[:16])
            lt, res, offs = links[iface] if iface < len(links) else (1, 1000.0, 0)
            yield lt, int((hi << 32 | lo) * res) + offs, body[20:20 + cap]
        elif btype == 3 and len(body) >= 4:
            yield (links[0][0] if links else 1), 0, body[4:]


def frames(path: str) -> Iterator[tuple[int, int, bytes]] | None:
    """(linktype, time in ns since 1970 UTC, frame) of a pcap / pcapng; None for other files."""
    f = _open(path)
    head = f.read(4)
    f.seek(0)
    if head == b"\x0a\x0d\x0d\x0a":
        return _closing(f, _frames_pcapng(f))
    if head in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
        f.read(4)
        return _closing(f, _frames_pcap(f, head))
    f.close()
    return None


def is_capture(path: str) -> bool:
    """A pcap or pcapng (plain or gzip)."""
    with _open(path) as f:
        return f.read(4) in (b"\x0a\x0d\x0d\x0a", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4",
                             b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")


def _closing(f, it):
    with f:
        yield from it


def udp_payload(linktype: int, f: bytes) -> bytes | None:
    if linktype != 1 or len(f) < 14:
        return None
    off, proto = 14, int.from_bytes(f[12:14], "big")
    for _ in range(2):
        if proto not in (0x8100, 0x88A8) or len(f) < off + 4:
            break
        proto = int.from_bytes(f[off + 2:off + 4], "big")
        off += 4
    if proto != 0x0800 or len(f) < off + 20 or f[off + 9] != 17:
        return None
    ihl = (f[off] & 0x0F) * 4
    u = off + ihl
    if ihl < 20 or len(f) < u + 8:
        return None
    ulen = int.from_bytes(f[u + 4:u + 6], "big")
    if ulen < 8 or u + ulen > len(f):
        return None
    return f[u + 8:u + ulen]


def _mold(p: bytes) -> tuple[str, int, list[bytes]] | None:
    """(session, sequence, messages) of a MoldUDP64 packet whose blocks fill it exactly."""
    if len(p) < 20:
        return None
    session = p[:10].decode("latin-1").rstrip(" ")
    seq, count = struct.unpack(">QH", p[10:20])
    msgs, off = [], 20
    if count in (0, 0xFFFF):
        return (session, seq, []) if len(p) == 20 else None
    for _ in range(count):
        if off + 2 > len(p):
            return None
        n = int.from_bytes(p[off:off + 2], "big")
        if off + 2 + n > len(p):
            return None
        msgs.append(p[off + 2:off + 2 + n])
        off += 2 + n
    return (session, seq, msgs) if off == len(p) else None


def messages(path: str) -> Iterator[dict]:
    """{frame?, session?, sequence?, raw} per message, in file order."""
    fr = frames(path)
    if fr is None:
        with _open(path) as f:
            while (h := _read(f, 2)) is not None:
                m = _read(f, int.from_bytes(h, "big"))
                if m is None:
                    return
                yield {"raw": m}
        return
    for n, (lt, _, frame) in enumerate(fr, 1):
        mold = mold_of(lt, frame)
        if mold is None:
            continue
        session, seq, msgs = mold
        for i, m in enumerate(msgs):
            yield {"frame": n, "session": session, "sequence": seq + i, "raw": m}


def mold_of(linktype: int, frame: bytes) -> tuple[str, int, list[bytes]] | None:
    """(session, sequence, messages) of a frame carrying MoldUDP64 over UDP, else None."""
    p = udp_payload(linktype, frame)
    return _mold(p) if p is not None else None


def decoded(path: str, symbol: str | None = None, types: set[str] | None = None) -> Iterator[dict]:
    """Every message decoded: the framing keys, then "type", "name" and the spec's fields;
    an undecodable one as {"error": reason, "length": n}."""
    from .. import _core
    locate_sym: dict[int, str] = {}
    for m in messages(path):
        raw = m.pop("raw")
        try:
            d = _core.itch_decode(raw)
        except ValueError as e:
            if symbol is None and types is None:
                yield {**m, "error": str(e), "length": len(raw), "type": chr(raw[0]) if raw else ""}
            continue
        for k, v in d.items():
            if isinstance(v, str) and k != "type":
                d[k] = v.rstrip(" ")
        if "stock" in d and d["stock_locate"]:
            locate_sym.setdefault(d["stock_locate"], d["stock"])
        if types is not None and d["type"] not in types:
            continue
        if symbol is not None and d.get("stock", locate_sym.get(d["stock_locate"])) != symbol:
            continue
        yield {**m, "type": d.pop("type"), "name": NAMES.get(chr(raw[0]), "?"), **d}


def fmt_time(ns: int) -> str:
    s, frac = divmod(ns, 1_000_000_000)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{frac:09d}"


def fmt_line(d: dict) -> str:
    where = ""
    if "session" in d:
        where = f"frame {d['frame']} {d['session']}:{d['sequence']} "
    if "error" in d:
        return f"{where}undecodable {d['type']!r} message of {d['length']} bytes: {d['error']}"
    skip = {"frame", "session", "sequence", "type", "name", "timestamp_ns"}
    fields = []
    for k, v in d.items():
        if k in skip:
            continue
        if k.endswith("_e4") or k.endswith("_e8"):
            scale = 4 if k.endswith("_e4") else 8
            fields.append(f"{k}={v} ({v / 10 ** scale:.{scale}f})")
        else:
            fields.append(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}")
    return (f"{where}{fmt_time(d['timestamp_ns'])} ({d['timestamp_ns']} ns) {d['type']} {d['name']}: "
            + " ".join(fields))


def run_decode(path: str, json_out: bool = False, symbol: str | None = None, types: str | None = None,
               out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    want = None
    if types:
        want = {t for t in types.split(",") if t}
        bad = sorted(t for t in want if t not in NAMES)
        if bad:
            raise UsageError(f"unknown ITCH 5.0 message type {', '.join(map(repr, bad))}",
                             hint="one or more of " + " ".join(sorted(NAMES)) + ", comma-separated")
    try:
        for d in decoded(path, symbol, want):
            out.write((json.dumps(d) if json_out else fmt_line(d)) + "\n")
    except BrokenPipeError:
        return 0
    return 0
