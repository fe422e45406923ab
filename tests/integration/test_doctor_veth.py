"""hftcap doctor live on the lab's veth: it runs, reads this host's real values, and changes
nothing (every file it checks is byte-identical before and after, the interface's settings
and this process's mounts too)."""
from __future__ import annotations

import glob
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
from doubles.fakehost import snapshot

from bounds import bound
from listenproc import hftcap

pytestmark = pytest.mark.root


def _host_files() -> list[str]:
    cpu = "/sys/devices/system/cpu"
    rels = ["/proc/sys/kernel/osrelease", "/proc/cmdline", "/proc/sys/net/core/busy_read",
            "/proc/sys/net/core/busy_poll", "/sys/kernel/mm/transparent_hugepage/enabled",
            "/proc/irq/default_smp_affinity", f"{cpu}/isolated", f"{cpu}/nohz_full", f"{cpu}/smt/active",
            f"{cpu}/cpu0/topology/thread_siblings_list", f"{cpu}/cpu0/cpufreq/scaling_governor"]
    for k in ("name", "latency", "disable"):
        rels += glob.glob(f"{cpu}/cpu0/cpuidle/state*/{k}")
    rels += glob.glob("/sys/devices/system/node/node*/cpulist")
    return [r for r in rels if glob.glob(r)]


def _in_ns(lab, *cmd) -> str:
    return subprocess.run(["ip", "netns", "exec", lab.host_ns, *cmd], capture_output=True, text=True).stdout


def _iface_state(lab) -> dict:
    d = f"/sys/class/net/{lab.host_if}"
    return {"sysfs": _in_ns(lab, "sh", "-c", f"for f in napi_defer_hard_irqs gro_flush_timeout mtu flags "
                                             f"tx_queue_len; do cat {d}/$f; done"),
            "link": subprocess.run(["ip", "-n", lab.host_ns, "-d", "link", "show", lab.host_if],
                                   capture_output=True, text=True).stdout.replace("\n", " "),
            "mounts": open("/proc/self/mountinfo").read(),
            "netns": sorted(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())}


def test_doctor_on_the_lab_veth_reads_real_values_and_changes_nothing(lab):
    files = _host_files()
    before, state = snapshot("/", files), _iface_state(lab)
    doc = json.loads(hftcap("doctor", lab.host_if, "--netns", lab.host_ns, "--cpu", 0, "--json"))
    assert snapshot("/", files) == before
    after = _iface_state(lab)
    assert re.sub(r"link-netns \S+", "", after["link"]) == re.sub(r"link-netns \S+", "", state["link"])
    assert after == state
    by = {c["id"]: c for c in doc["checks"]}
    assert doc["interface"] == lab.host_if and doc["netns"] == lab.host_ns and doc["cpu"] == 0
    assert platform.release() in by["kernel"]["found"]
    # Linux 6.3+ answers netdev netlink for the veth: basic XDP, no zero-copy
    assert "basic" in by["xdp_features"]["found"] and by["xdp_features"]["severity"] == "warn"
    assert by["phc"]["severity"] == "warn" and "no PHC" in by["phc"]["found"]
    assert by["xdp_attached"]["severity"] == "pass" and lab.host_if in by["xdp_attached"]["found"]
    assert "1 RX queue" in by["rx_queues"]["found"]
    br = open("/proc/sys/net/core/busy_read").read().strip()
    bp = open("/proc/sys/net/core/busy_poll").read().strip()
    assert by["busy_poll"]["found"].startswith(f"busy_read {br} us, busy_poll {bp} us")
    thp = re.search(r"\[(\w+)\]", open("/sys/kernel/mm/transparent_hugepage/enabled").read()).group(1)
    assert by["thp"]["found"].startswith(f"enabled={thp}")
    defer, gro = state["sysfs"].split()[:2]
    assert by["napi_defer"]["found"].startswith(f"napi_defer_hard_irqs {defer}, gro_flush_timeout {gro} ns")
    assert by["coalesce"]["severity"] == "n/a"      # veth answers no coalescing query
    assert sum(doc["counts"].values()) == len(doc["checks"])


