"""The lab exchange: `hftcap send` (a bounded synthetic feed) and `hftcap exchange` (a file or the
generator, paced, with loss/dup/reorder injection and a MoldUDP64 re-request server).

Python decides, C executes: this module enters the exchange namespace, opens and configures the
sockets there (multicast interface named explicitly, TTL, no loopback), loads the stream, and
hands both to hftcap._core.Sender, which cuts, paces, stamps and sends with the GIL released.
ITCH timestamps are stamped at send time as CLOCK_TAI mod 86400 s ("tai-midnight") unless told
otherwise, so the receiver's CLOCK_TAI gives the wire-to-app latency in one clock domain."""
from __future__ import annotations

import errno as _errno
import gzip
import json
import os
import socket
import struct
import threading
from dataclasses import dataclass

from ..errors import HftcapError, UsageError, from_oserror

DEFAULT_SESSION = b"HFTCAP0001"
DEFAULT_TTL = 1
NS_PER_DAY = 86_400_000_000_000

# ------------------------------------------------------------------ ITCH records (tests, send)

_STOCK = b"HFTC    "


def _hdr(kind: bytes, locate: int, ts_ns: int) -> bytes:
    # ITCH50.md section 2: type, locate u16, tracking u16, ts48
    return kind + struct.pack(">HH", locate, 0) + (ts_ns % NS_PER_DAY).to_bytes(6, "big")


def itch_system_event(code: bytes, ts_ns: int = 0) -> bytes:
    return _hdr(b"S", 0, ts_ns) + code


def itch_stock_directory(locate: int, stock: bytes = _STOCK, ts_ns: int = 0) -> bytes:
    return (_hdr(b"R", locate, ts_ns) + stock.ljust(8)[:8] + b"Q" + b"N" + struct.pack(">I", 100)
            + b"N" + b"C" + b"Z " + b"P" + b"N" + b"N" + b"1" + b"N" + struct.pack(">I", 0) + b"N")


def itch_add(locate: int, ref: int, side: bytes, shares: int, price_e4: int,
             stock: bytes = _STOCK, ts_ns: int = 0) -> bytes:
    return _hdr(b"A", locate, ts_ns) + struct.pack(">Q1sI8sI", ref, side, shares, stock.ljust(8)[:8], price_e4)


def itch_delete(locate: int, ref: int, ts_ns: int = 0) -> bytes:
    return _hdr(b"D", locate, ts_ns) + struct.pack(">Q", ref)


def frame(messages) -> bytes:
    """NASDAQ file layout: each message prefixed by its u16 BE length (ITCH50.md section 7)."""
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


def synthetic_stream(n_messages: int, ts_step_ns: int = 1000) -> bytes:
    """A small well-formed ITCH day for `send`: S(O), R, then adds and deletes of one stock
    (every add is deleted by the next message), S(C) last. Timestamps step by ts_step_ns."""
    if n_messages < 0:
        raise UsageError("message count must be >= 0")
    msgs = []
    for i in range(n_messages):
        ts = i * ts_step_ns
        if i == 0 and n_messages >= 3:
            msgs.append(itch_system_event(b"O", ts))
        elif i == 1 and n_messages >= 3:
            msgs.append(itch_stock_directory(1, ts_ns=ts))
        elif i == n_messages - 1 and n_messages >= 3:
            msgs.append(itch_system_event(b"C", ts))
        elif i % 2 == 0:
            msgs.append(itch_add(1, i, b"B" if i % 4 == 0 else b"S", 100, 1_000_000 + (i % 50) * 100, ts_ns=ts))
        else:
            msgs.append(itch_delete(1, i - 1, ts))
    return frame(msgs)


# ------------------------------------------------------------------ MoldUDP64 parsing (tests, tools)

