"""hftcap's command line: parse, call, render, exit code. Every failure is formatted here,
in one place, as one line plus at most one `hint:` line (a traceback only with --debug)."""
from __future__ import annotations

import json
import os
import sys
import traceback
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import HftcapError, UsageError, report

try:  # typer >= 0.22 vendors click
    from typer._click import exceptions as _cx
except ImportError:  # older typer uses click itself
    from click import exceptions as _cx

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Wire-to-book market data: XDP/AF_XDP capture, ITCH 5.0 books, per-hop latency.")
lab_app = typer.Typer(no_args_is_help=True, help="The lab: two network namespaces joined by a veth pair.")
app.add_typer(lab_app, name="lab")
floor_app = typer.Typer(no_args_is_help=True,
                        help="The floor: a bare sender and bare receivers (what bench --floor runs).")
app.add_typer(floor_app, name="floor")

_state = {"debug": False}
out = Console()
err_console = Console(stderr=True)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")):
    _state["debug"] = debug


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


# ---- lab ----

@lab_app.command("up")
def lab_up(name: str = typer.Option("hftcap", "--name", "-n", help="Lab name prefix.")):
    """Create the lab (idempotent).  Example: hftcap lab up --name demo"""
    from .lab import topology as lab
    lb = lab.up(name)
    out.print(f"lab '{lb.name}': {lb.ex_ns} ({lb.ex_if} {lb.ex_addr}/24, multicast route) "
              f"<-> {lb.host_ns} ({lb.host_if} {lb.host_addr}/24)")
    out.print(f"listen with: hftcap listen --netns {lb.host_ns} -i {lb.host_if} --feed 239.1.1.1:26400")


@lab_app.command("down")
def lab_down(name: str = typer.Option("hftcap", "--name", "-n", help="Lab name prefix.")):
    """Remove everything the lab made (idempotent).  Example: hftcap lab down"""
    from .lab import topology as lab
    removed = lab.down(name)
    out.print(f"lab '{name}': removed {', '.join(removed)}" if removed else f"lab '{name}': nothing to remove")


@lab_app.command("status")
def lab_status(name: str = typer.Option("hftcap", "--name", "-n", help="Lab name prefix."),
               as_json: bool = typer.Option(False, "--json", help="One JSON object.")):
    """Show what exists of the lab.  Example: hftcap lab status --json"""
    from .lab import topology as lab
    st = lab.status(name)
    if as_json:
        _emit_json(st)
        return
    t = Table(title=f"lab '{name}'" + ("" if st["complete"] else " (incomplete)"))
    for col in ("namespace", "interface", "state", "addresses", "xdp prog"):
        t.add_column(col)
    for ns, info in st["namespaces"].items():
        if info is None:
            t.add_row(ns, "-", "absent", "", "")
        else:
            t.add_row(ns, info["interface"], info.get("state", "absent") if info["exists"] else "absent",
                      " ".join(info.get("addresses", [])), str(info.get("xdp_prog_id") or "-"))
    out.print(t)


# ---- listen ----

def _print_summary(s: dict, console: Console | None = None) -> None:
    t = Table(title=f"hftcap listen: {s['interface']} ({s['path']} path)", show_header=False)
    t.add_column("k", style="bold")
    t.add_column("v")
    mode = (f"XDP {s['xdp_mode']}, bind {s['bind_mode']}, " if s["path"] == "xdp" else "kernel socket, ")
    t.add_row("mode", mode + f"poll {s['poll_mode']}, queue {s['queue']}, cpu {s['cpu'] if s['cpu'] is not None else 'any'}")
    t.add_row("hw timestamps", ("yes: " if s["hw_timestamps"] else "no: ") + s["hw_timestamps_reason"])
    t.add_row("duration", f"{s['duration_s']:.3f} s (CLOCK_MONOTONIC), stopped by {s['stopped_by']}")
    t.add_row("packets", f"{s['packets']:,}")
    t.add_row("messages", f"{s['messages']:,}")
    t.add_row("bytes", f"{s['bytes']:,} (UDP payload)")
    t.add_row("gaps / duplicates", f"{s['gaps']:,} / {s['duplicates']:,} messages")
    t.add_row("last sequence", str(s["last_sequence"]))
    if s.get("messages_by_type"):
        t.add_row("ITCH messages", " ".join(f"{k} {v:,}" for k, v in sorted(s["messages_by_type"].items())))
    drops = {k: v for k, v in s["drops"].items() if v}
    t.add_row("drops", ", ".join(f"{k} {v:,}" for k, v in drops.items()) or "none")
    if s.get("book"):
        bb = s["book"]["bids"][0] if s["book"]["bids"] else None
        ba = s["book"]["asks"][0] if s["book"]["asks"] else None
        t.add_row(f"book {s['symbol']}", f"best bid {bb[0] + ' x ' + str(bb[1]) if bb else '-'}, "
                                         f"best ask {ba[0] + ' x ' + str(ba[1]) if ba else '-'}")
    for f, r in (s.get("recovery") or {}).get("feeds", {}).items():
        t.add_row(f"recovery {f}", f"{r['state']}: {r['gaps_seen']:,} gaps seen, {r['messages_recovered']:,} "
                                   f"messages recovered, {r['messages_late']:,} late, {r['gaps_lost']:,} gaps lost "
                                   f"({r['messages_lost']:,} messages), {r['requests_sent']:,} requests")
        for k in ("a", "b") if r.get("lines") else ():
            ln = r["lines"][k]
            t.add_row(f"line {k.upper()} {f}", f"{ln['state']}: {ln['packets']:,} packets, {ln['wins']:,} first "
                                              f"({ln['filled']:,} filling holes), {ln['duplicates']:,} duplicates, "
                                              f"{ln['gaps']:,} gaps, down {ln['down_events']} times")
    if s["xdp"]:
        t.add_row("XDP program", ", ".join(f"{k} {v:,}" for k, v in s["xdp"].items() if v) or "no packets")
    snap = s.get("snapshot")
    if snap:
        t.add_row("snapshot", f"{snap['state']}: {snap['orders_loaded']:,} orders, {snap['bytes']:,} bytes in "
                              f"{snap['load_ms']} ms; join to synced {snap['join_to_synced_ms']} ms; buffered "
                              f"{snap['buffered_applied']:,} applied, {snap['buffered_discarded']:,} discarded "
                              f"(CLOCK_MONOTONIC)")
        if s.get("restore_note"):
            t.add_row("restores", s["restore_note"] + " (CLOCK_MONOTONIC)")
    console = console or out
    console.print(t)
    if s.get("late_join"):
        console.print(f"[yellow]incomplete:[/] {s['late_join']['note']}; "
                      f"{s['late_join']['unknown_ref_incomplete']:,} such drops")
    if s.get("warning"):
        console.print(f"[yellow]warning:[/] {s['warning']}")