def test_listen_reports_the_doctor(lab, tmp_path):
    from listenproc import Listener
    li = Listener(lab, "--duration", 0.5, "--save", tmp_path / "run.json").wait_ready()
    r = li.result()
    saved = json.loads((tmp_path / "run.json").read_text())["conditions"]["doctor"]
    assert saved["counts"] == r["doctor"]["counts"]
    assert saved["checks"]["xdp_attached"].startswith("pass: no XDP program on")
    line = next(x for x in li.err_lines if x.startswith("hftcap: doctor: "))
    c = r["doctor"]["counts"]
    assert f"{c['fail']} fail, {c['warn']} warn, {c['pass']} pass, {c['n/a']} n/a" in line
    assert f"hftcap doctor {lab.host_if} --netns {lab.host_ns}" in line
    assert r["doctor"]["schema"] == "hftcap.doctor/1" and r["doctor"]["interface"] == lab.host_if


def _doctor_json(lab) -> dict:
    cp = subprocess.run([str(Path(sys.executable).parent / "hftcap"), "doctor", lab.host_if, "--netns", lab.host_ns,
                         "--cpu", "0", "--json"], capture_output=True, text=True, timeout=60)
    assert cp.returncode in (0, 3), cp.stderr           # 3: a check failed (hftcap's own XDP program)
    return {c["id"]: c for c in json.loads(cp.stdout)["checks"]}


def _kernel() -> tuple[int, int]:
    """(major, minor) of the running kernel."""
    major, minor = re.match(r"(\d+)\.(\d+)", os.uname().release).groups()
    return int(major), int(minor)


def test_doctor_reads_the_veth_napi_over_netlink_and_the_kernel_noise(lab):
    """A veth has a NAPI instance only while an XDP program is attached: before listen the doctor
    says netlink found none and falls back to sysfs; while listen runs it reads that NAPI's
    settings over netdev netlink (napi-get), equal to the device's sysfs pair; the kernel-noise
    checks show this host's real sysctls. Nothing it reads changes."""
    from listenproc import Listener
    files = _host_files() + [f for f in ("/proc/sys/kernel/timer_migration", "/proc/sys/kernel/numa_balancing",
                                         "/proc/sys/vm/stat_interval", "/proc/sys/kernel/nmi_watchdog",
                                         "/sys/kernel/mm/ksm/run",
                                         "/sys/devices/system/clocksource/clocksource0/current_clocksource")
                             if os.path.exists(f)]
    before, state = snapshot("/", files), _iface_state(lab)
    defer, gro = state["sysfs"].split()[:2]
    idle = _doctor_json(lab)
    assert idle["napi_defer"]["found"] == (f"napi_defer_hard_irqs {defer}, gro_flush_timeout {gro} ns (sysfs; netdev "
                                           f"netlink: no NAPI instance on {lab.host_if}) (interrupt profile)")
    li = Listener(lab, "--duration", f"{bound(30):g}").wait_ready()
    try:
        busy = _doctor_json(lab)
        during = _iface_state(lab)
    finally:
        li.p.send_signal(2)
        li.result()
    if _kernel() >= (6, 13):
        m = re.fullmatch(rf"NAPI (\d+): defer-hard-irqs {defer}, gro-flush-timeout {gro} ns, irq-suspend-timeout 0 ns "
                         r"\(netdev netlink napi-get\) \(interrupt profile\)", busy["napi_defer"]["found"])
        assert m and int(m.group(1)) > 0, busy["napi_defer"]["found"]
    else:  # napi-get has the NAPI (6.8+) but not its settings (6.13+): the doctor says so, reads sysfs
        assert busy["napi_defer"]["found"] == (f"napi_defer_hard_irqs {defer}, gro_flush_timeout {gro} ns (sysfs; "
                                               f"netdev netlink: no per-NAPI settings (Linux 6.13+)) (interrupt profile)")
    assert busy["irq_affinity"]["found"].endswith("netdev netlink: its NAPIs report no IRQ)")
    assert busy["xdp_attached"]["severity"] == "fail"          # listen's own program, seen while it runs
    assert during["sysfs"] == state["sysfs"]
    assert snapshot("/", files) == before
    tm = open("/proc/sys/kernel/timer_migration").read().strip()
    assert idle["noise_timer_migration"]["found"].startswith(f"kernel.timer_migration = {tm}")
    si = open("/proc/sys/vm/stat_interval").read().strip()
    assert idle["noise_stat_interval"]["found"].startswith(f"vm.stat_interval = {si}")
    cs = open("/sys/devices/system/clocksource/clocksource0/current_clocksource").read().strip()
    assert idle["clocksource"]["found"].startswith(cs)
    assert idle["tuned"]["severity"] in ("pass", "warn", "n/a") and idle["irqbalance"]["severity"] in ("pass", "warn")
