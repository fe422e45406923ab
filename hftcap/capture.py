"""`hftcap listen`: the control plane of the receive paths.

Python owns every check and decision (privileges, namespace, interface, feeds, kernel
features, an XDP program that is already there, which modes to ask for), then hands a
configuration to the C core, starts its data thread and only reads snapshots."""
from __future__ import annotations

import ipaddress
import os
import platform
import signal
import socket
import struct
import time
from dataclasses import dataclass, field

from . import netns as _netns
from .errors import HftcapError, UsageError, from_oserror

PATHS = {"xdp": 0, "kernel": 1}
XDP_MODES = {"auto": 0, "native": 1, "generic": 2}
BIND_MODES = {"auto": 0, "zerocopy": 1, "copy": 2}
POLL_MODES = {"wakeup": 0, "busy": 1}
_XDP_MODE_NAMES = {1: "native", 2: "generic"}
_BIND_NAMES = {1: "zerocopy", 2: "copy"}
_ATTACH_MODES = {1: "native", 2: "generic", 3: "offload", 4: "multi"}
AF_XDP = 44
IFF_UP = 0x1


@dataclass
class Feed:
    group: str
    port: int

    def __str__(self) -> str:
        return f"{self.group}:{self.port}"


def parse_feed(text: str) -> Feed:
    """GROUP:PORT, GROUP an IPv4 multicast address (224.0.0.0/4), PORT 1-65535."""
    group, sep, port = text.rpartition(":")
    if not sep or not group:
        raise UsageError(f"bad feed '{text}': expected GROUP:PORT", hint="for example --feed 239.1.1.1:26400")
    try:
        addr = ipaddress.IPv4Address(group)
    except ValueError:
        raise UsageError(f"bad feed '{text}': '{group}' is not an IPv4 address",
                         hint="for example --feed 239.1.1.1:26400") from None
    if not addr.is_multicast:
        raise UsageError(f"bad feed '{text}': {group} is not a multicast group",
                         hint="multicast groups are 224.0.0.0 to 239.255.255.255") from None
    try:
        p = int(port)
    except ValueError:
        p = -1
    if not 1 <= p <= 65535:
        raise UsageError(f"bad feed '{text}': port '{port}' is not 1-65535",
                         hint="for example --feed 239.1.1.1:26400")
    return Feed(str(addr), p)


@dataclass
class ListenOptions:
    interface: str
    feeds: list[Feed]
    netns: str | None = None
    path: str = "xdp"
    xdp_mode: str = "auto"
    bind: str = "auto"
    poll: str = "wakeup"
    queue: int = 0
    queues: str | None = None   # "all" or "0,2,5": one AF_XDP socket per queue (else `queue` only)
    cpu: int | None = None
    duration: float | None = None
    count: int | None = None
    want_hw_ts: bool = True
    itch_clock: str = "none"
    warmup: float = 0.0
    save: str | None = None
    metrics: str | None = None  # "[ADDR:]PORT" of the Prometheus endpoint
    extra: dict = field(default_factory=dict)


ITCH_CLOCKS = ("none", "tai-midnight", "utc-midnight", "et-midnight")
DAY_NS = 86_400 * 1_000_000_000


def itch_epoch_tai_ns(clock: str, tai_offset_s: int) -> int:
    """CLOCK_TAI time of a midnight of the ITCH timestamps' clock (the consumer wraps to the
    nearest day, so any day's midnight serves). 0 = unknown: the sender hop is then absent.

    tai-midnight: the lab exchange stamps CLOCK_TAI mod 1 day; utc-midnight: CLOCK_REALTIME
    mod 1 day; et-midnight: NASDAQ's ns since midnight US Eastern (ITCH50.md sec. 1)."""
    if clock == "none":
        return 0
    now_tai = time.clock_gettime_ns(time.CLOCK_TAI)
    if clock == "tai-midnight":
        return now_tai - now_tai % DAY_NS
    now_utc = time.clock_gettime_ns(time.CLOCK_REALTIME)
    if clock == "utc-midnight":
        midnight_utc = now_utc - now_utc % DAY_NS
    else:
        from datetime import datetime
        from zoneinfo import ZoneInfo
        et = datetime.fromtimestamp(now_utc / 1e9, ZoneInfo("America/New_York"))
        midnight_utc = int(et.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()) * 1_000_000_000
    return midnight_utc + tai_offset_s * 1_000_000_000


