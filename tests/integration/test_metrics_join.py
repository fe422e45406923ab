"""The late join's figures as metrics: `listen --snapshot` (and without it) with
--metrics-textfile; the textfile's last write, made after the data thread stopped, holds the
snapshot's state and figures and the books' incomplete count exactly as listen's final JSON."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bounds import bound
from test_late_join import SNAP_PORT, join_late

pytestmark = pytest.mark.root


def _read(path) -> tuple[dict, dict]:
    fam = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    val = {s.name: s.value for f in fam.values() for s in f.samples if not s.labels}
    return fam, val


def test_snapshot_join_metrics_equal_the_json(lab, tmp_path):
    from hftcap.ops import metrics as M
    tf = tmp_path / "hftcap.prom"
    _, sent, live = join_late(lab, ["--snapshot-port", SNAP_PORT], "--duration", f"{bound(60):g}",
                              "--snapshot", f"{lab.ex_addr}:{SNAP_PORT}", "--metrics-textfile", tf,
                              "--metrics-interval", 0.2)
    snap = live["snapshot"]
    # (how many buffered messages are applied or discarded depends on timing: only equality is asserted)
    assert snap["state"] == "live" and snap["orders_loaded"] > 0, snap
    fam, val = _read(tf)
    assert val["hftcap_up"] == 0 and val["hftcap_messages_total"] == live["messages"]
    states = {s.labels["state"]: s.value for s in fam["hftcap_snapshot_state"].samples}
    assert states == {s: float(s == "live") for s in M.JOIN_STATES}
    for key, spec in M.SNAPSHOT.items():
        name = spec.name
        assert val[name] == pytest.approx(snap[key] * spec.scale, rel=1e-12), key
    assert val["hftcap_books_incomplete_stocks"] == live["incomplete_books"] == 0
    assert live["metrics_textfile"]["errors"] == 0


def test_join_without_snapshot_counts_incomplete_books(lab, tmp_path):
    tf = tmp_path / "hftcap.prom"
    _, sent, live = join_late(lab, ["--snapshot-port", SNAP_PORT, "--rerequest-port", 0],   # to see it publish
                              "--duration", f"{bound(60):g}", "--metrics-textfile", tf)
    fam, val = _read(tf)
    assert live["late_join"] is not None and live["incomplete_books"] > 0
    assert val["hftcap_books_incomplete_stocks"] == live["incomplete_books"]
    assert val["hftcap_books_suspect_stocks"] == 0
    assert "hftcap_snapshot_state" not in fam and "hftcap_snapshot_orders_loaded" not in val
