"""`hftcap listen`: run a session until it is told to stop, then summarise it.

Python owns every check and decision (privileges, namespace, options), the session
(hftcap.session) composes the stages, and this module only waits, stops and reports."""
from __future__ import annotations

import os
import signal
import sys
import time

from .book.books import _book_json
from .errors import HftcapError
from .feed import recovery
from .lab import netns as _netns
from .measure import latency, progcost
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
        return {"books": {sym: _book_json(books.book(loc, levels)) for loc, sym in books.symbols()},
                "suspect": sorted(sym for loc, sym in books.symbols() if books.info(loc).get("suspect")),
                "unknown_refs": books.unknown_refs()}
    try:
        loc = books.locate(symbol)
    except KeyError:
        return {"symbol": symbol, "book": None, "book_note": f"symbol {symbol!r} not seen on the feed"}
    info = books.info(loc)
    return {"symbol": info["symbol"], "book": _book_json(books.book(loc, levels)),
            "suspect": bool(info.get("suspect")), "unknown_refs": info.get("unknown_refs", 0)}


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
        # Frames the kernel dropped at the AF_XDP sockets (their rings full, or no fill frame).
        "xsk_drops": sess.cap.xsk_drops() if sess.o.path == "xdp" else {},
        # The first frames of each RX batch: the ones the data thread foresaw from the fill ring (and
        # prefetched before reading their descriptors), and the ones it did not.
        "xsk_frames": ({"foreseen": st["xsk_frames_foreseen"], "not_foreseen": st["xsk_frames_not_foreseen"]}
                       if sess.o.path == "xdp" else {}),
        "xdp_program_cost": sess.xdp_program_cost(),
        "latency": latency_summary(sess),
        "negative_samples": {k: v for k, v in sess.cap.negative().items() if v},
        "duration_s": round(elapsed, 6),
        "data_thread_cpu_s": round(sess.cap.info()["thread_cpu_ns"] / 1e9, 6),
        "stopped_by": stop_reason,
    })
    from .ops.metrics import book_flag_counts
    flags = book_flag_counts(sess.books)
    out["incomplete_books"] = flags["incomplete"]
    rec = recovery.shape(sess.cap.recovery(), sess.o.feeds)
    if rec is not None:
        out["recovery"] = rec
        out["feed_states"] = {f: r["state"] for f, r in rec["feeds"].items()}
        suspect = flags["suspect"]
        out["suspect_books"] = suspect
        line = recovery.exit_line(rec, suspect)
        if line:
            out["recovery_warning"] = line
    out.update(join_summary(sess, st, drops))
    if sess.doctor is not None:
        out["doctor"] = sess.doctor.to_dict()
    if sess.o.path == "xdp" and (sess.rx_queues or 1) > len(sess.bound_queues):
        out["warning"] = (f"{len(sess.bound_queues)} of {sess.rx_queues} RX queues bound: feed packets on the "
                          f"others reach the kernel (counted in xdp.pass_no_socket); bind them all with "
                          f"--queue all, or steer the feed with ethtool -N")
    return out


def join_summary(sess: Session, st: dict, drops: dict) -> dict:
    """The late join: the snapshot's figures with --snapshot; without it, whether the feed was
    joined mid-session (first sequence not 1): its stocks are then incomplete and unknown
    references to orders added before the join are counted apart."""
    if sess.snapshot_client is not None:
        snap = sess.snapshot_client.result()
        out = {"snapshot": snap}
        r = snap["restores"]
        if r["started"]:
            out["restore_note"] = (f"{r['completed']} of {r['started']} restores from the snapshot after a gap "
                                   f"declared lost" + (" (one under way at the end: books incomplete)"
                                                       if r["in_progress"] else "")
                                   + (f"; last synced {r['last_ms']} ms after its loss" if r["last_ms"] is not None
                                      else ""))
        return out
    firsts = st.get("first_sequence", [])
    late = [s for s in firsts if s and s != 1]
    if not late:
        return {"late_join": None}
    return {"late_join": {
        "first_sequence": firsts, "incomplete": True,
        "unknown_ref_incomplete": drops.get("itch_unknown_ref_incomplete", 0),
        "note": (f"joined mid-session at sequence {min(late)} without --snapshot: every stock is "
                 "incomplete (orders added before the join are unknown); their unknown-reference "
                 "drops are counted apart (itch_unknown_ref_incomplete)")}}


def _wait(sess: Session, o: ListenOptions, stopper: "Stopper", t0: float, *stop_events) -> str:
    """Until --count, --duration, a signal or one of stop_events; discards the warm-up's samples."""
    warm = o.warmup > 0
    lines = LineEvents(sess) if o.feeds_b else None
    while True:
        if lines is not None:
            lines.poll()
        if warm and time.monotonic() - t0 >= o.warmup:
            sess.reset_hists()
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
        if sess.capfile is not None:
            r = sess.capfile.tick()
            if r:
                return r
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