def _kernel_version() -> tuple[int, int]:
    rel = platform.release().split("-")[0].split(".")
    try:
        return int(rel[0]), int(rel[1])
    except (IndexError, ValueError):
        return (0, 0)


def check_options(o: ListenOptions) -> None:
    for name, val, allowed in (("--path", o.path, PATHS), ("--xdp-mode", o.xdp_mode, XDP_MODES),
                               ("--bind", o.bind, BIND_MODES), ("--poll", o.poll, POLL_MODES)):
        if val not in allowed:
            raise UsageError(f"bad {name} '{val}'", hint="one of: " + ", ".join(allowed))
    if not o.feeds:
        raise UsageError("no feed given", hint="add --feed GROUP:PORT, e.g. --feed 239.1.1.1:26400")
    if len({(f.group, f.port) for f in o.feeds}) != len(o.feeds):
        raise UsageError("the same feed is given twice")
    if o.queue < 0 or o.queue >= 64:
        raise UsageError(f"bad --queue {o.queue}", hint="0-63, or --queue all")
    if o.queues is not None and o.queues != "all":
        try:
            qs = [int(x) for x in o.queues.split(",")]
        except ValueError:
            qs = [-1]
        if not qs or any(not 0 <= q < 64 for q in qs) or len(set(qs)) != len(qs):
            raise UsageError(f"bad --queue '{o.queues}'", hint="a queue number, a list like 0,1,2, or all")
    if o.cpu is not None and not 0 <= o.cpu < os.cpu_count():
        raise UsageError(f"bad --cpu {o.cpu}", hint=f"this machine has CPUs 0-{os.cpu_count() - 1}")
    if o.itch_clock not in ITCH_CLOCKS:
        raise UsageError(f"bad --itch-clock '{o.itch_clock}'", hint="one of: " + ", ".join(ITCH_CLOCKS))
    if o.warmup < 0:
        raise UsageError("--warmup must be 0 or more seconds")
    if o.duration is not None and o.duration <= 0:
        raise UsageError("--duration must be positive")
    if o.count is not None and o.count <= 0:
        raise UsageError("--count must be positive")
    if o.metrics is not None:
        from .ops.metrics import parse_addr
        parse_addr(o.metrics)


def resolve_interface(name: str, ns: str | None) -> int:
    where = f" in namespace '{ns}'" if ns else ""
    try:
        idx = socket.if_nametoindex(name)
    except OSError:
        raise HftcapError(f"unknown interface '{name}'{where}",
                          hint=("the lab's host-side interface is <lab>-h0 in <lab>-host"
                                if ns else "list interfaces with: ip link")) from None
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        link = ipr.get_links(idx)[0]
    if not link["flags"] & IFF_UP:
        raise HftcapError(f"interface '{name}'{where} is down",
                          hint=f"bring it up: ip {'-n ' + ns + ' ' if ns else ''}link set {name} up")
    return idx


def check_kernel(path: str) -> None:
    if path != "xdp":
        return
    try:
        s = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        s.close()
    except OSError as e:
        import errno
        if e.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.EINVAL):
            raise HftcapError("this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)",
                              hint="AF_XDP needs Linux 4.18 or newer built with CONFIG_XDP_SOCKETS; "
                                   "or use --path kernel") from None
        if e.errno in (errno.EPERM, errno.EACCES):
            raise HftcapError("opening an AF_XDP socket is not permitted (needs CAP_NET_RAW)",
                              hint="run as root") from None


