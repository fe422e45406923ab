"""A capture made by a real tool (tshark/dumpcap, pcapng) of the lab feed replays through
`hftcap book` to the same books as the stream the exchange wrote with --write."""
from __future__ import annotations

import json
import select
import shutil
import struct
import subprocess
import time

import pytest

from bounds import bound, wait_for
from listenproc import hftcap

pytestmark = pytest.mark.root



@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed (setup.sh installs it)")
def test_tshark_pcapng_replays_to_the_same_books(lab, tmp_path):
    gen = ["--seed", 21, "--stocks", 3, "--messages", 8000]
    hftcap("exchange", *gen, "--write", tmp_path / "s.itch")
    cap = tmp_path / "feed.pcapng"
    ts = subprocess.Popen(["ip", "netns", "exec", lab.host_ns, "tshark", "-n", "-i", lab.host_if, "-f",
                           "udp dst port 26400", "-w", str(cap), "-a", "duration:60"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + bound(20)
        seen = ""
        while "Capturing on" not in seen and time.monotonic() < deadline:
            r, _, _ = select.select([ts.stderr], [], [], 0.5)
            if r:
                seen += ts.stderr.readline()
        assert "Capturing on" in seen, seen
        sent = json.loads(hftcap("exchange", "--netns", lab.ex_ns, *gen, "--msg-rate", 20000, "-k", 5,
                                 "--linger", 0, "--json"))
        # The exchange sends End of Session last (naming next_seq): once tshark has written one to
        # the file, every packet before it on this one-queue veth has been captured.
        eos = struct.pack(">QH", sent["next_seq"], 0xFFFF)
        wait_for(lambda: cap.exists() and eos in cap.read_bytes(), 20,
                 f"tshark to write the End of Session (sequence {sent['next_seq']}) to {cap}", interval=0.1)
    finally:
        ts.terminate()
        ts.communicate(timeout=bound(20))
    assert sent["messages_sent"] == 8000
    replay = json.loads(hftcap("book", tmp_path / "s.itch", "--json"))
    sym = replay["symbol"]
    captured = json.loads(hftcap("book", cap, "--symbol", sym, "--json"))
    assert captured["format"] == "pcapng"
    assert captured["messages"] == replay["messages"]
    assert captured["book"] == replay["book"] and replay["book"]["bids"]
