"""hftcap doctor against fake /proc, /sys and /dev trees (tests/doubles/fakehost.py)."""
from __future__ import annotations

import json

from conftest import run_hftcap
from doubles.fakehost import CPU, IFACE, FakeProbes, make_tree, snapshot

from hftcap.ops import doctor

ALL_IDS = ["kernel", "xdp_features", "xdp_rx_metadata", "phc", "ptp", "tai_offset", "cpu_isolated",
           "cpu_nohz_full", "cpu_rcu_nocbs", "cpu_irqaffinity", "cpu_governor", "cpu_cstates",
           "cpu_dma_latency", "cpu_smt", "numa", "thp", "irq_affinity", "busy_poll", "napi_defer",
           "coalesce", "rx_queues", "xdp_attached", "noise_timer_migration", "noise_numa_balancing",
           "noise_stat_interval", "noise_watchdog", "noise_ksm", "noise_skew_tick", "clocksource", "irqbalance",
           "tuned"]


def _run(tmp_path, tuned, phc=True, netdev=True, release="6.8.0-40-generic", queues="all", prog=None):
    root = make_tree(tmp_path / "root", tuned=tuned, phc=phc, release=release)
    return doctor.run_doctor(IFACE, cpu=CPU, root=str(root), queues=queues,
                             probes=FakeProbes(tuned, phc=phc, netdev=netdev, xdp_prog=prog))


def _by_id(rep):
    return {c.id: c for c in rep.checks}


def test_tuned_host_passes_every_check(tmp_path):
    rep = _run(tmp_path, tuned=True)
    assert [c.id for c in rep.checks] == ALL_IDS
    bad = [(c.id, c.severity, c.found) for c in rep.checks if c.severity != "pass"]
    assert bad == []
    assert rep.counts == {"pass": len(ALL_IDS), "warn": 0, "fail": 0, "n/a": 0}
    c = _by_id(rep)
    assert "ice" in c["xdp_features"].found and "xsk-zerocopy" in c["xdp_features"].found
    assert "/dev/ptp2" in c["phc"].found
    assert "SLAVE" in c["ptp"].found
    assert "limit 2 us" in c["cpu_dma_latency"].found
    assert "isolated too" in c["cpu_smt"].found


def test_untuned_host_warns_with_fixes(tmp_path):
    rep = _run(tmp_path, tuned=False, queues=[0])
    expect = {"kernel": "pass", "xdp_features": "pass", "xdp_rx_metadata": "pass", "phc": "pass",
              "ptp": "warn", "tai_offset": "warn", "cpu_isolated": "warn", "cpu_nohz_full": "warn",
              "cpu_rcu_nocbs": "warn", "cpu_irqaffinity": "warn", "cpu_governor": "warn",
              "cpu_cstates": "warn", "cpu_dma_latency": "warn", "cpu_smt": "warn", "numa": "warn",
              "thp": "warn", "irq_affinity": "warn", "busy_poll": "warn", "napi_defer": "warn",
              "coalesce": "warn", "rx_queues": "warn", "xdp_attached": "pass", "noise_timer_migration": "warn",
              "noise_numa_balancing": "warn", "noise_stat_interval": "warn", "noise_watchdog": "warn",
              "noise_ksm": "warn", "noise_skew_tick": "warn", "clocksource": "warn", "irqbalance": "warn",
              "tuned": "warn"}
    got = {c.id: c.severity for c in rep.checks}
    assert got == expect
    c = _by_id(rep)
    for chk in rep.checks:
        if chk.severity in ("warn", "fail"):
            assert chk.fix, f"{chk.id} has no fix"
    assert c["cpu_governor"].fix == f"cpupower -c {CPU} frequency-set -g performance"
    assert c["cpu_isolated"].fix.startswith(f"boot isolcpus=managed_irq,domain,{CPU}")
    assert "C1E (10 us exit)" in c["cpu_cstates"].found and "C6 (133 us exit)" in c["cpu_cstates"].found
    assert "cpuidle" not in c["cpu_cstates"].fix and "2 us" in c["cpu_cstates"].fix
    assert c["irq_affinity"].found.startswith("IRQs 43 of eth9")
    assert c["numa"].found == f"{IFACE} on node 1, CPU {CPU} on node 0"
    assert c["coalesce"].fix == f"ethtool -C {IFACE} adaptive-rx off rx-usecs 0"
    assert "4 RX queues; listen binds 0" in c["rx_queues"].found
    assert c["thp"].fix == "echo never > /sys/kernel/mm/transparent_hugepage/enabled"
    assert "CLOCK_TAI = UTC + 0 s" in c["tai_offset"].found


