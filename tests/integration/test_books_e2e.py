"""End to end in the lab: `hftcap exchange` -> `hftcap listen` gives, for every stock, the
same final book as `hftcap book` on the file the exchange wrote with --write for the same seed."""
from __future__ import annotations

import json

import pytest

from listenproc import FEED, Listener, assert_books_equal_replay, hftcap

pytestmark = pytest.mark.root


@pytest.mark.parametrize("path", ["xdp", "kernel"])
def test_live_books_equal_offline_replay(lab, tmp_path, path):
    gen = ["--seed", 11, "--stocks", 6, "--messages", 60_000]
    hftcap("exchange", *gen, "--write", tmp_path / "stream.itch")
    li = Listener(lab, "--path", path, "--symbol", "*", "--duration", 30).wait_ready()
    try:
        sent = json.loads(hftcap("exchange", "--netns", lab.ex_ns, "--feed", FEED, *gen, "--msg-rate", 100_000,
                                 "-k", 6, "--linger", 0, "--json"))
        li.stop_after_end_of_session()
        live = li.result()
    finally:
        li.kill()
    assert sent["messages_sent"] == 60_000
    assert live["messages"] == 60_000 and live["gaps"] == 0, "a lossy run cannot be compared"
    assert not any(v for v in live["drops"].values()), live["drops"]
    assert sum(live["messages_by_type"].values()) == 60_000
    assert_books_equal_replay(live["books"], tmp_path / "stream.itch", 6)
    for sym, book in live["books"].items():
        assert float(book["bids"][0][0]) < float(book["asks"][0][0]), f"{sym}: crossed"
