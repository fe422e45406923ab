"""`listen --write`: the capture file's options, its Section Header and Interface Description
Blocks, tcpdump's file naming and rotation policy, and the reader of the files it writes.

The C writer (hftcap._core.PcapngWriter, pcapng.c) owns the ring, the Enhanced Packet and
Interface Statistics Blocks and the disk; this module decides what goes in the header, which
name each file gets and when a file rotates. Block layouts: draft-ietf-opsawg-pcapng-06;
hftcap's custom options (PEN 32473): DESIGN.md "pcapng custom options"."""
from __future__ import annotations

import json
import os
import platform
import re
import stat
import struct
import time
from dataclasses import dataclass, field
from typing import Iterator

from ..errors import HftcapError, UsageError
from .magic import is_pcapng  # noqa: F401  (re-exported: pcapng.is_pcapng)

PEN = 32473
OPT_CUSTOM_STR, OPT_CUSTOM_BIN = 2988, 2989
LINKTYPE_ETHERNET = 1
DEFAULT_SNAPLEN = 262144
TS_SOURCES = {"hw": 0, "xdp": 1, "sw": 2, "deq": 3}
TS_SOURCE_NAMES = {v: k for k, v in TS_SOURCES.items()}
TS_SOURCE_TEXT = {"hw": "NIC PHC hardware RX stamp (synced to TAI)",
                  "xdp": "XDP program's CLOCK_TAI stamp",
                  "sw": "kernel SO_TIMESTAMPING software RX stamp (mapped to TAI)",
                  "deq": "hftcap dequeue stamp (CLOCK_TAI)"}
STAMP_FIELDS = ("hw_ns", "xdp_tai_ns", "sw_tai_ns", "deq_tai_ns", "dec_tai_ns", "book_tai_ns", "itch_ns")
NO_ITCH = (1 << 64) - 1
IF_FEED, IF_RECOVERY = 0, 1


# ---- options ----

def parse_file_size(text: str) -> int:
    """tcpdump -C: a number of 10^6 bytes, or with k/m/g a number of KiB/MiB/GiB. In bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"bad --file-size '{text}'", hint="a positive size: 100 (10^6 bytes), 512k, 64m, 2g")
    unit = {"": 1_000_000, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(float(m.group(1)) * unit)


@dataclass
class WriteOptions:
    path: str
    capture_buffer_mib: int = 256
    snaplen: int = DEFAULT_SNAPLEN
    file_size: int | None = None      # bytes (parse_file_size)
    rotate_seconds: float | None = None
    file_count: int | None = None
    flush_ms: int = 100
    writer_cpu: int | None = None     # None: a CPU other than the data thread's; -1: not pinned

    @property
    def to_stdout(self) -> bool:
        return self.path == "-"


def check_write_options(w: WriteOptions) -> None:
    if not w.path:
        raise UsageError("--write needs a file name", hint="--write capture.pcapng, or --write - for stdout")
    if not 1 <= w.capture_buffer_mib <= 65536:
        raise UsageError(f"bad --capture-buffer {w.capture_buffer_mib}", hint="MiB, 1 to 65536 (default 256)")
    if w.snaplen == 0:
        w.snaplen = DEFAULT_SNAPLEN   # tcpdump: 0 means the default
    if not 64 <= w.snaplen <= DEFAULT_SNAPLEN:
        raise UsageError(f"bad --snaplen {w.snaplen}", hint=f"64 to {DEFAULT_SNAPLEN} bytes, 0 = {DEFAULT_SNAPLEN}")
    if w.writer_cpu is not None and not -1 <= w.writer_cpu < (os.cpu_count() or 1):
        raise UsageError(f"bad --writer-cpu {w.writer_cpu}",
                         hint=f"this machine has CPUs 0-{(os.cpu_count() or 1) - 1}; -1 = not pinned")
    if w.rotate_seconds is not None and w.rotate_seconds <= 0:
        raise UsageError("-G/--rotate-seconds must be positive")
    if w.file_count is not None:
        if w.file_count < 1:
            raise UsageError("-W/--file-count must be 1 or more")
        if w.file_size is None and w.rotate_seconds is None:
            raise UsageError("-W/--file-count needs -C/--file-size or -G/--rotate-seconds",
                             hint="as in tcpdump: -W with -C keeps a ring of files, with -G it stops after N files")
    if w.to_stdout and (w.file_size or w.rotate_seconds):
        raise UsageError("--write - (stdout) cannot rotate", hint="drop -C/-G, or write to a file")
    d = os.path.dirname(os.path.abspath(w.path)) if not w.to_stdout else "."
    if not os.path.isdir(d):
        raise UsageError(f"--write {w.path}: directory {d} does not exist")


UMEM_FRAME = 2048                      # HC_FRAME_SIZE (capture.c)
XSK_DESC = 128                         # HC_CAPREC_XSK_SIZE (pcapng.h)


def hold_frames(w: WriteOptions) -> int:
    """AF_XDP path: UMEM frames (over all queues) beyond the usual ones, which the data thread
    keeps out of the fill ring until the writer has copied them: --capture-buffer of them."""
    return (w.capture_buffer_mib << 20) // UMEM_FRAME


def descriptor_ring_bytes(w: WriteOptions) -> int:
    """AF_XDP path: the ring holds 128-byte descriptors, at most one per held frame, and the
    copies of recovery replies: twice the descriptors of the held frames, 1 MiB at least."""
    return max(1 << 20, 2 * XSK_DESC * hold_frames(w))


def writer_cpu_for(w: WriteOptions, data_cpu: int | None) -> int | None:
    """The writer thread's CPU: --writer-cpu, else the first CPU this process may use other
    than the data thread's (none when the data thread is not pinned or there is no other)."""
    if w.writer_cpu is not None:
        return None if w.writer_cpu < 0 else w.writer_cpu
    if data_cpu is None:
        return None
    others = sorted(c for c in os.sched_getaffinity(0) if c != data_cpu)
    return others[0] if others else None


