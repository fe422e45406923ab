"""clocks.py: the NIC's PTP hardware clock (PHC), hardware RX timestamping, PTP daemons, TAI.

What it answers for a run (see shared/specs/XDP_TIMESTAMPS.md sections 1, 2, 9, 10):
  * which PHC the interface stamps with (ETHTOOL_GET_TS_INFO), or why there is none (veth);
  * hardware RX timestamping on for the run and the previous setting restored afterwards, also
    after errors (`hw_rx_timestamping()`, SIOCGHWTSTAMP then SIOCSHWTSTAMP rx_filter=ALL);
  * PHC <-> system offset, by PTP_SYS_OFFSET_PRECISE (hardware cross-timestamp) when the clock
    can, else PTP_SYS_OFFSET_EXTENDED, else PTP_SYS_OFFSET: the minimum-delay sample of
    (sys_pre, phc, sys_post) triples; offset = midpoint - phc, uncertainty = the read window;
  * ptp4l / phc2sys running (a /proc scan) and ptp4l's state through `pmc` when present;
  * the kernel's TAI-UTC offset (adjtimex), and whether PHC and CLOCK_TAI agree -- the
    condition for any hop that starts at a NIC stamp (DESIGN.md: PHC->TAI only when synced).

Signs: `phc_minus_tai_ns` = PHC - CLOCK_TAI (0 when phc2sys keeps them together);
`sys_minus_phc_ns` = CLOCK_REALTIME - PHC (what `phc_ctl cmp` prints, about -37 s for a TAI PHC).

All kernel access goes through an `IoctlBackend` (ioctls, /dev/ptpN) and a `Host` (/proc,
pmc, adjtimex); tests pass fakes of both and run the same code paths.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import os
import shutil
import socket
import subprocess
import time
from ctypes import c_char, c_int, c_int64, c_long, c_uint, c_uint32, c_void_p
from typing import Iterator

from ..errors import HftcapError

# ---------------------------------------------------------------------------------------------
# Kernel ABI: structures (<linux/net_tstamp.h>, <linux/ethtool.h>, <linux/ptp_clock.h>,
# <linux/if.h>, <sys/timex.h>) and request numbers.

IFNAMSIZ = 16
SIOCETHTOOL = 0x8946
SIOCSHWTSTAMP = 0x89B0
SIOCGHWTSTAMP = 0x89B1
ETHTOOL_GDRVINFO = 0x00000003
ETHTOOL_GCHANNELS = 0x0000003c
ETHTOOL_GET_TS_INFO = 0x00000041

HWTSTAMP_TX_OFF, HWTSTAMP_TX_ON = 0, 1
HWTSTAMP_FILTER_NONE, HWTSTAMP_FILTER_ALL, HWTSTAMP_FILTER_SOME = 0, 1, 2

SOF_TIMESTAMPING_NAMES = {
    0: "tx_hardware", 1: "tx_software", 2: "rx_hardware", 3: "rx_software", 4: "software",
    5: "sys_hardware", 6: "raw_hardware", 7: "opt_id", 8: "tx_sched", 9: "tx_ack",
    10: "opt_cmsg", 11: "opt_tsonly", 12: "opt_stats", 13: "opt_pktinfo", 14: "opt_tx_swhw",
    15: "bind_phc", 16: "opt_id_tcp", 17: "opt_rx_filter",
}
SOF_TIMESTAMPING_RX_HARDWARE = 1 << 2
SOF_TIMESTAMPING_RAW_HARDWARE = 1 << 6
RX_FILTER_NAMES = {
    0: "none", 1: "all", 2: "some", 3: "ptp_v1_l4_event", 4: "ptp_v1_l4_sync",
    5: "ptp_v1_l4_delay_req", 6: "ptp_v2_l4_event", 7: "ptp_v2_l4_sync",
    8: "ptp_v2_l4_delay_req", 9: "ptp_v2_l2_event", 10: "ptp_v2_l2_sync",
    11: "ptp_v2_l2_delay_req", 12: "ptp_v2_event", 13: "ptp_v2_sync", 14: "ptp_v2_delay_req",
    15: "ntp_all",
}

PTP_MAX_SAMPLES = 25
TAI_UTC_S = 37          # TAI - UTC since 2017 (linuxptp utc_offset default)


class HwtstampConfig(ctypes.Structure):
    _fields_ = [("flags", c_int), ("tx_type", c_int), ("rx_filter", c_int)]

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.flags, self.tx_type, self.rx_filter)


class EthtoolTsInfo(ctypes.Structure):
    _fields_ = [("cmd", c_uint32), ("so_timestamping", c_uint32), ("phc_index", ctypes.c_int32),
                ("tx_types", c_uint32), ("tx_reserved", c_uint32 * 3),
                ("rx_filters", c_uint32), ("rx_reserved", c_uint32 * 3)]


class EthtoolDrvinfo(ctypes.Structure):
    _fields_ = [("cmd", c_uint32), ("driver", c_char * 32), ("version", c_char * 32),
                ("fw_version", c_char * 32), ("bus_info", c_char * 32),
                ("erom_version", c_char * 32), ("reserved2", c_char * 12),
                ("n_priv_flags", c_uint32), ("n_stats", c_uint32), ("testinfo_len", c_uint32),
                ("eedump_len", c_uint32), ("regdump_len", c_uint32)]


class EthtoolChannels(ctypes.Structure):
    _fields_ = [("cmd", c_uint32), ("max_rx", c_uint32), ("max_tx", c_uint32),
                ("max_other", c_uint32), ("max_combined", c_uint32), ("rx_count", c_uint32),
                ("tx_count", c_uint32), ("other_count", c_uint32), ("combined_count", c_uint32)]


class Ifreq(ctypes.Structure):
    """struct ifreq with ifr_data set: the name, then the union (24 bytes on 64-bit)."""
    _fields_ = [("ifr_name", c_char * IFNAMSIZ), ("ifr_data", c_void_p),
                ("_pad", c_char * (24 - ctypes.sizeof(c_void_p)))]


class PtpClockTime(ctypes.Structure):
    _fields_ = [("sec", c_int64), ("nsec", c_uint32), ("reserved", c_uint32)]

    @property
    def ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nsec

    @classmethod
    def of_ns(cls, ns: int) -> "PtpClockTime":
        return cls(ns // 1_000_000_000, ns % 1_000_000_000, 0)


class PtpClockCaps(ctypes.Structure):
    _fields_ = [("max_adj", c_int), ("n_alarm", c_int), ("n_ext_ts", c_int),
                ("n_per_out", c_int), ("pps", c_int), ("n_pins", c_int),
                ("cross_timestamping", c_int), ("adjust_phase", c_int),
                ("max_phase_adj", c_int), ("rsv", c_int * 11)]


class PtpSysOffset(ctypes.Structure):
    _fields_ = [("n_samples", c_uint), ("rsv", c_uint * 3),
                ("ts", PtpClockTime * (2 * PTP_MAX_SAMPLES + 1))]


class PtpSysOffsetExtended(ctypes.Structure):
    _fields_ = [("n_samples", c_uint), ("clockid", c_int), ("rsv", c_uint * 2),
                ("ts", (PtpClockTime * 3) * PTP_MAX_SAMPLES)]


class PtpSysOffsetPrecise(ctypes.Structure):
    _fields_ = [("device", PtpClockTime), ("sys_realtime", PtpClockTime),
                ("sys_monoraw", PtpClockTime), ("rsv", c_uint * 4)]


class Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", c_long), ("tv_usec", c_long)]


class Timex(ctypes.Structure):
    _fields_ = [("modes", c_uint), ("offset", c_long), ("freq", c_long), ("maxerror", c_long),
                ("esterror", c_long), ("status", c_int), ("constant", c_long),
                ("precision", c_long), ("tolerance", c_long), ("time", Timeval),
                ("tick", c_long), ("ppsfreq", c_long), ("jitter", c_long), ("shift", c_int),
                ("stabil", c_long), ("jitcnt", c_long), ("calcnt", c_long), ("errcnt", c_long),
                ("stbcnt", c_long), ("tai", c_int), ("_pad", c_int * 11)]


_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_WRITE, _IOC_READ = 1, 2


def _IOC(direction: int, typ: str, nr: int, size: int) -> int:
    if size >= 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl size {size} does not fit")
    return (direction << _IOC_DIRSHIFT) | (ord(typ) << _IOC_TYPESHIFT) | \
        (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)


def _IOR(typ, nr, struct):
    return _IOC(_IOC_READ, typ, nr, ctypes.sizeof(struct))


def _IOW(typ, nr, struct):
    return _IOC(_IOC_WRITE, typ, nr, ctypes.sizeof(struct))


def _IOWR(typ, nr, struct):
    return _IOC(_IOC_READ | _IOC_WRITE, typ, nr, ctypes.sizeof(struct))


PTP_CLK_MAGIC = "="
PTP_CLOCK_GETCAPS = _IOR(PTP_CLK_MAGIC, 1, PtpClockCaps)
PTP_SYS_OFFSET = _IOW(PTP_CLK_MAGIC, 5, PtpSysOffset)
PTP_SYS_OFFSET_PRECISE = _IOWR(PTP_CLK_MAGIC, 8, PtpSysOffsetPrecise)
PTP_SYS_OFFSET_EXTENDED = _IOWR(PTP_CLK_MAGIC, 9, PtpSysOffsetExtended)

# errnos meaning "this driver/kernel does not do that": fall back, do not fail.
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS}


# ---------------------------------------------------------------------------------------------
# Injectable kernel access


class IoctlBackend:
    """The real kernel: ioctls on an AF_INET socket (interfaces) and on /dev/ptpN (PHCs).

    Every method takes and fills a ctypes structure in place and raises OSError on failure;
    a test backend implements the same four methods on a fake device."""

    def if_ioctl(self, ifname: str, request: int, data: ctypes.Structure) -> None:
        name = ifname.encode()
        if not name or len(name) >= IFNAMSIZ:
            raise OSError(errno.ENODEV, f"bad interface name {ifname!r}")
        ifr = Ifreq(ifr_name=name, ifr_data=ctypes.addressof(data))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            buf = bytearray(bytes(ifr))
            fcntl.ioctl(s.fileno(), request, buf, True)   # the kernel fills `data` in place

    def open_phc(self, index: int) -> int:
        return os.open(f"/dev/ptp{index}", os.O_RDONLY | os.O_CLOEXEC)

    def phc_ioctl(self, fd: int, request: int, data: ctypes.Structure) -> None:
        buf = bytearray(bytes(data))
        fcntl.ioctl(fd, request, buf, True)
        ctypes.memmove(ctypes.addressof(data), bytes(buf), len(buf))

    def close(self, fd: int) -> None:
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class ProcInfo:
    pid: int
    name: str
    argv: tuple[str, ...]


class Host:
    """The rest of the system: process list, pmc, the kernel TAI offset."""

    DAEMONS = ("ptp4l", "phc2sys", "ts2phc", "chronyd")

    def __init__(self, proc_root: str = "/proc", pmc_path: str | None = "auto"):
        self.proc_root = proc_root
        self.pmc_path = shutil.which("pmc") if pmc_path == "auto" else pmc_path

    def processes(self, names=DAEMONS) -> list[ProcInfo]:
        out = []
        try:
            entries = os.listdir(self.proc_root)
        except OSError:
            return out
        for e in entries:
            if not e.isdigit():
                continue
            try:
                with open(os.path.join(self.proc_root, e, "comm")) as f:
                    name = f.read().strip()
                if name not in names:
                    continue
                with open(os.path.join(self.proc_root, e, "cmdline"), "rb") as f:
                    argv = tuple(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
            except OSError:        # the process exited while we looked
                continue
            out.append(ProcInfo(int(e), name, argv))
        return sorted(out, key=lambda p: p.pid)

    def pmc(self, *commands: str, timeout_s: float = 2.0) -> str | None:
        """Output of `pmc -u -b 0 CMD...` (ptp4l's local management socket), None if unusable."""
        if not self.pmc_path:
            return None
        try:
            r = subprocess.run([self.pmc_path, "-u", "-b", "0", *commands], capture_output=True,
                               text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout if r.returncode == 0 else None

    def tai_offset_s(self) -> int | None:
        """The kernel's TAI - UTC offset (adjtimex, read-only), None if unavailable."""
        libc = ctypes.CDLL(None, use_errno=True)
        tx = Timex(modes=0)
        if libc.adjtimex(ctypes.byref(tx)) < 0:
            return None
        return tx.tai


# ---------------------------------------------------------------------------------------------
# Interface timestamping information


@dataclasses.dataclass
class TsInfo:
    so_timestamping: int
    phc_index: int
    tx_types: int
    rx_filters: int

    @property
    def hw_rx_all(self) -> bool:
        """RX hardware stamps reportable and the all-packets filter supported."""
        need = SOF_TIMESTAMPING_RX_HARDWARE | SOF_TIMESTAMPING_RAW_HARDWARE
        return (self.so_timestamping & need) == need and \
            bool(self.rx_filters & (1 << HWTSTAMP_FILTER_ALL))

    def to_dict(self) -> dict:
        return {"phc_index": self.phc_index,
                "so_timestamping": [n for b, n in SOF_TIMESTAMPING_NAMES.items()
                                    if self.so_timestamping & (1 << b)],
                "rx_filters": [n for b, n in RX_FILTER_NAMES.items() if self.rx_filters & (1 << b)],
                "tx_types": self.tx_types, "hw_rx_all": self.hw_rx_all}


def get_ts_info(ifname: str, backend: IoctlBackend | None = None) -> TsInfo:
    b = backend or IoctlBackend()
    info = EthtoolTsInfo(cmd=ETHTOOL_GET_TS_INFO)
    b.if_ioctl(ifname, SIOCETHTOOL, info)
    return TsInfo(info.so_timestamping, info.phc_index, info.tx_types, info.rx_filters)


def _ethtool_or_none(ifname: str, backend: IoctlBackend | None, req):
    """req filled in by SIOCETHTOOL, or None when the driver does not answer it."""
    try:
        (backend or IoctlBackend()).if_ioctl(ifname, SIOCETHTOOL, req)
    except OSError:
        return None
    return req


def get_rx_queues(ifname: str, backend: IoctlBackend | None = None) -> int | None:
    """RX queues in use (ETHTOOL_GCHANNELS: rx + combined); None when the driver does not say."""
    ch = _ethtool_or_none(ifname, backend, EthtoolChannels(cmd=ETHTOOL_GCHANNELS))
    if ch is None:
        return None
    return (ch.rx_count + ch.combined_count) or None


def get_driver(ifname: str, backend: IoctlBackend | None = None) -> str | None:
    d = _ethtool_or_none(ifname, backend, EthtoolDrvinfo(cmd=ETHTOOL_GDRVINFO))
    if d is None:
        return None
    return d.driver.decode(errors="replace") or None


# ---------------------------------------------------------------------------------------------
# Hardware RX timestamping for the duration of a run


def get_hwtstamp(ifname: str, backend: IoctlBackend | None = None) -> HwtstampConfig:
    cfg = HwtstampConfig()
    (backend or IoctlBackend()).if_ioctl(ifname, SIOCGHWTSTAMP, cfg)
    return cfg


def set_hwtstamp(ifname: str, cfg: HwtstampConfig,
                 backend: IoctlBackend | None = None) -> HwtstampConfig:
    """Apply cfg; returns what the driver applied (it writes it back, maybe more permissive)."""
    applied = HwtstampConfig(cfg.flags, cfg.tx_type, cfg.rx_filter)
    (backend or IoctlBackend()).if_ioctl(ifname, SIOCSHWTSTAMP, applied)
    return applied


_SET_ERRORS = {
    errno.ERANGE: "the NIC cannot stamp all received packets",
    errno.EOPNOTSUPP: "the driver has no hardware timestamping",
    errno.EINVAL: "the driver rejected the configuration",
    errno.EPERM: "changing it needs CAP_NET_ADMIN",
}


@dataclasses.dataclass
class HwTimestamping:
    """State of hw_rx_timestamping(): what was there, what we set, whether it was restored."""
    ifname: str
    enabled: bool = False
    previous: tuple[int, int, int] | None = None   # (flags, tx_type, rx_filter); None = unread
    applied: tuple[int, int, int] | None = None
    changed: bool = False          # we issued SIOCSHWTSTAMP and owe a restore
    restored: bool = False
    changed_by_other: bool = False  # someone (ptp4l?) re-set it during the run
    reason: str | None = None       # why it is not enabled
    restore_error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    _backend: IoctlBackend | None = dataclasses.field(default=None, repr=False)

    def verify(self) -> bool | None:
        """Re-read the device setting: True while rx_filter is still ALL, None if unreadable."""
        try:
            cur = get_hwtstamp(self.ifname, self._backend)
        except OSError:
            return None
        return cur.rx_filter == HWTSTAMP_FILTER_ALL


@contextlib.contextmanager
def hw_rx_timestamping(ifname: str, backend: IoctlBackend | None = None,
                       required: bool = False) -> Iterator[HwTimestamping]:
    """Hardware RX timestamping (rx_filter ALL, tx_type and flags kept) for the `with` body;
    the previous configuration is restored on exit, also when the body raises.

    If the device cannot do it: raise HftcapError when `required`, else yield a state with
    enabled=False and the reason. If the previous setting cannot be read (SIOCGHWTSTAMP is not
    implemented by every driver) it is left at ALL afterwards -- more permissive than any PTP
    filter, so ptp4l keeps working -- and a warning says so."""
    b = backend or IoctlBackend()
    st = HwTimestamping(ifname, _backend=b)
    prev = None
    try:
        prev = get_hwtstamp(ifname, b)
        st.previous = prev.as_tuple()
    except OSError as e:
        if e.errno == errno.ENODEV:
            raise HftcapError(f"no interface {ifname}") from e
        st.warnings.append(f"cannot read the current timestamping config of {ifname} "
                           f"(SIOCGHWTSTAMP: {os.strerror(e.errno or 0)}); it stays at "
                           "rx_filter=all after the run")
    if prev is not None and prev.rx_filter == HWTSTAMP_FILTER_ALL:
        st.enabled, st.applied = True, prev.as_tuple()
    else:
        want = HwtstampConfig(prev.flags if prev else 0,
                              prev.tx_type if prev else HWTSTAMP_TX_OFF, HWTSTAMP_FILTER_ALL)
        try:
            applied = set_hwtstamp(ifname, want, b)
        except OSError as e:
            why = _SET_ERRORS.get(e.errno, os.strerror(e.errno or 0))
            st.reason = f"hardware RX timestamps unavailable on {ifname}: {why}"
            if required:
                hint = "run as root" if e.errno == errno.EPERM else \
                    "use a NIC with a PTP hardware clock (ethtool -T shows one)"
                raise HftcapError(st.reason, hint=hint) from e
            yield st
            return
        st.applied, st.changed = applied.as_tuple(), prev is not None
        st.enabled = applied.rx_filter != HWTSTAMP_FILTER_NONE
    body_exc: BaseException | None = None
    try:
        yield st
    except BaseException as e:
        body_exc = e
        raise
    finally:
        if st.changed:
            _restore(st, prev, b, body_exc)


def _restore(st: HwTimestamping, prev: HwtstampConfig, b: IoctlBackend,
             body_exc: BaseException | None) -> None:
    try:
        cur = get_hwtstamp(st.ifname, b)
        if cur.as_tuple() != st.applied:
            st.changed_by_other = True
            st.warnings.append(f"the timestamping config of {st.ifname} was changed by another "
                               f"process during the run (now {cur.as_tuple()}); hardware "
                               "stamps may be missing from part of it")
    except OSError:
        pass
    try:
        set_hwtstamp(st.ifname, HwtstampConfig(*prev.as_tuple()), b)
        st.restored = True
    except OSError as e:
        st.restore_error = (f"could not restore the timestamping config of {st.ifname} to "
                            f"{prev.as_tuple()}: {os.strerror(e.errno or 0)}")
        if body_exc is None:
            raise HftcapError(st.restore_error,
                              hint=f"hwstamp_ctl -i {st.ifname} -r {prev.rx_filter}") from e
        if hasattr(body_exc, "add_note"):
            body_exc.add_note(st.restore_error)


# ---------------------------------------------------------------------------------------------
# PHC <-> system clock offset


@dataclasses.dataclass
class OffsetMeasurement:
    method: str                 # "precise" | "extended" | "basic"
    sys_minus_phc_ns: int       # CLOCK_REALTIME - PHC
    uncertainty_ns: int         # the read window of the chosen sample (0 for precise)
    phc_ns: int                 # PHC reading of the chosen sample
    samples: int                # samples considered

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def best_sample(triples) -> tuple[int, int, int]:
    """linuxptp's estimator over (sys_pre, phc, sys_post) ns triples: keep the sample with the
    smallest read window post - pre; its offset is midpoint - phc (system - PHC).

    Returns (sys_minus_phc_ns, window_ns, phc_ns). Samples whose window is negative (the system
    clock stepped during the read) are ignored; ValueError if none is left."""
    best = None
    for pre, phc, post in triples:
        window = post - pre
        if window < 0:
            continue
        if best is None or window < best[1]:
            best = (pre + window // 2 - phc, window, phc)
    if best is None:
        raise ValueError("no usable (pre, phc, post) sample")
    return best


def _offset_precise(b: IoctlBackend, fd: int) -> OffsetMeasurement:
    p = PtpSysOffsetPrecise()
    b.phc_ioctl(fd, PTP_SYS_OFFSET_PRECISE, p)
    return OffsetMeasurement("precise", p.sys_realtime.ns - p.device.ns, 0, p.device.ns, 1)


def _offset_extended(b: IoctlBackend, fd: int, n: int) -> OffsetMeasurement:
    x = PtpSysOffsetExtended(n_samples=n)       # clockid 0: CLOCK_REALTIME on every kernel
    b.phc_ioctl(fd, PTP_SYS_OFFSET_EXTENDED, x)
    triples = [(x.ts[i][0].ns, x.ts[i][1].ns, x.ts[i][2].ns) for i in range(x.n_samples)]
    off, win, phc = best_sample(triples)
    return OffsetMeasurement("extended", off, win, phc, len(triples))


def _offset_basic(b: IoctlBackend, fd: int, n: int) -> OffsetMeasurement:
    x = PtpSysOffset(n_samples=n)
    b.phc_ioctl(fd, PTP_SYS_OFFSET, x)
    ts = [x.ts[i].ns for i in range(2 * x.n_samples + 1)]
    triples = [(ts[2 * i], ts[2 * i + 1], ts[2 * i + 2]) for i in range(x.n_samples)]
    off, win, phc = best_sample(triples)
    return OffsetMeasurement("basic", off, win, phc, len(triples))


def get_caps(fd: int, backend: IoctlBackend | None = None) -> PtpClockCaps:
    caps = PtpClockCaps()
    (backend or IoctlBackend()).phc_ioctl(fd, PTP_CLOCK_GETCAPS, caps)
    return caps


def measure_offset(phc_index: int, backend: IoctlBackend | None = None, samples: int = 9,
                   caps: PtpClockCaps | None = None) -> OffsetMeasurement:
    """PHC <-> CLOCK_REALTIME offset: PRECISE if caps.cross_timestamping, else EXTENDED (min
    read window of `samples`), else basic PTP_SYS_OFFSET. Raises OSError if all fail."""
    if not 1 <= samples <= PTP_MAX_SAMPLES:
        raise ValueError(f"samples must be 1..{PTP_MAX_SAMPLES}")
    b = backend or IoctlBackend()
    fd = b.open_phc(phc_index)
    try:
        if caps is None:
            try:
                caps = get_caps(fd, b)
            except OSError:
                caps = PtpClockCaps()
        err: OSError | None = None
        steps = []
        if caps.cross_timestamping:
            steps.append(lambda: _offset_precise(b, fd))
        steps += [lambda: _offset_extended(b, fd, samples), lambda: _offset_basic(b, fd, samples)]
        for step in steps:
            try:
                return step()
            except OSError as e:
                if e.errno not in _UNSUPPORTED:
                    raise
                err = e
        assert err is not None
        raise err
    finally:
        b.close(fd)


# ---------------------------------------------------------------------------------------------
# Putting it together


def _parse_pmc(text: str) -> dict:
    """key/value lines of pmc responses (last value of a key wins)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("sending"):
            out[parts[0]] = parts[1]
    return out


def _fmt_signed_ns(v: int) -> str:
    a = abs(v)
    s = "+" if v >= 0 else "-"
    if a < 10_000:
        return f"{s}{a} ns"
    if a < 10_000_000:
        return f"{s}{a / 1e3:.1f} us"
    if a < 10_000_000_000:
        return f"{s}{a / 1e6:.1f} ms"
    return f"{s}{a / 1e9:.3f} s"


@dataclasses.dataclass
class ClockInfo:
    ifname: str
    driver: str | None = None
    phc: str | None = None               # "/dev/ptpN", None when the interface has none
    phc_index: int | None = None
    phc_reason: str | None = None        # why phc is None
    ts_info: TsInfo | None = None
    caps: dict | None = None
    offset: OffsetMeasurement | None = None
    offset_error: str | None = None
    tai_offset_s: int | None = None      # kernel TAI - UTC (adjtimex)
    phc_minus_tai_ns: int | None = None
    phc_timescale: str = "unknown"       # "TAI" | "UTC" | "unknown"
    synced_to_tai: bool = False
    sync_reason: str | None = None       # why synced_to_tai is False
    ptp4l: list[ProcInfo] = dataclasses.field(default_factory=list)
    phc2sys: list[ProcInfo] = dataclasses.field(default_factory=list)
    pmc: dict | None = None              # ptp4l's state through pmc, when available
    warnings: list[str] = dataclasses.field(default_factory=list)

    def status_line(self) -> str:
        if self.phc is None:
            return f"hw clock: none ({self.phc_reason})"
        who = "synced by phc2sys" if self.phc2sys else \
            "disciplined by ptp4l, no phc2sys" if self.ptp4l else "not disciplined"
        if self.offset is None:
            return f"PHC {self.phc}, {who}, offset unknown ({self.offset_error})"
        off = _fmt_signed_ns(self.phc_minus_tai_ns) if self.phc_minus_tai_ns is not None \
            else "unknown"
        return (f"PHC {self.phc}, {who}, offset {off} +/- {self.offset.uncertainty_ns} ns"
                f"{'' if self.synced_to_tai else ' (NIC hops absent: ' + str(self.sync_reason) + ')'}")

    def to_dict(self) -> dict:
        """JSON-able, for the result file's conditions (key `clock_sources`)."""
        return {
            "interface": self.ifname, "driver": self.driver, "phc": self.phc,
            "phc_reason": self.phc_reason,
            "ts_info": self.ts_info.to_dict() if self.ts_info else None,
            "caps": self.caps,
            "offset": self.offset.to_dict() if self.offset else None,
            "offset_error": self.offset_error,
            "kernel_tai_offset_s": self.tai_offset_s,
            "phc_minus_tai_ns": self.phc_minus_tai_ns,
            "phc_timescale": self.phc_timescale,
            "synced_to_tai": self.synced_to_tai, "sync_reason": self.sync_reason,
            "ptp4l": [{"pid": p.pid, "argv": list(p.argv)} for p in self.ptp4l],
            "phc2sys": [{"pid": p.pid, "argv": list(p.argv)} for p in self.phc2sys],
            "pmc": self.pmc, "warnings": list(self.warnings),
            "status": self.status_line(),
        }


def classify_timescale(sys_minus_phc_ns: int, tai_offset_s: int | None) -> tuple[str, list[str]]:
    """('TAI'|'UTC'|'unknown', warnings) from CLOCK_REALTIME - PHC and the kernel TAI offset.

    A PHC steered by ptp4l in hardware mode runs TAI: PHC - UTC = 37 s. CLOCK_TAI is only
    equal to it when the kernel TAI offset is 37 too (phc2sys -w / -a sets it)."""
    phc_minus_rt = -sys_minus_phc_ns
    warn = []
    if abs(phc_minus_rt - TAI_UTC_S * 1_000_000_000) < 1_000_000_000:
        scale = "TAI"
        if tai_offset_s != TAI_UTC_S:
            warn.append(f"the PHC runs TAI (PHC - UTC = {phc_minus_rt / 1e9:.3f} s) but the kernel "
                        f"TAI offset is {tai_offset_s} s, not {TAI_UTC_S}: PHC and CLOCK_TAI differ "
                        f"by {TAI_UTC_S - (tai_offset_s or 0)} s (phc2sys -w or -a sets it)")
    elif abs(phc_minus_rt) < 1_000_000_000:
        scale = "UTC"
        if tai_offset_s == TAI_UTC_S:
            warn.append(f"the PHC runs UTC (PHC - UTC = {phc_minus_rt / 1e9:.3f} s) while CLOCK_TAI "
                        f"= UTC + {TAI_UTC_S} s: PHC and CLOCK_TAI differ by {TAI_UTC_S} s")
    else:
        scale = "unknown"
    return scale, warn


def probe_clocks(ifname: str, backend: IoctlBackend | None = None, host: Host | None = None,
                 samples: int = 9, tolerance_ns: int = 10_000) -> ClockInfo:
    """Everything clocks.py knows about the interface's clocks (no settings are changed).

    synced_to_tai requires a PHC, a measured |PHC - CLOCK_TAI| <= tolerance_ns + uncertainty,
    and phc2sys running (a one-off agreement without a servo drifts apart during the run)."""
    b = backend or IoctlBackend()
    h = host or Host()
    ci = ClockInfo(ifname)
    ci.driver = get_driver(ifname, b)
    ci.tai_offset_s = h.tai_offset_s()
    procs = h.processes()
    ci.ptp4l = [p for p in procs if p.name == "ptp4l"]
    ci.phc2sys = [p for p in procs if p.name == "phc2sys"]
    if ci.ptp4l:
        out = h.pmc("GET TIME_STATUS_NP", "GET PORT_DATA_SET", "GET TIME_PROPERTIES_DATA_SET")
        if out:
            kv = _parse_pmc(out)
            ci.pmc = {k: kv[k] for k in ("portState", "master_offset", "gmPresent",
                                         "currentUtcOffset", "currentUtcOffsetValid",
                                         "ptpTimescale") if k in kv}
    try:
        ci.ts_info = get_ts_info(ifname, b)
    except OSError as e:
        if e.errno == errno.ENODEV:
            raise HftcapError(f"no interface {ifname}") from e
        ci.phc_reason = (f"{ci.driver or ifname} reports no timestamping info "
                         f"(ETHTOOL_GET_TS_INFO: {os.strerror(e.errno or 0)})")
        ci.sync_reason = ci.phc_reason
        return ci
    if ci.ts_info.phc_index < 0:
        ci.phc_reason = f"{ci.driver or ifname} has no PHC"
        ci.sync_reason = ci.phc_reason
        return ci
    ci.phc_index = ci.ts_info.phc_index
    ci.phc = f"/dev/ptp{ci.phc_index}"
    if not ci.ts_info.hw_rx_all:
        ci.warnings.append(f"{ifname} cannot hardware-stamp all received packets "
                           "(rx_filter all or rx_hardware|raw_hardware missing)")
    try:
        fd = b.open_phc(ci.phc_index)
        try:
            caps = get_caps(fd, b)
            ci.caps = {"cross_timestamping": bool(caps.cross_timestamping),
                       "max_adj_ppb": caps.max_adj, "pps": bool(caps.pps)}
        except OSError:
            caps = None
        finally:
            b.close(fd)
        ci.offset = measure_offset(ci.phc_index, b, samples, caps)
    except OSError as e:
        ci.offset_error = f"cannot read {ci.phc}: {os.strerror(e.errno or 0)}"
        ci.sync_reason = ci.offset_error
        return ci
    ci.phc_timescale, warn = classify_timescale(ci.offset.sys_minus_phc_ns, ci.tai_offset_s)
    ci.warnings += warn
    tai_ns = (ci.tai_offset_s or 0) * 1_000_000_000
    ci.phc_minus_tai_ns = -ci.offset.sys_minus_phc_ns - tai_ns
    agree = abs(ci.phc_minus_tai_ns) <= tolerance_ns + ci.offset.uncertainty_ns
    if not agree:
        ci.sync_reason = (f"PHC - CLOCK_TAI = {_fmt_signed_ns(ci.phc_minus_tai_ns)} "
                          f"(+/- {ci.offset.uncertainty_ns} ns), over {tolerance_ns} ns")
    elif not ci.phc2sys:
        ci.sync_reason = "phc2sys is not running (PHC and CLOCK_TAI agree now but drift apart)"
    ci.synced_to_tai = agree and bool(ci.phc2sys)
    return ci


def kernel_tai_offset_s() -> int | None:
    """TAI - UTC as the kernel knows it (adjtimex); CLOCK_TAI = CLOCK_REALTIME + this."""
    return Host(pmc_path=None).tai_offset_s()


def describe_clocks(ifname: str, backend: IoctlBackend | None = None,
                    host: Host | None = None) -> dict:
    """probe_clocks() as a JSON-able dict for the result file's conditions; its "status" key is
    the TUI status line."""
    return probe_clocks(ifname, backend, host).to_dict()


# -- the ITCH timestamps' clock (the sender -> book hop) --

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