def host_doctor(o: ListenOptions):
    """The doctor's Report for this capture (interface, namespace, CPU, queues), or None when
    it cannot read the interface (Session then says why in its own words)."""
    from .ops.doctor import run_doctor
    queues = "all" if o.queues == "all" else [int(x) for x in o.queues.split(",")] if o.queues else [o.queue]
    try:
        return run_doctor(o.interface, cpu=o.cpu, netns=o.netns, queues=queues)
    except HftcapError:
        return None


def run_listen(o: ListenOptions, on_started=None, live: bool = False, symbol: str | None = None,
               title: str = "hftcap listen", stop_event=None, on_doctor=None) -> dict:
    """Open, run until Ctrl-C/SIGTERM/--duration/--count (or q in the live view), close;
    return the summary. on_doctor(report) gets the doctor's report once the capture runs (an
    error opening it stays the only thing said)."""
    check_options(o)
    if os.geteuid() != 0:
        raise HftcapError("listen needs root (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW)",
                          hint="run it with sudo")
    doctor = host_doctor(o)   # before --netns: it reads the host's init-namespace sysctls
    server = None
    if o.metrics is not None:
        from .ops.metrics import MetricsServer, parse_addr
        server = MetricsServer(*parse_addr(o.metrics))  # bound here, in the namespace listen started in
    try:
        if o.netns:
            _netns.enter(o.netns)
        return _run_session(o, on_started, live, symbol, title, stop_event, doctor, server, on_doctor)
    finally:
        if server is not None:
            server.close()


class LineEvents:
    """Prints each A/B line down/up event to stderr once, as the data thread records it."""

    def __init__(self, sess: Session):
        self.sess, self.seen, self.next_t = sess, {}, 0.0

    def poll(self):
        now = time.monotonic()
        if now < self.next_t:
            return
        self.next_t = now + 0.25
        rep = self.sess.cap.recovery() or {"feeds": []}
        for f, r in zip(self.sess.o.feeds, rep["feeds"]):
            evs = (r.get("lines") or {}).get("events", [])
            for t, ln, silent, ev in evs[self.seen.get(str(f), 0):]:
                print("hftcap: " + recovery.line_event_text(str(f), {"line": ln, "event": ev, "silent_ns": silent}),
                      file=sys.stderr, flush=True)
            self.seen[str(f)] = len(evs)


def _run_session(o, on_started, live, symbol, title, stop_event, doctor, server, on_doctor) -> dict:
    from . import _core
    # BPF run-time statistics on for the run (the XDP program's cost), off again on every exit.
    with Stopper() as stopper, progcost.stats_enabled(_core, o.path == "xdp"):
        sess = Session(o)
        sess.doctor = doctor
        if not live:  # the live view shows restores itself; here one stderr line each
            sess.on_snapshot_event = lambda kind, text: print(f"hftcap: {text}", file=sys.stderr, flush=True)
        textfile = None
        try:
            sess.start()
            if server is not None or o.metrics_textfile:
                from .ops.metrics import ListenCollector, TextfileWriter
                sess.books      # made here, not first on a scrape thread
            if server is not None:
                server.serve(ListenCollector(sess, doctor))
                sess.metrics_url = server.url
            if o.metrics_textfile:
                textfile = TextfileWriter(o.metrics_textfile, o.metrics_interval)
                textfile.start(ListenCollector(sess, doctor))
            if on_doctor and doctor is not None:
                on_doctor(doctor)
            if on_started:
                on_started(sess)
            t0 = time.monotonic()
            failed = sess.snapshot_client.failed if sess.snapshot_client is not None else None
            if live:
                reason = _run_live_view(sess, o, stopper, t0, symbol, title, stop_event)
            else:
                reason = _wait(sess, o, stopper, t0, stop_event, failed)
                if failed is not None and failed.is_set():
                    reason = "snapshot_failed"
            sess.cap.stop()
            elapsed = time.monotonic() - t0
            capture = sess.close_capture_file()
            result = summary(sess, elapsed, reason)
            if o.path == "kernel":   # the feed sockets' drops (receive buffer full), SO_MEMINFO
                result["socket_drops"] = sess.cap.xsk_drops()["socket_drops"]
            if capture is not None:
                result["capture"] = capture
            if server is not None:
                result["metrics"] = server.url
            if textfile is not None:
                t, textfile = textfile, None
                result["metrics_textfile"] = t.close(final=True)   # the final figures, hftcap_up 0
            if symbol and sess.books is not None and not live:
                result.update(final_book(sess.books, symbol, o.levels))
            if o.save:
                latency.save_result(o.save, {o.path: sess.hop_data()},
                                    sess.conditions(elapsed, result["messages"]))
                result["saved"] = o.save
        finally:
            if textfile is not None:
                textfile.close(final=False)
            if server is not None:
                server.close()  # no scrape may read a closed capture
            sess.close()
    return result
