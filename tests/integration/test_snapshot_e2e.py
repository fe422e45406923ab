"""End to end in the lab with hftcap Book Snapshots 'Z' (not ITCH 5.0): `hftcap exchange --mode
snapshot` -> `hftcap listen` gives, for every stock, the same top N levels as `hftcap book` on
the delta stream of the same seed; `hftcap bench --compare-snapshots` measures both sides."""
from __future__ import annotations

import json

import pytest

from listenproc import FEED, Listener, hftcap

pytestmark = pytest.mark.root
BOOK_TYPES = set("AFECXDU")



@pytest.mark.parametrize("path", ["xdp", "kernel"])
def test_snapshot_stream_gives_the_delta_replays_top_levels(lab, tmp_path, path):
    gen = ["--seed", 13, "--stocks", 6, "--messages", 40_000]
    levels = 5
    hftcap("exchange", *gen, "--write", tmp_path / "delta.itch")
    li = Listener(lab, "--path", path, "--symbol", "*", "--duration", 30).wait_ready()
    try:
        sent = json.loads(hftcap("exchange", "--netns", lab.ex_ns, "--feed", FEED, *gen, "--msg-rate", 100_000,
                                 "-k", 6, "--linger", 0, "--mode", "snapshot", "--levels", levels, "--json"))
        li.stop_after_end_of_session()
        live = li.result()
    finally:
        li.kill()
    conv = sent["conversion"]
    assert sent["mode"] == "snapshot" and sent["messages_sent"] == 40_000
    assert conv["snapshots"] + conv["passed"] == 40_000 and conv["snapshots"] > 30_000
    assert live["messages"] == 40_000 and live["gaps"] == 0, "a lossy run cannot be compared"
    assert not any(v for v in live["drops"].values()), live["drops"]
    by_type = live["messages_by_type"]
    assert by_type["Z"] == conv["snapshots"] and not BOOK_TYPES & set(by_type)
    assert sum(by_type.values()) == 40_000
    assert len(live["books"]) == 6
    for sym, book in live["books"].items():
        off = json.loads(hftcap("book", tmp_path / "delta.itch", "--symbol", sym, "--levels", levels, "--json"))
        assert off["book"] == book, sym
        assert len(book["bids"]) == len(book["asks"]) == levels, f"{sym}: a short side proves less"


def test_bench_compare_snapshots():
    import uuid

    from rich.console import Console

    from hftcap.measure.bench import render, run_bench
    doc = run_bench(rounds=1, seconds=1.0, warmup=0.2, msg_rate=20_000, stocks=8, paths=["xdp-wakeup"],
                    lab_name="b" + uuid.uuid4().hex[:6], compare_snapshots=True, snapshot_levels=5)
    con = Console(record=True, width=160)
    render(doc, con)
    assert "deltas vs Book Snapshots" in con.export_text()
    d = doc["snapshot_vs_delta"]
    assert d["path"] == "xdp-wakeup" and d["levels_per_side"] == 5 and d["snapshot_message_bytes"] == 132
    dl, sn = d["delta"], d["snapshot"]
    for side in (dl, sn):
        assert side["trials"] == 1 and side["received_messages"] == side["sent_messages"] == 24_000
        assert side["book_updates"] > 20_000 and side["packets"] > 0
        assert side["bytes_per_update"] > 0 and side["cpu_ns_per_update"] > 0
        assert side["sender_to_book"] and side["sender_to_book"]["count"] > 0
    assert dl["book_updates"] == sn["book_updates"], "the same updates on both sides"
    assert sn["bytes"] > dl["bytes"] and sn["bytes_per_update"] > 3 * dl["bytes_per_update"]
    assert sn["packets"] == dl["packets"], "4 snapshots of 134 B fit one packet: same packets"
    assert doc["paths"]["xdp-wakeup"]["received"] == 24_000  # the regular table is still there
