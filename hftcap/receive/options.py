"""What `hftcap listen` is asked to do: feeds, paths and modes, checked before anything opens."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from ..errors import UsageError
from ..measure.clocks import ITCH_CLOCKS
from .pcapng import WriteOptions, check_write_options

PATHS = {"xdp": 0, "kernel": 1}
# The data thread's dequeue/decode/book stamps (hc_time.h): auto = tsc when the TSC is invariant.
STAMPS = ("auto", "tsc", "clock")
# Why --stamp tsc cannot run here, and what to do (listen's capture open and bench's argument check)
TSC_NOT_INVARIANT = "this CPU's TSC is not invariant (constant_tsc and nonstop_tsc in /proc/cpuinfo)"
TSC_HINT = "use --stamp clock (clock_gettime(CLOCK_TAI))"
XDP_MODES = {"auto": 0, "native": 1, "generic": 2}
BIND_MODES = {"auto": 0, "zerocopy": 1, "copy": 2}
POLL_MODES = {"wakeup": 0, "busy": 1}


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
    feeds_b: list[Feed] = field(default_factory=list)  # the i-th is the B line of the i-th feed
    path: str = "xdp"
    xdp_mode: str = "auto"
    bind: str = "auto"
    poll: str = "wakeup"
    queue: int = 0
    queues: str | None = None   # "all" or "0,2,5": one AF_XDP socket per queue (else `queue` only)
    cpu: int | None = None
    socket_buffer: int | None = None   # kernel path: SO_RCVBUF of the feed sockets (None = 16 MiB)
    warm_books: bool = False    # AF_XDP busy polling: keep the books in cache while the rings are empty
    duration: float | None = None
    count: int | None = None
    want_hw_ts: bool = True
    itch_clock: str = "none"
    stamp: str = "auto"         # the data thread's own stamps: tsc (invariant TSC mapped to TAI), clock, auto
    warmup: float = 0.0
    save: str | None = None
    write: "WriteOptions | None" = None   # listen --write (hftcap.receive.pcapng)
    recovery: object = None      # hftcap.feed.recovery.RecoveryOptions: gap recovery by re-request
    levels: int = 10             # depth of the --symbol book in --json
    snapshot: str | None = None          # HOST:PORT of a SoupBinTCP snapshot server: late join
    snapshot_user: str = ""
    snapshot_password: str = ""          # from a file or the environment, never an argument
    join_buffer: int = 1 << 20           # messages buffered while the snapshot loads
    metrics: str | None = None  # "[ADDR:]PORT" of the Prometheus endpoint
    metrics_textfile: str | None = None  # node_exporter textfile (PATH.prom), rewritten every metrics_interval s
    metrics_interval: float = 10.0
    extra: dict = field(default_factory=dict)



def check_options(o: ListenOptions) -> None:
    for name, val, allowed in (("--path", o.path, PATHS), ("--xdp-mode", o.xdp_mode, XDP_MODES),
                               ("--bind", o.bind, BIND_MODES), ("--poll", o.poll, POLL_MODES)):
        if val not in allowed:
            raise UsageError(f"bad {name} '{val}'", hint="one of: " + ", ".join(allowed))
    if not o.feeds:
        raise UsageError("no feed given", hint="add --feed GROUP:PORT, e.g. --feed 239.1.1.1:26400")
    if len({(f.group, f.port) for f in o.feeds}) != len(o.feeds):
        raise UsageError("the same feed is given twice")
    if len(o.feeds_b) > len(o.feeds):
        raise UsageError(f"{len(o.feeds_b)} --feed-b for {len(o.feeds)} --feed",
                         hint="the i-th --feed-b is the B line of the i-th --feed")
    lines = [(f.group, f.port) for f in o.feeds + o.feeds_b]
    if len(set(lines)) != len(lines):
        raise UsageError("a --feed-b is the same group and port as another line",
                         hint="the B line is published on its own multicast group")
    if o.feeds_b and o.recovery is None:
        raise UsageError("--feed-b needs the sequencing of gap recovery (internal: recovery options missing)")
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
    if o.stamp not in STAMPS:
        raise UsageError(f"bad --stamp '{o.stamp}'", hint="one of: " + ", ".join(STAMPS))
    if o.socket_buffer is not None:
        if o.path != "kernel":
            raise UsageError("--socket-buffer is for --path kernel", hint="AF_XDP has no socket buffer: drop it")
        if not 1024 <= o.socket_buffer <= 1 << 30:
            raise UsageError(f"bad --socket-buffer {o.socket_buffer}", hint="bytes, 1024 to 1073741824")
    if o.warm_books and (o.path != "xdp" or o.poll != "busy"):
        raise UsageError("--warm-books is for --path xdp --poll busy",
                         hint="only a data thread that spins has idle time on its own core to spend")
    if o.itch_clock not in ITCH_CLOCKS:
        raise UsageError(f"bad --itch-clock '{o.itch_clock}'", hint="one of: " + ", ".join(ITCH_CLOCKS))
    if o.warmup < 0:
        raise UsageError("--warmup must be 0 or more seconds")
    if o.duration is not None and o.duration <= 0:
        raise UsageError("--duration must be positive")
    if o.count is not None and o.count <= 0:
        raise UsageError("--count must be positive")
    if o.write is not None:
        check_write_options(o.write)
    if o.levels < 1:
        raise UsageError(f"--levels {o.levels}: expected 1 or more")
    if o.recovery is not None:
        from ..feed.recovery import check
        check(o.recovery)
    if not 1024 <= o.join_buffer <= 1 << 24:
        raise UsageError(f"bad --join-buffer {o.join_buffer}", hint="1024 to 16777216 messages (64 bytes each)")
    if o.snapshot is not None:
        from ..feed.glimpse import parse_hostport
        parse_hostport(o.snapshot)
    if o.metrics is not None:
        from ..ops.metrics import parse_addr
        parse_addr(o.metrics)
    if o.metrics_textfile is not None:
        from ..ops.metrics import check_textfile
        check_textfile(o.metrics_textfile, o.metrics_interval)

