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
one). `+Inf` and `_count` are every sample of the hop, `_sum` the in-range ones."""
from __future__ import annotations

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


def _bucket_index() -> np.ndarray:
    """For each power-of-two edge, how many C buckets lie wholly at or below it."""
    from ..measure.latency import geometry
    g = geometry()
    edges = np.array([(1 << k) + 1 for k in BUCKET_EXPONENTS], dtype=np.uint64)
    return np.searchsorted(g.high, edges, side="right")


def hop_histogram(snap) -> tuple[list[tuple[str, float]], float]:
    """(Prometheus buckets [(le, cumulative count)], sum in seconds) of one HistSnapshot."""
    from prometheus_client.utils import floatToGoString
    cum = np.cumsum(snap.counts, dtype=np.uint64)
    idx = _bucket_index()
    buckets = [(floatToGoString((1 << k) * 1e-9), float(cum[i - 1]) if i else 0.0)
               for k, i in zip(BUCKET_EXPONENTS, idx)]
    buckets.append(("+Inf", float(cum[-1])))
    return buckets, (snap.sum_ns or 0) / 1e9


class ListenCollector:
    """Everything a running `listen` session counts, read at scrape time."""

    def __init__(self, sess, doctor=None):
        from .. import __version__
        self.sess = sess
        self.doctor = doctor
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
        yield GaugeMetricFamily("hftcap_up", "1 while the capture's data thread runs", value=1)
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


def _hops(path: str):
    from ..measure.latency import hops_for
    return hops_for(path)