def check_foreign_xdp(core, ifindex: int, ifname: str, ns: str | None) -> None:
    prog = core.xdp_query(ifindex)
    if prog:
        mode = _ATTACH_MODES.get(prog["mode"], str(prog["mode"]))
        nsarg = f"-n {ns} " if ns else ""
        raise HftcapError(
            f"interface '{ifname}' already has an XDP program: id {prog['id']} "
            f"name '{prog['name']}' ({mode}); hftcap never replaces it",
            hint=f"detach it if it is yours (ip {nsarg}link set dev {ifname} xdp off), or use --path kernel")


_STAGES = {
    "xdp-busy": "another XDP program was attached at the same moment",
    "bpf-load": "loading the XDP program failed",
    "feed-map": "configuring the feed map failed",
    "umem": "allocating the AF_XDP UMEM failed",
    "xsk-bind": "binding the AF_XDP socket failed",
    "fill-ring": "filling the AF_XDP fill ring failed",
    "xskmap": "registering the AF_XDP socket in the XSKMAP failed",
    "xdp-attach": "attaching the XDP program failed",
    "udp-socket": "opening the UDP socket failed",
    "udp-bind": "binding the UDP socket to the feed failed",
    "udp-bindtodevice": "binding the UDP socket to the interface failed",
    "igmp-join": "joining the multicast group failed",
    "so-timestamping": "enabling SO_TIMESTAMPING failed",
}


def _open_error(e: OSError, o: ListenOptions) -> HftcapError:
    import errno
    stage = e.strerror or "open"
    what = _STAGES.get(stage, f"capture setup ({stage}) failed")
    hint = None
    if e.errno in (errno.EPERM, errno.EACCES):
        hint = "run as root (needs CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW)"
    elif stage == "xsk-bind" and o.bind == "zerocopy":
        hint = "this driver or queue has no zero-copy AF_XDP: use --bind copy or --bind auto"
    elif stage == "xsk-bind" and e.errno == errno.EINVAL:
        hint = f"queue {o.queue} may not exist on {o.interface}: check ethtool -l {o.interface}"
    elif stage == "xdp-attach" and o.xdp_mode == "native" and e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
        hint = "this driver has no native XDP: use --xdp-mode generic or auto"
    elif stage == "bpf-load":
        hint = "XDP needs Linux 4.18+ with BPF enabled; run with --debug for the verifier log"
    elif stage in ("xdp-attach", "xdp-busy") and e.errno in (errno.EBUSY, errno.EEXIST):
        hint = "another XDP program is attached: hftcap never replaces it"
    code = errno.errorcode.get(e.errno or 0, str(e.errno))
    err = HftcapError(f"{what} on {o.interface}: {os.strerror(e.errno or 0)} ({code})", hint)
    err.errno = e.errno
    return err


