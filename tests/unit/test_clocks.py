"""hftcap.measure.clocks through a fake NIC/PHC backend and a fake host: the real code paths (struct
filling, ioctl choice, fallbacks, offset arithmetic, restore-on-exit, TAI rules) with
hand-made device answers."""
import ctypes
import errno
import json
import os
import stat
import time

import pytest

from hftcap.measure import clocks as C
from hftcap.measure import latency as L
from hftcap.errors import HftcapError

S = 1_000_000_000


def _size(request):
    return (request >> 16) & 0x3FFF


class FakeDevice(C.IoctlBackend):
    """One interface with an optional PHC. Records every call; checks that each request number
    carries the size of the structure passed with it, as the kernel's copy_from_user would."""

    def __init__(self, ifname="eth9", driver="ice", phc_index=0, so_timestamping=0x5F,
                 rx_filters=(1 << 0) | (1 << 1) | (1 << 12), hw=(0, 1, 12),
                 get_errno=None, set_errnos=(), caps_cross=0, precise=None, extended=None,
                 basic=None, phc_errnos=None, open_errno=None):
        self.ifname, self.driver, self.phc_index = ifname, driver, phc_index
        self.so_timestamping, self.rx_filters, self.hw = so_timestamping, rx_filters, hw
        self.get_errno, self.set_errnos = get_errno, list(set_errnos)
        self.caps_cross, self.precise, self.extended, self.basic = caps_cross, precise, extended, basic
        self.phc_errnos = phc_errnos or {}
        self.open_errno = open_errno
        self.calls, self.open_fds, self.sets = [], set(), []
        self.on_get = None

    # interface ioctls
    def if_ioctl(self, ifname, request, data):
        self.calls.append(request)
        if ifname != self.ifname:
            raise OSError(errno.ENODEV, "No such device")
        if request == C.SIOCETHTOOL:
            if isinstance(data, C.EthtoolTsInfo):
                assert data.cmd == C.ETHTOOL_GET_TS_INFO
                data.so_timestamping, data.phc_index = self.so_timestamping, self.phc_index
                data.rx_filters, data.tx_types = self.rx_filters, 0b11
            elif isinstance(data, C.EthtoolDrvinfo):
                assert data.cmd == C.ETHTOOL_GDRVINFO
                data.driver = self.driver.encode()
            else:
                raise AssertionError(f"unexpected ethtool struct {type(data)}")
            return
        assert isinstance(data, C.HwtstampConfig)
        if request == C.SIOCGHWTSTAMP:
            if self.on_get:
                self.on_get(self)
            if self.get_errno:
                raise OSError(self.get_errno, os.strerror(self.get_errno))
            data.flags, data.tx_type, data.rx_filter = self.hw
        elif request == C.SIOCSHWTSTAMP:
            if self.set_errnos:
                e = self.set_errnos.pop(0)
                if e:
                    raise OSError(e, os.strerror(e))
            self.sets.append(data.as_tuple())
            self.hw = data.as_tuple()
        else:
            raise AssertionError(f"unexpected request {request:#x}")

    # PHC
    def open_phc(self, index):
        if self.open_errno or index != self.phc_index:
            e = self.open_errno or errno.ENOENT
            raise OSError(e, os.strerror(e))
        fd = 100 + len(self.calls)
        self.open_fds.add(fd)
        return fd

    def close(self, fd):
        self.open_fds.remove(fd)

    def phc_ioctl(self, fd, request, data):
        assert fd in self.open_fds
        assert _size(request) == ctypes.sizeof(data), "request number does not match struct"
        self.calls.append(request)
        if request in self.phc_errnos:
            e = self.phc_errnos[request]
            raise OSError(e, os.strerror(e))
        if request == C.PTP_CLOCK_GETCAPS:
            data.cross_timestamping, data.max_adj, data.pps = self.caps_cross, 500_000, 1
        elif request == C.PTP_SYS_OFFSET_PRECISE:
            dev, rt = self.precise
            data.device, data.sys_realtime = C.PtpClockTime.of_ns(dev), C.PtpClockTime.of_ns(rt)
        elif request == C.PTP_SYS_OFFSET_EXTENDED:
            assert data.n_samples == len(self.extended) and data.clockid == 0
            for i, trip in enumerate(self.extended):
                for j, ns in enumerate(trip):
                    data.ts[i][j] = C.PtpClockTime.of_ns(ns)
        elif request == C.PTP_SYS_OFFSET:
            assert 2 * data.n_samples + 1 == len(self.basic)
            for i, ns in enumerate(self.basic):
                data.ts[i] = C.PtpClockTime.of_ns(ns)
        else:
            raise AssertionError(f"unexpected request {request:#x}")


