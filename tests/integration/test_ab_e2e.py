"""A/B lines end to end in the lab: `hftcap exchange --feed-b` publishes the same packets on a
second group with its own seeded loss, and records what each line dropped; `hftcap listen
--feed-b` merges the lines by sequence number. Without a re-request server the only messages
lost are the ones both lines missed; with one, nothing is lost and only those are asked for; a
B line that goes silent is reported down, then up, and the books stay exact."""
from __future__ import annotations

import json

import pytest

from listenproc import FEED, FEED_PORT, Listener, hftcap
from sequences import runs

pytestmark = pytest.mark.root

FEED_B = f"239.1.2.1:{FEED_PORT}"
GEN = ["--seed", 21, "--stocks", 6, "--messages", 40_000]
# Gap timeout and request timeout sized for a shared, preempted VM (1-20 ms stalls): the B
# copy of a packet is never late by that much, so the accounting is exact by construction.
WAIT = ["--gap-timeout", 0.25, "--request-timeout", 0.1]


def _exchange(lab, *extra):
    return json.loads(hftcap("exchange", "--netns", lab.ex_ns, "--feed", FEED, "--feed-b", FEED_B, *GEN,
                             "--msg-rate", 40_000, "-k", 6, "--json", *extra))


def _msgs(ranges):
    return {s for a, b in ranges for s in range(a, b + 1)}


def _run(lab, li, *extra):
    """The exchange (with `extra`) while `li` listens, then `li` stopped: what the exchange sent,
    li's final JSON, and the messages line A and line B lost."""
    try:
        sent = _exchange(lab, *extra)
        li.p.send_signal(2)
        live = li.result()
    finally:
        li.kill()
    return sent, live, _msgs(sent["lost_ranges"]), _msgs(sent["line_b"]["lost_ranges"])


def _books_equal(tmp_path, live):
    for sym, book in live["books"].items():
        off = json.loads(hftcap("book", tmp_path / "stream.itch", "--symbol", sym, "--json"))
        assert off["book"] == book, sym
    assert len(live["books"]) == 6


def _lines(live):
    lines = live["recovery"]["feeds"][FEED]["lines"]
    for k in ("a", "b"):
        ln = lines[k]
        assert ln["messages"] == ln["wins"] + ln["duplicates"], (k, ln)
    return lines


@pytest.mark.parametrize("path,poll", [("xdp", "wakeup"), ("kernel", "busy")])
def test_no_server_loses_only_what_both_lines_missed(lab, path, poll):
    li = Listener(lab, "--path", path, "--poll", poll, "--feed-b", FEED_B, "--duration", 40,
                  *WAIT).wait_ready()
    sent, live, a, b = _run(lab, li, "--loss", 0.02, "--loss-b", 0.02, "--rerequest-port", 0, "--linger", 0.5)
    both = a & b
    assert sent["lost_messages"] == len(a) and sent["line_b"]["lost_messages"] == len(b)
    assert both, "the seed makes both lines lose some packets (4 runs)"
    assert a - both and b - both, "each line must lose messages the other one has"
    rec = live["recovery"]["feeds"][FEED]
    assert rec["lost_ranges"] == runs(both)
    assert rec["messages_lost"] == len(both) and rec["gaps_lost"] == len(runs(both))
    assert rec["requests_sent"] == 0
    assert rec["state"] == "degraded"
    assert live["messages"] == 40_000 - len(both)
    lines = _lines(live)
    assert lines["a"]["wins"] + lines["b"]["wins"] == 40_000 - len(both)
    assert lines["b"]["wins"] >= len(a - both), "every message A missed and B had came from B"
    assert lines["a"]["wins"] >= len(b - both)
    assert lines["a"]["messages"] == sent["messages_sent"] and lines["b"]["messages"] == sent["line_b"]["messages_sent"]
    assert lines["a"]["down_events"] == lines["b"]["down_events"] == 0
    lag = lines["a"]["lag"]["count"] + lines["b"]["lag"]["count"]
    assert lag == lines["a"]["late_copies"] + lines["b"]["late_copies"] > 0


@pytest.mark.parametrize("path,poll", [("kernel", "wakeup"), ("xdp", "busy")])
def test_with_server_zero_lost_and_asks_only_what_both_missed(lab, tmp_path, path, poll):
    hftcap("exchange", *GEN, "--write", tmp_path / "stream.itch")
    li = Listener(lab, "--path", path, "--poll", poll, "--feed-b", FEED_B, "--symbol", "*", "--duration", 40,
                  "--rerequest", f"{lab.ex_addr}:{FEED_PORT + 1}", "--request-max", 2000, *WAIT).wait_ready()
    sent, live, a, b = _run(lab, li, "--loss", 0.02, "--loss-b", 0.02, "--dup-b", 0.005, "--reorder", 0.005,
                            "--linger", 1.0)
    both = a & b
    assert both, "the seed makes both lines lose some packets (4 runs)"
    rec = live["recovery"]["feeds"][FEED]
    assert rec["gaps_lost"] == 0 and rec["messages_lost"] == 0 and rec["state"] == "synced", rec
    assert rec["messages_recovered"] == len(both)
    # one request per missing run (a run is at most 2000 messages), none for a message one line had
    assert rec["requests_sent"] == rec["timeouts"] + len(runs(both)) + rec["remainders"]
    served = sent["rerequests"]
    assert served["reply_messages"] >= len(both) and served["requests"] == rec["requests_sent"]
    assert live["messages"] == 40_000 and live["suspect_books"] == 0
    _books_equal(tmp_path, live)


@pytest.mark.parametrize("path", ["xdp", "kernel"])
def test_line_b_down_mid_run_reported_then_up_books_exact(lab, tmp_path, path):
    hftcap("exchange", *GEN, "--write", tmp_path / "stream.itch")
    li = Listener(lab, "--path", path, "--feed-b", FEED_B, "--symbol", "*", "--duration", 40,
                  "--line-down-timeout", 0.3, *WAIT).wait_ready()
    try:
        # 40,000 messages at 40k msg/s: 1 s; the B line is silent from 0.2 s for 0.6 s
        sent = _exchange(lab, "--outage-b", "0.2:0.6", "--rerequest-port", 0, "--linger", 0.2)
        li.p.send_signal(2)
        out, err = li.p.communicate(timeout=30)
        assert li.p.returncode == 0, err
        live = json.loads(out)
        err = "".join(li.err_lines) + err
    finally:
        li.kill()
    assert f"line B of {FEED} down: silent" in err and f"line B of {FEED} up again after" in err, err
    assert sent["line_b"]["outage_packets"] > 0 and sent["lost_packets"] == 0
    lines = _lines(live)
    b = lines["b"]
    assert b["down_events"] == 1 and b["up_events"] == 1 and b["state"] == "up", b
    assert [e["event"] for e in lines["events"]] == ["down", "up"]
    down, up = lines["events"]
    assert down["line"] == up["line"] == "b"
    assert down["silent_ns"] > 0.3e9 and up["silent_ns"] >= down["silent_ns"] and b["downtime_ns"] == up["silent_ns"]
    assert b["gap_messages"] == sent["line_b"]["lost_messages"]
    assert lines["a"]["down_events"] == 0
    rec = live["recovery"]["feeds"][FEED]
    assert rec["gaps_lost"] == 0 and rec["state"] == "synced"
    assert live["messages"] == 40_000 and live["suspect_books"] == 0
    _books_equal(tmp_path, live)
