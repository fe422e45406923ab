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
from listenproc import FEED, Listener, hftcap, send_test_packets
from bounds import bound

pytestmark = pytest.mark.root

GEN = ["--seed", 5, "--stocks", 4, "--messages", 24_000]
K = 4


def assert_tiles(fields, sent):
    _tiles(fields, sent, K)


def send(lab, rate=20_000, gen=GEN):
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
    """A writer stalled on a FIFO nobody reads yet: the capture's 1 MiB (512 UMEM frames held
    for the writer on this AF_XDP path) runs out, the data thread takes the frames back for
    the fill ring without waiting, and every packet is either in the file or a counted capture
    drop; the books never notice. 15,000 packets are 4.5 MB: more than the hold, the writer's
    1 MiB chunk and the pipe hold. The data thread is pinned: the writer goes to another CPU."""
    gen = ["--seed", 6, "--stocks", 4, "--messages", 60_000]
    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # so the writer's open does not block
    hftcap("exchange", *gen, "--write", tmp_path / "stream.itch")
    cpus = sorted(os.sched_getaffinity(0))
    li = Listener(lab, "--symbol", "*", "--duration", 60, "--write", fifo, "--capture-buffer", 1,
                  "--cpu", cpus[0]).wait_ready()
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
    # The fill ring refilled from the writer's hold still tells which frame comes next (capture.c)
    assert live["xsk_frames"]["foreseen"] >= 1 and live["xsk_frames"]["not_foreseen"] == 0, live["xsk_frames"]
    out = tmp_path / "cap.pcapng"
    out.write_bytes(b"".join(chunks))
    rd = pcapng.read(str(out))
    c = live["capture"]
    assert c["capture_drops"] > 0, "the ring never filled: the test proves nothing"
    assert c["capture_drops_late"] > 0, "no held frame was taken back: the descriptor path is untested"
    assert c["writer_cpu"] == (cpus[1] if len(cpus) > 1 else None)
    assert rd.interfaces[0]["hftcap"]["writer_cpu"] == c["writer_cpu"]
    assert f"data thread CPU {cpus[0]}, writer thread " in rd.interfaces[0]["description"]
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


