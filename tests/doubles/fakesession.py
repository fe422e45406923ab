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
    def __init__(self, s):
        self.s = s

    def stats(self):
        return {"packets": 1001, "bytes": 70_070, "messages": 4004, "gaps": 7, "gap_events": 2, "duplicates": 3,
                "heartbeats": 5, "end_of_session": 1, "sessions": 1, "last_sequence": 4011, "hw_stamped": 0,
                "io_errors": 0, "drops": {"mold_short": 4, "bad_feed": 0}}

    def xdp_stats(self):
        return {"redirected": 1001, "pass_not_feed": 9, "pass_no_socket": 0}

    def negative(self):
        return {h.name: (2 if h.name == "xdp_to_dequeue" else 0) for h in L.HOPS}


class FakeSession:
    def __init__(self, hops: dict):
        self.o = types.SimpleNamespace(path="xdp", interface="veth9")
        self.clocks = {"phc": None}
        self.cap = FakeCap(self)
        self._hops = hops

    def info(self):
        return {"path": "xdp", "xdp_mode": "native", "bind_mode": "copy", "poll_mode": "wakeup",
                "interface": "veth9", "xdp_clock": "CLOCK_TAI", "itch_clock": "tai-midnight"}

    def books_stats(self):
        return {"messages": {"A": 3000, "D": 1004}, "drops": {"itch_unknown_type": 1}, "orders_live": 42}

    def hop_data(self):
        return dict(self._hops)
