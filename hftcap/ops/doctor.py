"""`hftcap doctor`: is this host tuned for a latency-critical receive core?

Read-only: every check reads sysfs/procfs under a root directory (`--root`, so tests point it
at a fake tree), netlink GET requests, SIOCETHTOOL GET ioctls, adjtimex(modes=0) and `pmc GET`;
nothing is written, and the fix of each check is printed as text, never applied. The items and
their targets are in shared/specs/OPERATIONS.md (a): the "interrupt" profile (hftcap's default
--poll wakeup) is what the IRQ, coalescing and NAPI checks judge by.

Two stages: `gather_iface` collects the raw facts of the interface (inside its network
namespace when there is one: a forked child enters it and mounts its own sysfs in a private
mount namespace, as `ip netns exec` does, so the host's mounts are untouched), `run_doctor`
judges them with the host-wide files into one `Check` per item."""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import os
import re
import socket
import struct

SCHEMA = "hftcap.doctor/1"
SEVERITIES = ("pass", "warn", "fail", "n/a")

# include/uapi/linux/netdev.h
NETDEV_CMD_DEV_GET = 1
NETDEV_CMD_QUEUE_GET = 10
NETDEV_CMD_NAPI_GET = 11
NETDEV_QUEUE_TYPE_RX = 0
LATENCY_PROFILES = ("network-latency", "cpu-partitioning", "realtime", "latency-performance")
XDP_FEATURES = {1: "basic", 2: "redirect", 4: "ndo-xmit", 8: "xsk-zerocopy", 16: "hw-offload",
                32: "rx-sg", 64: "ndo-xmit-sg"}
XDP_ZEROCOPY = 8
RX_METADATA = {1: "timestamp", 2: "hash", 4: "vlan-tag"}
RX_METADATA_TIMESTAMP = 1
# Drivers with zero-copy AF_XDP in mainline: the fallback when the kernel has no netdev family.
ZEROCOPY_DRIVERS = ("i40e", "ice", "ixgbe", "igc", "igb", "mlx5_core", "stmmac", "ena", "idpf")
ETHTOOL_GCOALESCE = 0x0000000E
PM_QOS_NO_CONSTRAINT = 2_000_000_000
TAI_UTC_S = 37
# (version, what it brings) for the receive path hftcap builds.
KERNEL_FEATURES = (((4, 18), "AF_XDP sockets"), ((5, 11), "SO_PREFER_BUSY_POLL"),
                   ((6, 1), "bpf_ktime_get_tai_ns (XDP stamps in CLOCK_TAI)"),
                   ((6, 3), "bpf_xdp_metadata_rx_timestamp (NIC RX stamps in XDP)"))


@dataclasses.dataclass
class Check:
    id: str
    title: str
    severity: str            # pass | warn | fail | n/a
    found: str
    expected: str = ""
    fix: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Report:
    root: str
    interface: str | None
    netns: str | None
    cpu: int | None
    checks: list[Check]

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(c.severity == s for c in self.checks) for s in SEVERITIES}

    def summary(self) -> str:
        c = self.counts
        return f"{c['fail']} fail, {c['warn']} warn, {c['pass']} pass, {c['n/a']} n/a"

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "read_only": True, "root": self.root, "interface": self.interface,
                "netns": self.netns, "cpu": self.cpu, "counts": self.counts,
                "checks": [c.to_dict() for c in self.checks]}

    def conditions(self) -> dict:
        """The compact form a saved result keeps: counts and each check's severity and finding."""
        return {"schema": SCHEMA, "counts": self.counts,
                "checks": {c.id: f"{c.severity}: {c.found}" for c in self.checks}}


# ---------------------------------------------------------------------------------------------
# Files under the root


class Tree:
    """Reads of /proc, /sys and /dev under `root` ('/' = this host)."""

    def __init__(self, root: str = "/"):
        self.root = os.path.abspath(root)

    def p(self, rel: str) -> str:
        return os.path.join(self.root, rel.lstrip("/"))

    def read(self, rel: str) -> str | None:
        try:
            with open(self.p(rel)) as f:
                return f.read().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def int(self, rel: str) -> int | None:
        v = self.read(rel)
        try:
            return int(v) if v is not None else None
        except ValueError:
            return None

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.p(rel)))
        except OSError:
            return []

    def isdir(self, rel: str) -> bool:
        return os.path.isdir(self.p(rel))


def parse_cpulist(text: str | None) -> set[int]:
    """'0-3,8,10-11' -> {0,1,2,3,8,10,11}; flags such as 'managed_irq,domain,' are skipped."""
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?(?::\d+/\d+)?", part)
        if m:
            lo = int(m.group(1))
            out.update(range(lo, int(m.group(2) or lo) + 1))
    return out


def fmt_cpulist(cpus) -> str:
    cpus = sorted(cpus)
    runs, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        runs.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(runs) or "none"


def cmdline_params(text: str | None) -> dict[str, str]:
    out = {}
    for tok in (text or "").split():
        k, _, v = tok.partition("=")
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------
# Probes that are not files: netlink, ioctls, adjtimex, pmc


def _netdev_request(cls, cmd: int, attrs: list, flags: int, what: str, since: str | None = None):
    """One netdev generic netlink request (message class `cls`, command `cmd`): (reply, None) or
    (None, reason). `what` names the command in the reason of a failed request; with `since`, a
    kernel that answers EOPNOTSUPP or EINVAL does not have it: "not in this kernel (since)"."""
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.generic import GenericNetlinkSocket
    s = GenericNetlinkSocket()
    try:
        try:
            s.bind("netdev", cls)
        except NetlinkError as e:
            if e.code == errno.ENOENT:
                return None, "the kernel has no netdev generic netlink family (Linux 6.3+)"
            return None, f"netdev netlink: {os.strerror(e.code)}"
        m = cls()
        m["cmd"] = cmd
        m["version"] = 1
        m["attrs"] = attrs
        try:
            return s.nlm_request(m, msg_type=s.prid, msg_flags=flags), None
        except NetlinkError as e:
            if since is not None and (e.code == errno.EOPNOTSUPP or e.code == errno.EINVAL):
                return None, f"netdev {what}: not in this kernel ({since})"
            return None, f"netdev {what}: {os.strerror(e.code)}"
    finally:
        s.close()