@app.command()
def listen(
    interface: str = typer.Option(..., "-i", "--interface", help="Interface to capture on."),
    feed: List[str] = typer.Option(..., "--feed", help="GROUP:PORT of a feed (repeatable)."),
    feed_b: List[str] = typer.Option([], "--feed-b", help="GROUP:PORT of the B line of the feed given by the "
                                     "--feed in the same position (repeatable): the lines are merged by "
                                     "sequence number, first arrival wins."),
    line_down_timeout: float = typer.Option(3.0, "--line-down-timeout",
                                            help="Seconds a line may be silent while the other is alive before "
                                                 "it is reported down (A/B)."),
    netns: Optional[str] = typer.Option(None, "--netns", help="Run inside this network namespace."),
    path: str = typer.Option("xdp", "--path", help="xdp (AF_XDP kernel bypass) or kernel (UDP socket)."),
    xdp_mode: str = typer.Option("auto", "--xdp-mode", help="native, generic or auto."),
    bind: str = typer.Option("auto", "--bind", help="AF_XDP bind: zerocopy, copy or auto."),
    poll: str = typer.Option("wakeup", "--poll", help="busy (spin) or wakeup (poll())."),
    queue: str = typer.Option("0", "--queue", help="RX queue to bind: N, a list 0,1,2, or all (one AF_XDP socket each)."),
    cpu: Optional[int] = typer.Option(None, "--cpu", help="Pin the data thread to this CPU."),
    socket_buffer: Optional[int] = typer.Option(None, "--socket-buffer", metavar="BYTES",
                                                help="Kernel path: receive buffer of the feed sockets (SO_RCVBUF; "
                                                     "default 16 MiB). Its drops are counted (SO_MEMINFO)."),
    warm_books: bool = typer.Option(False, "--warm-books",
                                    help="With --path xdp --poll busy: while the rings are empty, the data thread "
                                         "keeps the books' hot lines in its caches (prefetch only)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after S seconds."),
    count: Optional[int] = typer.Option(None, "--count", help="Stop after N feed packets."),
    itch_clock: str = typer.Option("none", "--itch-clock",
                                   help="Clock of the ITCH timestamps, for sender->book: none, tai-midnight "
                                        "(the lab exchange), utc-midnight, et-midnight (NASDAQ)."),
    warmup: float = typer.Option(0.0, "--warmup", help="Discard the latency samples of the first S seconds."),
    stamp: str = typer.Option("auto", "--stamp", help="The data thread's own stamps: tsc (invariant TSC "
                                                        "calibrated to CLOCK_TAI), clock (clock_gettime, the "
                                                        "reference), auto (tsc when invariant)."),
    save: Optional[str] = typer.Option(None, "--save", help="Write histograms and conditions to FILE."),
    budget: bool = typer.Option(False, "--budget", help="Print the per-hop latency table at exit."),
    symbol: Optional[str] = typer.Option(None, "--symbol", "-s", help="Stock shown in the live view (and its book in --json; '*' = every stock's)."),
    headless: bool = typer.Option(False, "--headless", help="No live view, even on a terminal."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at exit."),
    write: Optional[str] = typer.Option(None, "-w", "--write", help="Write every packet to FILE (pcapng; - = stdout)."),
    capture_buffer: int = typer.Option(256, "--capture-buffer", help="MiB the capture may hold for the file writer: "
                                       "AF_XDP, extra UMEM frames (2 KiB each) the writer reads the packets from; "
                                       "kernel path, the ring of copies (rounded down to a power of two)."),
    writer_cpu: Optional[int] = typer.Option(None, "--writer-cpu", help="Pin the file writer thread to CPU N "
                                             "(default: a CPU other than --cpu's; -1 = not pinned)."),
    snaplen: int = typer.Option(262144, "--snaplen", help="Bytes kept of each packet (0 = 262144, as tcpdump)."),
    file_size: Optional[str] = typer.Option(None, "-C", "--file-size", help="Rotate before a packet once the file "
                                                                          "exceeds N x 10^6 bytes (or 512k, 64m, 2g)."),
    rotate_seconds: Optional[float] = typer.Option(None, "-G", "--rotate-seconds",
                                                   help="Rotate every S seconds (name it with strftime fields)."),
    file_count: Optional[int] = typer.Option(None, "-W", "--file-count",
                                             help="With -C: a ring of N files; with -G: stop after N files."),
    levels: int = typer.Option(10, "--levels", help="Depth of the --symbol book in --json."),
    rerequest: List[str] = typer.Option([], "--rerequest",
                                        help="IPV4:PORT of a MoldUDP64 re-request server (repeatable: the first is "
                                             "the primary, the others failover in order). Turns gap recovery on."),
    reorder_buffer: int = typer.Option(65_536, "--reorder-buffer", help="Messages held per feed while a gap is open."),
    gap_timeout: float = typer.Option(0.001, "--gap-timeout", help="Seconds a gap waits for a late packet before asking."),
    request_timeout: float = typer.Option(0.005, "--request-timeout", help="Seconds before a request is sent again."),
    request_max: int = typer.Option(64, "--request-max", help="Messages per request (at most 2000)."),
    max_outstanding: int = typer.Option(4, "--max-outstanding", help="Requests in flight per feed (at most 16)."),
    request_retries: int = typer.Option(4, "--request-retries", help="Re-sends to one server before the next one."),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", help="HOST:PORT of a SoupBinTCP (GLIMPSE-style) "
                                           "snapshot server: join mid-session with complete books."),
    snapshot_user: str = typer.Option("", "--snapshot-user", help="Snapshot login user."),
    snapshot_password_file: Optional[str] = typer.Option(None, "--snapshot-password-file",
                                                         help="File whose first line is the snapshot password."),
    snapshot_password_env: Optional[str] = typer.Option(None, "--snapshot-password-env",
                                                        help="Environment variable holding the snapshot password."),
    join_buffer: int = typer.Option(1 << 20, "--join-buffer", help="Messages buffered while the snapshot loads "
                                    "(64 bytes each, preallocated)."),
    metrics: Optional[str] = typer.Option(None, "--metrics", metavar="[ADDR:]PORT",
                                          help="Serve Prometheus metrics (default address 127.0.0.1; "
                                               "in the namespace listen starts in, also with --netns)."),
    metrics_textfile: Optional[str] = typer.Option(None, "--metrics-textfile", metavar="PATH.prom",
                                                   help="Write the metrics for node_exporter's textfile collector "
                                                        "(atomically: temp file + rename)."),
    metrics_interval: float = typer.Option(10.0, "--metrics-interval", help="Seconds between textfile writes."),
):
    """Capture a feed and keep the books.

    Example: hftcap listen --netns hftcap-host -i hftcap-h0 --feed 239.1.1.1:26400 --duration 5
    """
    from .receive.options import ListenOptions, parse_feed
    from .receive.pcapng import WriteOptions, parse_file_size
    from .listen import run_listen
    single = queue.isdigit()
    wo = None
    if write is not None:
        wo = WriteOptions(write, capture_buffer_mib=capture_buffer, snaplen=snaplen, writer_cpu=writer_cpu,
                          file_size=parse_file_size(file_size) if file_size is not None else None,
                          rotate_seconds=rotate_seconds, file_count=file_count)
    elif file_size or rotate_seconds or file_count:
        raise UsageError("-C, -G and -W need --write FILE")
    o = ListenOptions(interface=interface, feeds=[parse_feed(f) for f in feed], netns=netns, path=path,
                      feeds_b=[parse_feed(f) for f in feed_b],
                      xdp_mode=xdp_mode, bind=bind, poll=poll, queue=int(queue) if single else 0,
                      queues=None if single else queue, cpu=cpu, socket_buffer=socket_buffer,
                      warm_books=warm_books, duration=duration, count=count, itch_clock=itch_clock, warmup=warmup, save=save,
                      levels=levels, stamp=stamp,
                      snapshot=snapshot, snapshot_user=snapshot_user, join_buffer=join_buffer,
                      snapshot_password=_snapshot_password(snapshot_password_file, snapshot_password_env) or "",
                      write=wo, metrics=metrics, metrics_textfile=metrics_textfile,
                      metrics_interval=metrics_interval)
    if rerequest or feed_b:  # A/B lines are merged by recovery's sequencing, with or without a server
        from .feed.recovery import RecoveryOptions, parse_server
        o.recovery = RecoveryOptions(servers=[parse_server(r) for r in rerequest], reorder_buffer=reorder_buffer,
                                     gap_timeout_s=gap_timeout, request_timeout_s=request_timeout,
                                     request_max=request_max, max_outstanding=max_outstanding,
                                     request_retries=request_retries, line_down_timeout_s=line_down_timeout)

    live = not as_json and not headless and sys.stdout.isatty() and sys.stdin.isatty()

    def started(sess):
        if live:
            return
        i = sess.info()
        mode = f"XDP {i['xdp_mode']}, bind {i['bind_mode']}" if i["path"] == "xdp" else "kernel socket"
        at = f"; metrics at {sess.metrics_url}" if sess.metrics_url else ""
        print(f"hftcap: listening on {i['interface']} ({mode}, poll {i['poll_mode']}) for "
              f"{', '.join(i['feeds'])}{at}; Ctrl-C stops", file=sys.stderr, flush=True)

    s = run_listen(o, on_started=started, live=live, symbol=symbol, on_doctor=_print_doctor_line)
    if s.get("recovery_warning"):
        print(f"hftcap: {s['recovery_warning']}", file=sys.stderr)
    if s.get("restore_note"):
        print(f"hftcap: {s['restore_note']}", file=sys.stderr)
    if s.get("capture"):
        _print_capture_lines(s["capture"])
    if write == "-":  # stdout is the capture
        if as_json:
            print(json.dumps(s), file=sys.stderr, flush=True)
        else:
            _print_summary(s, err_console)
    elif as_json:
        _emit_json(s)
    else:
        _print_summary(s)
        if budget:
            _print_latency(s)
    snap = s.get("snapshot") or {}
    if snap.get("error"):
        raise HftcapError(f"snapshot from {snap['server']}: {snap['error']}",
                          hint=None if "rejected" in snap["error"] else "is the exchange's --snapshot-port up?")


