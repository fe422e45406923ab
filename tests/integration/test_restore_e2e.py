"""Restore after a gap declared lost, in the lab: `hftcap exchange --loss` with its re-request
server off (every gap is lost) and its snapshot server on; `listen --snapshot --rerequest`
(to a port where nothing answers) joins late, then each lost gap sends the feed degraded and
the snapshot restores it: at the end the feed is synced, no stock is suspect, every restore
that began joined, and every book equals `hftcap book` on the exchange's --write file."""
from __future__ import annotations

import os
import select
import time

import pytest

from bounds import bound
from listenproc import FEED, FEED_PORT, Listener, assert_books_equal_replay, hftcap
from test_late_join import finish, start_exchange, wait_listening, wait_published

pytestmark = pytest.mark.root

GEN = ["--seed", 23, "--stocks", 6, "--messages", 60_000]   # start_exchange's stream
SNAP_PORT = 26510


def read_err(li, timeout_s: float = 0.2) -> None:
    """Whatever listen wrote to stderr by now, into li.err_lines (raw fd, as wait_ready)."""
    fd = li.p.stderr.fileno()
    r, _, _ = select.select([fd], [], [], timeout_s)
    if r:
        chunk = os.read(fd, 65536)
        li.err_lines += [ln + "\n" for ln in chunk.decode(errors="replace").splitlines()]


def restores(li) -> tuple[int, int]:
    began = sum("restoring its books" in ln for ln in li.err_lines)
    done = sum("feed restored from the snapshot" in ln for ln in li.err_lines)
    return began, done


@pytest.mark.parametrize("path", ["xdp", "kernel"])
def test_lost_gaps_are_restored_from_snapshots_books_equal(lab, tmp_path, path):
    hftcap("exchange", *GEN, "--write", tmp_path / "stream.itch")
    ex = start_exchange(lab, "--snapshot-port", SNAP_PORT, "--loss", 0.002, "--rerequest-port", 0)
    li = None
    try:
        wait_listening(lab)
        wait_published(lab, 20_000)
        li = Listener(lab, "--path", path, "--symbol", "*", "--duration", f"{bound(60):g}",
                      "--snapshot", f"{lab.ex_addr}:{SNAP_PORT}",
                      "--rerequest", f"{lab.ex_addr}:{FEED_PORT + 7}",   # nothing answers there
                      "--metrics-textfile", tmp_path / "hftcap.prom").wait_ready()
        while ex.poll() is None:  # the stream, its End of Session and the exchange's 2 s linger
            read_err(li)
        # Every loss was declared within the linger (25 ms after the End of Session at most);
        # wait, bounded, for the restores that began to have joined.
        deadline = time.monotonic() + bound(20)
        while restores(li)[1] < restores(li)[0] and time.monotonic() < deadline:
            read_err(li)
        sent, live = finish(ex, li)
    finally:
        ex.kill()
        if li:
            li.kill()
    began, done = restores(li)
    assert sent["lost_packets"] > 0 and sent["messages_sent"] + sent["lost_messages"] == 60_000
    rec = live["recovery"]["feeds"][FEED]
    assert rec["gaps_lost"] > 0 and rec["messages_lost"] > 0 and rec["replies"] == 0
    snap = live["snapshot"]
    r = snap["restores"]
    assert began >= 1 and began == done == r["started"] == r["completed"], (began, done, r, li.err_lines)
    assert r["in_progress"] is False and r["error"] is None and r["max_ms"] > 0
    assert snap["state"] == "live" and snap["error"] is None
    # every buffered message was applied or discarded at a splice, none lost to a full buffer
    assert snap["buffer_overwritten"] == 0
    assert snap["buffered"] == snap["buffered_applied"] + snap["buffered_discarded"]
    assert live["feed_states"][FEED] == "synced" and rec["state"] == "synced"
    assert live["suspect_books"] == 0 and "recovery_warning" not in live
    assert live["restore_note"].startswith(f"{done} of {began} restores")
    assert live["last_sequence"] == 60_000
    # the textfile's last write (after the data thread stopped) holds the restores as the JSON does
    from prometheus_client.parser import text_string_to_metric_families
    from hftcap.ops import metrics as M
    val = {s.name: s.value for f in text_string_to_metric_families((tmp_path / "hftcap.prom").read_text())
           for s in f.samples}
    assert val["hftcap_snapshot_restores_started_total"] == r["started"]
    assert val["hftcap_snapshot_restores_total"] == r["completed"] == done
    for key in ("last_ms", "max_ms"):
        spec = M.SNAPSHOT_RESTORES[key]
        assert val[spec.name] == pytest.approx(r[key] * spec.scale, rel=1e-12), key
    assert_books_equal_replay(live["books"], tmp_path / "stream.itch", 6)
