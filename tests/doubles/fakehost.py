"""A fake /proc, /sys and /dev tree for `hftcap doctor --root`, and fake probes (netlink,
ioctls, adjtimex, pmc) to go with it: a tuned host, an untuned one, a host without a PHC and
a kernel without the netdev netlink family."""
from __future__ import annotations

import os
import struct
from pathlib import Path

IFACE = "eth9"
CPU = 3


def _w(root: Path, rel: str, text) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text if text.endswith("\n") else text + "\n")


def make_tree(root: Path, tuned: bool, phc: bool = True, release: str = "6.8.0-40-generic",
              ncpu: int = 8) -> Path:
    """A 2-node, `ncpu`-CPU host with one NIC (IFACE, 4 queues, IRQs 40..43) on node 0; the
    data CPU is CPU (on node 0, its SMT sibling CPU+4)."""
    cpu, sib = CPU, CPU + ncpu // 2
    _w(root, "proc/sys/kernel/osrelease", release)
    cmd = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet"
    if tuned:
        cmd += (f" isolcpus=managed_irq,domain,{cpu},{sib} nohz_full={cpu},{sib} rcu_nocbs={cpu},{sib} "
                f"irqaffinity=0-2,4-6 skew_tick=1 nosoftlockup tsc=reliable")
    # kernel noise (tuned network-latency's sysctls) and the clocksource
    for rel, good, bad in (("proc/sys/kernel/timer_migration", "0", "1"), ("proc/sys/kernel/numa_balancing", "0", "1"),
                           ("proc/sys/vm/stat_interval", "10", "1"), ("proc/sys/kernel/nmi_watchdog", "0", "1"),
                           ("proc/sys/kernel/soft_watchdog", "1", "1"), ("sys/kernel/mm/ksm/run", "0", "1")):
        _w(root, rel, good if tuned else bad)
    cs = "sys/devices/system/clocksource/clocksource0"
    _w(root, f"{cs}/current_clocksource", "tsc" if tuned else "hpet")
    _w(root, f"{cs}/available_clocksource", "tsc hpet acpi_pm")
    _w(root, "proc/cmdline", cmd)
    _w(root, "sys/devices/system/cpu/isolated", f"{cpu},{sib}" if tuned else "")
    _w(root, "sys/devices/system/cpu/nohz_full", f"{cpu},{sib}" if tuned else "(null)")
    _w(root, "sys/devices/system/cpu/smt/active", "1")
    _w(root, "proc/irq/default_smp_affinity", "77" if tuned else "ff")
    for c in range(ncpu):
        d = f"sys/devices/system/cpu/cpu{c}"
        _w(root, f"{d}/cpufreq/scaling_governor", "performance" if tuned else "powersave")
        _w(root, f"{d}/topology/thread_siblings_list", f"{c % (ncpu // 2)},{c % (ncpu // 2) + ncpu // 2}")
        for k, (name, lat) in enumerate((("POLL", 0), ("C1", 2), ("C1E", 10), ("C6", 133))):
            _w(root, f"{d}/cpuidle/state{k}/name", name)
            _w(root, f"{d}/cpuidle/state{k}/latency", str(lat))
            _w(root, f"{d}/cpuidle/state{k}/disable", "0")
    _w(root, "sys/devices/system/node/node0/cpulist", f"0-{ncpu // 2 - 1}")
    _w(root, "sys/devices/system/node/node1/cpulist", f"{ncpu // 2}-{ncpu - 1}")
    _w(root, "dev/cpu_dma_latency", struct.pack("=i", 2 if tuned else 2_000_000_000))
    _w(root, "sys/kernel/mm/transparent_hugepage/enabled",
       "always madvise [never]" if tuned else "[always] madvise never")
    _w(root, "proc/sys/net/core/busy_read", "50" if tuned else "0")
    _w(root, "proc/sys/net/core/busy_poll", "50" if tuned else "0")
    n = f"sys/class/net/{IFACE}"
    dev = "sys/devices/pci0000:00/0000:00:03.0"
    _w(root, f"{dev}/numa_node", "0" if tuned else "1")
    _w(root, f"{dev}/local_cpulist", "0-3")
    drv = root / "sys/bus/pci/drivers/ice"
    drv.mkdir(parents=True, exist_ok=True)
    (root / dev / "driver").symlink_to(drv)
    for irq in range(40, 44):
        _w(root, f"{dev}/msi_irqs/{irq}", "msix")
        aff = ("0-2" if tuned else "0-7")
        _w(root, f"proc/irq/{irq}/smp_affinity_list", aff)
        _w(root, f"proc/irq/{irq}/effective_affinity_list", "1" if tuned else str(irq % ncpu))
    if phc:
        (root / dev / "ptp/ptp2").mkdir(parents=True, exist_ok=True)
    (root / n).mkdir(parents=True, exist_ok=True)
    (root / n / "device").symlink_to(root / dev)
    _w(root, f"{n}/napi_defer_hard_irqs", "0" if tuned else "2")
    _w(root, f"{n}/gro_flush_timeout", "0")
    for q in range(4):
        (root / n / f"queues/rx-{q}").mkdir(parents=True, exist_ok=True)
    if tuned:
        for name, pid in (("ptp4l", 100), ("phc2sys", 101)):
            _w(root, f"proc/{pid}/comm", name)
            _w(root, f"proc/{pid}/cmdline", f"/usr/sbin/{name}\0-i\0{IFACE}\0".encode())
        # tuned with a latency profile; irqbalance running, but it skips the isolated data CPU
        _w(root, "proc/300/comm", "tuned")
        _w(root, "proc/300/cmdline", b"/usr/bin/python3\0/usr/sbin/tuned\0-l\0-P\0")
        _w(root, "etc/tuned/active_profile", "network-latency")
    else:
        _w(root, "proc/300/comm", "tuned")
        _w(root, "proc/300/cmdline", b"/usr/bin/python3\0/usr/sbin/tuned\0")
        _w(root, "etc/tuned/active_profile", "balanced")
    _w(root, "proc/200/comm", "irqbalance")
    _w(root, "proc/200/cmdline", b"/usr/sbin/irqbalance\0--foreground\0")
    _w(root, "proc/200/environ", b"PATH=/usr/bin\0")
    return root