def parse_packet(dg: bytes) -> tuple[bytes, int, int, list[bytes]]:
    """(session, seq, count, messages) of one downstream datagram; raises ValueError if malformed."""
    if len(dg) < 20:
        raise ValueError(f"MoldUDP64 packet of {len(dg)} bytes: expected at least 20")
    session, seq, count = dg[:10], int.from_bytes(dg[10:18], "big"), int.from_bytes(dg[18:20], "big")
    msgs, o = [], 20
    n = count if 0 < count < 0xFFFF else 0
    for _ in range(n):
        if o + 2 > len(dg):
            raise ValueError("block header past the end")
        ln = int.from_bytes(dg[o:o + 2], "big")
        if o + 2 + ln > len(dg):
            raise ValueError("block body past the end")
        msgs.append(dg[o + 2:o + 2 + ln])
        o += 2 + ln
    if o != len(dg):
        raise ValueError(f"{len(dg) - o} trailing bytes")
    return session, seq, count, msgs


def parse_build(blob: bytes) -> list[tuple[int, bytes]]:
    """Records of Sender.build(): [(deadline_ns, datagram)]."""
    out, o = [], 0
    while o < len(blob):
        d, ln = struct.unpack_from("<QI", blob, o)
        out.append((d, blob[o + 12:o + 12 + ln]))
        o += 12 + ln
    return out


def request_packet(session: bytes, seq: int, count: int) -> bytes:
    """A 20-byte MoldUDP64 re-request (MOLDUDP64.md section 2)."""
    return session.ljust(10)[:10] + struct.pack(">QH", seq, count)


# ------------------------------------------------------------------ sources

def read_itch_file(path: str, max_messages: int | None = None) -> bytes:
    """A NASDAQ-layout file (plain, or gzip inflated on the C reader's own thread: ISA-L or
    zlib), the first max_messages complete records if given."""
    from .. import _core
    try:
        return _core.read_file(os.fspath(path), int(max_messages or 0))
    except FileNotFoundError:
        raise HftcapError(f"ITCH file '{path}' not found") from None
    except OSError as e:
        raise HftcapError(f"cannot read ITCH file '{path}': {e.strerror or e}",
                          hint="check it with gzip -t" if e.errno in (_errno.EPIPE, _errno.EBADMSG)
                          else None) from None


def generate(seed: int, stocks: int, messages: int, profile: str = "basic") -> bytes:
    """The built-in generator (hftcap.lab.gen), imported only when used."""
    try:
        from . import gen
    except ImportError:
        raise HftcapError("the built-in ITCH generator is not in this build",
                          hint="give an ITCH file instead: --file FILE") from None
    if profile not in gen.PROFILES:
        raise UsageError(f"--profile {profile!r}: expected one of {', '.join(gen.PROFILES)}")
    try:
        return bytes(gen.generate(seed, stocks, messages, profile))
    except ValueError:
        raise UsageError(f"cannot generate {messages} messages for {stocks} stocks (profile {profile})",
                         hint=f"1-{gen.MAX_STOCKS_BY_PROFILE[profile]} stocks and at least "
                              f"{gen.min_messages(stocks, profile)} messages (the directory, trading "
                              "states and system events)") from None


def write_stream(path: str, stream: bytes) -> dict:
    from .. import _core
    n = _core.stream_count(stream, 65507)
    tmp = path + ".tmp"
    try:
        with (gzip.open(tmp, "wb") if path.endswith(".gz") else open(tmp, "wb")) as f:
            f.write(stream)
        os.replace(tmp, path)
    except OSError as e:
        raise from_oserror(e, f"writing {path}") from None
    return {"written": path, "messages": n, "bytes": len(stream)}


# ------------------------------------------------------------------ sockets (inside the namespace)

def _parse_feed(feed: str):
    from ..receive.options import parse_feed
    return parse_feed(feed)


def _route_ifindex(group: str) -> int:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        try:
            r = ipr.route("get", dst=group)
        except Exception as e:
            code = getattr(e, "code", 0)
            raise HftcapError(f"no route to {group} in this namespace ({os.strerror(code) if code else e})",
                              hint="create the lab (hftcap lab up) or name the interface: --interface") from None
        routes = list(r)
        oif = routes[0].get_attr("RTA_OIF") if routes else None
    if not oif:
        raise HftcapError(f"no interface routes {group}", hint="name it: --interface")
    return int(oif)