class FakeHost(C.Host):
    def __init__(self, tmp_path, procs=(), tai=37, pmc_out=None):
        root = tmp_path / "proc"
        root.mkdir(parents=True, exist_ok=True)
        for pid, name, argv in procs:
            d = root / str(pid)
            d.mkdir()
            (d / "comm").write_text(name + "\n")
            (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        super().__init__(proc_root=str(root), pmc_path=None)
        self.tai, self.pmc_out, self.pmc_calls = tai, pmc_out, []

    def tai_offset_s(self):
        return self.tai

    def pmc(self, *commands, timeout_s=2.0):
        self.pmc_calls.append(commands)
        return self.pmc_out


BASE = 1_750_000_000 * S   # a PHC reading in 2025


def triples(sys_minus_phc, windows, phc0=BASE):
    """(pre, phc, post) with the midpoint exactly sys_minus_phc ahead of the PHC."""
    out = []
    for k, w in enumerate(windows):
        phc = phc0 + k * 1000
        mid = phc + sys_minus_phc
        out.append((mid - w // 2, phc, mid - w // 2 + w))
    return out


# --- offset arithmetic -----------------------------------------------------------------------

def test_best_sample_min_window():
    t = [(1000, 600, 1100),     # window 100
         (2000, 1540, 2040),    # window 40  <- smallest
         (3000, 2500, 3060),    # window 60
         (5000, 4000, 4990)]    # window -10: clock stepped, ignored
    assert C.best_sample(t) == (2000 + 20 - 1540, 40, 1540)
    assert C.best_sample([(0, 0, 5)]) == (2, 5, 0)                   # odd window: floor midpoint
    assert C.best_sample([(10, 3, 50), (100, 90, 140)]) == (27, 40, 3)  # tie: first sample
    assert C.best_sample([(BASE, BASE + 37 * S, BASE + 30)]) == (15 - 37 * S, 30, BASE + 37 * S)
    with pytest.raises(ValueError):
        C.best_sample([(10, 5, 9)])


def test_measure_precise_when_cross_timestamping():
    dev = FakeDevice(caps_cross=1, precise=(BASE, BASE - 37 * S + 12))
    m = C.measure_offset(0, dev)
    assert (m.method, m.sys_minus_phc_ns, m.uncertainty_ns, m.phc_ns) == \
        ("precise", -37 * S + 12, 0, BASE)
    assert C.PTP_SYS_OFFSET_EXTENDED not in dev.calls and not dev.open_fds


def test_measure_extended_min_delay():
    windows = [900, 350, 41, 77, 2000, 41, 600, 500, 95]
    dev = FakeDevice(caps_cross=0, extended=triples(-37 * S - 5, windows))
    m = C.measure_offset(0, dev)
    assert (m.method, m.sys_minus_phc_ns, m.uncertainty_ns, m.samples) == \
        ("extended", -37 * S - 5, 41, 9)
    assert m.phc_ns == BASE + 2 * 1000                  # the first 41 ns sample
    assert C.PTP_SYS_OFFSET_PRECISE not in dev.calls and not dev.open_fds


def test_measure_falls_back_precise_extended_basic():
    inter = []
    for k, w in enumerate([300, 120, 500]):          # sys, phc, sys, phc, ... sys
        inter.append(BASE + k * 10_000)
        inter.append(BASE + k * 10_000 + w // 2 - 1234)
    inter.append(BASE + 2 * 10_000 + 500)
    # read windows sys[k+1] - sys[k]: 10000, 10000, 500
    dev = FakeDevice(caps_cross=1, basic=inter,
                     phc_errnos={C.PTP_SYS_OFFSET_PRECISE: errno.EOPNOTSUPP,
                                 C.PTP_SYS_OFFSET_EXTENDED: errno.ENOTTY})
    m = C.measure_offset(0, dev, samples=3)
    expect = C.best_sample([(inter[2 * i], inter[2 * i + 1], inter[2 * i + 2]) for i in range(3)])
    assert m.method == "basic" and (m.sys_minus_phc_ns, m.uncertainty_ns, m.phc_ns) == expect
    assert m.uncertainty_ns == 500                   # last pair: BASE+20000 .. BASE+20500
    assert dev.calls[-3:] == [C.PTP_SYS_OFFSET_PRECISE, C.PTP_SYS_OFFSET_EXTENDED,
                              C.PTP_SYS_OFFSET]
    assert not dev.open_fds


def test_measure_real_errors_are_not_masked():
    dev = FakeDevice(extended=triples(0, [10] * 9),
                     phc_errnos={C.PTP_SYS_OFFSET_EXTENDED: errno.EIO})
    with pytest.raises(OSError) as e:
        C.measure_offset(0, dev)
    assert e.value.errno == errno.EIO and not dev.open_fds
    dev = FakeDevice(phc_errnos={C.PTP_SYS_OFFSET_EXTENDED: errno.EOPNOTSUPP,
                                 C.PTP_SYS_OFFSET: errno.EOPNOTSUPP})
    with pytest.raises(OSError) as e:
        C.measure_offset(0, dev)
    assert e.value.errno == errno.EOPNOTSUPP and not dev.open_fds


# --- hardware RX timestamping on/off ---------------------------------------------------------

def test_hw_timestamping_enables_and_restores():
    dev = FakeDevice(hw=(0, C.HWTSTAMP_TX_ON, 12))           # ptp4l: TX on, PTP v2 events
    with C.hw_rx_timestamping("eth9", dev) as st:
        assert st.enabled and st.changed
        assert dev.hw == (0, C.HWTSTAMP_TX_ON, C.HWTSTAMP_FILTER_ALL)   # TX kept
        assert st.previous == (0, 1, 12) and st.verify() is True
    assert dev.hw == (0, 1, 12) and st.restored
    assert dev.sets == [(0, 1, 1), (0, 1, 12)]
    assert C.SIOCGHWTSTAMP in dev.calls and not st.warnings


def test_hw_timestamping_restores_when_body_raises():
    dev = FakeDevice(hw=(0, 0, 0))
    with pytest.raises(KeyError, match="boom"):
        with C.hw_rx_timestamping("eth9", dev) as st:
            assert dev.hw == (0, 0, 1)
            raise KeyError("boom")
    assert dev.hw == (0, 0, 0) and st.restored and st.restore_error is None


def test_hw_timestamping_already_all_changes_nothing():
    dev = FakeDevice(hw=(0, 1, 1))
    with C.hw_rx_timestamping("eth9", dev) as st:
        assert st.enabled and not st.changed
    assert dev.sets == [] and dev.hw == (0, 1, 1)


def test_hw_timestamping_unsupported():
    dev = FakeDevice(hw=(0, 0, 0), set_errnos=[errno.ERANGE])
    with C.hw_rx_timestamping("eth9", dev) as st:
        assert not st.enabled and "cannot stamp all received packets" in st.reason
    assert dev.hw == (0, 0, 0) and dev.sets == []
    dev = FakeDevice(hw=(0, 0, 0), set_errnos=[errno.EOPNOTSUPP])
    with pytest.raises(HftcapError, match="no hardware timestamping") as e:
        with C.hw_rx_timestamping("eth9", dev, required=True):
            pytest.fail("body must not run")
    assert e.value.hint
    with pytest.raises(HftcapError, match="no interface"):
        with C.hw_rx_timestamping("nope0", dev):
            pass


def test_hw_timestamping_previous_unreadable_is_left_enabled_with_warning():
    dev = FakeDevice(hw=(0, 0, 0), get_errno=errno.EOPNOTSUPP)
    with C.hw_rx_timestamping("eth9", dev) as st:
        assert st.enabled and st.previous is None
    assert dev.hw == (0, 0, 1) and not st.restored
    assert len(st.warnings) == 1 and "stays at rx_filter=all" in st.warnings[0]


def test_hw_timestamping_restore_failure():
    dev = FakeDevice(hw=(0, 1, 12), set_errnos=[0, errno.EPERM])
    with pytest.raises(HftcapError, match="could not restore") as e:
        with C.hw_rx_timestamping("eth9", dev):
            pass
    assert "-r 12" in e.value.hint
    # when the body failed, its exception wins and carries the restore failure as a note
    dev = FakeDevice(hw=(0, 1, 12), set_errnos=[0, errno.EPERM])
    with pytest.raises(ZeroDivisionError) as e:
        with C.hw_rx_timestamping("eth9", dev) as st:
            1 / 0
    assert st.restore_error and any("could not restore" in n for n in e.value.__notes__)


def test_hw_timestamping_notices_another_process():
    dev = FakeDevice(hw=(0, 1, 12))
    with C.hw_rx_timestamping("eth9", dev) as st:
        dev.hw = (0, 1, 9)                      # ptp4l restarted and set its own filter
        assert st.verify() is False
    assert st.changed_by_other and "changed by another process" in st.warnings[0]
    assert dev.hw == (0, 1, 12)


# --- probing: PHC, daemons, TAI ---------------------------------------------------------------

PMC_OUT = """sending: GET TIME_STATUS_NP
\t0c42a1.fffe.d4b5c6-1 seq 0 RESPONSE MANAGEMENT TIME_STATUS_NP
\t\tmaster_offset              -3
\t\tingress_time               1750000037000000000
\t\tgmPresent                  true
\t0c42a1.fffe.d4b5c6-1 seq 1 RESPONSE MANAGEMENT PORT_DATA_SET
\t\tportIdentity            0c42a1.fffe.d4b5c6-1
\t\tportState               SLAVE
\t0c42a1.fffe.d4b5c6-1 seq 2 RESPONSE MANAGEMENT TIME_PROPERTIES_DATA_SET
\t\tcurrentUtcOffset      37
\t\tcurrentUtcOffsetValid 1
\t\tptpTimescale          1
"""


def test_probe_veth_has_no_phc(tmp_path):
    dev = FakeDevice(ifname="veth0", driver="veth", phc_index=-1, so_timestamping=0x1A,
                     rx_filters=0)
    ci = C.probe_clocks("veth0", dev, FakeHost(tmp_path))
    assert ci.phc is None and ci.phc_reason == "veth has no PHC"
    assert ci.status_line() == "hw clock: none (veth has no PHC)"
    assert not ci.synced_to_tai and ci.offset is None
    d = C.describe_clocks("veth0", dev, FakeHost(tmp_path / "x"))
    assert json.loads(json.dumps(d)) == d
    assert d["ts_info"]["so_timestamping"] == ["tx_software", "rx_software", "software"]
    assert L.hop_absent_reason("nic_to_xdp", d) == "no PHC: veth has no PHC"
    assert L.hop_absent_reason("xdp_to_dequeue", d) is None


def test_probe_synced_phc(tmp_path):
    dev = FakeDevice(extended=triples(-37 * S - 12, [90, 40, 55, 70, 41, 300, 45, 60, 80]))
    host = FakeHost(tmp_path, procs=[(812, "ptp4l", ["ptp4l", "-i", "eth9", "-s"]),
                                     (813, "phc2sys", ["phc2sys", "-a", "-r"]),
                                     (1, "systemd", ["/sbin/init"])], pmc_out=PMC_OUT)
    ci = C.probe_clocks("eth9", dev, host)
    assert ci.phc == "/dev/ptp0" and ci.driver == "ice" and ci.ts_info.hw_rx_all
    assert ci.offset.method == "extended" and ci.offset.uncertainty_ns == 40
    assert ci.phc_minus_tai_ns == 12 and ci.phc_timescale == "TAI"
    assert ci.synced_to_tai and ci.sync_reason is None and ci.warnings == []
    assert ci.status_line() == "PHC /dev/ptp0, synced by phc2sys, offset +12 ns +/- 40 ns"
    assert [p.pid for p in ci.ptp4l] == [812] and ci.ptp4l[0].argv == ("ptp4l", "-i", "eth9", "-s")
    assert ci.pmc == {"portState": "SLAVE", "master_offset": "-3", "gmPresent": "true",
                      "currentUtcOffset": "37", "currentUtcOffsetValid": "1", "ptpTimescale": "1"}
    assert L.hop_absent_reason("nic_to_book", ci.to_dict()) is None
    assert not dev.open_fds


def test_probe_tai_phc_but_kernel_tai_offset_zero(tmp_path):
    dev = FakeDevice(extended=triples(-37 * S, [50] * 9))
    host = FakeHost(tmp_path, procs=[(9, "phc2sys", ["phc2sys"])], tai=0)
    ci = C.probe_clocks("eth9", dev, host)
    assert ci.phc_timescale == "TAI" and not ci.synced_to_tai
    assert ci.phc_minus_tai_ns == 37 * S
    assert len(ci.warnings) == 1 and "differ by 37 s" in ci.warnings[0]
    assert "PHC - CLOCK_TAI = +37.000 s" in ci.sync_reason
    assert "NIC hops absent" in ci.status_line()
    assert L.hop_absent_reason("nic_to_xdp", ci.to_dict()).startswith("PHC not synced to TAI")


def test_probe_utc_phc_with_kernel_tai_37(tmp_path):
    dev = FakeDevice(extended=triples(-3, [50] * 9))
    ci = C.probe_clocks("eth9", dev, FakeHost(tmp_path, procs=[(9, "phc2sys", ["phc2sys"])]))
    assert ci.phc_timescale == "UTC" and not ci.synced_to_tai
    assert ci.phc_minus_tai_ns == 3 - 37 * S
    assert "PHC and CLOCK_TAI differ by 37 s" in ci.warnings[0]


def test_probe_agreeing_phc_without_phc2sys_is_not_synced(tmp_path):
    dev = FakeDevice(extended=triples(-37 * S + 100, [50] * 9))
    ci = C.probe_clocks("eth9", dev, FakeHost(tmp_path))
    assert abs(ci.phc_minus_tai_ns) == 100 and not ci.synced_to_tai
    assert "phc2sys is not running" in ci.sync_reason
    assert ci.status_line().startswith("PHC /dev/ptp0, not disciplined, offset -100 ns +/- 50 ns")


def test_probe_phc_device_missing(tmp_path):
    dev = FakeDevice(open_errno=errno.ENOENT)
    ci = C.probe_clocks("eth9", dev, FakeHost(tmp_path))
    assert ci.phc == "/dev/ptp0" and ci.offset is None and not ci.synced_to_tai
    assert ci.offset_error == "cannot read /dev/ptp0: No such file or directory"
    assert ci.status_line() == ("PHC /dev/ptp0, not disciplined, offset unknown "
                                "(cannot read /dev/ptp0: No such file or directory)")
    with pytest.raises(HftcapError, match="no interface nope0"):
        C.probe_clocks("nope0", dev, FakeHost(tmp_path / "y"))


# --- the real host helpers --------------------------------------------------------------------

def test_process_scan(tmp_path):
    host = FakeHost(tmp_path, procs=[(42, "ptp4l", ["ptp4l", "-f", "/etc/ptp.cfg"]),
                                     (7, "phc2sys", ["phc2sys", "-s", "eth0", "-w"]),
                                     (3, "bash", ["bash"])])
    (tmp_path / "proc" / "self").mkdir()
    (tmp_path / "proc" / "99").mkdir()                  # exited: no comm file
    got = C.Host.processes(host)
    assert got == [C.ProcInfo(7, "phc2sys", ("phc2sys", "-s", "eth0", "-w")),
                   C.ProcInfo(42, "ptp4l", ("ptp4l", "-f", "/etc/ptp.cfg"))]


def test_real_kernel_tai_offset_matches_clock_tai():
    tai = C.Host().tai_offset_s()
    diff = time.clock_gettime_ns(time.CLOCK_TAI) - time.clock_gettime_ns(time.CLOCK_REALTIME)
    assert tai == round(diff / S)


def test_pmc_runner(tmp_path):
    script = tmp_path / "pmc"
    script.write_text("#!/bin/sh\n[ \"$1 $2 $3\" = \"-u -b 0\" ] || exit 3\n"
                      "printf 'sending: GET X\\n\\t\\tportState SLAVE\\n'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    out = C.Host(pmc_path=str(script)).pmc("GET PORT_DATA_SET")
    assert C._parse_pmc(out) == {"portState": "SLAVE"}
    bad = tmp_path / "pmc_bad"
    bad.write_text("#!/bin/sh\nexit 1\n")
    bad.chmod(0o755)
    assert C.Host(pmc_path=str(bad)).pmc("GET X") is None
    assert C.Host(pmc_path=None).pmc("GET X") is None


def test_real_backend_on_loopback_and_on_a_non_ptp_device():
    """The real IoctlBackend: lo answers ETHTOOL_GET_TS_INFO (no PHC); a device that is not a
    PHC answers every PTP ioctl with ENOTTY, and measure_offset tries all three then fails."""
    ci = C.probe_clocks("lo", host=C.Host(pmc_path=None))
    assert ci.phc is None and ci.phc_reason == "lo has no PHC" and ci.ts_info.phc_index == -1
    assert ci.status_line() == "hw clock: none (lo has no PHC)"

    class DevNull(C.IoctlBackend):
        def open_phc(self, index):
            self.fds = getattr(self, "fds", []) + [os.open("/dev/null", os.O_RDONLY)]
            return self.fds[-1]

    b = DevNull()
    with pytest.raises(OSError) as e:
        C.measure_offset(0, b)
    assert e.value.errno == errno.ENOTTY
    for fd in b.fds:                       # closed by measure_offset
        with pytest.raises(OSError):
            os.fstat(fd)