class LiveProbes:
    """The running kernel. Every method answers (value, None) or (None, reason)."""

    def netdev(self, ifname: str):
        """netdev generic netlink DEV_GET (Linux 6.3+): XDP and XDP RX-metadata features."""
        from pyroute2.netlink import NLM_F_REQUEST, genlmsg

        class devmsg(genlmsg):
            nla_map = (("NETDEV_A_DEV_UNSPEC", "none"), ("NETDEV_A_DEV_IFINDEX", "uint32"),
                       ("NETDEV_A_DEV_PAD", "none"), ("NETDEV_A_DEV_XDP_FEATURES", "uint64"),
                       ("NETDEV_A_DEV_XDP_ZC_MAX_SEGS", "uint32"),
                       ("NETDEV_A_DEV_XDP_RX_METADATA_FEATURES", "uint64"),
                       ("NETDEV_A_DEV_XSK_FEATURES", "uint64"))
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            return None, f"no interface {ifname}"
        reply, err = _netdev_request(devmsg, NETDEV_CMD_DEV_GET, [("NETDEV_A_DEV_IFINDEX", ifindex)],
                                     NLM_F_REQUEST, "DEV_GET")
        if err is not None:
            return None, err
        attrs = dict((a[0], a[1]) for r in reply for a in r["attrs"])
        return {"xdp_features": attrs.get("NETDEV_A_DEV_XDP_FEATURES", 0),
                "xdp_zc_max_segs": attrs.get("NETDEV_A_DEV_XDP_ZC_MAX_SEGS"),
                "xdp_rx_metadata_features": attrs.get("NETDEV_A_DEV_XDP_RX_METADATA_FEATURES"),
                "xsk_features": attrs.get("NETDEV_A_DEV_XSK_FEATURES")}, None

    def napi(self, ifname: str):
        """netdev generic netlink QUEUE_GET and NAPI_GET dumps of one interface (Linux 6.8+; the
        per-NAPI defer-hard-irqs / gro-flush-timeout / irq-suspend-timeout 6.13+): the RX queues'
        NAPI ids and each NAPI's id, irq, pid (threaded) and settings. No admin flag: GET only."""
        from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, genlmsg

        class napimsg(genlmsg):
            # "uint" attributes (gro-flush-timeout, irq-suspend-timeout) are 4 or 8 bytes: raw
            nla_map = (("NETDEV_A_NAPI_UNSPEC", "none"), ("NETDEV_A_NAPI_IFINDEX", "uint32"),
                       ("NETDEV_A_NAPI_ID", "uint32"), ("NETDEV_A_NAPI_IRQ", "uint32"),
                       ("NETDEV_A_NAPI_PID", "uint32"), ("NETDEV_A_NAPI_DEFER_HARD_IRQS", "uint32"),
                       ("NETDEV_A_NAPI_GRO_FLUSH_TIMEOUT", "cdata"),
                       ("NETDEV_A_NAPI_IRQ_SUSPEND_TIMEOUT", "cdata"), ("NETDEV_A_NAPI_THREADED", "uint32"))

        class queuemsg(genlmsg):
            nla_map = (("NETDEV_A_QUEUE_UNSPEC", "none"), ("NETDEV_A_QUEUE_ID", "uint32"),
                       ("NETDEV_A_QUEUE_IFINDEX", "uint32"), ("NETDEV_A_QUEUE_TYPE", "uint32"),
                       ("NETDEV_A_QUEUE_NAPI_ID", "uint32"))

        def uint(v):
            return int.from_bytes(v, "little") if isinstance(v, (bytes, bytearray)) else v

        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            return None, f"no interface {ifname}"
        out = {}
        for key, cls, cmd, ifattr in (("queues", queuemsg, NETDEV_CMD_QUEUE_GET, "NETDEV_A_QUEUE_IFINDEX"),
                                      ("napis", napimsg, NETDEV_CMD_NAPI_GET, "NETDEV_A_NAPI_IFINDEX")):
            reply, err = _netdev_request(cls, cmd, [(ifattr, ifindex)], NLM_F_REQUEST | NLM_F_DUMP,
                                         "queue-get" if key == "queues" else "napi-get", "Linux 6.8+")
            if err is not None:
                return None, err
            # NETDEV_A_NAPI_GRO_FLUSH_TIMEOUT -> gro_flush_timeout; attributes this map does not
            # name (newer kernels', nested ones such as a queue's xsk) are left out
            out[key] = [{a[0].split("_A_", 1)[1].split("_", 1)[1].lower(): uint(a[1]) for a in r["attrs"]
                         if a[0].startswith("NETDEV_A_")} for r in reply]
        napis = [n for n in out["napis"] if n.get("ifindex") in (None, ifindex)]
        rxq = {q["id"]: q.get("napi_id") for q in out["queues"]
               if q.get("ifindex") in (None, ifindex) and q.get("type") == NETDEV_QUEUE_TYPE_RX}
        return {"napis": napis, "rx_queue_napi": {str(k): v for k, v in sorted(rxq.items())}}, None

    def coalesce(self, ifname: str):
        """ETHTOOL_GCOALESCE: rx-usecs, rx-frames, adaptive-rx."""
        from ..measure import clocks
        buf = (ctypes.c_uint32 * 23)(ETHTOOL_GCOALESCE)
        try:
            clocks.IoctlBackend().if_ioctl(ifname, clocks.SIOCETHTOOL, buf)
        except OSError as e:
            return None, f"{ifname} answers no coalescing query ({os.strerror(e.errno or 0)})"
        return {"rx_usecs": buf[1], "rx_frames": buf[2], "adaptive_rx": bool(buf[10])}, None

    def ts_info(self, ifname: str):
        from ..measure import clocks
        try:
            return clocks.get_ts_info(ifname).to_dict(), None
        except OSError as e:
            return None, f"ETHTOOL_GET_TS_INFO: {os.strerror(e.errno or 0)}"

    def channels(self, ifname: str) -> int | None:
        from ..measure import clocks
        return clocks.get_rx_queues(ifname)

    def driver(self, ifname: str) -> str | None:
        from ..measure import clocks
        return clocks.get_driver(ifname)

    def xdp_prog(self, ifname: str):
        from .. import _core
        try:
            return _core.xdp_query(socket.if_nametoindex(ifname)) or None, None
        except OSError as e:
            return None, f"XDP query: {os.strerror(e.errno or 0)}"

    def tai_offset(self) -> int | None:
        from ..measure import clocks
        return clocks.kernel_tai_offset_s()

    def pmc(self) -> dict | None:
        from ..measure import clocks
        out = clocks.Host().pmc("GET PORT_DATA_SET", "GET TIME_STATUS_NP")
        return clocks._parse_pmc(out) if out else None


class FileOnlyProbes:
    """With --root pointing at a file tree: only files are read; the rest is not this tree's."""
    WHY = "not read: --root points at a file tree (netlink, ioctls and pmc ask the running kernel)"

    def netdev(self, ifname):
        return None, self.WHY

    def coalesce(self, ifname):
        return None, self.WHY

    def napi(self, ifname):
        return None, self.WHY

    def ts_info(self, ifname):
        return None, self.WHY

    def channels(self, ifname):
        return None

    def driver(self, ifname):
        return None

    def xdp_prog(self, ifname):
        return None, self.WHY

    def tai_offset(self):
        return None

    def pmc(self):
        return None