def test_host_without_phc(tmp_path):
    c = _by_id(_run(tmp_path, tuned=True, phc=False))
    assert c["phc"].severity == "warn" and "no PHC" in c["phc"].found
    assert c["ptp"].severity == "n/a" and "ptp4l" in c["ptp"].found   # running, but nothing to steer
    assert c["xdp_rx_metadata"].severity == "warn" and "no PHC" in c["xdp_rx_metadata"].found


def test_kernel_without_netdev_netlink(tmp_path):
    rep = _run(tmp_path, tuned=True, netdev=False, release="5.15.0-91-generic")
    c = _by_id(rep)
    assert c["kernel"].severity == "warn"
    assert "bpf_xdp_metadata_rx_timestamp" in c["kernel"].found and "(6.3+)" in c["kernel"].found
    assert "AF_XDP" not in c["kernel"].found
    # fallback: the driver name says zero-copy; RX-metadata features stay unknown
    assert c["xdp_features"].severity == "pass"
    assert "no netdev generic netlink" in c["xdp_features"].found and "ice" in c["xdp_features"].found
    assert c["xdp_rx_metadata"].severity == "n/a"


def test_old_kernel_and_foreign_xdp_fail(tmp_path):
    rep = _run(tmp_path, tuned=True, release="4.14.0", prog={"id": 7, "mode": 1, "name": "xdp_fw"})
    c = _by_id(rep)
    assert c["kernel"].severity == "fail" and "no AF_XDP" in c["kernel"].found
    assert c["xdp_attached"].severity == "fail" and "id 7 'xdp_fw'" in c["xdp_attached"].found
    assert c["xdp_attached"].fix == f"detach it if it is yours: ip link set dev {IFACE} xdp off"
    assert rep.counts["fail"] == 2


def test_no_cpu_skips_the_per_cpu_checks(tmp_path):
    root = make_tree(tmp_path / "root", tuned=True)
    rep = doctor.run_doctor(IFACE, root=str(root), probes=FakeProbes(True))
    c = _by_id(rep)
    assert c["cpu"].severity == "warn" and "listen --cpu N" in c["cpu"].fix
    assert c["cpu_governor"].severity == "n/a" and c["irq_affinity"].severity == "n/a"


def test_reads_change_nothing(tmp_path):
    root = make_tree(tmp_path / "root", tuned=False)
    before = snapshot(str(root), ["."])
    doctor.run_doctor(IFACE, cpu=CPU, root=str(root), probes=FakeProbes(False))
    assert snapshot(str(root), ["."]) == before


