"""`listen --warm-books` (AF_XDP busy polling): the data thread keeps its books in cache while
the rings are empty, by prefetch only. The books it builds are exactly the offline replay's."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bounds import bound
from listenproc import FEED, Listener, assert_books_equal_replay, hftcap

pytestmark = pytest.mark.root

BIN = __import__("pathlib").Path(sys.executable).parent
GEN = ["--seed", 31, "--stocks", 6, "--messages", 30_000]


def test_warm_books_leaves_the_books_exact(lab, tmp_path):
    hftcap("exchange", *GEN, "--write", tmp_path / "stream.itch")
    li = Listener(lab, "--path", "xdp", "--poll", "busy", "--warm-books", "--symbol", "*",
                  "--duration", f"{bound(60):g}").wait_ready()
    try:
        ex = subprocess.run([str(BIN / "hftcap"), "exchange", "--netns", lab.ex_ns, "--feed", FEED, *map(str, GEN),
                             "--msg-rate", "20000", "-k", "4", "--linger", "0", "--json",
                             "--duration", f"{bound(60):g}"],
                            capture_output=True, text=True, timeout=bound(60))
        assert ex.returncode == 0, ex.stderr
        li.stop_after_end_of_session()
        live = li.result()
    finally:
        li.kill()
    assert json.loads(ex.stdout)["messages_sent"] == 30_000
    assert live["warm_books"] is True and live["poll_mode"] == "busy"
    assert live["last_sequence"] == 30_000 and live["gaps"] == 0, f"a lossy run cannot be compared: {live['gaps']}"
    assert not any(v for v in live["drops"].values()), live["drops"]
    assert_books_equal_replay(live["books"], tmp_path / "stream.itch", 6)


@pytest.mark.parametrize("args", [["--path", "kernel", "--poll", "busy"], ["--path", "xdp", "--poll", "wakeup"]])
def test_warm_books_needs_an_xdp_busy_data_thread(lab, args):
    cp = subprocess.run([str(BIN / "hftcap"), "listen", "--netns", lab.host_ns, "-i", lab.host_if, "--feed", FEED,
                         *args, "--warm-books", "--duration", "1"], capture_output=True, text=True, timeout=bound(60))
    assert cp.returncode == 2 and "Traceback" not in cp.stderr, cp.stderr
    assert "--warm-books is for --path xdp --poll busy" in cp.stderr and "hint:" in cp.stderr, cp.stderr
