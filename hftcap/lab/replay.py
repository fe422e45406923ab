"""`hftcap exchange --file CAPTURE.pcapng`: replay a capture into the lab at its recorded pace
(or --speed X): every MoldUDP64 datagram of the file, bytes as captured (session, sequence
numbers and ITCH timestamps unchanged), sent to the lab's feed group from the exchange
namespace by hftcap._core.replay (sleep-then-spin on CLOCK_MONOTONIC, GIL released).

Only the UDP payloads go out again, all to the one --feed GROUP:PORT: a capture's own
addresses are never used, so a file from anywhere cannot make the lab send elsewhere."""
from __future__ import annotations

import struct

from ..errors import HftcapError, UsageError, from_oserror
from ..feed import decode


def schedule(path: str) -> tuple[bytes, dict]:
    """The replay schedule (records of <u64 LE ns after the first><u32 LE len><payload>) of
    every MoldUDP64 datagram in a pcap / pcapng, and what was skipped."""
    fr = decode.frames(path)
    if fr is None:
        raise HftcapError(f"{path} is not a pcap or pcapng capture")
    out = bytearray()
    t0 = None
    n = skipped = 0
    last = 0
    for lt, ts, frame in fr:
        p = decode.udp_payload(lt, frame)
        if p is None or decode.mold_of(lt, frame) is None:
            skipped += 1
            continue
        t0 = ts if t0 is None else t0
        rel = max(ts - t0, last)          # a capture out of time order is sent in file order
        last = rel
        out += struct.pack("<QI", rel, len(p)) + p
        n += 1
    if not n:
        raise HftcapError(f"{path} holds no MoldUDP64 datagram to replay")
    return bytes(out), {"capture_packets": n, "skipped_frames": skipped, "recorded_span_ns": last}


def run_replay(netns: str | None, feed: str, path: str, speed: float | None, duration: float,
               interface: str | None) -> dict:
    from .. import _core
    from .exchange import _parse_feed, _run_worker, open_feed_socket
    if speed is not None and speed <= 0:
        raise UsageError(f"--speed {speed}: expected > 0 (1 = the recorded pace)")
    sched, info = schedule(path)
    f = _parse_feed(feed)
    if netns:
        from . import netns as _netns
        _netns.enter(netns)
    sock, ifname = open_feed_socket(f.group, f.port, interface)
    try:
        r = _run_worker(lambda: _core.replay(sock.fileno(), sched, float(speed or 1.0), float(duration)),
                        _core.replay_stop, "hftcap-replay")
    except OSError as e:
        raise from_oserror(e, "replaying the capture") from None
    finally:
        sock.close()
    r.update({"command": "exchange", "source": path, "pace": "capture", "speed": speed or 1.0,
              "netns": netns, "feed": f"{f.group}:{f.port}", "interface": ifname, **info,
              "elapsed_clock": "CLOCK_MONOTONIC",
              "stop_reason": "stopped" if r.pop("stopped") else "done"})
    return r