def _ifindex(interface: str | None, group: str) -> tuple[int, str]:
    if interface:
        try:
            return socket.if_nametoindex(interface), interface
        except OSError:
            raise HftcapError(f"no interface '{interface}' in this namespace",
                              hint="check --interface and --netns (hftcap lab status)") from None
    idx = _route_ifindex(group)
    return idx, socket.if_indextoname(idx)


def open_feed_socket(group: str, port: int, interface: str | None = None,
                     ttl: int = DEFAULT_TTL) -> tuple[socket.socket, str]:
    """A UDP socket in the current namespace, connected to group:port, multicast out of the
    named interface (or the one the route to the group uses), TTL `ttl`, loopback off."""
    ifindex, ifname = _ifindex(interface, group)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # struct ip_mreqn: multiaddr (unused here), address (any), ifindex
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                     socket.inet_aton("0.0.0.0") * 2 + struct.pack("=i", ifindex))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        s.connect((group, port))
    except OSError as e:
        s.close()
        raise from_oserror(e, f"feed socket to {group}:{port} on {ifname}") from None
    return s, ifname


def open_rerequest_socket(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("0.0.0.0", port))
    except OSError as e:
        s.close()
        raise from_oserror(e, f"re-request server on UDP port {port}",
                           hint="another exchange is running? choose --rerequest-port") from None
    return s


# ------------------------------------------------------------------ running

@dataclass
class _Run:
    result: object = None
    error: BaseException | None = None


def _run_worker(call, stop, name: str):
    """call() in a worker thread (named `name`) so Ctrl-C in the main thread can stop it
    cleanly: stop(), then wait for call to return. Answers what call returned; what it raised
    is raised here."""
    box = _Run()
    done = threading.Event()

    def body():
        try:
            box.result = call()
        except BaseException as e:  # handed to the main thread
            box.error = e
        finally:
            done.set()

    t = threading.Thread(target=body, name=name, daemon=True)
    t.start()
    # Wait on an Event, not on join(): a join() interrupted by Ctrl-C can report the thread
    # finished while it still runs (CPython < 3.12).
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        stop()
        done.wait()
    t.join()
    if box.error is not None:
        raise box.error
    return box.result


def _run_sender(sender, sock: socket.socket, sock_b: socket.socket | None = None) -> dict:
    """sender.run in a worker thread so Ctrl-C in the main thread can stop it cleanly."""
    try:
        return _run_worker(lambda: sender.run(sock.fileno(), None if sock_b is None else sock_b.fileno()),
                           sender.stop, "hftcap-send")
    except OSError as e:
        raise from_oserror(e, "sending the feed",
                           hint="is the exchange interface up? (hftcap lab status)") from None


def _send_split(raw: bytes, clock: str) -> dict:
    """The sender's side of sender_to_book: per data packet, its stamp -> the return of the
    send call that sent it (batching and the call itself), in the stamping clock."""
    from ..measure import latency
    h = latency.parse_export(raw)[0]
    clk = {"tai-midnight": "CLOCK_TAI", "utc-midnight": "CLOCK_REALTIME"}.get(clock)
    if clk is None:
        return {"absent": "the stream's own timestamps are sent (--clock file): no stamp"}
    return {"span": "packet stamped -> its send call returned", "clock": clk,
            **(latency.summary_ns(h) or {"absent": "no data packets sent"}), "hist": latency.sparse(h)}


def _finish(res: dict, json_out: str | None) -> dict:
    if isinstance(res.get("stamp_to_send_return"), bytes):
        res["stamp_to_send_return"] = _send_split(res["stamp_to_send_return"], res.get("clock"))
    el = res.get("elapsed_ns") or 0
    res["packet_rate_pps"] = round(res["packets_sent"] / (el / 1e9), 1) if el else None
    res["message_rate_mps"] = round(res["messages_sent"] / (el / 1e9), 1) if el else None
    res["elapsed_clock"] = "CLOCK_MONOTONIC"
    if json_out:
        try:
            with open(json_out, "w") as f:
                json.dump(res, f, indent=1)
                f.write("\n")
        except OSError as e:
            raise from_oserror(e, f"writing {json_out}") from None
    return res


def _make_sender(stream: bytes, **kw):
    from .. import _core
    try:
        return _core.Sender(stream, **kw)
    except ValueError as e:
        raise UsageError(str(e)) from None


