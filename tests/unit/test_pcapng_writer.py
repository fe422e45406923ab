"""The capture writer without a lab: tcpdump's names and sizes, and a ring that fills counts
every packet it cannot hold while the file stays readable by tshark."""
from __future__ import annotations

import os
import subprocess
import threading
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


def _writer(path, **kw):
    idb = pcapng.Interface("t0", "unit test", None, "xdp", 0)
    return _core.PcapngWriter(str(path), pcapng.header("unit", [idb], 262144), [1], **kw)


def test_xsk_descriptors_read_back_from_the_umem(tmp_path):
    """The AF_XDP descriptor path (hc_capring_put_xsk + the frame hold): the writer copies each
    frame out of the (stand-in) UMEM; every stamp the descriptor carries reads back."""
    path = tmp_path / "x.pcapng"
    w = _writer(path, ring_bytes=1 << 20)
    w.bench_put_xsk(3_000, 199)
    w.close()
    st = w.stats()
    assert st["seen"] == 3_000 and st["written"] + st["capture_drops"] == 3_000
    rd = pcapng.read(str(path))
    assert len(rd.packets) == st["written"] > 0
    for p in rd.packets:
        assert p.caplen == p.origlen == 199 and p.data == b"\xab" * 199 and p.queue == 0
        i = p.stamps["xdp_tai_ns"] - 1
        assert p.stamps["deq_tai_ns"] == i + 2 and p.stamps["dec_tai_ns"] == i + 3 and p.stamps["recorded"]
        assert p.ts == p.stamps["xdp_tai_ns"] and p.stamps["hw_ns"] == p.stamps["book_tai_ns"] == 0
    assert sum(p.dropcount for p in rd.packets) == st["capture_drops"]


def test_xsk_frames_taken_back_are_counted_drops(tmp_path):
    """A writer stalled on a FIFO nobody reads yet: the data thread takes its held frames back
    for the fill ring (it never waits), and the writer drops those packets. Every packet is
    either written or a counted drop, and the EPB dropcounts add up to the drops. 40,000
    descriptors: more than the 12,288 frames the hold has, the 1 MiB chunk and the pipe."""
    fifo = tmp_path / "x.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    w = _writer(fifo, ring_bytes=16 << 20, part=False)
    n = 40_000
    w.bench_put_xsk(n, 199)
    chunks = []
    os.set_blocking(rfd, True)
    reader = threading.Thread(target=lambda: [chunks.append(b) for b in iter(lambda: os.read(rfd, 1 << 16), b"")])
    reader.start()
    w.close()
    reader.join(timeout=30)
    os.close(rfd)
    assert not reader.is_alive()
    st = w.stats()
    assert st["capture_late"] > 0, "no frame was taken back: the test proves nothing"
    assert st["capture_drops"] == st["capture_late"], "the 16 MiB ring itself never filled"
    assert st["seen"] == n and st["written"] + st["capture_drops"] == n
    out = tmp_path / "x.pcapng"
    out.write_bytes(b"".join(chunks))
    rd = pcapng.read(str(out))
    assert len(rd.packets) == st["written"]
    assert all(p.data == b"\xab" * 199 for p in rd.packets)
    assert sum(p.dropcount for p in rd.packets) <= st["capture_drops"]
    (isb,) = rd.stats
    assert isb["capture_drops"] == st["capture_drops"] and isb["ifrecv"] == n and isb["usrdeliv"] == st["written"]


def _writer_threads():
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() == "hftcap-writer":
                    out.append(int(tid))
        except FileNotFoundError:
            pass
    return out


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell a pin from no pin")
def test_writer_thread_is_pinned(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    before = set(_writer_threads())
    w = _writer(tmp_path / "p.pcapng", ring_bytes=1 << 16, writer_cpu=cpus[-1])
    try:
        (tid,) = set(_writer_threads()) - before
        assert os.sched_getaffinity(tid) == {cpus[-1]}
    finally:
        w.close()
    w2 = _writer(tmp_path / "q.pcapng", ring_bytes=1 << 16)       # -1: not pinned
    try:
        (tid,) = set(_writer_threads()) - before
        assert os.sched_getaffinity(tid) == set(cpus)
    finally:
        w2.close()


def test_writer_cpu_default_avoids_the_data_thread():
    cpus = sorted(os.sched_getaffinity(0))
    wo = pcapng.WriteOptions("x.pcapng")
    assert pcapng.writer_cpu_for(wo, None) is None               # data thread not pinned: nothing to avoid
    if len(cpus) > 1:
        assert pcapng.writer_cpu_for(wo, cpus[0]) == cpus[1]
        assert pcapng.writer_cpu_for(wo, cpus[1]) == cpus[0]
    assert pcapng.writer_cpu_for(pcapng.WriteOptions("x", writer_cpu=0), 0) == 0
    assert pcapng.writer_cpu_for(pcapng.WriteOptions("x", writer_cpu=-1), 1) is None
    with pytest.raises(UsageError, match="writer-cpu"):
        pcapng.check_write_options(pcapng.WriteOptions("x.pcapng", writer_cpu=os.cpu_count()))