def _join_group(ifindex: int, feed: Feed) -> socket.socket:
    """An IGMP membership for the XDP path: the socket only holds the join, so switches
    keep forwarding the group; the packets themselves never reach it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mreqn = socket.inet_aton(feed.group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    return s


class Stopper:
    """Turns SIGINT/SIGTERM into a flag the wait loop polls; restores the old handlers."""

    def __init__(self):
        self.reason: str | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.reason = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, h in self._old.items():
            signal.signal(sig, h)
        return False


class Session:
    """An open receive path: the C capture plus what Python holds around it."""

    def __init__(self, o: ListenOptions):
        from . import _core
        self.o = o
        self.core = _core
        self.ifindex = resolve_interface(o.interface, o.netns)
        check_kernel(o.path)
        if o.path == "xdp":
            check_foreign_xdp(_core, self.ifindex, o.interface, o.netns)
        from . import clocks
        self.rx_queues = clocks.get_rx_queues(o.interface)
        self.bound_queues = self._queues_to_bind()
        self.kernel = _kernel_version()
        self.tai_clock = self.kernel >= (6, 1)
        from .clocks import hw_rx_timestamping
        # Device-wide NIC setting: turned on for the run, restored by close() (also on errors).
        self._hwts_cm = hw_rx_timestamping(o.interface) if o.want_hw_ts else None
        self.hwts = self._hwts_cm.__enter__() if self._hwts_cm else None
        try:
            self.clocks = clocks.describe_clocks(o.interface)
        except Exception as e:  # a probe failure must not stop the capture: report it
            self.clocks = {"interface": o.interface, "phc": None, "phc_reason": f"probe failed: {e}",
                           "synced_to_tai": False, "status": f"hw clock: unknown (probe failed: {e})"}
        tai_off = clocks.kernel_tai_offset_s() or 0
        self.itch_epoch = itch_epoch_tai_ns(o.itch_clock, tai_off)
        try:
            self.cap = _core.Capture(
                o.interface, self.ifindex, [(f.group, f.port) for f in o.feeds],
                path=PATHS[o.path], xdp_mode=XDP_MODES[o.xdp_mode], bind_mode=BIND_MODES[o.bind],
                poll_mode=POLL_MODES[o.poll], cpu=-1 if o.cpu is None else o.cpu, queue=o.queue,
                queues=self.bound_queues if o.path == "xdp" else None,
                max_packets=o.count or 0, want_hw_ts=o.want_hw_ts, tai_clock=self.tai_clock,
                timing=True, phc_is_tai=bool(self.clocks.get("synced_to_tai")),
                itch_epoch_tai_ns=self.itch_epoch)
        except OSError as e:
            self._restore_hwts()
            raise _open_error(e, o) from None
        self.members = []
        if o.path == "xdp":
            try:
                self.members = [_join_group(self.ifindex, f) for f in o.feeds]
            except OSError as e:
                self.cap.close()
                self._restore_hwts()
                raise from_oserror(e, f"joining the multicast group on {o.interface}") from None
        self.started_mono = None
        self.doctor = None          # the doctor's Report of this host, set by run_listen
        self.metrics_url = None     # the Prometheus endpoint, when listen --metrics serves one

    def start(self):
        self.cap.start()
        self.started_mono = time.monotonic()

    def _queues_to_bind(self) -> list[int]:
        o = self.o
        if o.queues is None:
            return [o.queue]
        if o.queues == "all":
            return list(range(min(self.rx_queues or 1, 64)))
        qs = [int(x) for x in o.queues.split(",")]
        if self.rx_queues and max(qs) >= self.rx_queues:
            raise UsageError(f"--queue {max(qs)}: {o.interface} has {self.rx_queues} RX queues",
                             hint=f"use 0-{self.rx_queues - 1}, or --queue all")
        return qs

    def _restore_hwts(self):
        if self._hwts_cm is not None:
            cm, self._hwts_cm = self._hwts_cm, None
            cm.__exit__(None, None, None)

    def close(self):
        self.cap.close()
        for s in self.members:
            s.close()
        self.members = []
        self._restore_hwts()

    # -- books (the live ones, snapshots under their seqlock) --
    @property
    def books(self):
        if getattr(self, "_books", None) is None:
            from .books import Books
            from .snapshots import SnapshotBooks
            core, snaps = self.cap.books(), self.cap.snapshots()
            # hftcap Book Snapshots 'Z' (not ITCH) land in their own table: a stock that has
            # one is answered from it (hftcap.snapshots), any other from the order books.
            self._books = (None if core is None else Books(core=core) if snaps is None
                           else SnapshotBooks(core, snaps))
        return self._books

    def books_stats(self) -> dict:
        b = self.books
        if b is None:
            return {}
        st = b.stats()
        return {"messages": {k: v for k, v in st["messages"].items() if v},
                "drops": {**{f"itch_{k}": v for k, v in st["drops"].items()},
                          **{f"snapshot_{k}": v for k, v in st.get("snapshot_drops", {}).items()}},
                "orders_live": st.get("orders_live")}

    def symbols(self) -> list[tuple[int, str, int]]:
        b = self.books
        if b is None:
            return []
        return [(loc, sym, b.info(loc)["messages"]) for loc, sym in b.symbols()]

    def book(self, locate: int, levels: int) -> dict:
        import numpy as np
        bk = self.books.book(locate, levels)
        info = bk.info
        return {"bids": np.stack([bk.bid_price_e4, bk.bid_shares, bk.bid_orders], axis=1).astype(np.int64)
                if len(bk.bid_price_e4) else np.zeros((0, 3), np.int64),
                "asks": np.stack([bk.ask_price_e4, bk.ask_shares, bk.ask_orders], axis=1).astype(np.int64)
                if len(bk.ask_price_e4) else np.zeros((0, 3), np.int64),
                "state": info.get("trading_state", ""),
                "last_trade_price_e4": info["last_trade_price_e4"] if info.get("trades") else None,
                "volume": info.get("volume", 0)}

    def trades(self, locate: int, n: int):
        t = self.books.trades(locate, n)
        return [(int(x["itch_ns"]), int(x["price_e4"]), int(x["shares"])) for x in t[::-1]]

    def hop_data(self) -> dict:
        """{hop: HistSnapshot | Absent} for this path's hops, from a live snapshot."""
        from . import latency
        snaps = dict(zip(self.core.HOP_NAMES, latency.parse_export(self.cap.hists())))
        out = {}
        for h in latency.hops_for(self.o.path):
            why = self.absent_reason(h.name)
            out[h.name] = latency.Absent(why) if why else snaps[h.name]
        return out

    def absent_reason(self, hop: str) -> str | None:
        from . import latency
        why = latency.hop_absent_reason(hop, self.clocks)
        if why:
            return why
        if hop == "sender_to_book" and not self.itch_epoch:
            return "the ITCH timestamps' clock is not given (--itch-clock)"
        return None

    def conditions(self, elapsed: float | None = None, messages: int | None = None) -> dict:
        i = self.info()
        c = {k: i.get(k) for k in ("path", "xdp_mode", "bind_mode", "poll_mode", "cpu", "kernel",
                                   "interface", "queue", "netns", "feeds")}
        c["clock_sources"] = {"user": "CLOCK_TAI", "xdp": i.get("xdp_clock"),
                              "itch": self.o.itch_clock, "nic": self.clocks}
        c["hop_domains"] = {"sender_to_book": self.o.itch_clock}
        if elapsed:
            c["duration_s"] = round(elapsed, 3)
            if messages is not None:
                c["message_rate"] = round(messages / elapsed, 1)
        c["warmup_s"] = self.o.warmup
        if self.doctor is not None:
            c["doctor"] = self.doctor.conditions()
        return c

    def info(self) -> dict:
        i = self.cap.info()
        o = self.o
        d = {
            "interface": o.interface,
            "netns": o.netns,
            "path": o.path,
            "xdp_mode": _XDP_MODE_NAMES.get(i["xdp_mode"]) if o.path == "xdp" else None,
            "bind_mode": _BIND_NAMES.get(i["bind_mode"]) if o.path == "xdp" else "socket",
            "poll_mode": o.poll,
            "queue": o.queue if len(self.bound_queues) == 1 else ",".join(map(str, self.bound_queues)),
            "cpu": o.cpu,
            "feeds": [str(f) for f in o.feeds],
            "kernel": platform.release(),
            "xdp_clock": ("CLOCK_TAI" if self.tai_clock else "CLOCK_MONOTONIC") if o.path == "xdp" else None,
            "tai_offset_s": i["tai_offset_s"],
            "rx_queues": self.rx_queues,
            "hw_clock": self.clocks.get("status"),
            "itch_clock": o.itch_clock,
        }
        if self.hwts is not None:
            d["hw_rx_timestamping"] = ("enabled for the run" if self.hwts.enabled
                                       else f"not enabled: {self.hwts.reason}")
        if o.path == "xdp":
            d["prog_id"] = i["prog_id"]
            d["hw_program"] = bool(i["hw_program"])
            if not i["hw_program"]:
                err = -i["hw_program_err"]
                d["hw_program_reason"] = (
                    "the device-bound program with bpf_xdp_metadata_rx_timestamp did not load "
                    f"({os.strerror(err)}): needs Linux 6.3+ and a driver with XDP RX metadata"
                    if err else "hardware timestamps not requested")
        return d

    def hw_timestamps(self, stats: dict) -> tuple[bool, str]:
        i = self.cap.info()
        if stats.get("hw_stamped"):
            return True, f"NIC hardware RX timestamps on {stats['hw_stamped']} packets"
        if self.o.path == "xdp" and not i["hw_program"]:
            return False, self.info()["hw_program_reason"]
        if stats.get("packets"):
            return False, (f"{self.o.interface} gave no hardware RX timestamp "
                           "(no PHC, e.g. veth, or hardware RX stamping not enabled)")
        return False, "no packet received"