def run_send(netns: str | None, feed: str, rate: float, count: int, messages_per_packet: int = 1, *,
             interface: str | None = None, max_seconds: float = 60.0, session: bytes = DEFAULT_SESSION,
             clock: str = "tai-midnight", heartbeat_interval: float = 1.0, eos_count: int = 3,
             json_out: str | None = None) -> dict:
    """`hftcap send`: count packets of messages_per_packet synthetic ITCH messages each, with
    consecutive sequence numbers from 1, at `rate` packets/s (0 = as fast as possible), from
    namespace `netns` (None: the current one), bounded by count and max_seconds."""
    f = _parse_feed(feed)
    if count < 1 or count > 100_000_000:
        raise UsageError(f"--count {count}: expected 1 to 100,000,000 packets")
    if not 1 <= messages_per_packet <= 33:  # 33 * (2 + 39) + 20 <= 1400
        raise UsageError(f"--messages-per-packet {messages_per_packet}: expected 1 to 33",
                         hint="a packet carries at most 1400 bytes of payload")
    if rate < 0:
        raise UsageError(f"--rate {rate}: expected >= 0 packets/s (0 = as fast as possible)")
    if not 0 < max_seconds <= 86400:
        raise UsageError(f"--max-seconds {max_seconds}: expected 0 < S <= 86400")
    stream = synthetic_stream(count * messages_per_packet)
    sender = _make_sender(stream, session=session, messages_per_packet=messages_per_packet,
                          pace="packets" if rate > 0 else "none", rate=float(rate), clock=clock,
                          max_packets=count, max_seconds=max_seconds,
                          heartbeat_interval=heartbeat_interval, eos_count=eos_count, eos_interval=0.1)
    if sender.packets != count:  # the stream is cut by count and size: K always fits
        raise HftcapError(f"internal: {sender.packets} packets cut, {count} wanted")
    if netns:
        from . import netns as _netns
        _netns.enter(netns)
    sock, ifname = open_feed_socket(f.group, f.port, interface)
    try:
        res = _run_sender(sender, sock)
    finally:
        sock.close()
    res.update({"command": "send", "netns": netns, "feed": f"{f.group}:{f.port}", "interface": ifname,
                "session": session.decode("ascii", "replace"), "messages_per_packet": messages_per_packet,
                "pace": "packets" if rate > 0 else "none", "rate": rate})
    return _finish(res, json_out)