def gather_iface(tree: Tree, ifname: str, probes) -> dict:
    """The raw facts of one interface (JSON-able), from its sysfs directory and the probes."""
    d = f"/sys/class/net/{ifname}"
    f: dict = {"name": ifname, "exists": tree.isdir(d)}
    if not f["exists"]:
        return f
    drv = os.path.realpath(tree.p(f"{d}/device/driver")) if tree.isdir(f"{d}/device/driver") else None
    f["driver"] = os.path.basename(drv) if drv else None
    f["has_device"] = tree.isdir(f"{d}/device")
    f["numa_node"] = tree.int(f"{d}/device/numa_node")
    f["msi_irqs"] = sorted(int(x) for x in tree.listdir(f"{d}/device/msi_irqs") if x.isdigit())
    f["napi_defer_hard_irqs"] = tree.int(f"{d}/napi_defer_hard_irqs")
    f["gro_flush_timeout"] = tree.int(f"{d}/gro_flush_timeout")
    f["rx_queues_sysfs"] = sum(1 for q in tree.listdir(f"{d}/queues") if q.startswith("rx-"))
    f["phc_sysfs"] = [p for p in tree.listdir(f"{d}/device/ptp") if p.startswith("ptp")]
    for key in ("netdev", "napi", "coalesce", "ts_info", "xdp_prog"):
        f[key], f[f"{key}_error"] = getattr(probes, key)(ifname)
    f["driver"] = f["driver"] or probes.driver(ifname)
    f["channels"] = probes.channels(ifname)
    return f


CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC, MS_SLAVE, MNT_DETACH = 0x4000, 0x80000, 2


