"""`listen --metrics [ADDR:]PORT`: the Prometheus endpoint of a running capture.

One custom collector reads the data thread's counters at scrape time, on the HTTP server's
request thread (prometheus_client's WSGI server): `cap.stats()`, `cap.xdp_stats()`, the books'
counters and the exported hop histograms, all relaxed loads of what the C consumer already
counts. The data path is untouched: no lock, no Python call, no extra counter.

The listening socket is bound when `MetricsServer` is made, which `run_listen` does before it
enters `--netns`: a socket stays in the namespace it was created in, so the endpoint is on the
host's network while the capture runs inside the lab's. Default address 127.0.0.1.

Names follow OPERATIONS.md (b): prefix `hftcap_`, base units, `_total` counters, no per-symbol
labels (the largest label set is the ten hops). Latency histograms are in seconds with
power-of-two buckets 2^6 ns (64 ns) .. 2^24 ns (16.8 ms), built from the C histogram
(hftcap/_core/hist.h) whose bucket edges include every power of two: below 256 ns buckets are
single nanoseconds, so `le` is exact (samples <= 2^k ns); from 256 ns on, a bucket starts at
2^k, so a bucket counts the samples below 2^k ns (a sample of exactly 2^k ns lands in the next
one). `+Inf` and `_count` are every sample of the hop, `_sum` the in-range ones.

Feed, recovery, capture and snapshot figures are exported from the same dicts `listen --json`
prints (hftcap.feed.recovery.shape, CaptureFile.live_stats, SnapshotClient.result), through
tables of `Spec`s: one line maps one key of such a dict to a metric, and `Families.table()`
adds the dict's labels (feed, line, ...) to every series. A new per-feed or per-line counter
in the C is therefore one table line here; tests/unit/test_metrics.py fails on a figure the C
reports that no table maps or ignores.

The same collector also writes node_exporter's textfile format (`listen --metrics-textfile`,
`TextfileWriter`): a thread of its own renders it every --metrics-interval seconds and renames
it into place (prometheus_client's write_to_textfile), never on the data thread."""
from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import numpy as np

from ..errors import HftcapError, UsageError

DEFAULT_ADDR = "127.0.0.1"
BUCKET_EXPONENTS = tuple(range(6, 25))          # le = 2^k ns
_LANDING = (b"<html><head><title>hftcap</title></head><body><h1>hftcap</h1>"
            b"<p><a href=\"/metrics\">metrics</a></p></body></html>\n")