def test_cpulist():
    assert doctor.parse_cpulist("managed_irq,domain,2-4,7") == {2, 3, 4, 7}
    assert doctor.parse_cpulist("(null)") == set()
    assert doctor.fmt_cpulist({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"


def test_cli_json_shape_on_a_fake_root(tmp_path):
    root = make_tree(tmp_path / "root", tuned=False)
    cp = run_hftcap("doctor", IFACE, "--cpu", CPU, "--root", root, "--json", check=True)
    doc = json.loads(cp.stdout)
    assert doc["schema"] == "hftcap.doctor/1" and doc["read_only"] is True
    assert (doc["interface"], doc["cpu"], doc["root"]) == (IFACE, CPU, str(root))
    assert [c["id"] for c in doc["checks"]] == ALL_IDS
    for c in doc["checks"]:
        assert set(c) == {"id", "title", "severity", "found", "expected", "fix"}
        assert c["severity"] in doctor.SEVERITIES
    assert sum(doc["counts"].values()) == len(doc["checks"])
    by = {c["id"]: c for c in doc["checks"]}
    # a file tree answers no netlink: those checks say so instead of asking this kernel
    assert by["coalesce"]["severity"] == "n/a" and "--root" in by["coalesce"]["found"]
    assert by["cpu_governor"]["severity"] == "warn"


def test_cli_text_one_line_per_check(tmp_path):
    root = make_tree(tmp_path / "root", tuned=False)
    cp = run_hftcap("doctor", IFACE, "--cpu", CPU, "--root", root, check=True)
    lines = cp.stdout.splitlines()
    assert "read-only" in lines[0]
    body = lines[1:-1]
    assert len(body) == len(ALL_IDS)
    for line, cid in zip(body, ALL_IDS):
        sev, ident = line.split()[:2]
        assert sev in doctor.SEVERITIES and ident == cid
        if sev == "warn":
            assert "  fix: " in line
    assert lines[-1].startswith("doctor: 0 fail, ")


def test_cli_errors(tmp_path):
    root = make_tree(tmp_path / "root", tuned=False)
    cp = run_hftcap("doctor", "nosuch0", "--root", root)
    assert cp.returncode == 1 and cp.stderr.startswith("hftcap: error: unknown interface 'nosuch0'")
    cp = run_hftcap("doctor", IFACE, "--queue", "x", "--root", root)
    assert cp.returncode == 2 and "bad --queue" in cp.stderr and "Traceback" not in cp.stderr


def test_cli_exit_code_3_on_a_failed_check(tmp_path):
    root = make_tree(tmp_path / "root", tuned=True, release="4.14.0")
    cp = run_hftcap("doctor", IFACE, "--cpu", CPU, "--root", root)
    assert cp.returncode == 3
    assert any(ln.startswith("fail  kernel ") and "fix: boot Linux 6.3" in ln for ln in cp.stdout.splitlines())


# ---- per-NAPI netlink (netdev queue-get + napi-get) with the sysfs fallback ----

class NapiProbes(FakeProbes):
    """FakeProbes whose NAPIs differ from the device-wide sysfs pair."""

    def __init__(self, tuned, settings):
        super().__init__(tuned)
        self.settings = settings          # napi id -> (defer, gro, suspend)

    def napi(self, ifname):
        nl, err = super().napi(ifname)
        for n in nl["napis"]:
            if n["id"] in self.settings:
                n["defer_hard_irqs"], n["gro_flush_timeout"], n["irq_suspend_timeout"] = self.settings[n["id"]]
        return nl, err


def test_irq_affinity_follows_the_bound_queue_through_netlink(tmp_path):
    """Untuned: IRQ 43 runs on the data CPU. Bound to queue 1, netlink says its NAPI's IRQ is 42
    (CPU 2): pass; the sysfs fallback can only judge every MSI IRQ of the device: warn."""
    root = make_tree(tmp_path / "root", tuned=False)
    c = _by_id(doctor.run_doctor(IFACE, cpu=CPU, root=str(root), queues=[1], probes=FakeProbes(False)))["irq_affinity"]
    assert c.severity == "pass" and "queue 1 -> NAPI 8193; IRQ 42 (NAPI 8193)" in c.found and "1 IRQs" in c.found
    c = _by_id(doctor.run_doctor(IFACE, cpu=CPU, root=str(root), queues=[0], probes=FakeProbes(False)))["irq_affinity"]
    assert c.severity == "warn" and c.found.startswith("IRQs 43 of eth9") and "queue 0 -> NAPI 8192" in c.found
    c = _by_id(doctor.run_doctor(IFACE, cpu=CPU, root=str(root), queues=[1],
                                 probes=FakeProbes(False, netdev=False)))["irq_affinity"]
    assert c.severity == "warn" and c.found.startswith("IRQs 43 of eth9")
    assert "sysfs msi_irqs; netdev netlink: the kernel has no netdev generic netlink family" in c.found


def test_napi_settings_per_napi_from_netlink(tmp_path):
    root = make_tree(tmp_path / "root", tuned=True)      # sysfs pair 0 / 0
    run = lambda probes, q="all": _by_id(doctor.run_doctor(IFACE, cpu=CPU, root=str(root), queues=q,  # noqa: E731
                                                         probes=probes))["napi_defer"]
    c = run(FakeProbes(True))
    assert c.severity == "pass" and "NAPI 8192: defer-hard-irqs 0, gro-flush-timeout 0 ns" in c.found
    assert c.found.count("NAPI 81") == 4 and "(netdev netlink napi-get) (interrupt profile)" in c.found
    # one NAPI half set, which the device-wide sysfs files do not show
    c = run(NapiProbes(True, {8194: (2, 0, 0)}))
    assert c.severity == "warn" and "NAPI 8194 only partly set" in c.found
    assert c.fix.startswith("per NAPI: ynl --family netdev --do napi-set")
    assert run(NapiProbes(True, {8194: (2, 0, 0)}), q=[0]).severity == "pass"   # queue 0's NAPI is fine
    # the busy-poll pair on every NAPI (Intel's AF_XDP tests: 2 / 200000 ns), with IRQ suspension
    c = run(NapiProbes(True, {n: (2, 200_000, 20_000_000) for n in range(8192, 8196)}))
    assert c.severity == "pass" and "busy-poll profile" in c.found and "irq-suspend-timeout 20000000 ns" in c.found
    # an irq-suspend-timeout without the pair: warn
    assert run(NapiProbes(True, {8192: (0, 0, 1000)}), q=[0]).severity == "warn"
    # no netdev netlink: the sysfs pair, saying why
    c = run(FakeProbes(True, netdev=False))
    assert c.severity == "pass" and c.found.startswith("napi_defer_hard_irqs 0, gro_flush_timeout 0 ns (sysfs; "
                                                       "netdev netlink: the kernel has no netdev")


# ---- kernel noise and services ----

def test_noise_and_service_checks_name_their_fixes(tmp_path):
    c = _by_id(_run(tmp_path, tuned=False))
    assert c["noise_timer_migration"].fix == "sysctl -w kernel.timer_migration=0"
    assert c["noise_numa_balancing"].fix == "sysctl -w kernel.numa_balancing=0"
    assert c["noise_stat_interval"].fix == "sysctl -w vm.stat_interval=10"
    assert c["noise_watchdog"].fix == ("sysctl -w kernel.nmi_watchdog=0; boot nosoftlockup (or sysctl -w "
                                       "kernel.soft_watchdog=0)")
    assert c["noise_ksm"].fix == "echo 0 > /sys/kernel/mm/ksm/run"
    assert c["noise_skew_tick"].fix == "boot skew_tick=1"
    assert c["clocksource"].found.startswith("hpet (available: tsc hpet acpi_pm)")
    assert c["clocksource"].fix.startswith("echo tsc > /sys/devices/system/clocksource/clocksource0/")
    assert c["irqbalance"].found.startswith("irqbalance running (pid 200, /usr/sbin/irqbalance --foreground)")
    assert c["irqbalance"].fix == (f"systemctl stop irqbalance, or IRQBALANCE_BANNED_CPULIST={CPU} in "
                                   "/etc/default/irqbalance")
    assert c["tuned"].found == "tuned running (pid 300), profile balanced"
    assert c["tuned"].fix.startswith("tuned-adm profile network-latency")
    t = _by_id(_run(tmp_path / "t", tuned=True))
    assert t["irqbalance"].found == f"irqbalance running (pid 200), CPU {CPU} isolated / nohz_full, which irqbalance skips"
    assert t["noise_watchdog"].found == "kernel.nmi_watchdog = 0, soft lockup watchdog off (nosoftlockup)"


def test_irqbalance_banned_list_and_absent_services(tmp_path):
    import shutil
    root = make_tree(tmp_path / "root", tuned=False)
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/irqbalance").write_text(f'#IRQBALANCE_ONESHOT=\nIRQBALANCE_BANNED_CPULIST="2-{CPU}"\n')
    c = _by_id(doctor.run_doctor(IFACE, cpu=CPU, root=str(root), probes=FakeProbes(False)))
    assert c["irqbalance"].severity == "pass" and c["irqbalance"].found.endswith(f"CPU {CPU} banned")
    (root / "etc/default/irqbalance").write_text("")
    (root / "proc/200/environ").write_bytes(b"IRQBALANCE_BANNED_CPUS=00000008\0")   # hex mask: CPU 3
    c = _by_id(doctor.run_doctor(IFACE, cpu=CPU, root=str(root), probes=FakeProbes(False)))
    assert c["irqbalance"].severity == "pass"
    shutil.rmtree(root / "proc/200")
    shutil.rmtree(root / "proc/300")
    for f in ("proc/sys/kernel/numa_balancing", "sys/kernel/mm/ksm/run"):
        (root / f).unlink()
    c = _by_id(doctor.run_doctor(IFACE, cpu=CPU, root=str(root), probes=FakeProbes(False)))
    assert c["irqbalance"].severity == "pass" and c["irqbalance"].found == "irqbalance not running"
    assert c["tuned"].severity == "n/a" and c["tuned"].found.startswith("tuned not running")
    assert c["noise_numa_balancing"].severity == "n/a" and c["noise_ksm"].severity == "n/a"
