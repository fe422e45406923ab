"""Gap recovery by MoldUDP64 re-request (the C is hftcap/_core/recovery.c): the options
`listen --rerequest ...` takes, checked before anything opens, and the shaping of the data
thread's figures into `listen --json`. Defaults and limits: ../shared/specs/RECOVERY.md sec. 8."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..errors import UsageError

REQUEST_MAX_LIMIT = 2000     # molderl silently drops larger requests
MAX_OUTSTANDING_LIMIT = 16
MAX_SERVERS = 8
REORDER_LIMIT = 1 << 24


@dataclass
class RecoveryOptions:
    servers: list[tuple[str, int]] = field(default_factory=list)
    reorder_buffer: int = 65_536
    gap_timeout_s: float = 0.001
    request_timeout_s: float = 0.005
    request_max: int = 64
    max_outstanding: int = 4
    request_retries: int = 4
    line_down_timeout_s: float = 3.0   # A/B: a line silent this long while the other is alive is down

    def declare_bound_s(self) -> float:
        """Longest from a run's first request to its declaration as lost when no server
        answers: every attempt (first + retries) on every server timing out. The first request
        goes out gap_timeout after the gap is seen, or when one of max_outstanding frees."""
        return (self.request_retries + 1) * self.request_timeout_s * max(1, len(self.servers))

    def core(self) -> dict:
        return {"servers": list(self.servers), "reorder_buffer": self.reorder_buffer,
                "gap_timeout_ns": int(self.gap_timeout_s * 1e9),
                "request_timeout_ns": int(self.request_timeout_s * 1e9),
                "request_max": self.request_max, "max_outstanding": self.max_outstanding,
                "request_retries": self.request_retries,
                "line_down_timeout_ns": int(self.line_down_timeout_s * 1e9)}


def parse_server(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    hint = "for example --rerequest 10.0.0.1:26401"
    try:
        addr = ipaddress.IPv4Address(host)
        p = int(port)
    except ValueError:
        raise UsageError(f"bad --rerequest '{text}': expected IPV4:PORT", hint=hint) from None
    if not sep or not 1 <= p <= 65535 or addr.is_multicast or addr.is_unspecified:
        raise UsageError(f"bad --rerequest '{text}': expected a unicast IPV4:PORT", hint=hint)
    return str(addr), p


def check(o: RecoveryOptions) -> None:
    if len(o.servers) > MAX_SERVERS:
        raise UsageError(f"{len(o.servers)} --rerequest servers: at most {MAX_SERVERS}")
    if len(set(o.servers)) != len(o.servers):
        raise UsageError("the same --rerequest server is given twice")
    if not 16 <= o.reorder_buffer <= REORDER_LIMIT:
        raise UsageError(f"--reorder-buffer {o.reorder_buffer}: expected 16 to {REORDER_LIMIT} messages")
    if not 0 <= o.gap_timeout_s <= 10:
        raise UsageError(f"--gap-timeout {o.gap_timeout_s}: expected 0 to 10 s")
    if not 0 < o.request_timeout_s <= 10:
        raise UsageError(f"--request-timeout {o.request_timeout_s}: expected more than 0, at most 10 s")
    if not 1 <= o.request_max <= REQUEST_MAX_LIMIT:
        raise UsageError(f"--request-max {o.request_max}: expected 1 to {REQUEST_MAX_LIMIT}",
                         hint="servers drop larger requests without a word (molderl's limit is 2000)")
    if not 1 <= o.max_outstanding <= MAX_OUTSTANDING_LIMIT:
        raise UsageError(f"--max-outstanding {o.max_outstanding}: expected 1 to {MAX_OUTSTANDING_LIMIT}")
    if not 0 <= o.request_retries <= 100:
        raise UsageError(f"--request-retries {o.request_retries}: expected 0 to 100")
    if not 0.001 <= o.line_down_timeout_s <= 3600:
        raise UsageError(f"--line-down-timeout {o.line_down_timeout_s}: expected 0.001 to 3600 s",
                         hint="3 heartbeat intervals (3 s for 1 s heartbeats) is the usual choice")


def _pct(raw: bytes) -> dict:
    from ..measure import latency
    (h,) = latency.parse_export(raw)
    return {"domain": "CLOCK_TAI", "count": h.count, "min_ns": h.min_ns if h.count else None, "max_ns": h.max_ns,
            **{f"{k}_ns": v for k, v in latency.percentiles(h.counts, h.min_ns, h.max_ns).items()}}


def shape(report: dict | None, feeds: list) -> dict | None:
    """The recovery part of `listen --json`: per feed its state and figures, the recovery
    time (gap seen -> filled, CLOCK_TAI) as percentiles, and the request socket's drops."""
    if report is None:
        return None
    from ..measure import latency
    out = {"feeds": {}, "socket_drops": {k: v for k, v in report["socket"].items() if k.startswith("drop_")}}
    for f, r in zip(feeds, report["feeds"]):
        st = r["stats"]

        def pct(raw):
            (h,) = latency.parse_export(raw)
            return {"domain": "CLOCK_TAI", "count": h.count, "max_ns": h.max_ns,
                    **{f"{k}_ns": v for k, v in latency.percentiles(h.counts, h.min_ns, h.max_ns).items()}}
        out["feeds"][str(f)] = {
            "state": r["state"], **st,
            "lost_ranges": [[first, first + n - 1] for first, n in r["lost"]],
            # gap seen -> nothing missing any more; one sample per episode (gaps that overlap
            # in time make one episode)
            "recovery_time": pct(r["recovery_time"]),
            # a run's first request -> the run declared lost (no server answered)
            "loss_declared_after": pct(r["loss_declared_after"]),
            # the hole [N, start of the join buffer) of a late join or restore, re-requested
            "hole": r.get("hole", {}),
        }
        if r.get("lines"):
            out["feeds"][str(f)]["lines"] = shape_lines(r["lines"])
    return out


