"""The receive path's checks and opening: interface, kernel features, an XDP program that is
already there, the C capture (AF_XDP or kernel socket) and the IGMP membership of the XDP path.

Python owns every check and decision; the C core (hftcap._core.Capture) owns the data thread."""
from __future__ import annotations

import os
import platform
import socket
import struct

from ..errors import HftcapError
from .options import BIND_MODES, PATHS, POLL_MODES, TSC_HINT, TSC_NOT_INVARIANT, XDP_MODES, Feed, ListenOptions
from .pcapng import hold_frames

XDP_MODE_NAMES = {1: "native", 2: "generic"}
BIND_NAMES = {1: "zerocopy", 2: "copy"}
_ATTACH_MODES = {1: "native", 2: "generic", 3: "offload", 4: "multi"}
AF_XDP = 44
IFF_UP = 0x1


def kernel_version() -> tuple[int, int]:
    rel = platform.release().split("-")[0].split(".")
    try:
        return int(rel[0]), int(rel[1])
    except (IndexError, ValueError):
        return (0, 0)



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
    elif stage == "stamp-clock" and e.errno == errno.ENOTSUP:
        hint = f"{TSC_NOT_INVARIANT}: {TSC_HINT}"
    elif stage == "bpf-load":
        hint = "XDP needs Linux 4.18+ with BPF enabled; run with --debug for the verifier log"
    elif stage in ("xdp-attach", "xdp-busy") and e.errno in (errno.EBUSY, errno.EEXIST):
        hint = "another XDP program is attached: hftcap never replaces it"
    code = errno.errorcode.get(e.errno or 0, str(e.errno))
    err = HftcapError(f"{what} on {o.interface}: {os.strerror(e.errno or 0)} ({code})", hint)
    err.errno = e.errno
    return err


def join_group(ifindex: int, feed: Feed) -> socket.socket:
    """An IGMP membership for the XDP path: the socket only holds the join, so switches
    keep forwarding the group; the packets themselves never reach it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mreqn = socket.inet_aton(feed.group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    return s


def open_capture(core, o: ListenOptions, ifindex: int, queues: list[int], tai_clock: bool,
                 phc_is_tai: bool, itch_epoch_tai_ns: int):
    """The C capture for these options; an OSError from the core becomes one HftcapError."""
    try:
        return core.Capture(
            o.interface, ifindex, [(f.group, f.port) for f in o.feeds],
            path=PATHS[o.path], xdp_mode=XDP_MODES[o.xdp_mode], bind_mode=BIND_MODES[o.bind],
            poll_mode=POLL_MODES[o.poll], cpu=-1 if o.cpu is None else o.cpu, queue=o.queue,
            queues=queues if o.path == "xdp" else None,
            max_packets=o.count or 0, want_hw_ts=o.want_hw_ts, tai_clock=tai_clock,
            timing=True, phc_is_tai=phc_is_tai, itch_epoch_tai_ns=itch_epoch_tai_ns, stamp=o.stamp,
            recovery=o.recovery.core() if o.recovery is not None else None,
            capture_frames=hold_frames(o.write) if o.write is not None and o.path == "xdp" else 0,
            rcvbuf=o.socket_buffer or 0, feeds_b=[(f.group, f.port) for f in o.feeds_b] or None,
            warm_books=o.warm_books)
    except OSError as e:
        raise _open_error(e, o) from None


def join_groups(ifindex: int, feeds: list[Feed]) -> list[socket.socket]:
    """One membership per feed; the ones made are closed again if a later one fails."""
    members = []
    try:
        for f in feeds:
            members.append(join_group(ifindex, f))
    except OSError:
        for m in members:
            m.close()
        raise
    return members
