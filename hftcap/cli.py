"""hftcap's command line: parse, call, render, exit code. Every failure is formatted here,
in one place, as one line plus at most one `hint:` line (a traceback only with --debug)."""
from __future__ import annotations

import json
import sys
import traceback
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import HftcapError

try:  # typer >= 0.22 vendors click
    from typer._click import exceptions as _cx
except ImportError:  # older typer uses click itself
    from click import exceptions as _cx

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Wire-to-book market data: XDP/AF_XDP capture, ITCH 5.0 books, per-hop latency.")
lab_app = typer.Typer(no_args_is_help=True, help="The lab: two network namespaces joined by a veth pair.")
app.add_typer(lab_app, name="lab")

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

def _print_summary(s: dict) -> None:
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
    if s["xdp"]:
        t.add_row("XDP program", ", ".join(f"{k} {v:,}" for k, v in s["xdp"].items() if v) or "no packets")
    out.print(t)
    if s.get("warning"):
        out.print(f"[yellow]warning:[/] {s['warning']}")


@app.command()
def listen(
    interface: str = typer.Option(..., "-i", "--interface", help="Interface to capture on."),
    feed: List[str] = typer.Option(..., "--feed", help="GROUP:PORT of a feed (repeatable)."),
    netns: Optional[str] = typer.Option(None, "--netns", help="Run inside this network namespace."),
    path: str = typer.Option("xdp", "--path", help="xdp (AF_XDP kernel bypass) or kernel (UDP socket)."),
    xdp_mode: str = typer.Option("auto", "--xdp-mode", help="native, generic or auto."),
    bind: str = typer.Option("auto", "--bind", help="AF_XDP bind: zerocopy, copy or auto."),
    poll: str = typer.Option("wakeup", "--poll", help="busy (spin) or wakeup (poll())."),
    queue: str = typer.Option("0", "--queue", help="RX queue to bind: N, a list 0,1,2, or all (one AF_XDP socket each)."),
    cpu: Optional[int] = typer.Option(None, "--cpu", help="Pin the data thread to this CPU."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after S seconds."),
    count: Optional[int] = typer.Option(None, "--count", help="Stop after N feed packets."),
    itch_clock: str = typer.Option("none", "--itch-clock",
                                   help="Clock of the ITCH timestamps, for sender->book: none, tai-midnight "
                                        "(the lab exchange), utc-midnight, et-midnight (NASDAQ)."),
    warmup: float = typer.Option(0.0, "--warmup", help="Discard the latency samples of the first S seconds."),
    save: Optional[str] = typer.Option(None, "--save", help="Write histograms and conditions to FILE."),
    budget: bool = typer.Option(False, "--budget", help="Print the per-hop latency table at exit."),
    symbol: Optional[str] = typer.Option(None, "--symbol", "-s", help="Stock shown in the live view (and its book in --json; '*' = every stock's)."),
    headless: bool = typer.Option(False, "--headless", help="No live view, even on a terminal."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at exit."),
):
    """Capture a feed and keep the books.

    Example: hftcap listen --netns hftcap-host -i hftcap-h0 --feed 239.1.1.1:26400 --duration 5
    """
    from .receive.options import ListenOptions, parse_feed
    from .listen import run_listen
    single = queue.isdigit()
    o = ListenOptions(interface=interface, feeds=[parse_feed(f) for f in feed], netns=netns, path=path,
                      xdp_mode=xdp_mode, bind=bind, poll=poll, queue=int(queue) if single else 0,
                      queues=None if single else queue, cpu=cpu,
                      duration=duration, count=count, itch_clock=itch_clock, warmup=warmup, save=save)

    live = not as_json and not headless and sys.stdout.isatty() and sys.stdin.isatty()

    def started(sess):
        if live:
            return
        i = sess.info()
        mode = f"XDP {i['xdp_mode']}, bind {i['bind_mode']}" if i["path"] == "xdp" else "kernel socket"
        print(f"hftcap: listening on {i['interface']} ({mode}, poll {i['poll_mode']}) for "
              f"{', '.join(i['feeds'])}; Ctrl-C stops", file=sys.stderr, flush=True)

    s = run_listen(o, on_started=started, live=live, symbol=symbol)
    if as_json:
        _emit_json(s)
    else:
        _print_summary(s)
        if budget:
            _print_latency(s)


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
    t.add_row("ITCH timestamps", f"clock {r['clock']}")
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
    file: Optional[str] = typer.Option(None, "--file", help="NASDAQ-layout ITCH file (plain or .gz) to replay."),
    seed: int = typer.Option(1, "--seed", help="Generator seed (without --file)."),
    stocks: int = typer.Option(8, "--stocks", help="Generated stocks."),
    messages: int = typer.Option(100_000, "--messages", help="Generated messages."),
    msg_rate: Optional[float] = typer.Option(None, "--msg-rate", help="Messages per second (0 = as fast as possible)."),
    speed: Optional[float] = typer.Option(None, "--speed", help="The file's own pace scaled by X."),
    messages_per_packet: int = typer.Option(8, "--messages-per-packet", "-k", help="Messages per packet."),
    loss: float = typer.Option(0.0, "--loss", help="Packet loss probability."),
    dup: float = typer.Option(0.0, "--dup", help="Packet duplication probability."),
    reorder: float = typer.Option(0.0, "--reorder", help="Packet reordering probability."),
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
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
):
    """The simulated exchange: publish an ITCH stream over MoldUDP64 multicast.

    Example: hftcap exchange --netns hftcap-ex --stocks 8 --messages 200000 --msg-rate 50000
    """
    from .lab.exchange import run_exchange
    source = file if file else {"seed": seed, "stocks": stocks, "messages": messages}
    r = run_exchange(netns, feed, source, msg_rate=msg_rate, speed=speed, messages_per_packet=messages_per_packet,
                     loss=loss, dup=dup, reorder=reorder, seed=seed, rerequest_port=rerequest_port, linger=linger,
                     write=write, duration=duration, max_packets=count, interface=interface, clock=clock,
                     mode=mode, snapshot_levels=levels)
    if as_json:
        _emit_json(r)
    elif write:
        out.print(f"wrote {r.get('messages', r.get('messages_written', '?'))} messages to {write}")
    else:
        _print_sent(r, f"hftcap exchange: {feed}")


@app.command()
def bench(
    rounds: int = typer.Option(3, "--rounds", help="Rounds; each runs every path in turn."),
    seconds: float = typer.Option(3.0, "--seconds", help="Measured seconds per trial (after warm-up)."),
    rate: float = typer.Option(50_000, "--rate", help="Exchange message rate (msg/s)."),
    k: int = typer.Option(4, "--messages-per-packet", "-k", help="Messages per packet."),
    seed: int = typer.Option(7, "--seed", help="Generator seed (same stream for every path)."),
    stocks: int = typer.Option(16, "--stocks", help="Generated stocks."),
    warmup: float = typer.Option(0.5, "--warmup", help="Seconds discarded at the start of each trial."),
    path: Optional[List[str]] = typer.Option(None, "--path", help="Only these: xdp-busy, xdp-wakeup, kernel-busy, kernel-block."),
    json_file: Optional[str] = typer.Option(None, "--json", help="Write the result JSON to FILE."),
    trace: bool = typer.Option(False, "--trace", help="Also split the kernel paths into stages with bcc tracepoints."),
    compare_snapshots: bool = typer.Option(False, "--compare-snapshots",
                                           help="Also send the stream as hftcap Book Snapshots (exchange --mode "
                                                "snapshot) on one path: bytes, packets, CPU per update, latency."),
    snapshot_levels: int = typer.Option(5, "--snapshot-levels", help="Levels per side in each snapshot."),
    snapshot_path: str = typer.Option("xdp-wakeup", "--snapshot-path",
                                      help="Path of the snapshot comparison (busy paths spin: their CPU is the "
                                           "trial's length)."),
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
                    snapshot_path=snapshot_path)
    render(doc, out)


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
):
    """The whole tool in one command: lab, exchange, live view; q quits and cleans up.

    Example: sudo hftcap demo --stocks 8 --rate 20000
    """
    from .demo import run_demo
    live = not as_json and not headless and sys.stdout.isatty() and sys.stdin.isatty()
    s = run_demo(name=name, stocks=stocks, rate=rate, k=k, seed=seed, minutes=minutes, path=path, poll=poll,
                 symbol=symbol, live=live, duration=duration)
    if as_json:
        _emit_json(s)
    else:
        _print_summary(s)
        _print_latency(s)


@app.command("budget")
def budget_cmd(files: List[str] = typer.Argument(..., help="Result files from listen --save (two or more: side by side)."),
               as_json: bool = typer.Option(False, "--json", help="One JSON object.")):
    """Print the per-hop latency table of saved runs.

    Example: hftcap budget run-xdp.json run-kernel.json
    """
    from .measure.latency import run_budget
    code = run_budget(files, console=out, json_out=as_json)
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
        app(args=argv, prog_name="hftcap", standalone_mode=False)
        return 0
    except HftcapError as e:
        if debug:
            traceback.print_exc()
        print(f"hftcap: error: {e.msg}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.code
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