# ---- names (tcpdump's MakeFilename) ----

class Namer:
    """File names as tcpdump makes them: strftime fields when -G is given (the interval's start,
    local time); with -C a counter appended (none on the first file of an interval; with -W
    zero-padded and cycling through the W names)."""

    def __init__(self, w: WriteOptions):
        self.w = w
        self.interval_start = time.time()

    def name(self, index: int) -> str:
        base = self.w.path
        if self.w.rotate_seconds:
            base = time.strftime(base, time.localtime(self.interval_start))
        if not self.w.file_size:
            return base
        if self.w.file_count:
            width = len(str(self.w.file_count - 1))
            return f"{base}{index % self.w.file_count:0{width}d}"
        return base if index == 0 else f"{base}{index}"


def is_regular_target(path: str) -> bool:
    """A new or regular file (written as NAME.part, renamed when complete); a FIFO or device
    is written as it is."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True


# ---- blocks ----

def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def shb(comment: str) -> bytes:
    from .. import __version__
    opts = (_opt(2, _cpu_model().encode()) + _opt(3, f"Linux {platform.release()}".encode())
            + _opt(4, f"hftcap {__version__}".encode()) + _opt(1, comment.encode()) + _opt(0, b""))
    return _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + opts)


@dataclass
class Interface:
    name: str
    description: str
    hardware: str | None
    ts_source: str
    tai_offset_s: int
    meta: dict = field(default_factory=dict)

    def idb(self, snaplen: int) -> bytes:
        opts = _opt(2, self.name.encode()) + _opt(3, self.description.encode())
        opts += _opt(9, bytes([9]))           # if_tsresol: 10^-9
        opts += _opt(12, f"Linux {platform.release()}".encode())
        if self.hardware:
            opts += _opt(15, self.hardware.encode())
        if self.tai_offset_s:                 # every stamp is TAI: readers show UTC
            opts += _opt(14, struct.pack("<q", -self.tai_offset_s))
        meta = {"hftcap_interface": 1, "ts_source": self.ts_source, "tai_offset_s": self.tai_offset_s,
                **self.meta}
        opts += _opt(OPT_CUSTOM_STR, struct.pack("<I", PEN) + json.dumps(meta, sort_keys=True).encode())
        opts += _opt(0, b"")
        return _block(1, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, snaplen) + opts)


def feed_interface(sess, writer_cpu: int | None = None) -> Interface:
    """The feed's IDB for an open Session: which clock the EPB timestamps are and how the
    frames were obtained."""
    o = sess.o
    info = sess.info()
    ci = sess.cap.info()
    phc_tai = bool(sess.clocks.get("synced_to_tai"))
    hw_possible = phc_tai and (ci["hw_program"] if o.path == "xdp" else ci["hw_ts_socket"])
    src = "hw" if hw_possible else ("xdp" if o.path == "xdp" else "sw")
    feeds = ", ".join(info["feeds"])
    if o.path == "xdp":
        how = (f"AF_XDP, XDP {info['xdp_mode']}, bind {info['bind_mode']}, queue {info['queue']}; "
               "whole frames as received")
    else:
        how = ("kernel UDP socket; Ethernet/IPv4/UDP headers rebuilt from the socket addresses "
               "(destination MAC from the group, source MAC zero, TTL 1, IP id 0, UDP checksum 0)")
    fallback = " (a packet without it: the next of XDP, software, dequeue; see the stamps option)"
    wcpu = f"CPU {writer_cpu}" if writer_cpu is not None else "not pinned"
    desc = (f"hftcap feed {feeds} on {o.interface}: {how}; timestamps: {TS_SOURCE_TEXT[src]}{fallback}; "
            f"data thread {f'CPU {o.cpu}' if o.cpu is not None else 'not pinned'}, writer thread {wcpu}")
    from ..measure import clocks
    drv = clocks.get_driver(o.interface)
    hw = f"driver {drv}" if drv else None
    meta = {"role": "feed", "path": o.path, "feeds": info["feeds"], "itch_clock": o.itch_clock,
            "itch_epoch_tai_ns": sess.itch_epoch, "phc_is_tai": phc_tai,
            "clocks": {k: sess.clocks.get(k) for k in ("phc", "phc_reason", "synced_to_tai", "sync_reason")},
            "kernel_headers_rebuilt": o.path == "kernel", "data_cpu": o.cpu, "writer_cpu": writer_cpu}
    return Interface(o.interface, desc, hw, src, int(ci["tai_offset_s"]), meta)


def recovery_interface(sess) -> Interface:
    """Interface 1: the unicast replies to MoldUDP64 re-requests, as the recovery socket read
    them (whichever path the feed takes), stamped when the data thread read them."""
    o = sess.o
    servers = [f"{h}:{p}" for h, p in o.recovery.servers]
    desc = (f"hftcap recovery replies: MoldUDP64 re-request answers (unicast) from {', '.join(servers)}, "
            "read on the recovery socket; Ethernet/IPv4/UDP headers rebuilt from the socket addresses "
            "(MACs zero, TTL 1, IP id 0, UDP checksum 0); timestamps: " + TS_SOURCE_TEXT["deq"])
    meta = {"role": "recovery", "servers": servers, "feeds": sess.info()["feeds"], "kernel_headers_rebuilt": True}
    return Interface("recovery", desc, None, "deq", int(sess.cap.info()["tai_offset_s"]), meta)


def header(comment: str, interfaces: list[Interface], snaplen: int) -> bytes:
    return shb(comment) + b"".join(i.idb(snaplen) for i in interfaces)


# ---- the writer as the session uses it ----

class CaptureFile:
    """The C writer plus the rotation policy: the session calls tick() from its wait loop.
    Size rotations happen in the writer thread, on names queued here ahead of time; time
    rotations (-G) are asked for here."""

    QUEUE = 16   # HC_PCAP_NEXT

    def __init__(self, w: WriteOptions, interfaces: list[Interface], comment: str,
                 ring_bytes: int | None = None, writer_cpu: int | None = None):
        from .. import _core
        check_write_options(w)
        self.writer_cpu = writer_cpu
        self.w = w
        self.namer = Namer(w)
        first = self.namer.name(0)
        self.part = not w.to_stdout and is_regular_target(first)
        try:
            self.core = _core.PcapngWriter(
                first, header(comment, interfaces, w.snaplen), [TS_SOURCES[i.ts_source] for i in interfaces],
                ring_bytes=ring_bytes or w.capture_buffer_mib << 20, snaplen=w.snaplen,
                file_size=w.file_size or 0, part=self.part, flush_ms=w.flush_ms,
                writer_cpu=-1 if writer_cpu is None else writer_cpu)
        except OSError as e:
            raise HftcapError(f"cannot write {first}: {os.strerror(e.errno or 0)}",
                              hint="check the directory and its permissions") from None
        self.files: list[str] = [first]   # in the order they were begun
        self.file_started = time.monotonic()
        self.intervals = 1                # -G intervals begun
        self.pending: list[str] = []      # queued in the writer, not taken yet
        self.index = 1                    # -C counter of the next name in this interval
        self.taken = 0
        self._top_up()

    def _top_up(self):
        if not self.w.file_size or self.w.to_stdout:
            return
        while len(self.pending) < self.QUEUE:
            name = self.namer.name(self.index)
            self.core.set_next(name)
            self.pending.append(name)
            self.index += 1

    def _took(self, taken: int):
        n, self.taken = taken - self.taken, taken
        self.files += self.pending[:n]
        self.pending = self.pending[n:]

    def tick(self) -> str | None:
        """Keep the name queue full, rotate on -G; 'file-count' once -G -W has made W files."""
        st = self.core.stats()
        if st["error"]:
            return "write-error"
        self._took(st["names_taken"])
        if self.w.rotate_seconds and time.monotonic() - self.file_started >= self.w.rotate_seconds:
            if self.w.file_count and self.intervals >= self.w.file_count:
                return "file-count"
            self.file_started = time.monotonic()
            self.namer.interval_start = time.time()
            name = self.namer.name(0)
            self._took(self.core.rotate(name))
            self.pending, self.index = [], 1
            self.files.append(name)
            self.intervals += 1
        self._top_up()
        return None

    def live_stats(self, st: dict | None = None) -> dict:
        """The writer's figures now (any thread: relaxed reads of its counters), as close() reports
        them; files_begun counts files begun so far (the first one and each rotation)."""
        st = st or self.core.stats()
        return {"packets_captured": st["feed_written"], "capture_drops": st["capture_drops"],
                "capture_drops_late": st["capture_late"], "packets_seen": st["seen"],
                "bytes_written": st["bytes"], "ring_bytes": self.core.ring_bytes,
                "snaplen": self.w.snaplen, "rotations_late": st["rotations_late"],
                "writer_cpu": self.writer_cpu, "blocks_written": st["written"],
                "recovery": {"packets_seen": st["recovery_seen"], "packets_captured": st["recovery_written"],
                             "capture_drops": st["recovery_capture_drops"]},
                "files_begun": len(self.files) + max(0, st["names_taken"] - self.taken)}

    def close(self) -> dict:
        """After the capture stopped: drain, ISBs, rename; the summary's "capture" entry."""
        err = None
        try:
            self.core.close()
        except OSError as e:
            err = os.strerror(e.errno or 0)
        st = self.core.stats()
        self._took(st["names_taken"])
        files = list(dict.fromkeys(self.files))   # a -W ring reuses names
        out = {"files": files, **self.live_stats(st)}
        if err or st["error"]:
            out["error"] = err or os.strerror(-st["error"])
        return out


