"""`listen --write` in the lab, read back by tshark (its own MoldUDP64 dissector), by
`hftcap book` and by `hftcap budget`: the capture holds every packet the listener received,
with the stamps its live histograms were made of."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from capread import assert_tiles as _tiles, mold_fields, tshark
from hftcap.receive import pcapng
from listenproc import FEED, Listener, hftcap
from bounds import bound

pytestmark = pytest.mark.root

GEN = ["--seed", 5, "--stocks", 4, "--messages", 24_000]
K = 4


def assert_tiles(fields, sent):
    _tiles(fields, sent, K)


def send(lab, rate=60_000, gen=GEN):
    return json.loads(hftcap("exchange", "--netns", lab.ex_ns, "--feed", FEED, *gen, "--msg-rate", rate,
                             "-k", K, "--linger", 0, "--json"))


@pytest.mark.parametrize("path", ["xdp", "kernel"])
def test_write_reads_back_everywhere(lab, tmp_path, path):
    cap = tmp_path / "cap.pcapng"
    hftcap("exchange", *GEN, "--write", tmp_path / "stream.itch")
    li = Listener(lab, "--path", path, "--symbol", "*", "--duration", 60, "--write", cap).wait_ready()
    try:
        sent = send(lab)
        li.stop_after_end_of_session()
        live = li.result()
    finally:
        li.kill()
    assert live["messages"] == 24_000 and live["gaps"] == 0, "a lossy run cannot be compared"
    c = live["capture"]
    assert c["files"] == [str(cap)] and cap.exists() and not (tmp_path / "cap.pcapng.part").exists()
    assert c["capture_drops"] == 0 and c["packets_captured"] == live["packets"] == c["packets_seen"]

    fields = mold_fields(cap)
    assert len(fields) == live["packets"]
    assert_tiles(fields, sent)

    info = subprocess.run(["capinfos", "-M", str(cap)], capture_output=True, text=True, check=True).stdout
    assert "nanoseconds (9)" in info and f"Number of packets:   {live['packets']}" in info
    times = tshark("-r", cap, "-T", "fields", "-e", "frame.time_epoch").split()
    assert all(len(t.split(".")[1]) == 9 for t in times)
    assert any(int(t[-3:]) % 1000 for t in times), "every stamp a whole microsecond: not ns"
    flags = set(tshark("-r", cap, "-T", "fields", "-e", "frame.packet_flags").split())
    assert flags == {"0x00000009"}, flags      # inbound, multicast

    # The capture's books: the live listener's, for every stock.
    for sym, book in live["books"].items():
        off = json.loads(hftcap("book", cap, "--symbol", sym, "--json"))
        assert off["book"] == book, sym
        assert book["bids"] and book["asks"]

    # The stamps read back: the EPB time is the IDB's clock, and the hops rebuilt from them are
    # the live histograms exactly.
    rd = pcapng.read(str(cap))
    meta = rd.interfaces[0]["hftcap"]
    assert meta["ts_source"] == ("xdp" if path == "xdp" else "sw")
    field_of = {"xdp": "xdp_tai_ns", "sw": "sw_tai_ns"}[meta["ts_source"]]
    assert all(p.ts == p.stamps[field_of] and p.stamps["ts_source"] == meta["ts_source"] for p in rd.packets)
    assert sum(p.stamps["recorded"] for p in rd.packets) == live["latency"]["dequeue_to_decode"]["count"]
    if path == "kernel":
        assert all(p.queue is None for p in rd.packets)
    else:
        assert all(p.queue == 0 for p in rd.packets)
    budget = json.loads(hftcap("budget", cap, "--json"))["runs"][0]["hops"]
    assert budget, "no hops"
    for h in budget:
        lv = live["latency"][h["hop"]]
        if "absent" in lv:
            assert h["absent"] == lv["absent"], h["hop"]
        else:
            assert (h["count"], h["p50"], h["p99"], h["p99.9"], h["max"]) == \
                (lv["count"], lv["p50_ns"], lv["p99_ns"], lv["p999_ns"], lv["max_ns"]), h["hop"]
            assert h["count"] > 0
    (isb,) = rd.stats
    assert isb["usrdeliv"] == live["packets"] and isb["ifrecv"] == live["packets"]
    assert isb["capture_drops"] == 0 and isb["osdrop"] == 0


def test_full_ring_counts_every_drop(lab, tmp_path):
    """A writer stalled on a FIFO nobody reads yet: the 1 MiB ring fills, and every packet is
    either in the file or a counted capture drop; the books never notice. 15,000 packets are
    4.5 MB: more than the ring, the writer's 1 MiB chunk and the pipe hold."""
    gen = ["--seed", 6, "--stocks", 4, "--messages", 60_000]
    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # so the writer's open does not block
    hftcap("exchange", *gen, "--write", tmp_path / "stream.itch")
    li = Listener(lab, "--symbol", "*", "--duration", 60, "--write", fifo, "--capture-buffer", 1).wait_ready()
    chunks = []
    try:
        send(lab, rate=100_000, gen=gen)
        os.set_blocking(rfd, True)
        reader = threading.Thread(target=lambda: [chunks.append(b) for b in iter(lambda: os.read(rfd, 1 << 16), b"")])
        reader.start()
        li.stop_after_end_of_session()
        live = li.result()
        reader.join(timeout=bound(30))
        assert not reader.is_alive()
    finally:
        li.kill()
        os.close(rfd)
    assert live["messages"] == 60_000 and live["gaps"] == 0
    out = tmp_path / "cap.pcapng"
    out.write_bytes(b"".join(chunks))
    rd = pcapng.read(str(out))
    c = live["capture"]
    assert c["capture_drops"] > 0, "the ring never filled: the test proves nothing"
    assert len(rd.packets) == c["packets_captured"]
    assert live["packets"] == len(rd.packets) + c["capture_drops"]
    assert sum(p.dropcount for p in rd.packets) <= c["capture_drops"]
    (isb,) = rd.stats
    assert isb["capture_drops"] == c["capture_drops"] and isb["ifrecv"] == live["packets"]
    assert isb["usrdeliv"] == len(rd.packets)
    assert len(mold_fields(out)) == len(rd.packets)
    for sym, book in live["books"].items():
        off = json.loads(hftcap("book", tmp_path / "stream.itch", "--symbol", sym, "--json"))
        assert off["book"] == book, sym