def gather_iface_in_netns(netns: str, ifname: str) -> dict:
    """gather_iface inside namespace `netns`, in a forked child that enters it and mounts its own
    sysfs in a private mount namespace (sysfs shows the devices of the namespace that mounted
    it); this process and the host's mounts stay as they are."""
    from ..errors import HftcapError
    path = f"/var/run/netns/{netns}"
    if not os.path.exists(path):
        raise HftcapError(f"network namespace '{netns}' does not exist", hint="check --netns (ip netns list)")
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            os.close(rfd)
            libc = ctypes.CDLL(None, use_errno=True)
            nsfd = os.open(path, os.O_RDONLY)
            if libc.setns(nsfd, CLONE_NEWNET) or libc.unshare(CLONE_NEWNS) or \
                    libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None):
                raise OSError(ctypes.get_errno(), "entering the namespace")
            libc.umount2(b"/sys", MNT_DETACH)
            if libc.mount(netns.encode(), b"/sys", b"sysfs", 0, None):
                raise OSError(ctypes.get_errno(), "mounting sysfs")
            doc = gather_iface(Tree("/"), ifname, LiveProbes())
        except BaseException as e:  # reported to the parent, which words it
            doc = {"error": f"{type(e).__name__}: {e}"}
            code = 1
        try:
            os.write(wfd, json.dumps(doc).encode())
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    while True:
        b = os.read(rfd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(rfd)
    os.waitpid(pid, 0)
    doc = json.loads(b"".join(chunks) or b'{"error": "the namespace probe died"}')
    if "error" in doc:
        raise HftcapError(f"reading {ifname} in namespace '{netns}' failed: {doc['error']}",
                          hint="run as root (entering a namespace needs CAP_SYS_ADMIN)")
    return doc


# ---------------------------------------------------------------------------------------------
# The checks


def _kernel(tree: Tree) -> Check:
    rel = tree.read("/proc/sys/kernel/osrelease") or ""
    m = re.match(r"(\d+)\.(\d+)", rel)
    if not m:
        return Check("kernel", "kernel features", "n/a", f"kernel release unreadable ({rel!r})")
    v = (int(m.group(1)), int(m.group(2)))
    missing = [f"{what} ({a}.{b}+)" for (a, b), what in KERNEL_FEATURES if v < (a, b)]
    exp = "Linux 6.3+ (AF_XDP, busy poll, TAI stamps, RX-metadata kfuncs)"
    if v < KERNEL_FEATURES[0][0]:
        return Check("kernel", "kernel features", "fail", f"Linux {rel}: no AF_XDP", exp,
                     "boot Linux 6.3 or newer, or use listen --path kernel")
    if missing:
        return Check("kernel", "kernel features", "warn", f"Linux {rel} lacks " + ", ".join(missing), exp,
                     "boot Linux 6.3 or newer")
    return Check("kernel", "kernel features", "pass", f"Linux {rel}: every feature hftcap uses (6.3+)", exp)


def _bits(v: int, names: dict) -> str:
    return ",".join(n for b, n in names.items() if v & b) or "none"


def _xdp_checks(f: dict | None) -> list[Check]:
    t1, t2 = "XDP features (driver)", "XDP RX metadata (driver)"
    if not f:
        return [Check("xdp_features", t1, "n/a", "no interface given", fix="hftcap doctor IFACE"),
                Check("xdp_rx_metadata", t2, "n/a", "no interface given", fix="hftcap doctor IFACE")]
    nd = f.get("netdev")
    drv = f.get("driver") or "unknown driver"
    if nd is None:
        why = f.get("netdev_error") or "unknown"
        if drv == "unknown driver":
            return [Check("xdp_features", t1, "n/a", why), Check("xdp_rx_metadata", t2, "n/a", why)]
        zc = drv in ZEROCOPY_DRIVERS
        return [Check("xdp_features", t1, "pass" if zc else "warn",
                      f"{why}; driver {drv} {'has' if zc else 'has no'} zero-copy AF_XDP in mainline",
                      "xsk-zerocopy", None if zc else "a NIC whose driver has zero-copy AF_XDP (ice, i40e, mlx5)"),
                Check("xdp_rx_metadata", t2, "n/a", f"{why}; driver {drv}: RX-metadata features unknown",
                      "timestamp", "Linux 6.3+ reports them (netdev netlink)")]
    feats = nd.get("xdp_features") or 0
    zc = bool(feats & XDP_ZEROCOPY)
    c1 = Check("xdp_features", t1, "pass" if zc else "warn",
               f"{drv}: {_bits(feats, XDP_FEATURES)}" + (f", zc max segs {nd.get('xdp_zc_max_segs')}" if zc else
                                                         ": no zero-copy, AF_XDP copies every frame"),
               "xsk-zerocopy", None if zc else "a NIC whose driver has zero-copy AF_XDP (ice, i40e, mlx5)")
    md = nd.get("xdp_rx_metadata_features")
    if md is None:
        c2 = Check("xdp_rx_metadata", t2, "n/a", f"{drv}: the kernel does not report RX-metadata features "
                   "(Linux 6.7+)", "timestamp")
    elif md & RX_METADATA_TIMESTAMP:
        nophc = not f.get("phc_sysfs") and not ((f.get("ts_info") or {}).get("phc_index", -1) >= 0)
        c2 = Check("xdp_rx_metadata", t2, "warn" if nophc else "pass",
                   f"{drv}: {_bits(md, RX_METADATA)}" + ("; but no PHC, so the stamp is never there" if nophc else ""),
                   "timestamp", "a NIC with a PTP hardware clock" if nophc else None)
    else:
        c2 = Check("xdp_rx_metadata", t2, "warn", f"{drv}: {_bits(md, RX_METADATA)}: no XDP RX timestamp, "
                   "nic_to_xdp is absent", "timestamp", "a NIC and driver with XDP RX metadata (mlx5, ice, igc)")
    return [c1, c2]


def _phc(f: dict | None) -> tuple[Check, bool]:
    t = "PTP hardware clock"
    if not f:
        return Check("phc", t, "n/a", "no interface given", fix="hftcap doctor IFACE"), False
    ts = f.get("ts_info")
    phcs = f.get("phc_sysfs") or []
    idx = ts.get("phc_index", -1) if ts else (int(phcs[0][3:]) if phcs else -1)
    if idx < 0:
        return Check("phc", t, "warn", f"{f['name']} has no PHC ({f.get('driver') or 'no device'}): "
                     "NIC hops are absent", "a PHC with hardware RX stamping of all packets",
                     "use a NIC with a PTP hardware clock (ethtool -T shows one)"), False
    if ts and not ts.get("hw_rx_all"):
        return Check("phc", t, "warn", f"/dev/ptp{idx}, but no hardware RX stamping of all packets "
                     f"(rx filters {','.join(ts.get('rx_filters', [])) or 'none'})", "rx_filter all",
                     f"ethtool -T {f['name']}: a NIC with rx-filter all"), True
    caps = "" if ts else f" (capabilities not read: {f.get('ts_info_error')})"
    return Check("phc", t, "pass", f"/dev/ptp{idx}, hardware RX stamps of all packets{caps}" if ts else
                 f"/dev/ptp{idx}{caps}", "a PHC with rx_filter all"), True


def _ptp(tree: Tree, probes, have_phc: bool) -> Check:
    from ..measure import clocks
    t = "ptp4l / phc2sys"
    procs = clocks.Host(proc_root=tree.p("/proc"), pmc_path=None).processes()
    names = {p.name for p in procs}
    if not have_phc:
        return Check("ptp", t, "n/a", "no PHC to discipline" + (f" ({', '.join(sorted(names))} running)" if names else ""))
    missing = [n for n in ("ptp4l", "phc2sys") if n not in names]
    if missing:
        return Check("ptp", t, "warn", f"{', '.join(missing)} not running: the PHC is not kept on TAI",
                     "ptp4l SLAVE and phc2sys running",
                     "ptp4l -i IFACE -m & phc2sys -s IFACE -c CLOCK_REALTIME -w (see XDP_TIMESTAMPS.md)")
    st = probes.pmc()
    if not st:
        return Check("ptp", t, "warn", "ptp4l and phc2sys run; pmc gave no answer (state unknown)",
                     "portState SLAVE", "install linuxptp's pmc; check ptp4l's UDS /var/run/ptp4l")
    port = st.get("portState", "?")
    off = st.get("master_offset", "?")
    sev = "pass" if port == "SLAVE" else "warn"
    return Check("ptp", t, sev, f"ptp4l portState {port}, master_offset {off} ns, phc2sys running",
                 "portState SLAVE", None if sev == "pass" else "check ptp4l's logs: the port is not locked to a master")


def _tai(probes) -> Check:
    t = "TAI-UTC offset"
    v = probes.tai_offset()
    if v is None:
        return Check("tai_offset", t, "n/a", "kernel TAI offset not read (adjtimex)")
    if v == TAI_UTC_S:
        return Check("tai_offset", t, "pass", f"CLOCK_TAI = UTC + {v} s", f"{TAI_UTC_S} s")
    return Check("tai_offset", t, "warn", f"CLOCK_TAI = UTC + {v} s: TAI stamps are off by {TAI_UTC_S - v} s",
                 f"{TAI_UTC_S} s", "phc2sys -w (or -O) sets the kernel TAI offset; chronyd: leapsectz right/UTC")


def _cpu_checks(tree: Tree, cpu: int | None, f: dict | None) -> list[Check]:
    ids = [("cpu_isolated", "isolcpus / cpuset isolation"), ("cpu_nohz_full", "nohz_full"),
           ("cpu_rcu_nocbs", "rcu_nocbs"), ("cpu_irqaffinity", "irqaffinity (default IRQ mask)"),
           ("cpu_governor", "cpufreq governor"), ("cpu_cstates", "C-states"),
           ("cpu_dma_latency", "/dev/cpu_dma_latency (PM QoS)"), ("cpu_smt", "SMT sibling"),
           ("numa", "NIC NUMA node vs data CPU")]
    if cpu is None:
        return [Check("cpu", "data-thread CPU", "warn", "no --cpu: the data thread may run on any CPU, "
                      "so the per-CPU checks are skipped", "a pinned, isolated CPU",
                      "listen --cpu N (and hftcap doctor --cpu N)")] + \
               [Check(i, t, "n/a", "no --cpu given") for i, t in ids]
    cd = f"/sys/devices/system/cpu/cpu{cpu}"
    if not tree.isdir(cd):
        return [Check("cpu", "data-thread CPU", "fail", f"CPU {cpu} does not exist",
                      fix="pick a CPU from /sys/devices/system/cpu/online")]
    cmd = cmdline_params(tree.read("/proc/cmdline"))
    out = []
    iso = parse_cpulist(tree.read("/sys/devices/system/cpu/isolated"))
    out.append(Check("cpu_isolated", "isolcpus / cpuset isolation", "pass" if cpu in iso else "warn",
                     f"isolated CPUs {fmt_cpulist(iso)}", f"CPU {cpu} isolated",
                     None if cpu in iso else f"boot isolcpus=managed_irq,domain,{cpu} (or a cpuset partition=isolated)"))
    nohz = parse_cpulist(tree.read("/sys/devices/system/cpu/nohz_full"))
    out.append(Check("cpu_nohz_full", "nohz_full", "pass" if cpu in nohz else "warn",
                     f"nohz_full CPUs {fmt_cpulist(nohz)}", f"CPU {cpu} in nohz_full",
                     None if cpu in nohz else f"boot nohz_full={cpu}"))
    rcu = parse_cpulist(cmd.get("rcu_nocbs")) | (nohz if "rcu_nocbs" not in cmd else set())
    out.append(Check("cpu_rcu_nocbs", "rcu_nocbs", "pass" if cpu in rcu else "warn",
                     f"rcu_nocbs {cmd.get('rcu_nocbs') or 'not set'}" +
                     (" (implied by nohz_full)" if "rcu_nocbs" not in cmd and cpu in nohz else ""),
                     f"CPU {cpu} offloaded", None if cpu in rcu else f"boot rcu_nocbs={cpu}"))
    ncpu = len([c for c in tree.listdir("/sys/devices/system/cpu") if re.fullmatch(r"cpu\d+", c)])
    others = fmt_cpulist(set(range(ncpu)) - {cpu})
    if "irqaffinity" in cmd:
        ok = cpu not in parse_cpulist(cmd["irqaffinity"])
        out.append(Check("cpu_irqaffinity", "irqaffinity (default IRQ mask)", "pass" if ok else "warn",
                         f"irqaffinity={cmd['irqaffinity']}", f"excludes CPU {cpu}",
                         None if ok else f"boot irqaffinity={others}"))
    else:
        dflt = tree.read("/proc/irq/default_smp_affinity")
        out.append(Check("cpu_irqaffinity", "irqaffinity (default IRQ mask)", "warn",
                         f"irqaffinity not set (default mask {dflt or 'unknown'})", f"excludes CPU {cpu}",
                         f"boot irqaffinity={others}"))
    gov = tree.read(f"{cd}/cpufreq/scaling_governor")
    if gov is None:
        out.append(Check("cpu_governor", "cpufreq governor", "n/a",
                         f"CPU {cpu} has no cpufreq (a VM, or the firmware sets the frequency)", "performance"))
    else:
        out.append(Check("cpu_governor", "cpufreq governor", "pass" if gov == "performance" else "warn",
                         f"CPU {cpu} governor {gov}", "performance",
                         None if gov == "performance" else f"cpupower -c {cpu} frequency-set -g performance"))
    qos_raw = None
    try:
        with open(tree.p("/dev/cpu_dma_latency"), "rb") as fh:   # O_RDONLY: adds no constraint
            qos_raw = fh.read(4)
        qos_err = None
    except OSError as e:
        qos_err = os.strerror(e.errno or 0)
    qos = struct.unpack("=i", qos_raw)[0] if qos_raw and len(qos_raw) == 4 else None
    out.append(_cstates(tree, cpu, cmd, qos))
    if qos is None:
        out.append(Check("cpu_dma_latency", "/dev/cpu_dma_latency (PM QoS)", "n/a",
                         f"not read ({qos_err or 'short read'})", "a held limit <= C1's exit latency"))
    elif qos >= PM_QOS_NO_CONSTRAINT:
        out.append(Check("cpu_dma_latency", "/dev/cpu_dma_latency (PM QoS)", "warn", "no latency limit held",
                         "a held limit <= C1's exit latency",
                         "tuned-adm profile latency-performance (holds the fd), or keep a process writing 0..3 to it"))
    else:
        out.append(Check("cpu_dma_latency", "/dev/cpu_dma_latency (PM QoS)", "pass", f"limit {qos} us held",
                         "a held limit <= C1's exit latency"))
    sib = parse_cpulist(tree.read(f"{cd}/topology/thread_siblings_list")) - {cpu}
    smt = tree.read("/sys/devices/system/cpu/smt/active")
    if not sib:
        out.append(Check("cpu_smt", "SMT sibling", "pass", f"CPU {cpu} has no SMT sibling (smt active {smt or '?'})",
                         "no sibling, or an idle one"))
    else:
        s = fmt_cpulist(sib)
        ok = sib <= iso
        out.append(Check("cpu_smt", "SMT sibling", "pass" if ok else "warn",
                         f"CPU {cpu} shares its core with CPU {s}" + (" (isolated too)" if ok else ""),
                         "no sibling, or an idle one", None if ok else f"boot nosmt, or isolate CPU {s} as well"))
    out.append(_numa(tree, cpu, f))
    return out


def _cstates(tree: Tree, cpu: int, cmd: dict, qos: int | None) -> Check:
    t = "C-states"
    if cmd.get("idle") == "poll":
        return Check("cpu_cstates", t, "pass", "idle=poll: the CPU never leaves C0", "nothing deeper than C1")
    base = f"/sys/devices/system/cpu/cpu{cpu}/cpuidle"
    states = []
    for s in tree.listdir(base):
        if s.startswith("state"):
            name = tree.read(f"{base}/{s}/name") or s
            lat = tree.int(f"{base}/{s}/latency")
            dis = tree.int(f"{base}/{s}/disable") or 0
            states.append((int(s[5:]), name, lat if lat is not None else 0, dis))
    if not states:
        return Check("cpu_cstates", t, "n/a", f"CPU {cpu} has no cpuidle states (a VM, or cpuidle off)",
                     "nothing deeper than C1")
    states.sort()
    real = [s for s in states if s[1].upper() != "POLL"]
    limit = real[0][2] if real else 0               # the shallowest real state's exit latency
    reach = [s for s in real if not s[3] and (qos is None or s[2] <= qos)]
    deep = [s for s in reach if s[2] > limit]
    found = ", ".join(f"{n} {lat} us{' (disabled)' if d else ''}" for _, n, lat, d in states)
    if not deep:
        return Check("cpu_cstates", t, "pass", f"reachable: {', '.join(s[1] for s in reach) or 'none'} ({found})",
                     "nothing deeper than C1")
    return Check("cpu_cstates", t, "warn", f"deep states reachable: {', '.join(f'{s[1]} ({s[2]} us exit)' for s in deep)}",
                 "nothing deeper than C1",
                 f"hold /dev/cpu_dma_latency at {limit} us (tuned latency-performance), or boot "
                 f"intel_idle.max_cstate=1, or cpupower -c {cpu} idle-set -D {limit}")


def _numa(tree: Tree, cpu: int, f: dict | None) -> Check:
    t = "NIC NUMA node vs data CPU"
    if not f:
        return Check("numa", t, "n/a", "no interface given")
    node = f.get("numa_node")
    if node is None or node < 0:
        return Check("numa", t, "n/a", f"{f['name']} has no NUMA node ({'no device' if not f.get('has_device') else 'single node'})")
    cpu_node = None
    for n in tree.listdir("/sys/devices/system/node"):
        if re.fullmatch(r"node\d+", n) and cpu in parse_cpulist(tree.read(f"/sys/devices/system/node/{n}/cpulist")):
            cpu_node = int(n[4:])
    if cpu_node == node:
        return Check("numa", t, "pass", f"{f['name']} and CPU {cpu} on node {node}", "the same node")
    near = tree.read(f"/sys/devices/system/node/node{node}/cpulist")
    return Check("numa", t, "warn", f"{f['name']} on node {node}, CPU {cpu} on node {cpu_node}",
                 "the same node", f"use a CPU of node {node} ({near}): listen --cpu N")


def _bound_queues(f: dict, queues) -> list[int]:
    n = f.get("channels") or f.get("rx_queues_sysfs") or 1
    return list(range(n)) if queues == "all" else sorted(set(queues)) if queues else [0]


def _queue_napis(f: dict, queues) -> tuple[list[dict], dict]:
    """The NAPI instances (netdev napi-get) serving the RX queues listen binds, and queue ->
    napi id; all of the device's NAPIs when the queue map is missing. ([], {}) without netlink."""
    nl = f.get("napi") or {}
    napis = nl.get("napis") or []
    qmap = {int(q): i for q, i in (nl.get("rx_queue_napi") or {}).items() if i}
    if not napis:
        return [], {}
    qs = _bound_queues(f, queues)
    want = {qmap[q] for q in qs if q in qmap}
    used = [n for n in napis if n.get("id") in want] if want else napis
    return used, {q: qmap[q] for q in qs if q in qmap}


def _irq(tree: Tree, cpu: int | None, f: dict | None, queues=None) -> Check:
    """The IRQs of the NAPIs that serve the bound queues (netdev netlink queue-get + napi-get),
    else every MSI IRQ of the device (sysfs msi_irqs)."""
    t = "NIC queue IRQ affinity"
    if not f:
        return Check("irq_affinity", t, "n/a", "no interface given")
    napis, qmap = _queue_napis(f, queues)
    nl_irqs = sorted({n["irq"] for n in napis if n.get("irq")})
    if nl_irqs:
        irqs = nl_irqs
        src = ("netdev netlink: queue " + ", ".join(f"{q} -> NAPI {i}" for q, i in qmap.items()) + "; IRQ "
               + ", ".join(f"{n['irq']} (NAPI {n['id']})" for n in napis if n.get("irq"))) if qmap else \
            "netdev netlink napi-get"
    else:
        irqs = f.get("msi_irqs") or []
        why = ("netdev netlink: its NAPIs report no IRQ" if napis else
               f"netdev netlink: {f.get('napi_error')}" if f.get("napi_error") else "netdev netlink: no NAPI")
        src = f"sysfs msi_irqs; {why}"
    if not irqs:
        return Check("irq_affinity", t, "n/a", f"{f['name']} has no MSI IRQs (a virtual device; {src})")
    if cpu is None:
        return Check("irq_affinity", t, "n/a", f"{len(irqs)} IRQs; no --cpu to judge them by ({src})")
    on_cpu = []
    for irq in irqs:
        aff = tree.read(f"/proc/irq/{irq}/effective_affinity_list") or tree.read(f"/proc/irq/{irq}/smp_affinity_list")
        if cpu in parse_cpulist(aff):
            on_cpu.append(irq)
    if not on_cpu:
        return Check("irq_affinity", t, "pass", f"none of {f['name']}'s {len(irqs)} IRQs on CPU {cpu} ({src})",
                     "NIC IRQs on another core of the same node")
    ncpu = len([c for c in tree.listdir("/sys/devices/system/cpu") if re.fullmatch(r"cpu\d+", c)])
    others = fmt_cpulist(set(range(ncpu)) - {cpu})
    return Check("irq_affinity", t, "warn", f"IRQs {', '.join(map(str, on_cpu))} of {f['name']} may run on CPU {cpu} "
                 f"({src})", "NIC IRQs on another core of the same node",
                 f"stop irqbalance (or ban CPU {cpu}); for each: echo {others} > /proc/irq/N/smp_affinity_list")


def _busy_poll(tree: Tree) -> Check:
    br, bp = tree.int("/proc/sys/net/core/busy_read"), tree.int("/proc/sys/net/core/busy_poll")
    t = "busy_read / busy_poll sysctls"
    if br is None or bp is None:
        return Check("busy_poll", t, "n/a", "net.core.busy_read/busy_poll not readable")
    found = f"busy_read {br} us, busy_poll {bp} us"
    if br and bp:
        return Check("busy_poll", t, "pass", found, "50 / 50 (tuned network-latency)")
    return Check("busy_poll", t, "warn", found + " (the kernel path's sockets do not busy-poll; "
                 "AF_XDP sets SO_BUSY_POLL per socket)", "50 / 50 (tuned network-latency)",
                 "sysctl -w net.core.busy_read=50 net.core.busy_poll=50")


def _napi(f: dict | None, queues=None) -> Check:
    """Per NAPI (netdev napi-get, 6.13+: defer-hard-irqs, gro-flush-timeout, irq-suspend-timeout)
    of the bound queues, else the device-wide sysfs pair."""
    t = "napi_defer_hard_irqs / gro_flush_timeout"
    exp = "0 / 0 (interrupt) or both set (busy poll)"
    if not f:
        return Check("napi_defer", t, "n/a", "no interface given")
    n = f["name"]
    napis, _ = _queue_napis(f, queues)
    napis = [x for x in napis if x.get("defer_hard_irqs") is not None and x.get("gro_flush_timeout") is not None]
    if napis:
        parts, bad = [], []
        for x in napis:
            d, g, sus = x["defer_hard_irqs"], x["gro_flush_timeout"], x.get("irq_suspend_timeout") or 0
            parts.append(f"NAPI {x['id']}: defer-hard-irqs {d}, gro-flush-timeout {g} ns, irq-suspend-timeout "
                         f"{sus} ns" + (f", threaded pid {x['pid']}" if x.get("pid") else ""))
            if not ((d == 0 and g == 0 and sus == 0) or (d and g)):
                bad.append(x["id"])
        found = "; ".join(parts) + " (netdev netlink napi-get)"
        busy = all(x["defer_hard_irqs"] and x["gro_flush_timeout"] for x in napis)
        if not bad:
            return Check("napi_defer", t, "pass", found + (" (busy-poll profile: use listen --poll busy)" if busy
                                                           else " (interrupt profile)"), exp)
        ids = ", ".join(map(str, bad))
        return Check("napi_defer", t, "warn", found + f": NAPI {ids} only partly set", exp,
                     f"per NAPI: ynl --family netdev --do napi-set --json '{{\"id\": N, \"defer-hard-irqs\": 0, "
                     f"\"gro-flush-timeout\": 0, \"irq-suspend-timeout\": 0}}' (or device-wide: echo 0 > "
                     f"/sys/class/net/{n}/napi_defer_hard_irqs; echo 0 > /sys/class/net/{n}/gro_flush_timeout)")
    d, g = f.get("napi_defer_hard_irqs"), f.get("gro_flush_timeout")
    if d is None or g is None:
        return Check("napi_defer", t, "n/a", f"{n} has no napi_defer_hard_irqs/gro_flush_timeout")
    nl = f.get("napi")
    why = (("no per-NAPI settings (Linux 6.13+)" if nl.get("napis") else f"no NAPI instance on {n}") if nl
           else (f.get("napi_error") or "not read"))
    found = f"napi_defer_hard_irqs {d}, gro_flush_timeout {g} ns (sysfs; netdev netlink: {why})"
    if d == 0 and g == 0:
        return Check("napi_defer", t, "pass", found + " (interrupt profile)", exp)
    if d and g:
        return Check("napi_defer", t, "pass", found + " (busy-poll profile: use listen --poll busy)", exp)
    return Check("napi_defer", t, "warn", found + ": only one set", exp,
                 f"echo 0 > /sys/class/net/{n}/napi_defer_hard_irqs; echo 0 > /sys/class/net/{n}/gro_flush_timeout "
                 "(or 2 / 200000 for busy poll)")


def _coalesce(f: dict | None) -> Check:
    t = "interrupt coalescing"
    if not f:
        return Check("coalesce", t, "n/a", "no interface given")
    c = f.get("coalesce")
    if c is None:
        return Check("coalesce", t, "n/a", f.get("coalesce_error") or "not read")
    found = f"rx-usecs {c['rx_usecs']}, rx-frames {c['rx_frames']}, adaptive-rx {'on' if c['adaptive_rx'] else 'off'}"
    if c["rx_usecs"] == 0 and not c["adaptive_rx"]:
        return Check("coalesce", t, "pass", found, "adaptive-rx off, rx-usecs 0")
    return Check("coalesce", t, "warn", found, "adaptive-rx off, rx-usecs 0",
                 f"ethtool -C {f['name']} adaptive-rx off rx-usecs 0")


def _rx_queues(f: dict | None, queues) -> Check:
    t = "RX queues vs bound queues"
    if not f:
        return Check("rx_queues", t, "n/a", "no interface given")
    n = f.get("channels") or f.get("rx_queues_sysfs") or 1
    qs = list(range(n)) if queues == "all" else sorted(set(queues)) if queues else [0]
    bound = fmt_cpulist(qs)
    if len([q for q in qs if q < n]) >= n:
        return Check("rx_queues", t, "pass", f"{f['name']} has {n} RX queue(s); listen binds {bound}", "every queue the feed can land on")
    return Check("rx_queues", t, "warn", f"{f['name']} has {n} RX queues; listen binds {bound}: feed packets on the "
                 "others bypass the XDP socket", "every queue the feed can land on",
                 f"listen --queue all, or steer the feed to queue {qs[0]}: ethtool -N {f['name']} flow-type udp4 "
                 f"dst-ip GROUP dst-port PORT action {qs[0]}")


def _foreign_xdp(f: dict | None) -> Check:
    t = "another XDP program"
    if not f:
        return Check("xdp_attached", t, "n/a", "no interface given")
    p = f.get("xdp_prog")
    if p is None and f.get("xdp_prog_error"):
        return Check("xdp_attached", t, "n/a", f["xdp_prog_error"])
    if not p:
        return Check("xdp_attached", t, "pass", f"no XDP program on {f['name']}", "none (hftcap never replaces one)")
    return Check("xdp_attached", t, "fail", f"XDP program id {p['id']} '{p.get('name', '')}' on {f['name']}: "
                 "listen will refuse it", "none (hftcap never replaces one)",
                 f"detach it if it is yours: ip link set dev {f['name']} xdp off")


def _thp(tree: Tree) -> Check:
    t = "transparent hugepages"
    raw = tree.read("/sys/kernel/mm/transparent_hugepage/enabled")
    m = re.search(r"\[(\w+)\]", raw or "")
    if not m:
        return Check("thp", t, "n/a", "THP setting not readable")
    v = m.group(1)
    if v in ("never", "madvise"):
        return Check("thp", t, "pass", f"enabled={v}", "never or madvise")
    return Check("thp", t, "warn", f"enabled={v}: khugepaged may stall the data thread", "never or madvise",
                 "echo never > /sys/kernel/mm/transparent_hugepage/enabled")


def _sysctl(tree: Tree, cid: str, title: str, rel: str, want, why: str, fix: str, ok=None) -> Check:
    v = tree.int(rel)
    name = rel.replace("/proc/sys/", "").replace("/", ".")
    if v is None:
        return Check(cid, title, "n/a", f"{name} not readable (not in this kernel)", f"{name} = {want}")
    good = ok(v) if ok else v == want
    return Check(cid, title, "pass" if good else "warn", f"{name} = {v}" + ("" if good else f": {why}"),
                 f"{name} = {want}", None if good else fix)


def _noise_checks(tree: Tree) -> list[Check]:
    """Kernel noise on an isolated core (OPERATIONS.md, tuned network-latency / cpu-partitioning)."""
    cmd = cmdline_params(tree.read("/proc/cmdline"))
    out = [
        _sysctl(tree, "noise_timer_migration", "timer migration", "/proc/sys/kernel/timer_migration", 0,
                "timers of busy CPUs may move onto the data CPU", "sysctl -w kernel.timer_migration=0"),
        _sysctl(tree, "noise_numa_balancing", "automatic NUMA balancing", "/proc/sys/kernel/numa_balancing", 0,
                "page-migration faults on the data thread's memory", "sysctl -w kernel.numa_balancing=0"),
        _sysctl(tree, "noise_stat_interval", "vmstat interval", "/proc/sys/vm/stat_interval", 10,
                "per-CPU vmstat work every second", "sysctl -w vm.stat_interval=10", ok=lambda v: v >= 10),
    ]
    nmi = tree.int("/proc/sys/kernel/nmi_watchdog")
    soft = tree.int("/proc/sys/kernel/soft_watchdog")
    soft_off = "nosoftlockup" in cmd or soft == 0
    t = "NMI / soft lockup watchdogs"
    if nmi is None and soft is None:
        out.append(Check("noise_watchdog", t, "n/a", "kernel.nmi_watchdog / soft_watchdog not readable",
                         "nmi_watchdog 0, soft lockup watchdog off"))
    else:
        found = (f"kernel.nmi_watchdog = {nmi if nmi is not None else 'absent'}, soft lockup watchdog "
                 f"{'off' if soft_off else 'on'}" + (" (nosoftlockup)" if "nosoftlockup" in cmd else ""))
        good = not nmi and soft_off
        fixes = ([] if not nmi else ["sysctl -w kernel.nmi_watchdog=0"]) + \
            ([] if soft_off else ["boot nosoftlockup (or sysctl -w kernel.soft_watchdog=0)"])
        out.append(Check("noise_watchdog", t, "pass" if good else "warn",
                         found + ("" if good else ": periodic watchdog interrupts and timers on every CPU"),
                         "nmi_watchdog 0, soft lockup watchdog off", None if good else "; ".join(fixes)))
    ksm = tree.int("/sys/kernel/mm/ksm/run")
    if ksm is None:
        out.append(Check("noise_ksm", "KSM (same-page merging)", "n/a", "no /sys/kernel/mm/ksm (KSM not built)",
                         "run = 0"))
    else:
        out.append(Check("noise_ksm", "KSM (same-page merging)", "pass" if ksm == 0 else "warn",
                         f"ksm run = {ksm}" + ("" if ksm == 0 else ": ksmd scans and merges pages"), "run = 0",
                         None if ksm == 0 else "echo 0 > /sys/kernel/mm/ksm/run"))
    skew = cmd.get("skew_tick") == "1"
    out.append(Check("noise_skew_tick", "skew_tick", "pass" if skew else "warn",
                     f"skew_tick={cmd.get('skew_tick', 'not set')}" + ("" if skew else
                                                                      ": every CPU's tick fires at once"),
                     "skew_tick=1", None if skew else "boot skew_tick=1"))
    cs = tree.read("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    if cs is None:
        out.append(Check("clocksource", "clocksource", "n/a", "current_clocksource not readable", "tsc"))
    else:
        good = cs == "tsc"
        avail = tree.read("/sys/devices/system/clocksource/clocksource0/available_clocksource") or ""
        out.append(Check("clocksource", "clocksource", "pass" if good else "warn",
                         f"{cs}" + ("" if good else f" (available: {avail or '?'}): nohz_full wants a reliable "
                                    "tsc; others cost more per read"), "tsc",
                         None if good else ("echo tsc > /sys/devices/system/clocksource/clocksource0/"
                                            "current_clocksource (boot tsc=reliable)" if "tsc" in avail.split()
                                            else "a host with an invariant TSC (tsc=reliable)")))
    return out


def _proc_env(tree: Tree, pid: int) -> dict | None:
    try:
        with open(tree.p(f"/proc/{pid}/environ"), "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return dict(x.decode(errors="replace").partition("=")[::2] for x in raw.split(b"\0") if b"=" in x)


def _shell_vars(text: str | None) -> dict:
    out = {}
    for line in (text or "").splitlines():
        m = re.match(r"\s*(?:export\s+)?([A-Z_]+)=[\"']?([^\"'#]*)", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _mask_cpus(hexmask: str) -> set[int]:
    try:
        v = int(hexmask.replace(",", ""), 16)
    except ValueError:
        return set()
    return {i for i in range(v.bit_length()) if v >> i & 1}


def _service_checks(tree: Tree, cpu: int | None) -> list[Check]:
    """irqbalance and tuned, from /proc (their processes) and their configuration files."""
    from ..measure import clocks
    procs = {p.name: p for p in clocks.Host(proc_root=tree.p("/proc"), pmc_path=None).processes(
        names=("irqbalance", "tuned"))}
    out = []
    t = "irqbalance"
    ib = procs.get("irqbalance")
    if ib is None:
        out.append(Check("irqbalance", t, "pass", "irqbalance not running", "stopped, or banned from the data CPU"))
    elif cpu is None:
        out.append(Check("irqbalance", t, "n/a", f"irqbalance running (pid {ib.pid}); no --cpu to judge it by",
                         "stopped, or banned from the data CPU"))
    else:
        # irqbalance leaves isolated and nohz_full CPUs alone, and the banned list of its
        # environment (/etc/default/irqbalance on Debian, /etc/sysconfig/irqbalance on RHEL)
        env = _proc_env(tree, ib.pid)
        conf = {**_shell_vars(tree.read("/etc/default/irqbalance")),
                **_shell_vars(tree.read("/etc/sysconfig/irqbalance")), **(env or {})}
        banned = parse_cpulist(conf.get("IRQBALANCE_BANNED_CPULIST")) | _mask_cpus(
            conf.get("IRQBALANCE_BANNED_CPUS", ""))
        iso = parse_cpulist(tree.read("/sys/devices/system/cpu/isolated")) | parse_cpulist(
            tree.read("/sys/devices/system/cpu/nohz_full"))
        argv = " ".join(ib.argv)
        if cpu in banned or cpu in iso:
            why = "banned" if cpu in banned else "isolated / nohz_full, which irqbalance skips"
            out.append(Check("irqbalance", t, "pass", f"irqbalance running (pid {ib.pid}), CPU {cpu} {why}",
                             "stopped, or banned from the data CPU"))
        else:
            out.append(Check("irqbalance", t, "warn", f"irqbalance running (pid {ib.pid}, {argv or 'no args'}) and "
                             f"may move IRQs onto CPU {cpu}" + ("" if env is not None else
                                                                 " (its environment not readable)"),
                             "stopped, or banned from the data CPU",
                             f"systemctl stop irqbalance, or IRQBALANCE_BANNED_CPULIST={cpu} in "
                             "/etc/default/irqbalance"))
    t = "tuned profile"
    td = procs.get("tuned")
    prof = tree.read("/etc/tuned/active_profile")
    if td is None:
        out.append(Check("tuned", t, "n/a", "tuned not running (each setting a profile makes is checked on its own)",
                         "network-latency or cpu-partitioning"))
    elif prof and any(p in prof.split() for p in LATENCY_PROFILES):
        out.append(Check("tuned", t, "pass", f"tuned running (pid {td.pid}), profile {prof}",
                         "network-latency or cpu-partitioning"))
    else:
        out.append(Check("tuned", t, "warn", f"tuned running (pid {td.pid}), profile {prof or 'unknown'}",
                         "network-latency or cpu-partitioning",
                         "tuned-adm profile network-latency (or cpu-partitioning with isolated_cores= the data CPU)"))
    return out


def parse_queues(text: str) -> list[int] | str:
    """listen's --queue: 'N', '0,1,2' or 'all'."""
    from ..errors import UsageError
    if text == "all":
        return "all"
    try:
        qs = [int(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"bad --queue '{text}'", hint="a queue number, a list like 0,1,2, or all") from None
    if any(q < 0 for q in qs):
        raise UsageError(f"bad --queue '{text}'", hint="queues are 0 or more")
    return qs


def run_doctor(interface: str | None = None, cpu: int | None = None, netns: str | None = None,
               root: str = "/", queues=None, probes=None, iface_facts: dict | None = None) -> Report:
    """Every check, read-only. probes: the running kernel when root is '/', else file reads
    only (tests pass their own). iface_facts: already gathered facts (listen's)."""
    from ..errors import HftcapError
    tree = Tree(root)
    live = tree.root == "/"
    if probes is None:
        probes = LiveProbes() if live else FileOnlyProbes()
    f = iface_facts
    if interface and f is None:
        f = gather_iface_in_netns(netns, interface) if (netns and live) else gather_iface(tree, interface, probes)
    if f is not None and not f.get("exists"):
        where = f" in namespace '{netns}'" if netns else ""
        raise HftcapError(f"unknown interface '{interface}'{where}", hint="list interfaces with: ip link")
    checks = [_kernel(tree)]
    checks += _xdp_checks(f)
    phc, have_phc = _phc(f)
    checks += [phc, _ptp(tree, probes, have_phc), _tai(probes)]
    checks += _cpu_checks(tree, cpu, f)
    checks += [_thp(tree), _irq(tree, cpu, f, queues), _busy_poll(tree), _napi(f, queues), _coalesce(f),
               _rx_queues(f, queues), _foreign_xdp(f)]
    checks += _noise_checks(tree)
    checks += _service_checks(tree, cpu)
    return Report(tree.root, interface, netns, cpu, checks)


def render_lines(rep: Report) -> list[str]:
    """One line per check: severity, id, what was found, and the fix."""
    where = (f"{rep.interface}" + (f" in {rep.netns}" if rep.netns else "")) if rep.interface else "no interface"
    head = (f"hftcap doctor: {where}, data CPU {rep.cpu if rep.cpu is not None else 'not given'}, "
            f"root {rep.root} (read-only: changes nothing)")
    lines = [head]
    w = max(len(c.id) for c in rep.checks)
    for c in rep.checks:
        s = f"{c.severity:4s}  {c.id:{w}s}  {c.found}"
        if c.fix and c.severity in ("warn", "fail"):
            s += f"  fix: {c.fix}"
        lines.append(s)
    lines.append(f"doctor: {rep.summary()}")
    return lines
