"""Late join in the lab: the exchange publishes a third of a generated stream, then `listen`
starts. With --snapshot it loads the exchange's GLIMPSE-style spin and its final books equal
`hftcap book` on the whole stream's --write file; without it, it says the books are incomplete."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from listenproc import FEED, Listener, assert_books_equal_replay, hftcap
from bounds import bound, scale

pytestmark = pytest.mark.root

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
GEN = ["--seed", 23, "--stocks", 6, "--messages", 60_000]
SNAP_PORT = 26510


def start_exchange(lab, *extra):
    """The stream paced so that a listener started after its first third (20,000 of 60,000
    messages) is ready well before its end: 8,000 msg/s leaves 5 s on the reference machine, and
    the rate is divided by the suite's time scale (tests/bounds.py) on a slower one, where the
    listener's start-up is slower by as much (the exchange's own --duration, 60 s by default, then
    a bound too)."""
    rate = max(100, round(8_000 / scale()))
    return subprocess.Popen([str(BIN / "hftcap"), "exchange", "--netns", lab.ex_ns, "--feed", FEED, *map(str, GEN),
                             *map(str, ["--msg-rate", rate, "-k", 6, "--linger", 2, "--json",
                                        "--duration", f"{bound(120):g}", *extra])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def published(lab, port=SNAP_PORT, mode="spin") -> int:
    cp = subprocess.run(["ip", "netns", "exec", lab.host_ns, sys.executable, str(HERE / "snapprobe.py"),
                         lab.ex_addr, str(port), mode], capture_output=True, text=True, timeout=bound(30))
    return int(cp.stdout.strip() or 0)


def wait_listening(lab, timeout=bound(20.0)) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if published(lab, mode="connect"):
            return
    raise AssertionError(f"the snapshot server did not listen within {timeout} s")


def wait_published(lab, at_least: int, timeout=bound(20.0)) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = published(lab)
        if n > at_least:
            return n
    raise AssertionError(f"the exchange did not publish {at_least} messages within {timeout} s")


def finish(ex, li, end_of_session=True):
    """The exchange's end, then the listener's: once it has taken the End of Session, or (a
    listener that joined late, which may have started after the stream's end) at once."""
    out, err = ex.communicate(timeout=bound(60))
    assert ex.returncode == 0, err
    if end_of_session:
        li.stop_after_end_of_session()
    else:
        li.p.send_signal(2)
    return json.loads(out), li.result()


def join_late(lab, exchange_args, *listen_args, end_of_session=True):
    """The exchange started with `exchange_args`; once it has published 20,000 messages, a
    listener with `listen_args`; both to their end (finish), and killed whatever happens.
    Returns (what the probe saw published then, the exchange's JSON, the listener's)."""
    ex = start_exchange(lab, *exchange_args)
    li = None
    try:
        third = wait_published(lab, 20_000)
        li = Listener(lab, *listen_args).wait_ready()
        sent, live = finish(ex, li, end_of_session=end_of_session)
    finally:
        ex.kill()
        if li:
            li.kill()
    return third, sent, live


@pytest.mark.parametrize("path", ["xdp", "kernel"])
def test_late_join_with_snapshot_books_equal(lab, tmp_path, path):
    hftcap("exchange", *GEN, "--write", tmp_path / "stream.itch")
    third, sent, live = join_late(lab, ["--snapshot-port", SNAP_PORT], "--path", path, "--symbol", "*",
                                  "--duration", f"{bound(60):g}", "--snapshot", f"{lab.ex_addr}:{SNAP_PORT}")
    assert sent["messages_sent"] == 60_000
    snap = live["snapshot"]
    assert snap["state"] == "live" and snap["error"] is None, snap
    n = snap["end_of_snapshot_sequence"]
    assert n > third, "the snapshot was taken after the probe saw a third"
    assert snap["first_buffered_sequence"] <= n
    # Every message from the join on is either discarded (< N) or applied, exactly.
    assert snap["buffered"] == snap["buffered_applied"] + snap["buffered_discarded"]
    assert live["last_sequence"] == 60_000 and live["gaps"] == 0, f"a lossy run cannot be compared: {live['gaps']}"
    assert snap["orders_loaded"] > 0 and snap["framing"]["unknown_type"] == 0
    assert "late_join" not in live, "with --snapshot the summary reports the snapshot instead"
    assert not any(v for v in live["drops"].values()), live["drops"]
    assert_books_equal_replay(live["books"], tmp_path / "stream.itch", 6)


def test_late_join_without_snapshot_is_incomplete(lab):
    _, sent, live = join_late(lab, ["--snapshot-port", SNAP_PORT, "--rerequest-port", 0],  # snapshots alone
                              "--path", "kernel", "--duration", f"{bound(60):g}", "--symbol", "*", end_of_session=False)
    lj = live["late_join"]
    assert lj and lj["incomplete"] and lj["first_sequence"][0] > 20_000, lj
    assert lj["unknown_ref_incomplete"] == live["drops"]["itch_unknown_ref_incomplete"] > 0
    assert live["drops"]["itch_unknown_ref"] == 0, "unknown references are all counted apart"
    # and per stock: the stocks' own counts add up to them, and each stock traded has some
    per = live["unknown_refs"]
    assert sum(per.values()) == lj["unknown_ref_incomplete"] and len(per) >= 1, per
    assert "mid-session" in lj["note"]


def test_login_rejected_one_error_line(lab, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    ex = start_exchange(lab, "--snapshot-port", SNAP_PORT, "--snapshot-user", "me", "--snapshot-password-file", pw)
    try:
        wait_listening(lab)  # so the one attempt meets the server, not a refused connect
        cp = subprocess.run([str(BIN / "hftcap"), "listen", "--netns", lab.host_ns, "-i", lab.host_if, "--feed", FEED,
                             "--path", "kernel", "--duration", f"{bound(30):g}", "--json", "--snapshot",
                             f"{lab.ex_addr}:{SNAP_PORT}", "--snapshot-user", "me", "--snapshot-password-env",
                             "HC_TEST_PW"],
                            capture_output=True, text=True, timeout=bound(60),
                            env={"PATH": "/usr/sbin:/usr/bin:/bin", "HC_TEST_PW": "wrong"})
    finally:
        ex.kill()
        ex.communicate()
    assert cp.returncode == 1
    errs = [ln for ln in cp.stderr.splitlines() if ln.startswith("hftcap: error:")]
    assert errs == [f"hftcap: error: snapshot from {lab.ex_addr}:{SNAP_PORT}: login rejected: not authorised "
                    "(user or password)"], cp.stderr
    assert "Traceback" not in cp.stderr
    summary = json.loads(cp.stdout)
    assert summary["stopped_by"] == "snapshot_failed" and summary["snapshot"]["attempts"] == 1
    assert summary["snapshot"]["failures"] == [], "a rejected login is not retried"


def test_snapshot_options_are_checked():
    from conftest import run_hftcap
    cp = run_hftcap("listen", "-i", "lo", "--feed", "239.1.1.1:26400", "--snapshot", "nohostport")
    assert cp.returncode == 2 and "bad --snapshot 'nohostport'" in cp.stderr
    cp = run_hftcap("listen", "-i", "lo", "--feed", "239.1.1.1:26400", "--snapshot", "127.0.0.1:1",
                    "--snapshot-password-env", "HC_SURELY_UNSET_VAR")
    assert cp.returncode == 2 and "HC_SURELY_UNSET_VAR: the variable is not set" in cp.stderr
    cp = run_hftcap("listen", "-i", "lo", "--feed", "239.1.1.1:26400", "--join-buffer", "10")
    assert cp.returncode == 2 and "bad --join-buffer 10" in cp.stderr