def _snapshot_password(path: Optional[str], env: Optional[str]) -> Optional[str]:
    """A snapshot password from a file or an environment variable, never the command line."""
    if path and env:
        raise UsageError("--snapshot-password-file and --snapshot-password-env are exclusive")
    if path:
        from .feed.soupbin import read_password_file
        return read_password_file(path)
    if env:
        if env not in os.environ:
            raise UsageError(f"--snapshot-password-env {env}: the variable is not set")
        return os.environ[env]
    return None


def _print_capture_lines(c: dict) -> None:
    """tcpdump's end-of-run lines, on stderr so stdout stays the file (--write -) or the JSON."""
    k = c.get("kernel_drops") or {}
    lines = [f"{c['packets_captured']} packets captured",
             f"{c['packets_seen']} packets received by filter",
             f"{c['capture_drops']} packets dropped by capture ring"]
    if k and "socket_drops" not in k:
        lines.append(f"{sum(k.values())} packets dropped by kernel (AF_XDP rx_dropped {k['rx_dropped']}, "
                     f"rx_ring_full {k['rx_ring_full']}, rx_fill_ring_empty_descs {k['rx_fill_ring_empty_descs']})")
    elif "socket_drops" in c.get("kernel_drops", {}):
        lines.append(f"{k['socket_drops']} packets dropped by kernel (socket receive buffer full: "
                     "the feed sockets' drops, SO_MEMINFO)")
    r = c.get("recovery") or {}
    if r.get("packets_seen"):
        lines.append(f"{r['packets_captured']} recovery replies captured (interface 1), "
                     f"{r['capture_drops']} dropped by capture ring")
    if c.get("error"):
        lines.append(f"capture file error: {c['error']}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _print_doctor_line(rep) -> None:
    """listen's one line on how the host is tuned (stderr: --json keeps stdout to itself)."""
    args = " ".join(a for a in (rep.interface, f"--netns {rep.netns}" if rep.netns else "",
                                f"--cpu {rep.cpu}" if rep.cpu is not None else "") if a)
    print(f"hftcap: doctor: {rep.summary()} (see them: hftcap doctor {args})", file=sys.stderr, flush=True)


def _print_latency(s: dict) -> None:
    from .measure.latency import fmt_ns
    t = Table(title=f"per-hop latency, {s['path']} path (since start, after warm-up)")
    for col in ("hop", "p50", "p99", "p99.9", "max", "count", "clock domain"):
        t.add_column(col, justify="right" if col in ("p50", "p99", "p99.9", "max", "count") else "left")
    for hop, v in s["latency"].items():
        if "absent" in v:
            t.add_row(hop, f"[dim]absent ({v['absent']})[/]", "", "", "", "", v["domain"])
        else:
            t.add_row(hop, fmt_ns(v["p50_ns"]), fmt_ns(v["p99_ns"]), fmt_ns(v["p999_ns"]),
                      fmt_ns(v["max_ns"]), f"{v['count']:,}", v["domain"])
    out.print(t)
    if s.get("xdp_program_cost"):
        from .measure.progcost import describe
        out.print(f"XDP program's own run time: {describe(s['xdp_program_cost'])} "
                  "(the part of xdp_to_dequeue spent in the program; the rest is the handoff)")


def _print_sent(r: dict, title: str) -> None:
    t = Table(title=title, show_header=False)
    t.add_column("k", style="bold")
    t.add_column("v")
    rate = r.get("packet_rate_pps")
    t.add_row("sent", f"{r['packets_sent']:,} packets, {r['messages_sent']:,} messages, {r['bytes_sent']:,} bytes")
    t.add_row("sequence", f"{r['first_seq']} .. {r['next_seq'] - 1}")
    t.add_row("rate", f"{rate:,.0f} packets/s over {r['elapsed_ns'] / 1e9:.3f} s ({r['elapsed_clock']})"
              if rate else "-")
    t.add_row("injected", f"lost {r['lost_packets']}, duplicated {r['duplicated_packets']}, "
                          f"reordered {r['reordered_packets']} packets")
    t.add_row("heartbeats / end of session", f"{r['heartbeats_sent']} / {r['eos_sent']}")
    b = r.get("line_b")
    if b:
        t.add_row(f"line B {b['feed']}", f"{b['packets_sent']:,} packets; lost {b['lost_packets']} "
                                         f"({b['outage_packets']} in the outage), duplicated "
                                         f"{b['duplicated_packets']}, reordered {b['reordered_packets']}")
    t.add_row("ITCH timestamps", f"clock {r['clock']}")
    sp = r.get("stamp_to_send_return")
    if sp and "p50_ns" in sp:
        from .measure.latency import fmt_ns
        t.add_row("stamp -> send returned", f"p50 {fmt_ns(sp['p50_ns'])}, p99 {fmt_ns(sp['p99_ns'])}, "
                                            f"max {fmt_ns(sp['max_ns'])} ({sp['clock']}, {sp['count']:,} packets)")
    t.add_row("stopped by", r["stop_reason"])
    if r.get("send_errors"):
        t.add_row("send errors", f"{r['send_errors']} (last errno {r['last_errno']})")
    if r.get("rerequests"):
        t.add_row("re-requests", ", ".join(f"{k} {v}" for k, v in r["rerequests"].items()))
    out.print(t)


@app.command()
def send(
    netns: Optional[str] = typer.Option(None, "--netns", help="Send from this network namespace (the lab's exchange side)."),
    feed: str = typer.Option(..., "--feed", help="GROUP:PORT to publish to."),
    rate: float = typer.Option(1000.0, "--rate", help="Packets per second (0 = as fast as possible)."),
    count: int = typer.Option(1000, "--count", help="Packets to send (the loop is bounded)."),
    messages_per_packet: int = typer.Option(1, "--messages-per-packet", "-k", help="ITCH messages per packet."),
    interface: Optional[str] = typer.Option(None, "--interface", "-i", help="Multicast interface (default: route to the group)."),
    max_seconds: float = typer.Option(60.0, "--max-seconds", help="Hard time bound."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
):
    """Send well-formed MoldUDP64 packets with consecutive sequence numbers.

    Example: hftcap send --netns hftcap-ex --feed 239.1.1.1:26400 --rate 10000 --count 5000 -k 4
    """
    from .lab.exchange import run_send
    r = run_send(netns, feed, rate, count, messages_per_packet, interface=interface, max_seconds=max_seconds)
    _emit_json(r) if as_json else _print_sent(r, f"hftcap send: {feed}")


@app.command()
def exchange(
    netns: Optional[str] = typer.Option(None, "--netns", help="Publish from this network namespace."),
    feed: str = typer.Option("239.1.1.1:26400", "--feed", help="GROUP:PORT to publish to."),
    file: Optional[str] = typer.Option(None, "--file", help="NASDAQ-layout ITCH file (plain or .gz) to publish, or a "
                                                            "pcap/pcapng capture to replay as recorded."),
    seed: int = typer.Option(1, "--seed", help="Generator seed (without --file)."),
    stocks: Optional[int] = typer.Option(None, "--stocks", help="Generated stocks (default 8; 8,900 with --profile day)."),
    profile: str = typer.Option("basic", "--profile", help="Generator profile: basic, or day (the shape of a real "
                                                          "NASDAQ day: Zipf activity, real mix, long-lived orders)."),
    messages: int = typer.Option(100_000, "--messages", help="Generated messages."),
    msg_rate: Optional[float] = typer.Option(None, "--msg-rate", help="Messages per second (0 = as fast as possible)."),
    speed: Optional[float] = typer.Option(None, "--speed", help="The file's own pace (a capture's recorded pace) scaled by X."),
    messages_per_packet: int = typer.Option(8, "--messages-per-packet", "-k", help="Messages per packet."),
    loss: float = typer.Option(0.0, "--loss", help="Packet loss probability."),
    dup: float = typer.Option(0.0, "--dup", help="Packet duplication probability."),
    reorder: float = typer.Option(0.0, "--reorder", help="Packet reordering probability."),
    feed_b: Optional[str] = typer.Option(None, "--feed-b", help="GROUP:PORT of a B line: the same packets, with "
                                         "their own --loss-b, --dup-b and --reorder-b."),
    loss_b: float = typer.Option(0.0, "--loss-b", help="B line: packet loss probability."),
    dup_b: float = typer.Option(0.0, "--dup-b", help="B line: packet duplication probability."),
    reorder_b: float = typer.Option(0.0, "--reorder-b", help="B line: packet reordering probability."),
    seed_b: Optional[int] = typer.Option(None, "--seed-b", help="B line's impairment seed (default: from --seed)."),
    outage_b: Optional[str] = typer.Option(None, "--outage-b", metavar="START:SECONDS",
                                           help="B line sends nothing from START s after the start for SECONDS."),
    rerequest_port: Optional[int] = typer.Option(None, "--rerequest-port", help="Unicast re-request port (default feed port + 1, 0 = off)."),
    linger: float = typer.Option(1.0, "--linger", help="Seconds to keep answering re-requests after the end."),
    duration: float = typer.Option(60.0, "--duration", help="Hard time bound in seconds."),
    count: int = typer.Option(0, "--count", help="Stop after N packets (0 = the whole stream)."),
    interface: Optional[str] = typer.Option(None, "--interface", "-i", help="Multicast interface."),
    clock: str = typer.Option("tai-midnight", "--clock", help="ITCH timestamp clock: tai-midnight, utc-midnight, file."),
    write: Optional[str] = typer.Option(None, "--write", help="Write the stream in NASDAQ file layout instead of sending."),
    mode: str = typer.Option("delta", "--mode", help="delta (ITCH as is) or snapshot (each book message becomes an "
                                                    "hftcap Book Snapshot 'Z' of its stock's top levels; not ITCH)."),
    levels: int = typer.Option(5, "--levels", help="Levels per side in each snapshot (--mode snapshot)."),
    snapshot_port: Optional[int] = typer.Option(None, "--snapshot-port", help="Serve GLIMPSE-style book snapshots over "
                                                "SoupBinTCP on this TCP port (late join; see listen --snapshot)."),
    snapshot_user: Optional[str] = typer.Option(None, "--snapshot-user", help="Login the snapshot server accepts."),
    snapshot_password_file: Optional[str] = typer.Option(None, "--snapshot-password-file",
                                                         help="File whose first line is the snapshot password."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
):
    """The simulated exchange: publish an ITCH stream over MoldUDP64 multicast.

    Example: hftcap exchange --netns hftcap-ex --stocks 8 --messages 200000 --msg-rate 50000
    """
    from .lab.exchange import run_exchange
    from .feed.decode import is_capture
    if file and is_capture(file):
        if msg_rate is not None or write or mode != "delta" or loss or dup or reorder:
            raise UsageError("a capture is replayed as recorded: --msg-rate, --write, --mode, --loss, --dup and "
                             "--reorder are for ITCH files and the generator", hint="pace it with --speed X")
        from .lab.replay import run_replay
        r = run_replay(netns, feed, file, speed, duration, interface)
        if as_json:
            _emit_json(r)
        else:
            out.print(f"replayed {r['packets_sent']:,} of {r['capture_packets']:,} packets of {file} to {r['feed']} "
                      f"in {r['elapsed_ns'] / 1e9:.3f} s (CLOCK_MONOTONIC; recorded "
                      f"{r['recorded_span_ns'] / 1e9:.3f} s, speed {r['speed']}), latest {r['late_max_ns']:,} ns late")
        return
    source = file if file else {"seed": seed, "stocks": stocks, "messages": messages, "profile": profile}
    r = run_exchange(netns, feed, source, msg_rate=msg_rate, speed=speed, messages_per_packet=messages_per_packet,
                     loss=loss, dup=dup, reorder=reorder, seed=seed, rerequest_port=rerequest_port, linger=linger,
                     write=write, duration=duration, max_packets=count, interface=interface, clock=clock,
                     mode=mode, snapshot_levels=levels, snapshot_port=snapshot_port, snapshot_user=snapshot_user,
                     snapshot_password=_snapshot_password(snapshot_password_file, None),
                     feed_b=feed_b, loss_b=loss_b, dup_b=dup_b, reorder_b=reorder_b, seed_b=seed_b,
                     outage_b=_parse_outage(outage_b))
    if as_json:
        _emit_json(r)
    elif write:
        out.print(f"wrote {r.get('messages', r.get('messages_written', '?'))} messages to {write}")
    else:
        _print_sent(r, f"hftcap exchange: {feed}")


def _parse_outage(text: Optional[str]):
    if text is None:
        return None
    a, sep, b = text.partition(":")
    try:
        return float(a), float(b)
    except ValueError:
        raise UsageError(f"bad --outage-b '{text}': expected START:SECONDS", hint="for example --outage-b 1.0:2.0") from None


@app.command()
def bench(
    rounds: int = typer.Option(3, "--rounds", help="Rounds; each runs every path in turn."),
    seconds: float = typer.Option(3.0, "--seconds", help="Measured seconds per trial (after warm-up)."),
    rate: float = typer.Option(50_000, "--rate", help="Exchange message rate (msg/s)."),
    k: int = typer.Option(4, "--messages-per-packet", "-k", help="Messages per packet."),
    seed: int = typer.Option(7, "--seed", help="Generator seed (same stream for every path)."),
    stocks: int = typer.Option(16, "--stocks", help="Generated stocks."),
    warmup: float = typer.Option(0.5, "--warmup", help="Seconds discarded at the start of each trial."),
    path: Optional[List[str]] = typer.Option(None, "--path", help="Only these: xdp-busy, xdp-wakeup, kernel-busy, kernel-block, and xdp-busy-warm (xdp-busy with listen --warm-books; not by default)."),
    json_file: Optional[str] = typer.Option(None, "--json", help="Write the result JSON to FILE."),
    trace: bool = typer.Option(False, "--trace", help="Also split the kernel paths into stages with bcc tracepoints."),
    compare_snapshots: bool = typer.Option(False, "--compare-snapshots",
                                           help="Also send the stream as hftcap Book Snapshots (exchange --mode "
                                                "snapshot) on one path: bytes, packets, CPU per update, latency."),
    snapshot_levels: int = typer.Option(5, "--snapshot-levels", help="Levels per side in each snapshot."),
    snapshot_path: str = typer.Option("xdp-wakeup", "--snapshot-path",
                                      help="Path of the snapshot comparison (busy paths spin: their CPU is the "
                                           "trial's length)."),
    plot: Optional[str] = typer.Option(None, "--plot", metavar="OUT.png|OUT.svg",
                                       help="Also draw sender_to_book's percentile plot, one line per path."),
    floor: bool = typer.Option(True, "--floor/--no-floor",
                               help="Also run the floor (bare sender, bare AF_XDP and socket receivers) in "
                                    "every round and show hftcap's excess over it."),
    stamp: Optional[List[str]] = typer.Option(None, "--stamp",
                                              help="Run every path once per stamp source, alternating: tsc, clock "
                                                   "or auto (repeatable or a list: --stamp tsc,clock)."),
):
    """Kernel bypass vs kernel socket, measured per hop in a lab of its own.

    Example: hftcap bench --rounds 3 --seconds 3 --rate 50000 --json bench.json
    """
    from .measure.bench import render, run_bench

    def progress(rnd, mode, got, sent):
        err_console.print(f"round {rnd + 1}/{rounds} {mode:13s} received {got['messages']:,}/{sent['messages_sent']:,}")

    doc = run_bench(rounds=rounds, seconds=seconds, msg_rate=rate, k=k, seed=seed, stocks=stocks, warmup=warmup,
                    paths=path, json_file=json_file, progress=progress, trace=trace,
                    compare_snapshots=compare_snapshots, snapshot_levels=snapshot_levels,
                    snapshot_path=snapshot_path, plot=plot, floor=floor,
                    stamps=[x for s in stamp for x in s.split(",") if x] if stamp else None)
    render(doc, out)
    if plot:
        err_console.print(f"wrote {plot}")


@floor_app.command("recv")
def floor_recv(
    interface: str = typer.Option(..., "-i", "--interface", help="Interface to receive on."),
    feed: str = typer.Option(..., "--feed", help="GROUP:PORT the floor sender sends to."),
    netns: Optional[str] = typer.Option(None, "--netns", help="Run inside this network namespace."),
    kind: str = typer.Option("xdp", "--kind", help="xdp (xdp/floor.bpf.c + AF_XDP) or kernel (UDP socket)."),
    cpu: Optional[int] = typer.Option(None, "--cpu", help="Pin the receiving thread to this CPU."),
    warmup: float = typer.Option(0.0, "--warmup", help="Discard the samples of the first S seconds."),
    duration: float = typer.Option(10.0, "--duration", help="Stop after S seconds (or at Ctrl-C)."),
    out_file: Optional[str] = typer.Option(None, "--out", help="Also write the result JSON to FILE."),
):
    """The bare receiver: spin, stamp at dequeue, nothing else.

    Example: hftcap floor recv --netns hftcap-host -i hftcap-h0 --feed 239.1.1.1:26400 --duration 5
    """
    from .measure.floor import run_recv, write_json

    def started():
        print(f"hftcap floor: listening on {interface} ({kind}); Ctrl-C stops", file=sys.stderr, flush=True)

    r = run_recv(netns, interface, feed, kind=kind, cpu=cpu, warmup=warmup, duration=duration, on_started=started)
    if out_file:
        write_json(r, out_file)
    _emit_json({k: v for k, v in r.items() if k != "hists"})


@floor_app.command("send")
def floor_send(
    feed: str = typer.Option(..., "--feed", help="GROUP:PORT to send to."),
    netns: Optional[str] = typer.Option(None, "--netns", help="Run inside this network namespace."),
    rate: float = typer.Option(12_500, "--rate", help="Packets per second."),
    packets: int = typer.Option(..., "--packets", help="Datagrams to send."),
    payload: int = typer.Option(64, "--payload", help="UDP payload bytes (16-1472)."),
    duration: float = typer.Option(60.0, "--duration", help="Hard time bound (s)."),
    interface: Optional[str] = typer.Option(None, "--interface", help="Multicast interface (default: the route's)."),
):
    """The bare sender: one packet per send(), stamped right before the call.

    Example: hftcap floor send --netns hftcap-ex --feed 239.1.1.1:26400 --rate 12500 --packets 50000
    """
    from .measure.floor import run_send
    _emit_json(run_send(netns, feed, rate, packets, payload=payload, duration=duration, interface=interface))


@floor_app.command("line")
def floor_line(
    cpu_a: int = typer.Option(0, "--cpu-a", help="The CPU that writes (where the NIC queue's receive runs)."),
    cpu_b: int = typer.Option(1, "--cpu-b", help="The CPU that reads (the data thread's)."),
    batches: int = typer.Option(200, "--batches", help="Timed batches (each one CLOCK_MONOTONIC pair)."),
    per_batch: int = typer.Option(1000, "--per-batch", help="Round trips per batch."),
    max_seconds: float = typer.Option(2.0, "--max-seconds", help="Hard time bound (s)."),
):
    """A cache line between two CPUs: what reading a line the other CPU just wrote costs.

    The receive path pays it for every frame another CPU wrote (copy mode, or the CPU of the
    NIC's interrupt): choose the data thread's CPU with it. No root, no network.

    Example: hftcap floor line --cpu-a 0 --cpu-b 1
    """
    from .measure.floor import run_line
    _emit_json(run_line(cpu_a, cpu_b, batches=batches, per_batch=per_batch, max_s=max_seconds))


@app.command()
def demo(
    name: str = typer.Option("demo", "--name", help="Lab name prefix."),
    stocks: int = typer.Option(8, "--stocks", help="Stocks the exchange generates."),
    rate: float = typer.Option(20_000, "--rate", help="Exchange messages per second."),
    k: int = typer.Option(4, "--messages-per-packet", "-k", help="Messages per packet."),
    seed: int = typer.Option(42, "--seed", help="Generator seed."),
    minutes: float = typer.Option(10.0, "--minutes", help="Length of the generated stream."),
    path: str = typer.Option("xdp", "--path", help="xdp or kernel."),
    poll: str = typer.Option("wakeup", "--poll", help="busy or wakeup."),
    symbol: Optional[str] = typer.Option(None, "--symbol", "-s", help="Stock to show first."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after S seconds."),
    headless: bool = typer.Option(False, "--headless", help="No live view: print the summary at the end."),
    as_json: bool = typer.Option(False, "--json", help="Headless, one JSON object at the end."),
    metrics: Optional[str] = typer.Option(None, "--metrics", metavar="[ADDR:]PORT",
                                          help="Serve Prometheus metrics (default address 127.0.0.1)."),
):
    """The whole tool in one command: lab, exchange, live view; q quits and cleans up.

    Example: sudo hftcap demo --stocks 8 --rate 20000
    """
    from .demo import run_demo
    live = not as_json and not headless and sys.stdout.isatty() and sys.stdin.isatty()
    s = run_demo(name=name, stocks=stocks, rate=rate, k=k, seed=seed, minutes=minutes, path=path, poll=poll,
                 symbol=symbol, live=live, duration=duration, metrics=metrics,
                 on_doctor=None if live else _print_doctor_line)
    if as_json:
        _emit_json(s)
    else:
        _print_summary(s)
        _print_latency(s)


@app.command("budget")
def budget_cmd(files: List[str] = typer.Argument(..., help="Result files from listen --save, or pcapng captures from "
                                                            "listen --write (two or more: side by side)."),
               as_json: bool = typer.Option(False, "--json", help="One JSON object."),
               plot: Optional[str] = typer.Option(None, "--plot", metavar="OUT.png|OUT.svg",
                                                  help="Also draw the percentile plot (one line per run and path)."),
               hop: Optional[List[str]] = typer.Option(None, "--hop", help="Hops to plot (repeatable; default the "
                                                                           "longest measured span per path).")):
    """Print the per-hop latency table of saved runs.

    Example: hftcap budget run-xdp.json run-kernel.json --plot budget.png;  hftcap budget capture.pcapng
    """
    from .measure.capfile import load_any
    from .measure.latency import run_budget
    if plot:
        from .measure.plot import budget_plot
        budget_plot(files, plot, hop)
    code = run_budget(files, console=out, json_out=as_json, loader=load_any)
    if plot:
        err_console.print(f"wrote {plot}")
    if code:
        raise typer.Exit(code)


@app.command()
def book(
    file: str = typer.Argument(..., help="NASDAQ-layout ITCH file (plain or .gz), pcap or pcapng of MoldUDP64."),
    symbol: Optional[str] = typer.Option(None, "--symbol", "-s", help="Stock to show (default: the most active)."),
    levels: int = typer.Option(10, "--levels", "-l", help="Levels per side."),
    bbo: bool = typer.Option(False, "--bbo", help="Print every change of the best bid/offer."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
):
    """Replay a file at full speed through the decoder and books; print the final book.

    Example: hftcap book 01302019.NASDAQ_ITCH50.gz --symbol AAPL --levels 5
    """
    from .book.books import run_book
    code = run_book(file, symbol=symbol, levels=levels, bbo=bbo, json_out=as_json, console=out)
    if code:
        raise typer.Exit(code)


@app.command()
def decode(
    file: Optional[str] = typer.Argument(None, help="NASDAQ-layout ITCH file (plain or .gz), pcap or pcapng of MoldUDP64."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines: one object per message."),
    symbol: Optional[str] = typer.Option(None, "--symbol", "-s", help="Only this stock's messages."),
    mtype: Optional[str] = typer.Option(None, "--type", "-t", help="Only these message types, e.g. A or A,F,U."),
    dissector: bool = typer.Option(False, "--dissector", help="Print the path of the Wireshark ITCH 5.0 Lua "
                                                              "dissector and how to run tshark with it."),
):
    """Print every ITCH 5.0 message with every field by its spec name.

    Example: hftcap decode capture.pcapng --symbol AAPL --type A,E
    """
    from .feed.decode import run_decode
    if dissector:
        from .feed.wireshark import dissector_help
        print(dissector_help())
        return
    if file is None:
        raise UsageError("decode needs a FILE", hint="hftcap decode capture.pcapng, or --dissector")
    code = run_decode(file, json_out=as_json, symbol=symbol, types=mtype)
    if code:
        raise typer.Exit(code)


@app.command()
def doctor(
    interface: Optional[str] = typer.Argument(None, help="Interface listen will capture on."),
    cpu: Optional[int] = typer.Option(None, "--cpu", help="The CPU listen's data thread will run on (listen --cpu)."),
    netns: Optional[str] = typer.Option(None, "--netns", help="The interface's network namespace."),
    queue: str = typer.Option("0", "--queue", help="The RX queues listen will bind (N, 0,1,2 or all)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object (schema hftcap.doctor/1)."),
    root: str = typer.Option("/", "--root", help="Read /proc, /sys and /dev under DIR (a saved or fake tree)."),
):
    """Is this host tuned for a latency-critical receive core? Read-only: changes nothing.

    Example: hftcap doctor eth1 --cpu 3
    """
    from .ops.doctor import parse_queues, render_lines, run_doctor
    rep = run_doctor(interface, cpu=cpu, netns=netns, root=root, queues=parse_queues(queue))
    if as_json:
        _emit_json(rep.to_dict())
    else:
        for line in render_lines(rep):
            print(line)
    if rep.counts["fail"]:
        raise typer.Exit(3)


@app.command()
def trace(
    netns: Optional[str] = typer.Option(None, "--netns", help="Only receivers in this network namespace."),
    port: Optional[int] = typer.Option(None, "--port", help="Only receivers holding a UDP socket on this port."),
    pid: Optional[int] = typer.Option(None, "--pid", help="Only this process."),
    duration: float = typer.Option(10.0, "--duration", help="Seconds to trace."),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between reports."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object at the end."),
):
    """Split the kernel receive path into stages with bcc tracepoints.

    Example: hftcap trace --netns hftcap-host --port 26400 --duration 5
    """
    from .measure.trace import run_trace
    code = run_trace(netns=netns, port=port, pid=pid, duration=duration, interval=interval,
                     json_out=as_json, console=out)
    if code:
        raise typer.Exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        rc = app(args=argv, prog_name="hftcap", standalone_mode=False)
        return rc if isinstance(rc, int) else 0    # click returns a typer.Exit's code here
    except HftcapError as e:
        return report(e, debug)
    except Exception as e:  # click usage errors and anything unexpected
        if isinstance(e, typer.Exit):
            return e.exit_code
        if isinstance(e, typer.Abort):
            print("hftcap: aborted", file=sys.stderr)
            return 130
        if type(e).__name__ == "NoArgsIsHelpError":
            print(e.format_message(), file=sys.stderr)
            return 2
        if isinstance(e, _cx.ClickException):
            msg = e.format_message().splitlines()[0] if e.format_message() else str(e)
            print(f"hftcap: error: {msg}", file=sys.stderr)
            ctx = getattr(e, "ctx", None)
            cmd = ctx.command_path if ctx else "hftcap"
            print(f"hint: see {cmd} --help", file=sys.stderr)
            return e.exit_code if e.exit_code else 2
        if debug:
            traceback.print_exc()
        print(f"hftcap: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("hint: run again with --debug for the traceback, and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
