"""The capture writer without a lab: tcpdump's names and sizes, and a ring that fills counts
every packet it cannot hold while the file stays readable by tshark."""
from __future__ import annotations

import subprocess
import time

import pytest

from hftcap import _core
from hftcap.errors import UsageError
from hftcap.receive import pcapng
from bounds import bound


@pytest.mark.parametrize("text,nbytes", [("100", 100_000_000), ("1.5", 1_500_000), ("512k", 512 << 10),
                                         ("64m", 64 << 20), ("2g", 2 << 30)])
def test_file_size_units_are_tcpdumps(text, nbytes):
    assert pcapng.parse_file_size(text) == nbytes


@pytest.mark.parametrize("bad", ["0", "-1", "10x", ""])
def test_bad_file_size(bad):
    with pytest.raises(UsageError):
        pcapng.parse_file_size(bad)


def test_names_follow_tcpdump():
    n = pcapng.Namer(pcapng.WriteOptions("f.pcapng", file_size=1))
    assert [n.name(i) for i in range(3)] == ["f.pcapng", "f.pcapng1", "f.pcapng2"]
    n = pcapng.Namer(pcapng.WriteOptions("f", file_size=1, file_count=12))
    assert [n.name(i) for i in (0, 1, 11, 12)] == ["f00", "f01", "f11", "f00"]
    n = pcapng.Namer(pcapng.WriteOptions("t-%Y.pcapng", rotate_seconds=60))
    assert n.name(0) == time.strftime("t-%Y.pcapng", time.localtime(n.interval_start))


def test_file_count_needs_a_rotation(tmp_path):
    with pytest.raises(UsageError, match="needs -C"):
        pcapng.check_write_options(pcapng.WriteOptions(str(tmp_path / "x"), file_count=3))
    with pytest.raises(UsageError, match="stdout"):
        pcapng.check_write_options(pcapng.WriteOptions("-", file_size=10))


def test_full_ring_counts_exactly_and_the_file_reads(tmp_path):
    path = tmp_path / "w.pcapng"
    idb = pcapng.Interface("t0", "unit test", None, "xdp", 0)
    w = _core.PcapngWriter(str(path), pcapng.header("unit", [idb], 262144), [1], ring_bytes=64 << 10)
    assert w.ring_bytes == 64 << 10
    n = 20_000                 # 20,000 x 304 bytes in a burst: far more than 64 KiB holds
    w.bench_put(n, 190)
    deadline = time.monotonic() + bound(10)
    while w.stats()["written"] < w.stats()["seen"] - w.stats()["capture_drops"] and time.monotonic() < deadline:
        time.sleep(0.01)
    drops = w.stats()["capture_drops"]
    w.bench_put(10, 190)       # fits: its first packet carries the burst's drops
    w.close()
    st = w.stats()
    assert st["seen"] == n + 10 and drops > 0 and st["capture_drops"] == drops
    assert st["written"] + st["capture_drops"] == n + 10
    assert not (tmp_path / "w.pcapng.part").exists()
    rd = pcapng.read(str(path))
    assert len(rd.packets) == st["written"]
    assert rd.packets[-10].dropcount > 0 and all(p.dropcount == 0 for p in rd.packets[-9:])
    assert sum(p.dropcount for p in rd.packets) == drops
    (isb,) = rd.stats
    assert isb["capture_drops"] == drops and isb["osdrop"] == drops
    assert isb["ifrecv"] == n + 10 and isb["usrdeliv"] == st["written"]
    assert all(p.ts == p.stamps["xdp_tai_ns"] for p in rd.packets)
    cp = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.drop_count"],
                        capture_output=True, text=True, timeout=bound(60))
    assert cp.returncode == 0
    assert sum(int(x) for x in cp.stdout.split() if x) == drops