def shape_lines(lines: dict) -> dict:
    """The A/B part of one feed: per line its figures and state, and the down/up events
    (times CLOCK_TAI, taken at the dequeue of the packet that revealed them)."""
    out = {k: dict(lines[k]) for k in ("a", "b")}
    for k in ("a", "b"):
        out[k]["last_rx_tai_ns"] = out[k].pop("last_rx_ns")
        # this line's copy behind the other line's first copy of the same message (arrival
        # stamps: XDP, else the socket's software stamp, else dequeue)
        out[k]["lag"] = _pct(out[k]["lag"])
    out["events"] = [{"tai_ns": t, "line": ln, "event": ev, "silent_ns": silent}
                     for t, ln, silent, ev in lines["events"]]
    out["clock"] = "CLOCK_TAI"
    return out


def line_event_text(feed: str, e: dict) -> str:
    """One stderr line for a line event."""
    s = e["silent_ns"] / 1e9
    if e["event"] == "down":
        return f"line {e['line'].upper()} of {feed} down: silent {s:.3f} s while the other line is alive"
    return f"line {e['line'].upper()} of {feed} up again after {s:.3f} s silent"


def exit_line(rec: dict | None, suspect: int) -> str | None:
    """One line for the end of a run in which books became unreliable, else None."""
    if not rec:
        return None
    # A feed whose books a snapshot restored after its losses is synced again (listen's
    # snapshot summary says so); only one still degraded is warned about.
    bad = {f: r for f, r in rec["feeds"].items() if r["gaps_lost"] and r.get("state") == "degraded"}
    if not bad:
        return None
    parts = [f"{f}: {r['gaps_lost']} gaps lost ({r['messages_lost']} messages)" for f, r in bad.items()]
    return (f"warning: feed {'degraded' if len(bad) == 1 else 'feeds degraded'}: " + "; ".join(parts)
            + f"; {suspect} books suspect")
