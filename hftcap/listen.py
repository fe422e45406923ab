"""`hftcap listen`: run a session until it is told to stop, then summarise it.

Python owns every check and decision (privileges, namespace, options), the session
(hftcap.session) composes the stages, and this module only waits, stops and reports."""
from __future__ import annotations

import os
import signal
import time

from .book.books import _book_json
from .errors import HftcapError
from .lab import netns as _netns
from .measure import latency
from .receive.options import ListenOptions, check_options
from .session import Session


class Stopper:
    """Turns SIGINT/SIGTERM into a flag the wait loop polls; restores the old handlers."""

    def __init__(self):
        self.reason: str | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.reason = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, h in self._old.items():
            signal.signal(sig, h)
        return False



def latency_summary(sess: Session) -> dict:
    """Per hop: percentiles in ns with the clock domain, or {"absent": reason}."""
    out = {}
    for hop, data in sess.hop_data().items():
        st = latency.hop_stats(sess.o.path, hop, data,
                               domain=sess.o.itch_clock if hop == "sender_to_book" else None)
        if st.absent:
            out[hop] = {"domain": st.domain, "absent": st.absent}
        else:
            out[hop] = {"domain": st.domain, **st.ns_summary()}
    return out


def final_book(books, symbol: str, levels: int = 10) -> dict:
    """The book of `symbol` in the form `hftcap book --json` gives it; symbol '*' gives every
    stock's, as {"books": {symbol: book}}."""
    if symbol == "*":
        return {"books": {sym: _book_json(books.book(loc, levels)) for loc, sym in books.symbols()}}
    try:
        loc = books.locate(symbol)
    except KeyError:
        return {"symbol": symbol, "book": None, "book_note": f"symbol {symbol!r} not seen on the feed"}
    return {"symbol": books.info(loc)["symbol"], "book": _book_json(books.book(loc, levels))}


def summary(sess: Session, elapsed: float, stop_reason: str) -> dict:
    st = sess.cap.stats()
    hw, why = sess.hw_timestamps(st)
    out = dict(sess.info())
    bst = sess.books_stats()
    drops = dict(st["drops"])
    drops.update(bst.get("drops", {}))
    out.update({
        "hw_timestamps": hw,
        "hw_timestamps_reason": why,
        "packets": st["packets"],
        "messages": st["messages"],
        "bytes": st["bytes"],
        "gaps": st["gaps"],
        "duplicates": st["duplicates"],
        "last_sequence": st["last_sequence"],
        "heartbeats": st["heartbeats"],
        "end_of_session": st["end_of_session"],
        "drops": drops,
        "messages_by_type": bst.get("messages", {}),
        "orders_live": bst.get("orders_live"),
        "xdp": sess.cap.xdp_stats() if sess.o.path == "xdp" else {},
        "latency": latency_summary(sess),
        "negative_samples": {k: v for k, v in sess.cap.negative().items() if v},
        "duration_s": round(elapsed, 6),
        "data_thread_cpu_s": round(sess.cap.info()["thread_cpu_ns"] / 1e9, 6),
        "stopped_by": stop_reason,
    })
    if sess.o.path == "xdp" and (sess.rx_queues or 1) > len(sess.bound_queues):
        out["warning"] = (f"{len(sess.bound_queues)} of {sess.rx_queues} RX queues bound: feed packets on the "
                          f"others reach the kernel (counted in xdp.pass_no_socket); bind them all with "
                          f"--queue all, or steer the feed with ethtool -N")
    return out


def _wait(sess: Session, o: ListenOptions, stopper: "Stopper", t0: float, *stop_events) -> str:
    """Until --count, --duration, a signal or one of stop_events; discards the warm-up's samples."""
    warm = o.warmup > 0
    while True:
        if warm and time.monotonic() - t0 >= o.warmup:
            sess.cap.reset_hists()
            warm = False
        step = 0.05
        if o.duration is not None:
            step = max(0.0, min(step, o.duration - (time.monotonic() - t0)))
        if sess.cap.wait(step):
            return "count"
        if stopper.reason:
            return stopper.reason
        if any(e is not None and e.is_set() for e in stop_events):
            return "quit"
        if o.duration is not None and time.monotonic() - t0 >= o.duration:
            return "duration"


def _run_live_view(sess: Session, o: ListenOptions, stopper: "Stopper", t0: float, symbol, title,
                   stop_event=None) -> str:
    """The rich live view in this (main) thread; a watcher thread ends it on --count,
    --duration or a signal. Returns the stop reason."""
    import threading

    from .view.live import LiveCapture
    from .view.tui import run_live
    view_done = threading.Event()
    stop_view = threading.Event()
    reason = {}

    def watch():
        reason["r"] = _wait(sess, o, stopper, t0, view_done, stop_event)
        stop_view.set()

    w = threading.Thread(target=watch, name="hftcap-watch", daemon=True)
    w.start()
    try:
        run_live(LiveCapture(sess), symbol=symbol, stop_event=stop_view, title=title)
    finally:
        view_done.set()
        w.join()
    r = reason.get("r", "quit")
    return r


def run_listen(o: ListenOptions, on_started=None, live: bool = False, symbol: str | None = None,
               title: str = "hftcap listen", stop_event=None) -> dict:
    """Open, run until Ctrl-C/SIGTERM/--duration/--count (or q in the live view), close;
    return the summary."""
    check_options(o)
    if os.geteuid() != 0:
        raise HftcapError("listen needs root (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW)",
                          hint="run it with sudo")
    if o.netns:
        _netns.enter(o.netns)
    with Stopper() as stopper:
        sess = Session(o)
        try:
            sess.start()
            if on_started:
                on_started(sess)
            t0 = time.monotonic()
            if live:
                reason = _run_live_view(sess, o, stopper, t0, symbol, title, stop_event)
            else:
                reason = _wait(sess, o, stopper, t0, stop_event)
            sess.cap.stop()
            elapsed = time.monotonic() - t0
            result = summary(sess, elapsed, reason)
            if symbol and sess.books is not None and not live:
                result.update(final_book(sess.books, symbol))
            if o.save:
                latency.save_result(o.save, {o.path: sess.hop_data()},
                                    sess.conditions(elapsed, result["messages"]))
                result["saved"] = o.save
        finally:
            sess.close()
    return result
