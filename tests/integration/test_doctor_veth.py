"""hftcap doctor live on the lab's veth: it runs, reads this host's real values, and changes
nothing (every file it checks is byte-identical before and after, the interface's settings
and this process's mounts too)."""
from __future__ import annotations

import glob
import json
import platform
import re
import subprocess

import pytest
from doubles.fakehost import snapshot

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