def latency_summary(sess: Session) -> dict:
    """Per hop: percentiles in ns with the clock domain, or {"absent": reason}."""
    from . import latency
    out = {}
    for hop, data in sess.hop_data().items():
        st = latency.hop_stats(sess.o.path, hop, data,
                               domain=sess.o.itch_clock if hop == "sender_to_book" else None)
        if st.absent:
            out[hop] = {"domain": st.domain, "absent": st.absent}
        else:
            out[hop] = {"domain": st.domain, **st.ns_summary()}
    return out


def final_book(books, symbol: str, levels: int = 10) -> dict:
    """The book of `symbol` in the form `hftcap book --json` gives it; symbol '*' gives every
    stock's, as {"books": {symbol: book}}."""
    from .books import _book_json
    if symbol == "*":
        return {"books": {sym: _book_json(books.book(loc, levels)) for loc, sym in books.symbols()}}
    try:
        loc = books.locate(symbol)
    except KeyError:
        return {"symbol": symbol, "book": None, "book_note": f"symbol {symbol!r} not seen on the feed"}
    return {"symbol": books.info(loc)["symbol"], "book": _book_json(books.book(loc, levels))}


def summary(sess: Session, elapsed: float, stop_reason: str) -> dict:
    st = sess.cap.stats()
    hw, why = sess.hw_timestamps(st)
    out = dict(sess.info())
    bst = sess.books_stats()
    drops = dict(st["drops"])
    drops.update(bst.get("drops", {}))
    out.update({
        "hw_timestamps": hw,
        "hw_timestamps_reason": why,
        "packets": st["packets"],
        "messages": st["messages"],
        "bytes": st["bytes"],
        "gaps": st["gaps"],
        "duplicates": st["duplicates"],
        "last_sequence": st["last_sequence"],
        "heartbeats": st["heartbeats"],
        "end_of_session": st["end_of_session"],
        "drops": drops,
        "messages_by_type": bst.get("messages", {}),
        "orders_live": bst.get("orders_live"),
        "xdp": sess.cap.xdp_stats() if sess.o.path == "xdp" else {},
        "latency": latency_summary(sess),
        "negative_samples": {k: v for k, v in sess.cap.negative().items() if v},
        "duration_s": round(elapsed, 6),
        "data_thread_cpu_s": round(sess.cap.info()["thread_cpu_ns"] / 1e9, 6),
        "stopped_by": stop_reason,
    })
    if sess.doctor is not None:
        out["doctor"] = sess.doctor.to_dict()
    if sess.o.path == "xdp" and (sess.rx_queues or 1) > len(sess.bound_queues):
        out["warning"] = (f"{len(sess.bound_queues)} of {sess.rx_queues} RX queues bound: feed packets on the "
                          f"others reach the kernel (counted in xdp.pass_no_socket); bind them all with "
                          f"--queue all, or steer the feed with ethtool -N")
    return out