def parse_addr(text: str) -> tuple[str, int]:
    """'[ADDR:]PORT' -> (addr, port); ADDR an IPv4/IPv6 literal ('[::1]:9464'), default 127.0.0.1;
    port 0 = any free port (listen prints the URL)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else DEFAULT_ADDR
    try:
        p = int(port)
        ipaddress.ip_address(host)
    except ValueError:
        p = -1
    if not 0 <= p < 65536:
        raise UsageError(f"bad --metrics '{text}': expected [ADDR:]PORT",
                         hint="for example --metrics 9464 (127.0.0.1) or --metrics 0.0.0.0:9464")
    return host, p


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):   # a scrape a second is not news
        pass


class MetricsServer:
    """A bound HTTP socket now (this thread's network namespace); `serve()` starts answering."""

    def __init__(self, addr: str, port: int):
        import socket

        from prometheus_client import CollectorRegistry, make_wsgi_app
        from prometheus_client.exposition import ThreadingWSGIServer

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

        self.registry = CollectorRegistry(auto_describe=False)
        metrics_app = make_wsgi_app(self.registry)

        def app(environ, start_response):
            if environ.get("PATH_INFO") == "/":
                start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
                return [_LANDING]
            return metrics_app(environ, start_response)

        try:
            self.httpd = make_server(addr, port, app, Server, handler_class=_Quiet)
        except OSError as e:
            hint = ("another process listens there: pick another port" if e.errno == errno.EADDRINUSE
                    else "give an address of this host, or only a port for 127.0.0.1")
            raise HftcapError(f"cannot serve metrics on {addr}:{port}: {os.strerror(e.errno or 0)}",
                              hint=hint) from None
        self.addr, self.port = addr, self.httpd.server_port
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def serve(self, collector) -> None:
        self.registry.register(collector)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="hftcap-metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join()
            self.thread = None
        self.httpd.server_close()


def _bucket_index(exponents=BUCKET_EXPONENTS) -> np.ndarray:
    """For each power-of-two edge, how many C buckets lie wholly at or below it."""
    from ..measure.latency import geometry
    g = geometry()
    edges = np.array([(1 << k) + 1 for k in exponents], dtype=np.uint64)
    return np.searchsorted(g.high, edges, side="right")


def hop_histogram(snap, exponents=BUCKET_EXPONENTS) -> tuple[list[tuple[str, float]], float]:
    """(Prometheus buckets [(le, cumulative count)], sum in seconds) of one HistSnapshot, with
    bucket edges 2^k ns for k in exponents."""
    from prometheus_client.utils import floatToGoString
    cum = np.cumsum(snap.counts, dtype=np.uint64)
    idx = _bucket_index(exponents)
    buckets = [(floatToGoString((1 << k) * 1e-9), float(cum[i - 1]) if i else 0.0)
               for k, i in zip(exponents, idx)]
    buckets.append(("+Inf", float(cum[-1])))
    return buckets, (snap.sum_ns or 0) / 1e9


RECOVERY_BUCKET_EXPONENTS = tuple(range(10, 34))  # 1 us .. 8.6 s: gap seen -> filled, first request -> lost


@dataclasses.dataclass(frozen=True)
class Spec:
    """One figure of a listen --json dict as a metric: its name (counters end in _total), help,
    type, constant labels (e.g. reason="malformed": several keys in one family) and the factor
    to base units (ms -> s)."""
    name: str
    doc: str
    kind: str = "counter"          # counter | gauge
    labels: tuple = ()             # ((label, value), ...)
    scale: float = 1.0


def _c(name, doc, **kw):
    return Spec(name, doc, "counter", **kw)


def _g(name, doc, **kw):
    return Spec(name, doc, "gauge", **kw)


def _outcome(o):
    return (("outcome", o),)


def _reason(r):
    return (("reason", r),)


# listen --json recovery.feeds[FEED] (hftcap.feed.recovery.shape; C struct hc_recov_stats), label feed.
FEED_RECOVERY = {
    "gaps_seen": _c("hftcap_recovery_gaps_total", "Sequence gaps (missing runs) the recovery opened"),
    "gaps_lost": _c("hftcap_recovery_gaps_lost_total", "Missing runs declared lost"),
    "messages_missing": _c("hftcap_recovery_missing_messages_total", "Messages in the missing runs opened"),
    "messages_late": _c("hftcap_recovery_messages_total", "Missing messages resolved, by outcome (late: a later "
                        "live packet brought it; recovered: a re-request reply; lost: declared lost)",
                        labels=_outcome("late")),
    "messages_recovered": _c("hftcap_recovery_messages_total", "", labels=_outcome("recovered")),
    "messages_lost": _c("hftcap_recovery_messages_total", "", labels=_outcome("lost")),
    "held_messages": _g("hftcap_recovery_held_messages", "Messages parked in the reorder ring now"),
    "reorder_peak": _g("hftcap_recovery_reorder_peak_messages", "Most messages parked in the reorder ring at once"),
    "overflows": _c("hftcap_recovery_reorder_overflows_total", "Reorder ring overflows (oldest missing run lost)"),
    "oversize": _c("hftcap_recovery_oversize_messages_total", "Messages too long to park (asked for again)"),
    "requests_sent": _c("hftcap_recovery_requests_total", "Re-request datagrams sent (first sends, retries, "
                        "remainders)"),
    "retries": _c("hftcap_recovery_retries_total", "Re-sends after a request timed out"),
    "remainders": _c("hftcap_recovery_remainder_requests_total", "Requests for the rest of a short reply"),
    "timeouts": _c("hftcap_recovery_timeouts_total", "Requests that timed out"),
    "failovers": _c("hftcap_recovery_failovers_total", "Moves to the next re-request server"),
    "send_errors": _c("hftcap_recovery_send_errors_total", "Request sends that failed"),
    "replies": _c("hftcap_recovery_replies_total", "Re-request replies used"),
    "reply_duplicates": _c("hftcap_recovery_reply_duplicate_blocks_total", "Blocks of used replies already "
                           "delivered"),
    "replies_late": _c("hftcap_recovery_replies_late_total", "Replies whose every block was already delivered"),
    "drop_unknown_source": _c("hftcap_recovery_reply_drops_total", "Re-request replies dropped, by reason",
                              labels=_reason("unknown_source")),
    "drop_wrong_session": _c("hftcap_recovery_reply_drops_total", "", labels=_reason("wrong_session")),
    "drop_unrequested": _c("hftcap_recovery_reply_drops_total", "", labels=_reason("unrequested")),
    "drop_malformed": _c("hftcap_recovery_reply_drops_total", "", labels=_reason("malformed")),
    "session_changes": _c("hftcap_recovery_session_changes_total", "New MoldUDP64 session ids on the live feed"),
    "backwards": _c("hftcap_recovery_backwards_packets_total", "Live packets far below the window"),
    "episodes": _c("hftcap_recovery_episodes_total", "Times the feed went from synced to missing and back"),
    "gaps_filled_a": _c("hftcap_recovery_gaps_filled_total", "Gaps (missing runs) delivered, by who filled "
                        "them: line a, line b, the re-request server, more than one (mixed), or partly lost",
                        labels=(("source", "a"),)),
    "gaps_filled_b": _c("hftcap_recovery_gaps_filled_total", "", labels=(("source", "b"),)),
    "gaps_filled_server": _c("hftcap_recovery_gaps_filled_total", "", labels=(("source", "server"),)),
    "gaps_filled_mixed": _c("hftcap_recovery_gaps_filled_total", "", labels=(("source", "mixed"),)),
    "gaps_with_loss": _c("hftcap_recovery_gaps_filled_total", "", labels=(("source", "lost"),)),
}
# Keys of that dict that are not figures to export (or are exported otherwise).
FEED_RECOVERY_SKIP = {"state", "lost_ranges", "recovery_time", "loss_declared_after", "lines", "hole"}
# listen --json recovery.feeds[FEED].hole: the late join's hole [N, first buffered) re-requested
# (C struct hc_recov_hole_stats), label feed.
FEED_HOLE = {
    "holes": _c("hftcap_snapshot_holes_total", "Join holes [snapshot N, first buffered) asked for by re-request"),
    "filled": _c("hftcap_snapshot_hole_outcomes_total", "Join holes ended, by outcome", labels=_outcome("filled")),
    "failed": _c("hftcap_snapshot_hole_outcomes_total", "", labels=_outcome("failed")),
    "requests": _c("hftcap_snapshot_hole_requests_total", "Re-request datagrams sent for join holes"),
    "retries": _c("hftcap_snapshot_hole_retries_total", "Join-hole re-sends after a timeout"),
    "timeouts": _c("hftcap_snapshot_hole_timeouts_total", "Join-hole requests that timed out"),
    "failovers": _c("hftcap_snapshot_hole_failovers_total", "Join-hole moves to the next re-request server"),
    "replies": _c("hftcap_snapshot_hole_replies_total", "Join-hole replies used"),
    "messages": _c("hftcap_snapshot_hole_messages_total", "Messages applied from join-hole replies"),
}
# listen --json recovery.socket_drops: the request socket's drops (no feed matched yet).
SOCKET_DROPS = {k: _c("hftcap_recovery_socket_drops_total", "Datagrams on the re-request socket dropped "
                      "before a feed matched, by reason", labels=_reason(k[5:]))
                for k in ("drop_unknown_source", "drop_wrong_session", "drop_unrequested", "drop_malformed")}
# Per line of a feed (A/B arbitration, listen --feed-b): listen --json recovery.feeds[FEED].lines[LINE]
# (LINE a or b; C struct hc_line_stats), labels feed, line. A figure the arbitration adds is one line
# here; a key no run reports yet gives no series.
FEED_LINE = {
    "packets": _c("hftcap_feed_line_packets_total", "Datagrams on the line (heartbeats included)"),
    "messages": _c("hftcap_feed_line_messages_total", "Message blocks carried by the line's data packets"),
    "wins": _c("hftcap_feed_line_wins_total", "Messages this line brought first"),
    "duplicates": _c("hftcap_feed_line_duplicates_total", "Messages the line brought that were already there"),
    "heartbeats": _c("hftcap_feed_line_heartbeats_total", "Heartbeats and End of Session packets on the line"),
    "gaps": _c("hftcap_feed_line_gaps_total", "Times the line jumped past its own next sequence"),
    "gap_messages": _c("hftcap_feed_line_gap_messages_total", "Messages the line jumped over"),
    "other_session": _c("hftcap_feed_line_other_session_packets_total", "Packets of another session (not merged)"),
    "down_events": _c("hftcap_feed_line_down_events_total", "Times the line went silent while the other was alive"),
    "up_events": _c("hftcap_feed_line_up_events_total", "Times the line came back"),
    "downtime_ns": _c("hftcap_feed_line_downtime_seconds_total", "Closed down periods of the line, summed",
                      scale=1e-9),
}
FEED_LINE_SKIP = {"state", "last_rx_tai_ns", "last_rx_ns", "next", "down"}
LINE_STATES = ("up", "down")
# listen --json capture (listen --write; CaptureFile.live_stats).
CAPTURE = {
    "packets_captured": _c("hftcap_capture_packets_total", "Packets written to the capture file"),
    "capture_drops": _c("hftcap_capture_drops_total", "Packets not captured: the capture ring was full"),
    "packets_seen": _c("hftcap_capture_seen_packets_total", "Packets the data thread offered the capture ring"),
    "bytes_written": _c("hftcap_capture_written_bytes_total", "Bytes written to capture files"),
    "files_begun": _c("hftcap_capture_files_total", "Capture files begun (1 + rotations)"),
    "rotations_late": _c("hftcap_capture_rotations_late_total", "Rotations that waited for a queued name"),
    "ring_bytes": _g("hftcap_capture_ring_bytes", "Size of the ring between data thread and writer"),
    "capture_drops_late": _c("hftcap_capture_drops_late_total", "Of the capture drops: held AF_XDP frames the "
                             "data thread took back before the writer copied them"),
}
# listen --json capture.recovery: re-request replies written on their own interface (IDB 1).
CAPTURE_RECOVERY = {
    "packets_seen": _c("hftcap_capture_recovery_seen_packets_total", "Re-request replies offered to the capture"),
    "packets_captured": _c("hftcap_capture_recovery_packets_total", "Re-request replies written (interface 1)"),
    "capture_drops": _c("hftcap_capture_recovery_drops_total", "Re-request replies not captured (ring full)"),
}
# listen --json snapshot (listen --snapshot; SnapshotClient.result).
SNAPSHOT = {
    "attempts": _c("hftcap_snapshot_attempts_total", "Snapshot connections tried"),
    "orders_loaded": _g("hftcap_snapshot_orders_loaded", "Orders loaded from the snapshot"),
    "messages_loaded": _g("hftcap_snapshot_messages_loaded", "Snapshot messages loaded"),
    "bytes": _g("hftcap_snapshot_loaded_bytes", "Snapshot bytes loaded"),
    "load_ms": _g("hftcap_snapshot_load_seconds", "Login accepted -> end of snapshot (CLOCK_MONOTONIC)",
                  scale=1e-3),
    "join_to_synced_ms": _g("hftcap_snapshot_join_to_synced_seconds", "First live packet -> books live "
                            "(CLOCK_MONOTONIC)", scale=1e-3),
    "buffered": _g("hftcap_snapshot_buffered_messages", "Live messages held in the join ring"),
    "buffered_applied": _g("hftcap_snapshot_buffered_messages_applied", "Buffered live messages applied at the "
                           "splice"),
    "buffered_discarded": _g("hftcap_snapshot_buffered_messages_discarded", "Buffered live messages discarded at "
                             "the splice (already in the snapshot)"),
    "buffer_overwritten": _c("hftcap_snapshot_buffer_overwritten_messages_total", "Join ring messages overwritten"),
    "buffer_capacity": _g("hftcap_snapshot_buffer_capacity_messages", "Join ring size"),
    "behind": _c("hftcap_snapshot_behind_total", "Times the ring no longer reached the snapshot"),
    "clears": _c("hftcap_snapshot_clears_total", "Times the books were cleared for a new snapshot"),
}
FEED_STATES = ("synced", "gap_wait", "recovering", "degraded")
JOIN_STATES = ("buffering", "ready", "hole", "live", "behind")
# listen --json snapshot.restores (restores after a gap declared lost) and snapshot.hole.
SNAPSHOT_RESTORES = {
    "started": _c("hftcap_snapshot_restores_started_total", "Restores begun after a gap declared lost (re-arms)"),
    "completed": _c("hftcap_snapshot_restores_total", "Restores joined: books replaced, suspect cleared, synced"),
    "last_ms": _g("hftcap_snapshot_restore_last_seconds", "Last restore, loss declared -> synced "
                  "(CLOCK_MONOTONIC)", scale=1e-3),
    "max_ms": _g("hftcap_snapshot_restore_max_seconds", "Longest restore, loss declared -> synced "
                 "(CLOCK_MONOTONIC)", scale=1e-3),
}


class Families:
    """Metric families built from figure dicts and Spec tables, in first-seen order."""

    def __init__(self):
        self.fams: dict = {}

    def add(self, spec: Spec, labels: dict, value) -> None:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        names = [*labels, *(k for k, _ in spec.labels)]
        f = self.fams.get(spec.name)
        if f is None:
            if spec.kind == "counter":
                f = CounterMetricFamily(spec.name[:-len("_total")], spec.doc, labels=names)
            else:
                f = GaugeMetricFamily(spec.name, spec.doc, labels=names)
            self.fams[spec.name] = f
        f.add_metric([*map(str, labels.values()), *(v for _, v in spec.labels)], float(value) * spec.scale)

    def table(self, specs: dict, labels: dict, figures: dict) -> None:
        """Every figure of `figures` that `specs` maps, with `labels`; None (not measured) is skipped."""
        for key, spec in specs.items():
            v = figures.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.add(spec, labels, v)

    def state(self, name: str, doc: str, labels: dict, states, current: str) -> None:
        """A state set: one series per state, 1 for the current one."""
        for st in dict.fromkeys([*states, current]):
            self.add(_g(name, doc, labels=(("state", st),)), labels, 1 if st == current else 0)

    def __iter__(self):
        return iter(self.fams.values())


def book_flag_counts(books) -> dict:
    """Stocks whose books are suspect (a gap was lost) or incomplete (joined mid-session)."""
    out = {"suspect": 0, "incomplete": 0}
    if books is not None:
        for loc, _ in books.symbols():
            i = books.info(loc)
            out["suspect"] += bool(i.get("suspect"))
            out["incomplete"] += bool(i.get("incomplete"))
    return out


def feed_families(fams: Families, sess, cf=None) -> None:
    """Per-feed state and recovery figures, the recovery-time histograms, the books' flags, the
    capture file's and the snapshot's figures: the parts of listen --json each comes from."""
    from prometheus_client.core import HistogramMetricFamily

    from ..feed import recovery
    from ..measure import latency
    raw = sess.cap.recovery()
    rec = recovery.shape(raw, sess.o.feeds)
    if rec is not None:
        hists = {"recovery_time": HistogramMetricFamily(
                     "hftcap_recovery_time_seconds", "Gap seen -> nothing missing, one sample per episode "
                     "(CLOCK_TAI)", labels=["feed"]),
                 "loss_declared_after": HistogramMetricFamily(
                     "hftcap_recovery_loss_declared_seconds", "A run's first request -> the run declared lost "
                     "(CLOCK_TAI)", labels=["feed"])}
        for (feed, fig), r in zip(rec["feeds"].items(), raw["feeds"]):
            lab = {"feed": feed}
            fams.state("hftcap_feed_state", "Feed state (1 = the current one): synced, gap_wait, recovering, "
                       "degraded", lab, FEED_STATES, fig["state"])
            fams.table(FEED_RECOVERY, lab, fig)
            if isinstance(fig.get("hole"), dict):
                fams.table(FEED_HOLE, lab, fig["hole"])
            for line, lfig in (fig.get("lines") or {}).items():
                if not isinstance(lfig, dict):       # the lines' event list, their clock
                    continue
                ll = {**lab, "line": line}
                if isinstance(lfig.get("state"), str):
                    fams.state("hftcap_feed_line_state", "A/B line state (1 = the current one)", ll, LINE_STATES,
                               lfig["state"])
                fams.table(FEED_LINE, ll, lfig)
            for key, h in hists.items():
                (snap,) = latency.parse_export(r[key])
                buckets, total = hop_histogram(snap, RECOVERY_BUCKET_EXPONENTS)
                h.add_metric([feed], buckets, total)
        fams.table(SOCKET_DROPS, {}, rec["socket_drops"])
        for h in hists.values():
            fams.fams[h.name] = h
    flags = book_flag_counts(sess.books)
    fams.add(_g("hftcap_books_suspect_stocks", "Stocks whose book is suspect (a gap on the feed was lost)"),
             {}, flags["suspect"])
    fams.add(_g("hftcap_books_incomplete_stocks", "Stocks whose book is incomplete (joined mid-session without "
                "a snapshot)"), {}, flags["incomplete"])
    if cf is not None:
        cst = cf.live_stats()
        fams.table(CAPTURE, {}, cst)
        if isinstance(cst.get("recovery"), dict):
            fams.table(CAPTURE_RECOVERY, {}, cst["recovery"])
    sc = getattr(sess, "snapshot_client", None)
    if sc is not None:
        snap = sc.result()
        fams.state("hftcap_snapshot_state", "Late join state (1 = the current one)", {}, JOIN_STATES, snap["state"])
        fams.table(SNAPSHOT, {}, snap)
        if isinstance(snap.get("restores"), dict):
            fams.table(SNAPSHOT_RESTORES, {}, snap["restores"])


class ListenCollector:
    """Everything a running `listen` session counts, read at scrape time."""

    def __init__(self, sess, doctor=None):
        from .. import __version__
        self.sess = sess
        self.doctor = doctor
        self.up = 1                 # 0 in the textfile's last write, after the data thread stopped
        self.capfile = sess.capfile  # kept: its counters stay readable after the session closes it
        i = sess.info()
        nic = sess.clocks.get("phc") or "none"
        self.info = {"version": __version__, "path": i["path"], "xdp_mode": i.get("xdp_mode") or "none",
                     "bind_mode": i.get("bind_mode") or "none", "poll_mode": i["poll_mode"],
                     "interface": i["interface"], "user_clock": "CLOCK_TAI",
                     "xdp_clock": i.get("xdp_clock") or "none", "itch_clock": i["itch_clock"],
                     "nic_clock": nic}
        self.hops = [h.name for h in _hops(i["path"])]

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        s = self.sess
        st = s.cap.stats()
        yield GaugeMetricFamily("hftcap_up", "1 while the capture's data thread runs", value=self.up)
        info = GaugeMetricFamily("hftcap_info", "hftcap version, receive path, modes, interface and "
                                 "clock sources (value 1)", labels=list(self.info))
        info.add_metric(list(self.info.values()), 1)
        yield info
        for name, key, doc in (
                ("hftcap_packets_total", "packets", "Feed packets taken by the data thread"),
                ("hftcap_bytes_total", "bytes", "UDP payload bytes of those packets"),
                ("hftcap_messages_total", "messages", "MoldUDP64 messages delivered in sequence"),
                ("hftcap_moldudp64_missing_messages_total", "gaps", "Messages missing in sequence gaps"),
                ("hftcap_moldudp64_gaps_total", "gap_events", "Sequence gaps (events)"),
                ("hftcap_moldudp64_duplicates_total", "duplicates", "Messages seen again (duplicates)"),
                ("hftcap_moldudp64_heartbeats_total", "heartbeats", "MoldUDP64 heartbeats"),
                ("hftcap_moldudp64_end_of_session_total", "end_of_session", "MoldUDP64 end-of-session packets"),
                ("hftcap_moldudp64_sessions_total", "sessions", "MoldUDP64 sessions seen"),
                ("hftcap_hw_stamped_packets_total", "hw_stamped", "Packets with a NIC hardware RX timestamp"),
                ("hftcap_io_errors_total", "io_errors", "Receive errors of the data thread")):
            yield CounterMetricFamily(name[:-6], doc, value=st[key])
        yield GaugeMetricFamily("hftcap_moldudp64_last_sequence", "Highest MoldUDP64 sequence number delivered",
                                value=st["last_sequence"])
        bst = s.books_stats()
        drops = CounterMetricFamily("hftcap_drops", "Packets or messages dropped, by reason", labels=["reason"])
        for k, v in {**st["drops"], **bst.get("drops", {})}.items():
            drops.add_metric([k], v)
        yield drops
        if bst:
            by_type = CounterMetricFamily("hftcap_itch_messages", "ITCH messages applied, by message type",
                                          labels=["msg_type"])
            for k, v in sorted(bst["messages"].items()):
                by_type.add_metric([k], v)
            yield by_type
            if bst.get("orders_live") is not None:
                yield GaugeMetricFamily("hftcap_book_orders_live", "Orders resting in the books",
                                        value=bst["orders_live"])
        if s.o.path == "xdp":
            xdp = CounterMetricFamily("hftcap_xdp_program_packets", "XDP program verdict counters",
                                      labels=["counter"])
            for k, v in s.cap.xdp_stats().items():
                xdp.add_metric([k], v)
            yield xdp
            fr = CounterMetricFamily("hftcap_xsk_frames", "RX descriptors whose frame the data thread foresaw "
                                     "(and prefetched) or not: the first 4 of each batch", labels=["guess"])
            fr.add_metric(["foreseen"], st["xsk_frames_foreseen"])
            fr.add_metric(["not_foreseen"], st["xsk_frames_not_foreseen"])
            yield fr
        neg = CounterMetricFamily("hftcap_hop_negative_samples", "Hop samples whose end stamp preceded the "
                                  "start (not in the histogram)", labels=["hop"])
        hist = HistogramMetricFamily("hftcap_hop_latency_seconds", "Per-hop latency since start (after "
                                     "warm-up); clock domains in DESIGN.md's hop table", labels=["hop"])
        from ..measure.latency import Absent
        negative = s.cap.negative()
        for hop, data in s.hop_data().items():
            if isinstance(data, Absent):          # that hop's clock is missing: no series
                continue
            buckets, total = hop_histogram(data)
            hist.add_metric([hop], buckets, total)
            neg.add_metric([hop], negative.get(hop, 0))
        yield hist
        yield neg
        if self.doctor is not None:
            dc = GaugeMetricFamily("hftcap_doctor_checks", "hftcap doctor's checks at start, by result",
                                   labels=["severity"])
            for sev, n in self.doctor.counts.items():
                dc.add_metric([sev], n)
            yield dc
        fams = Families()
        feed_families(fams, s, self.capfile)
        yield from fams


def _hops(path: str):
    from ..measure.latency import hops_for
    return hops_for(path)


TEXTFILE_INTERVAL_S = 10.0


def check_textfile(path: str, interval: float) -> None:
    """listen --metrics-textfile PATH --metrics-interval S, before anything opens."""
    if not path.endswith(".prom"):
        raise UsageError(f"bad --metrics-textfile '{path}': the name must end in .prom",
                         hint="node_exporter's textfile collector reads only *.prom files")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d) or not os.access(d, os.W_OK):
        raise UsageError(f"bad --metrics-textfile '{path}': {d} is not a writable directory",
                         hint="the directory node_exporter --collector.textfile.directory reads")
    if not 0.1 <= interval <= 3600:
        raise UsageError(f"bad --metrics-interval {interval}: expected 0.1 to 3600 s")