# ---- reading our files back ----

@dataclass
class Packet:
    iface: int
    ts: int                     # EPB timestamp in if_tsresol units, before if_tsoffset
    caplen: int
    origlen: int
    data: bytes
    flags: int | None = None
    queue: int | None = None
    dropcount: int = 0
    stamps: dict | None = None  # STAMP_FIELDS, the EPB clock ("ts_source") and "recorded"


@dataclass
class Capture:
    interfaces: list[dict]
    packets: list[Packet]
    stats: list[dict]


def _options(body: bytes, off: int, bo: str) -> Iterator[tuple[int, bytes]]:
    while off + 4 <= len(body):
        code, ln = struct.unpack_from(bo + "HH", body, off)
        off += 4
        if code == 0:
            return
        yield code, body[off:off + ln]
        off += ln + (-ln % 4)


def read(path: str, interfaces_only: bool = False) -> Capture:
    """Every section's IDBs, EPBs and ISBs of a pcapng file; a truncated last block (a file
    cut by SIGKILL) ends the read. interfaces_only: the first section's IDBs, read from the
    file's start only."""
    ifaces, pkts, stats = [], [], []
    bo = "<"
    with open(path, "rb") as f:
        data = f.read(1 << 20) if interfaces_only else f.read()
    off = 0
    while off + 12 <= len(data):
        btype = struct.unpack_from(bo + "I", data, off)[0]
        if btype == 0x0A0D0D0A:
            magic = data[off + 8:off + 12]
            bo = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">"
        blen = struct.unpack_from(bo + "I", data, off + 4)[0]
        if blen < 12 or off + blen > len(data):
            break
        body = data[off + 8:off + blen - 4]
        off += blen
        if interfaces_only and btype not in (0x0A0D0D0A, 1):
            break
        if btype == 0x0A0D0D0A:
            ifaces = [] if not ifaces else ifaces   # one section per file here; IDs restart
        elif btype == 1:
            idb = {"linktype": struct.unpack_from(bo + "H", body, 0)[0],
                   "snaplen": struct.unpack_from(bo + "I", body, 4)[0], "tsresol": 6, "tsoffset": 0}
            for code, v in _options(body, 8, bo):
                if code == 2:
                    idb["name"] = v.decode()
                elif code == 3:
                    idb["description"] = v.decode()
                elif code == 9:
                    idb["tsresol"] = v[0]
                elif code == 12:
                    idb["os"] = v.decode()
                elif code == 14:
                    idb["tsoffset"] = struct.unpack(bo + "q", v)[0]
                elif code == 15:
                    idb["hardware"] = v.decode()
                elif code == OPT_CUSTOM_STR and struct.unpack("<I", v[:4])[0] == PEN:
                    idb["hftcap"] = json.loads(v[4:].decode())
            ifaces.append(idb)
        elif btype == 6:
            iface, hi, lo, cap, orig = struct.unpack_from(bo + "IIIII", body, 0)
            p = Packet(iface, hi << 32 | lo, cap, orig, body[20:20 + cap])
            for code, v in _options(body, 20 + cap + (-cap % 4), bo):
                if code == 2:
                    p.flags = struct.unpack(bo + "I", v)[0]
                elif code == 6:
                    p.queue = struct.unpack(bo + "I", v)[0]
                elif code == 4:
                    p.dropcount = struct.unpack(bo + "Q", v)[0]
                elif code == OPT_CUSTOM_BIN and len(v) >= 64 and struct.unpack("<I", v[:4])[0] == PEN:
                    word = struct.unpack_from("<I", v, 4)[0]
                    if word >> 24 == 1:
                        vals = struct.unpack_from("<7Q", v, 8)
                        p.stamps = dict(zip(STAMP_FIELDS, vals))
                        p.stamps["ts_source"] = TS_SOURCE_NAMES[word & 0xf]
                        p.stamps["recorded"] = bool(word & 0x10)
            pkts.append(p)
        elif btype == 5:
            iface = struct.unpack_from(bo + "I", body, 0)[0]
            st = {"iface": iface}
            names = {2: "starttime", 3: "endtime", 4: "ifrecv", 5: "ifdrop", 6: "filteraccept",
                     7: "osdrop", 8: "usrdeliv"}
            for code, v in _options(body, 12, bo):
                if code in names and len(v) == 8:
                    if code in (2, 3):
                        hi, lo = struct.unpack(bo + "II", v)
                        st[names[code]] = hi << 32 | lo
                    else:
                        st[names[code]] = struct.unpack(bo + "Q", v)[0]
                elif code == OPT_CUSTOM_BIN and len(v) >= 48 and struct.unpack("<I", v[:4])[0] == PEN:
                    if struct.unpack_from("<I", v, 4)[0] >> 24 == 2:
                        vals = struct.unpack_from("<5Q", v, 8)
                        st.update(zip(("seen", "capture_drops", "rx_dropped", "rx_ring_full",
                                       "rx_fill_ring_empty_descs"), vals))
            stats.append(st)
    return Capture(ifaces, pkts, stats)