def _metric(li, name: str) -> float | None:
    import re
    import urllib.request
    line = next(x for x in li.err_lines if "metrics at" in x)
    url = re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", line).group(1)
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    m = re.search(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def test_kernel_socket_drops_are_counted_exactly(lab, tmp_path):
    """A stalled reader (the listener stopped with SIGSTOP) behind a 64 KiB socket buffer: the
    kernel drops what the buffer cannot hold, and every packet sent is either received or one
    of the socket's counted drops (SO_MEMINFO), in the JSON, the exit line and the ISB."""
    cap = tmp_path / "k.pcapng"
    li = Listener(lab, "--path", "kernel", "--socket-buffer", 65536, "--duration", 60, "--write", cap,
                  "--metrics", "127.0.0.1:0").wait_ready()
    sent = 0
    try:
        os.kill(li.p.pid, signal.SIGSTOP)
        try:
            send_test_packets(lab, 2_000, 1, first=1)      # ~250 KB: far more than the buffer holds
            sent += 2_000
        finally:
            os.kill(li.p.pid, signal.SIGCONT)
        # Running again, it reads what the buffer kept; packets sent after those arrive after
        # them, so once the last one is delivered every earlier one is read or dropped. A
        # tail packet may itself be dropped on a loaded host: then send more (all counted).
        seq, done = 2_001, False
        deadline = time.monotonic() + 30
        while not done and time.monotonic() < deadline:
            send_test_packets(lab, 10, 1, first=seq)
            sent += 10
            seq += 10
            t_end = time.monotonic() + 2
            while time.monotonic() < t_end:
                if (_metric(li, "hftcap_moldudp64_last_sequence") or 0) >= seq - 1:
                    done = True
                    break
                time.sleep(0.02)
        assert done, f"sequence {seq - 1} never delivered"
        li.p.send_signal(signal.SIGTERM)
        out, err = li.p.communicate(timeout=30)
        assert li.p.returncode == 0, err
        r = json.loads(out)
    finally:
        li.kill()
    drops = r["socket_drops"]
    assert drops > 0, "the socket never dropped: the test proves nothing"
    assert r["packets"] + drops == sent
    c = r["capture"]
    assert c["kernel_drops"] == {"socket_drops": drops}
    assert f"{drops} packets dropped by kernel (socket receive buffer full" in err
    assert c["packets_captured"] == r["packets"] and c["capture_drops"] == 0
    rd = pcapng.read(str(cap))
    assert len(rd.packets) == r["packets"]
    (isb,) = rd.stats
    assert isb["osdrop"] == drops and isb["capture_drops"] == 0 and isb["ifrecv"] == r["packets"]


@pytest.mark.parametrize("path", ["xdp", "kernel"])
def test_recovery_replies_are_written_on_their_own_interface(lab, tmp_path, path):
    """A lossy feed recovered by re-request: the replies the recovery socket read are in the
    capture on interface 1 (IDB "recovery"), and `hftcap book` over feed + replies, in
    sequence order, gives the live listener's books for every stock."""
    from listenproc import FEED_PORT
    gen = ["--seed", 12, "--stocks", 6, "--messages", 30_000]
    cap = tmp_path / "r.pcapng"
    li = Listener(lab, "--path", path, "--symbol", "*", "--duration", 40, "--request-timeout", 0.05,
                  "--rerequest", f"{lab.ex_addr}:{FEED_PORT + 1}", "--write", cap).wait_ready()
    try:
        sent = json.loads(hftcap("exchange", "--netns", lab.ex_ns, "--feed", FEED, *gen, "--msg-rate", 100_000,
                                 "-k", 6, "--json", "--loss", 0.01, "--dup", 0.005, "--reorder", 0.005,
                                 "--linger", 1.0))
        li.p.send_signal(signal.SIGINT)
        live = li.result()
    finally:
        li.kill()
    assert sent["lost_packets"] > 0, "nothing was lost: the test proves nothing"
    rec = live["recovery"]["feeds"][FEED]
    assert rec["gaps_lost"] == 0 and rec["replies"] > 0 and live["messages"] == 30_000 and live["gaps"] == 0, rec
    c = live["capture"]
    assert c["capture_drops"] == 0 and c["recovery"]["capture_drops"] == 0
    assert c["recovery"]["packets_captured"] == c["recovery"]["packets_seen"] > 0
    rd = pcapng.read(str(cap))
    assert [i["hftcap"]["role"] for i in rd.interfaces] == ["feed", "recovery"]
    assert "recovery replies" in rd.interfaces[1]["description"]
    replies = [p for p in rd.packets if p.iface == 1]
    assert len(replies) == c["recovery"]["packets_captured"] >= rec["replies"]
    assert len(rd.packets) - len(replies) == live["packets"] == c["packets_captured"]
    isb = {s["iface"]: s for s in rd.stats}
    assert isb[1]["usrdeliv"] == isb[1]["ifrecv"] == len(replies) and isb[0]["usrdeliv"] == live["packets"]
    assert all(p.stamps["ts_source"] == "deq" and p.ts == p.stamps["deq_tai_ns"] for p in replies)
    # tshark reads both interfaces; the replies are unicast MoldUDP64 from the server's port
    src = tshark("-r", cap, "-Y", "frame.interface_id == 1", "-T", "fields", "-e", "ip.src", "-e", "udp.srcport")
    assert {tuple(ln.split("\t")) for ln in src.splitlines()} == {(lab.ex_addr, str(FEED_PORT + 1))}
    for sym, book in live["books"].items():
        off = json.loads(hftcap("book", cap, "--symbol", sym, "--json"))
        assert off["book"] == book, sym
        assert book["bids"] and book["asks"]
    assert off["mold"]["recovery_packets"] == len(replies) and off["mold"]["gaps"] == 0
    # without the replies the feed's own sequence has holes: the replies are what fill them
    from hftcap.book.books import Books, feed_sequenced_capture
    feed_only = pcapng.Capture(rd.interfaces, [p for p in rd.packets if p.iface == 0], rd.stats)
    assert feed_sequenced_capture(Books(), feed_only)["mold"]["gaps"] > 0
