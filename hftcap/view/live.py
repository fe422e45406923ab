"""The live view's data source: a running capture Session seen through snapshots.

Implements hftcap.view.tui.LiveSource. Every call copies from the C core (counters, books under
their seqlock, histograms as one buffer) and never blocks the data thread."""
from __future__ import annotations

import time
from collections import deque

from ..measure import latency, progcost

SPARK_POINTS = 40


class LiveCapture:
    def __init__(self, sess):
        # sess: a running hftcap.session.Session, handed in: the view never imports the pipeline
        self.sess = sess
        self._prev: dict[str, latency.HistSnapshot] | None = None
        self._prev_t = 0.0
        self._interval: dict[str, latency.HopStats] = {}
        self._spark: dict[str, deque] = {}
        self.min_interval_s = 0.5

    # -- status and counters --
    def status(self) -> dict:
        i = self.sess.info()
        clk = self.sess.clocks
        return {
            "interface": i["interface"], "netns": i["netns"], "path": i["path"],
            "xdp_mode": i.get("xdp_mode") or "-", "bind_mode": i.get("bind_mode") or "-",
            "poll_mode": i["poll_mode"], "cpu": i["cpu"], "queue": i["queue"],
            "hw_clock": (clk.get("status") or "unknown").removeprefix("hw clock: "),
            "ptp": _ptp_state(clk),
            "uptime_s": time.monotonic() - (self.sess.started_mono or time.monotonic()),
            "xdp_program": (progcost.describe(self.sess.xdp_program_cost())
                            if hasattr(self.sess, "xdp_program_cost") and i["path"] == "xdp" else None),
        }

    def counters(self) -> dict:
        st = self.sess.cap.stats()
        books = self.sess.books_stats() if hasattr(self.sess, "books_stats") else {}
        drops = dict(st["drops"])
        drops.update(books.get("drops", {}))
        return {
            "packets": st["packets"], "messages": st["messages"], "bytes": st["bytes"],
            "gaps": st["gaps"], "duplicates": st["duplicates"], "drops": drops,
            "xdp": self.sess.cap.xdp_stats() if self.sess.o.path == "xdp" else {},
            "messages_by_type": books.get("messages", {}),
            "recovery": self._recovery(),
            "join": self._join(),
        }

    def _join(self) -> dict | None:
        """With --snapshot: {feed, phase (loading / restoring / live), state, orders_loaded,
        messages_loaded, bytes (of the load under way), restores, hole_left}; else None."""
        client = getattr(self.sess, "snapshot_client", None)
        if client is None:
            return None
        return {"feed": str(self.sess.o.feeds[0]), **client.progress()}

    def _recovery(self) -> dict:
        """{feed: {state, gaps_seen, messages_recovered, gaps_lost, requests_sent}}; {} without
        --rerequest."""
        rep = self.sess.cap.recovery() if hasattr(self.sess.cap, "recovery") else None
        if not rep:
            return {}
        keys = ("gaps_seen", "messages_recovered", "messages_late", "gaps_lost", "requests_sent")
        out = {}
        for f, r in zip(self.sess.o.feeds, rep["feeds"]):
            out[str(f)] = {"state": r["state"], **{k: r["stats"][k] for k in keys}}
            if r.get("lines"):  # A/B: each line's state, up or down
                out[str(f)]["lines"] = {k: r["lines"][k]["state"] for k in ("a", "b")}
        return out

    # -- books (filled in by the session's books, when it keeps them) --
    def symbols(self):
        return self.sess.symbols() if hasattr(self.sess, "symbols") else []

    def book(self, locate: int, levels: int) -> dict:
        return self.sess.book(locate, levels)

    def trades(self, locate: int, n: int):
        return self.sess.trades(locate, n)

    # -- latency --
    def latency(self) -> dict:
        path = self.sess.o.path
        data = self.sess.hop_data()
        now = time.monotonic()
        cur = {h: d for h, d in data.items() if isinstance(d, latency.HistSnapshot)}
        if self._prev is None or now - self._prev_t >= self.min_interval_s:
            if self._prev is not None:
                self._interval = {h: latency.interval_stats(path, h, self._prev[h], cur[h]) for h in cur}
                for h, st in self._interval.items():
                    if st.p50 is not None:
                        self._spark.setdefault(h, deque(maxlen=SPARK_POINTS)).append(float(st.p50))
            self._prev, self._prev_t = cur, now
        out = {}
        for h, d in data.items():
            dom = self.sess.o.itch_clock if h == "sender_to_book" else latency.HOP_BY_NAME[h].domain_short
            st = latency.hop_stats(path, h, d, domain=dom)
            if st.absent:
                out[h] = {"domain": dom, "absent": st.absent, "since_start": None, "interval": None,
                          "spark": []}
                continue
            iv = self._interval.get(h)
            out[h] = {"domain": dom, "absent": None, "since_start": _pct(st),
                      "interval": _pct(iv) if iv is not None and not iv.absent else None,
                      "spark": list(self._spark.get(h, ()))}
        return out

    def reset_latency(self) -> None:
        self.sess.reset_hists()
        self._prev = None
        self._interval = {}
        self._spark = {}


def _pct(st: latency.HopStats) -> dict:
    return {"p50": st.p50, "p99": st.p99, "p999": st.p99_9, "max": st.max, "count": st.count}


def _ptp_state(clk: dict) -> str:
    if not clk.get("phc"):
        return "n/a (no PHC)"
    who = []
    if clk.get("ptp4l"):
        who.append("ptp4l")
    if clk.get("phc2sys"):
        who.append("phc2sys")
    state = "synced to TAI" if clk.get("synced_to_tai") else f"not synced ({clk.get('sync_reason')})"
    return f"{'+'.join(who) or 'no ptp daemons'}, {state}"