def run_exchange(netns: str | None, feed: str, source: str | dict | bytes | None = None, *,
                 msg_rate: float | None = None, speed: float | None = None,
                 messages_per_packet: int = 8, loss: float = 0.0, dup: float = 0.0, reorder: float = 0.0,
                 seed: int = 1, rerequest_port: int | None = None, serve: bool = True, linger: float = 1.0,
                 write: str | None = None, duration: float = 60.0, max_packets: int = 0,
                 max_messages: int | None = None, interface: str | None = None,
                 session: bytes = DEFAULT_SESSION, clock: str = "tai-midnight",
                 heartbeat_interval: float = 1.0, eos_count: int = 3, json_out: str | None = None,
                 mode: str = "delta", snapshot_levels: int = 5, snapshot_port: int | None = None,
                 snapshot_user: str | None = None, snapshot_password: str | None = None,
                 feed_b: str | None = None, loss_b: float = 0.0, dup_b: float = 0.0, reorder_b: float = 0.0,
                 seed_b: int | None = None, outage_b: tuple[float, float] | None = None) -> dict:
    """`hftcap exchange`. source: a NASDAQ-layout file path, raw NASDAQ-layout bytes, or the
    generator's parameters {"seed", "stocks", "messages", "profile"} (None: the generator's
    defaults; profile "day" imitates a real NASDAQ day, 8,900 stocks unless "stocks" is given).
    Pacing: msg_rate messages/s, or speed x the file's own timestamps, or neither (as fast as
    possible). With write, the stream is written to that file in NASDAQ layout and nothing is
    sent. Otherwise the feed goes out from namespace netns, bounded by duration (and
    max_packets), and re-requests are answered on rerequest_port (default feed port + 1; 0 or
    serve=False: none) until `linger` seconds after the last packet. Ctrl-C stops the feed
    (End of Session still goes out) and returns the counters with stop_reason "stopped".
    mode "snapshot": every book message of the stream is replaced by one hftcap Book Snapshot
    'Z' of its stock's top snapshot_levels levels (hftcap.feed.snapshots; not ITCH 5.0), so the
    same pacing gives the same update rate; the sender publishes it unchanged.
    snapshot_port: a SoupBinTCP snapshot server (hftcap.lab.snapshot_server) on that TCP port in
    the exchange namespace while the feed runs and lingers (login checked against snapshot_user
    and snapshot_password when given).
    feed_b: the same packets, byte for byte, also go to this B line, with its own loss_b, dup_b
    and reorder_b drawn from their own PRNG (seed_b, default derived from seed), and
    outage_b = (start, seconds): the B line sends nothing then (a line down). What each line
    dropped is in the result ("lost_ranges", "line_b"."lost_ranges": [first, last] sequence
    numbers), so what both lines missed can be computed exactly."""
    if msg_rate is not None and speed is not None:
        raise UsageError("--msg-rate and --speed are exclusive", hint="pace by one of them, or by neither")
    if msg_rate is not None and msg_rate <= 0:
        raise UsageError(f"--msg-rate {msg_rate}: expected > 0 messages/s")
    if speed is not None and speed <= 0:
        raise UsageError(f"--speed {speed}: expected > 0 (1 = the file's own pace)")
    for name, p in (("--loss", loss), ("--dup", dup), ("--reorder", reorder), ("--loss-b", loss_b),
                    ("--dup-b", dup_b), ("--reorder-b", reorder_b)):
        if not 0.0 <= p <= 1.0:
            raise UsageError(f"{name} {p}: expected a probability in [0, 1]")
    if not 0 < duration <= 86400:
        raise UsageError(f"--duration {duration}: expected 0 < S <= 86400")
    from ..feed import snapshots
    if mode not in snapshots.MODES:
        raise UsageError(f"--mode {mode!r}: expected one of {', '.join(snapshots.MODES)}")
    snapshots.check_levels(snapshot_levels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        stream = bytes(source)
        src_name = "bytes"
    elif isinstance(source, str):
        stream = read_itch_file(source, max_messages)
        src_name = source
    else:
        g = {"seed": seed, "messages": 100_000, "profile": "basic", **(source or {})}
        if g.get("stocks") is None:
            g["stocks"] = 8900 if g["profile"] == "day" else 8
        stream = generate(int(g["seed"]), int(g["stocks"]), int(g["messages"]), g["profile"])
        src_name = (f"generator(seed={g['seed']}, stocks={g['stocks']}, messages={g['messages']}, "
                    f"profile={g['profile']})")
    conversion = None
    if mode == "snapshot":
        delta_bytes = len(stream)
        stream, conversion = snapshots.to_snapshots(stream, snapshot_levels)
        conversion["delta_bytes"] = delta_bytes
    stream_info = {"mode": mode, "snapshot_levels": snapshot_levels if mode == "snapshot" else None,
                   "conversion": conversion}
    if write:
        res = write_stream(write, stream)
        res.update({"command": "exchange", "source": src_name, **stream_info})
        return _finish_write(res, json_out)

    f = _parse_feed(feed)
    fb = _parse_feed(feed_b) if feed_b else None
    if fb is not None and (fb.group, fb.port) == (f.group, f.port):
        raise UsageError("--feed-b is the same group and port as --feed", hint="the B line has its own group")
    if fb is None and (loss_b or dup_b or reorder_b or outage_b):
        raise UsageError("--loss-b, --dup-b, --reorder-b and --outage-b are for the B line", hint="add --feed-b GROUP:PORT")
    if outage_b is not None and not (0 <= outage_b[0] <= 86400 and 0 <= outage_b[1] <= 86400):
        raise UsageError(f"--outage-b {outage_b[0]}:{outage_b[1]}: expected START:SECONDS, both 0 to 86400")
    seed_b = seed_b if seed_b is not None else (seed * 0x9E3779B97F4A7C15 + 0xB) % (1 << 64)
    pace = "messages" if msg_rate is not None else "file" if speed is not None else "none"
    sender = _make_sender(stream, session=session, messages_per_packet=messages_per_packet, pace=pace,
                          rate=float(msg_rate or 0.0), speed=float(speed or 1.0), clock=clock,
                          loss=loss, dup=dup, reorder=reorder, seed=seed, max_packets=max_packets,
                          max_seconds=duration, heartbeat_interval=heartbeat_interval,
                          eos_count=eos_count, eos_interval=0.1, line_b=fb is not None,
                          loss_b=loss_b, dup_b=dup_b, reorder_b=reorder_b, seed_b=seed_b,
                          outage_b_start=outage_b[0] if outage_b else 0.0,
                          outage_b_seconds=outage_b[1] if outage_b else 0.0)
    rport = rerequest_port if rerequest_port is not None else f.port + 1
    serve = serve and rport != 0  # port 0: no re-request server
    if netns:
        from . import netns as _netns
        _netns.enter(netns)
    sock, ifname = open_feed_socket(f.group, f.port, interface)
    sock_b = None
    try:
        if fb is not None:
            sock_b, _ = open_feed_socket(fb.group, fb.port, interface)
        rsock = open_rerequest_socket(rport) if serve else None
    except HftcapError:
        sock.close()
        if sock_b is not None:
            sock_b.close()
        raise
    snap_server = None
    if snapshot_port is not None:
        from .snapshot_server import SnapshotServer
        try:
            snap_server = SnapshotServer(sender, snapshot_port, session=session, user=snapshot_user,
                                         password=snapshot_password).start()
        except HftcapError:
            sock.close()
            if rsock is not None:
                rsock.close()
            raise
    served: dict = {}
    served_done = threading.Event()
    server = None
    try:
        if rsock is not None:
            def serve_body():
                try:
                    served.update(sender.serve(rsock.fileno(), duration + linger + 2.0))
                except OSError as e:
                    served["error"] = os.strerror(e.errno or _errno.EIO)
                finally:
                    served_done.set()
            server = threading.Thread(target=serve_body, name="hftcap-rerequest", daemon=True)
            server.start()
        res = _run_sender(sender, sock, sock_b)
        if server is not None or snap_server is not None:
            try:  # re-requests and snapshots are still answered for `linger` seconds
                (served_done.wait if server is not None else threading.Event().wait)(linger)
            except KeyboardInterrupt:
                pass
        if server is not None:
            sender.stop()
            served_done.wait()
            server.join()
    finally:
        if server is not None and not served_done.is_set():
            sender.stop()
            served_done.wait()
            server.join()
        sock.close()
        if sock_b is not None:
            sock_b.close()
        if rsock is not None:
            rsock.close()
        snapshots = snap_server.close() if snap_server is not None else None
    res.update({"command": "exchange", "netns": netns, "feed": f"{f.group}:{f.port}", "interface": ifname,
                "source": src_name, "session": session.decode("ascii", "replace"),
                "messages_per_packet": messages_per_packet, "pace": pace,
                "msg_rate": msg_rate, "speed": speed, "loss": loss, "dup": dup, "reorder": reorder,
                "seed": seed, "stream_messages": sender.messages, "stream_packets": sender.packets,
                "rerequest_port": rport if rsock is not None else None,
                "rerequests": served or None, "snapshot_server": snapshots, **stream_info,
                "lost_ranges": _ranges(sender.lost(0))})
    if fb is not None:
        res["line_b"].update({"feed": f"{fb.group}:{fb.port}", "loss": loss_b, "dup": dup_b, "reorder": reorder_b,
                              "seed": seed_b, "outage": list(outage_b) if outage_b else None,
                              "lost_ranges": _ranges(sender.lost(1))})
    return _finish(res, json_out)


def _ranges(runs) -> list[list[int]]:
    """[(first, count)] -> [[first, last]] (inclusive sequence numbers)."""
    return [[a, a + n - 1] for a, n in runs]


def _finish_write(res: dict, json_out: str | None) -> dict:
    if json_out:
        with open(json_out, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    return res
