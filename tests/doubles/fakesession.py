"""A stand-in for hftcap.session.Session with the surface ListenCollector reads, over real C
histograms: counters are fixed numbers, hop data real _core.Histogram snapshots."""
from __future__ import annotations

import types

import numpy as np

from hftcap import _core
from hftcap.measure import latency as L


def hist_snap(values) -> L.HistSnapshot:
    h = _core.Histogram()
    h.record(np.ascontiguousarray(values, dtype=np.uint64))
    return L.HistSnapshot.from_histogram(h)


class FakeCap:
    def __init__(self, s, recovery=None):
        self.s = s
        self.report = recovery

    def recovery(self):
        return self.report() if callable(self.report) else self.report

    def stats(self):
        return {"packets": 1001, "bytes": 70_070, "messages": 4004, "gaps": 7, "gap_events": 2, "duplicates": 3,
                "heartbeats": 5, "end_of_session": 1, "sessions": 1, "last_sequence": 4011, "hw_stamped": 0,
                "io_errors": 0, "xsk_frames_foreseen": 990, "xsk_frames_not_foreseen": 11, "drops": {"mold_short": 4, "bad_feed": 0}}

    def xdp_stats(self):
        return {"redirected": 1001, "pass_not_feed": 9, "pass_no_socket": 0}

    def negative(self):
        return {h.name: (2 if h.name == "xdp_to_dequeue" else 0) for h in L.HOPS}


class FakeBooks:
    """symbols() and info() of a few stocks with their suspect / incomplete flags."""

    def __init__(self, flags: dict):
        self.flags = flags          # symbol -> (suspect, incomplete)

    def symbols(self):
        return [(i + 1, sym) for i, sym in enumerate(self.flags)]

    def info(self, loc):
        sym = list(self.flags)[loc - 1]
        s, inc = self.flags[sym]
        return {"symbol": sym, "suspect": s, "incomplete": inc}


class FakeCapfile:
    def __init__(self, figures: dict):
        self.figures = figures

    def live_stats(self):
        return dict(self.figures)


class FakeSnapshotClient:
    def __init__(self, result: dict):
        self._result = result

    def result(self):
        return dict(self._result)


class FakeSession:
    def __init__(self, hops: dict, recovery=None, feeds=("239.1.1.1:26400",), books=None, capfile=None,
                 snapshot=None):
        self.o = types.SimpleNamespace(path="xdp", interface="veth9", feeds=list(feeds))
        self.clocks = {"phc": None}
        self.cap = FakeCap(self, recovery)
        self._hops = hops
        self.books = FakeBooks(books or {})
        self.capfile = FakeCapfile(capfile) if capfile is not None else None
        self.snapshot_client = FakeSnapshotClient(snapshot) if snapshot is not None else None

    def info(self):
        return {"path": "xdp", "xdp_mode": "native", "bind_mode": "copy", "poll_mode": "wakeup",
                "interface": "veth9", "xdp_clock": "CLOCK_TAI", "itch_clock": "tai-midnight"}

    def books_stats(self):
        return {"messages": {"A": 3000, "D": 1004}, "drops": {"itch_unknown_type": 1}, "orders_live": 42}

    def hop_data(self):
        return dict(self._hops)