def _wait(sess: Session, o: ListenOptions, stopper: "Stopper", t0: float, *stop_events) -> str:
    """Until --count, --duration, a signal or one of stop_events; discards the warm-up's samples."""
    warm = o.warmup > 0
    while True:
        if warm and time.monotonic() - t0 >= o.warmup:
            sess.cap.reset_hists()
            warm = False
        step = 0.05
        if o.duration is not None:
            step = max(0.0, min(step, o.duration - (time.monotonic() - t0)))
        if sess.cap.wait(step):
            return "count"
        if stopper.reason:
            return stopper.reason
        if any(e is not None and e.is_set() for e in stop_events):
            return "quit"
        if o.duration is not None and time.monotonic() - t0 >= o.duration:
            return "duration"


def _run_live_view(sess: Session, o: ListenOptions, stopper: "Stopper", t0: float, symbol, title,
                   stop_event=None) -> str:
    """The rich live view in this (main) thread; a watcher thread ends it on --count,
    --duration or a signal. Returns the stop reason."""
    import threading

    from .live import LiveCapture
    from .tui import run_live
    view_done = threading.Event()
    stop_view = threading.Event()
    reason = {}

    def watch():
        reason["r"] = _wait(sess, o, stopper, t0, view_done, stop_event)
        stop_view.set()

    w = threading.Thread(target=watch, name="hftcap-watch", daemon=True)
    w.start()
    try:
        run_live(LiveCapture(sess), symbol=symbol, stop_event=stop_view, title=title)
    finally:
        view_done.set()
        w.join()
    r = reason.get("r", "quit")
    return r