def _wait_for(cond, what, timeout=bound(20.0)):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigterm_completes_the_file(lab, tmp_path):
    cap = tmp_path / "t.pcapng"
    li = Listener(lab, "--duration", 60, "--write", cap).wait_ready()
    try:
        sent = send(lab)
        li.stop_after_end_of_session(signal.SIGTERM)
        live = li.result()
    finally:
        li.kill()
    assert live["stopped_by"] == "SIGTERM"
    assert cap.exists() and not (tmp_path / "t.pcapng.part").exists()
    fields = mold_fields(cap)
    assert len(fields) == live["packets"]
    assert_tiles(fields, sent)
    assert len(pcapng.read(str(cap)).stats) == 1


def test_sigkill_leaves_what_was_flushed_readable(lab, tmp_path):
    cap = tmp_path / "k.pcapng"
    part = tmp_path / "k.pcapng.part"
    li = Listener(lab, "--duration", 60, "--write", cap).wait_ready()
    try:
        sent = send(lab)
        # Flushed at least every 100 ms: wait until the file holds every data packet.
        _wait_for(lambda: part.exists() and sum(1 for p in pcapng.read(str(part)).packets)
                  >= sent["data_packets"], "the flush of the capture")
        li.p.kill()
        li.p.communicate()
    finally:
        li.kill()
    assert not cap.exists()
    fields = mold_fields(part)
    assert len(fields) == len(pcapng.read(str(part)).packets)
    assert_tiles(fields, sent)