class FakeProbes:
    """What the kernel would answer for IFACE; netdev=None plays a kernel without the family."""

    def __init__(self, tuned: bool, phc: bool = True, netdev: bool = True, xdp_prog=None):
        self.tuned, self.phc, self.has_netdev, self.prog = tuned, phc, netdev, xdp_prog

    def netdev(self, ifname):
        if not self.has_netdev:
            return None, "the kernel has no netdev generic netlink family (Linux 6.3+)"
        return {"xdp_features": 1 | 2 | 4 | 8 | 32 | 64, "xdp_zc_max_segs": 1,
                "xdp_rx_metadata_features": 7, "xsk_features": 1}, None

    def napi(self, ifname):
        """Queue q is served by NAPI 8192+q on IRQ 43-q (so queue 0's IRQ is 43); per-NAPI settings
        as the sysfs pair; a kernel without netdev netlink answers as for netdev()."""
        if not self.has_netdev:
            return None, "the kernel has no netdev generic netlink family (Linux 6.3+)"
        return {"napis": [{"id": 8192 + q, "ifindex": 9, "irq": 43 - q, "defer_hard_irqs": 0 if self.tuned else 2,
                           "gro_flush_timeout": 0, "irq_suspend_timeout": 0, "threaded": 0} for q in range(4)],
                "rx_queue_napi": {str(q): 8192 + q for q in range(4)}}, None

    def coalesce(self, ifname):
        return ({"rx_usecs": 0, "rx_frames": 0, "adaptive_rx": False} if self.tuned else
                {"rx_usecs": 50, "rx_frames": 0, "adaptive_rx": True}), None

    def ts_info(self, ifname):
        return {"phc_index": 2 if self.phc else -1, "so_timestamping": [], "rx_filters": ["none", "all"],
                "tx_types": 3, "hw_rx_all": self.phc}, None

    def xdp_prog(self, ifname):
        return self.prog, None

    def channels(self, ifname):
        return 4

    def driver(self, ifname):
        return "ice"

    def tai_offset(self):
        return 37 if self.tuned else 0

    def pmc(self):
        return {"portState": "SLAVE", "master_offset": "-3"} if self.tuned else None


def snapshot(root: str, rels) -> dict[str, bytes]:
    """Bytes of every regular file under the given paths (for byte-identical before/after)."""
    out = {}
    for rel in rels:
        base = os.path.join(root, rel)
        if os.path.isfile(base):
            with open(base, "rb") as f:
                out[base] = f.read()
            continue
        for dp, dirs, files in os.walk(base, followlinks=False):
            for fn in files:
                p = os.path.join(dp, fn)
                try:
                    with open(p, "rb") as f:
                        out[p] = f.read()
                except OSError:
                    out[p] = b"<unreadable>"
    return out
