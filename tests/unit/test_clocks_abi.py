"""The ctypes structures and ioctl numbers of hftcap.measure.clocks against the kernel headers: a tiny
C program prints sizeof/offsetof and the C macros' values; any mismatch fails the test."""
import ctypes
import shutil
import subprocess

import pytest

from hftcap.measure import clocks as C

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")

# (python structure, C type, [(python field, C member expression)])
LAYOUTS = [
    (C.HwtstampConfig, "struct hwtstamp_config",
     [("flags", "flags"), ("tx_type", "tx_type"), ("rx_filter", "rx_filter")]),
    (C.EthtoolTsInfo, "struct ethtool_ts_info",
     [("cmd", "cmd"), ("so_timestamping", "so_timestamping"), ("phc_index", "phc_index"),
      ("tx_types", "tx_types"), ("tx_reserved", "tx_reserved"), ("rx_filters", "rx_filters"),
      ("rx_reserved", "rx_reserved")]),
    (C.EthtoolDrvinfo, "struct ethtool_drvinfo",
     [("cmd", "cmd"), ("driver", "driver"), ("version", "version"), ("fw_version", "fw_version"),
      ("bus_info", "bus_info"), ("erom_version", "erom_version"), ("n_priv_flags", "n_priv_flags"),
      ("n_stats", "n_stats"), ("regdump_len", "regdump_len")]),
    (C.EthtoolChannels, "struct ethtool_channels",
     [(f, f) for f in ("cmd", "max_rx", "max_tx", "max_other", "max_combined", "rx_count",
                       "tx_count", "other_count", "combined_count")]),
    (C.Ifreq, "struct ifreq", [("ifr_name", "ifr_name"), ("ifr_data", "ifr_data")]),
    (C.PtpClockTime, "struct ptp_clock_time", [("sec", "sec"), ("nsec", "nsec"),
                                               ("reserved", "reserved")]),
    (C.PtpClockCaps, "struct ptp_clock_caps",
     [("max_adj", "max_adj"), ("pps", "pps"), ("n_pins", "n_pins"),
      ("cross_timestamping", "cross_timestamping"), ("adjust_phase", "adjust_phase"),
      # 6.2+ names rsv[0] max_phase_adj; older headers (6.1 here) still call it rsv
      ("max_phase_adj", "rsv")]),
    (C.PtpSysOffset, "struct ptp_sys_offset",
     [("n_samples", "n_samples"), ("rsv", "rsv"), ("ts", "ts")]),
    (C.PtpSysOffsetExtended, "struct ptp_sys_offset_extended",
     # 6.12+ names rsv[0] clockid
     [("n_samples", "n_samples"), ("clockid", "rsv"), ("ts", "ts")]),
    (C.PtpSysOffsetPrecise, "struct ptp_sys_offset_precise",
     [("device", "device"), ("sys_realtime", "sys_realtime"), ("sys_monoraw", "sys_monoraw"),
      ("rsv", "rsv")]),
    (C.Timex, "struct timex",
     [("modes", "modes"), ("offset", "offset"), ("status", "status"), ("time", "time"),
      ("tick", "tick"), ("shift", "shift"), ("stbcnt", "stbcnt"), ("tai", "tai")]),
]

IOCTLS = ["PTP_CLOCK_GETCAPS", "PTP_SYS_OFFSET", "PTP_SYS_OFFSET_PRECISE",
          "PTP_SYS_OFFSET_EXTENDED", "SIOCETHTOOL", "SIOCSHWTSTAMP", "SIOCGHWTSTAMP",
          "ETHTOOL_GDRVINFO", "ETHTOOL_GCHANNELS", "ETHTOOL_GET_TS_INFO", "HWTSTAMP_FILTER_ALL", "HWTSTAMP_TX_ON",
          "SOF_TIMESTAMPING_RX_HARDWARE", "SOF_TIMESTAMPING_RAW_HARDWARE", "PTP_MAX_SAMPLES",
          "IFNAMSIZ"]


@pytest.fixture(scope="module")
def kernel_abi(tmp_path_factory):
    d = tmp_path_factory.mktemp("abi")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <sys/timex.h>",
             "#include <sys/ioctl.h>", "#include <net/if.h>", "#include <linux/sockios.h>",
             "#include <linux/net_tstamp.h>", "#include <linux/ethtool.h>",
             "#include <linux/ptp_clock.h>", "int main(void) {"]
    for _, ctype, fields in LAYOUTS:
        lines.append(f'printf("size {ctype} %zu\\n", sizeof({ctype}));')
        for _, member in fields:
            lines.append(f'printf("off {ctype} {member} %zu\\n", offsetof({ctype}, {member}));')
    for name in IOCTLS:
        lines.append(f'printf("const {name} %lu\\n", (unsigned long)({name}));')
    lines += ["return 0; }"]
    (d / "abi.c").write_text("\n".join(lines) + "\n")
    subprocess.run(["gcc", "-Wall", "-Werror", str(d / "abi.c"), "-o", str(d / "abi")],
                   check=True)
    out = subprocess.run([str(d / "abi")], capture_output=True, text=True, check=True).stdout
    abi = {}
    for line in out.splitlines():
        key, _, val = line.rpartition(" ")
        abi[key] = int(val)
    return abi


@pytest.mark.parametrize("pystruct,ctype,fields", LAYOUTS, ids=[x[1] for x in LAYOUTS])
def test_struct_layout(kernel_abi, pystruct, ctype, fields):
    assert ctypes.sizeof(pystruct) == kernel_abi[f"size {ctype}"]
    for pyfield, member in fields:
        assert getattr(pystruct, pyfield).offset == kernel_abi[f"off {ctype} {member}"], pyfield


def test_spec_sizes():
    assert ctypes.sizeof(C.PtpSysOffsetExtended) == 1216
    assert ctypes.sizeof(C.PtpSysOffsetPrecise) == 64
    assert ctypes.sizeof(C.EthtoolTsInfo) == 44
    assert ctypes.sizeof(C.HwtstampConfig) == 12


@pytest.mark.parametrize("name", IOCTLS)
def test_ioctl_numbers(kernel_abi, name):
    assert getattr(C, name) == kernel_abi[f"const {name}"]