def host_doctor(o: ListenOptions):
    """The doctor's Report for this capture (interface, namespace, CPU, queues), or None when
    it cannot read the interface (Session then says why in its own words)."""
    from .ops.doctor import run_doctor
    queues = "all" if o.queues == "all" else [int(x) for x in o.queues.split(",")] if o.queues else [o.queue]
    try:
        return run_doctor(o.interface, cpu=o.cpu, netns=o.netns, queues=queues)
    except HftcapError:
        return None


def run_listen(o: ListenOptions, on_started=None, live: bool = False, symbol: str | None = None,
               title: str = "hftcap listen", stop_event=None, on_doctor=None) -> dict:
    """Open, run until Ctrl-C/SIGTERM/--duration/--count (or q in the live view), close;
    return the summary. on_doctor(report) is called with the doctor's report before the start."""
    check_options(o)
    if os.geteuid() != 0:
        raise HftcapError("listen needs root (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW)",
                          hint="run it with sudo")
    doctor = host_doctor(o)   # before --netns: it reads the host's init-namespace sysctls
    if on_doctor and doctor is not None:
        on_doctor(doctor)
    server = None
    if o.metrics is not None:
        from .ops.metrics import MetricsServer, parse_addr
        server = MetricsServer(*parse_addr(o.metrics))  # bound here, in the namespace listen started in
    try:
        if o.netns:
            _netns.enter(o.netns)
        return _run_session(o, on_started, live, symbol, title, stop_event, doctor, server)
    finally:
        if server is not None:
            server.close()


def _run_session(o, on_started, live, symbol, title, stop_event, doctor, server) -> dict:
    with Stopper() as stopper:
        sess = Session(o)
        sess.doctor = doctor
        try:
            sess.start()
            if server is not None:
                from .ops.metrics import ListenCollector
                sess.books      # made here, not first on a scrape thread
                server.serve(ListenCollector(sess, doctor))
                sess.metrics_url = server.url
            if on_started:
                on_started(sess)
            t0 = time.monotonic()
            if live:
                reason = _run_live_view(sess, o, stopper, t0, symbol, title, stop_event)
            else:
                reason = _wait(sess, o, stopper, t0, stop_event)
            sess.cap.stop()
            elapsed = time.monotonic() - t0
            result = summary(sess, elapsed, reason)
            if server is not None:
                result["metrics"] = server.url
            if symbol and sess.books is not None and not live:
                result.update(final_book(sess.books, symbol))
            if o.save:
                from . import latency
                latency.save_result(o.save, {o.path: sess.hop_data()},
                                    sess.conditions(elapsed, result["messages"]))
                result["saved"] = o.save
        finally:
            if server is not None:
                server.close()  # no scrape may read a closed capture
            sess.close()
    return result