class TextfileWriter:
    """node_exporter's textfile collector format, rewritten every `interval` seconds by a thread
    of its own: prometheus_client's write_to_textfile renders into PATH.<pid>.<tid>.tmp and
    renames it over PATH, so node_exporter never reads half a file. close() writes once more
    with hftcap_up 0: the file then holds the run's final counters."""

    def __init__(self, path: str, interval: float = TEXTFILE_INTERVAL_S):
        from prometheus_client import CollectorRegistry
        check_textfile(path, interval)
        self.path, self.interval = path, interval
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = None
        self.writes = self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def write(self) -> None:
        from prometheus_client import write_to_textfile
        try:
            write_to_textfile(self.path, self.registry)
            self.writes += 1
        except OSError as e:        # a full disk must not end the capture: counted, said at exit
            self.errors += 1
            self.last_error = f"{self.path}: {os.strerror(e.errno or 0)}"

    def _run(self) -> None:
        while True:
            self.write()
            if self._stop.wait(self.interval):
                return

    def start(self, collector) -> None:
        self.collector = collector
        self.registry.register(collector)
        self.thread = threading.Thread(target=self._run, name="hftcap-textfile", daemon=True)
        self.thread.start()

    def close(self, final: bool = True) -> dict:
        """Stop the thread; with final (the data thread has stopped) write the last figures."""
        if self.thread is not None:
            self._stop.set()
            self.thread.join()
            self.thread = None
            if final:
                self.collector.up = 0
                self.write()
        out = {"path": self.path, "interval_s": self.interval, "writes": self.writes, "errors": self.errors}
        if self.last_error:
            out["last_error"] = self.last_error
        return out
