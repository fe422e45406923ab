"""The snapshot client of `listen --snapshot`: GLIMPSE-style late join over SoupBinTCP
(../shared/specs/RECOVERY.md section 5).

The capture is armed with a join (join.h) before it starts, so the data thread buffers the
feed from its first packet and touches no book. This thread then connects, logs in for
sequence 1, hands the bytes after Login Accepted to C (Join.load: Sequenced Data into the
books, GIL released) until the End of Snapshot G(N), and hands the books to the data thread
(Join.hand_over(N)), which applies the buffered messages from N on and discards the rest
between two packets. If the ring no longer holds N (the join is `behind`) the books come back
and a new snapshot is fetched into cleared books. Connection refused or lost, a stalled server
(no byte for dead_after_s), a snapshot that never ends (total_timeout_s) and hostile framing
(counted in C by reason) close the connection and retry with backoff; a rejected login stops
at once with its reason.

With restore=True the thread stays on after the join: when the data thread re-arms the join
(a gap declared lost, feed.c hc_consumer_lost -> hc_join_rearm), it fetches a fresh snapshot
into cleared books the same way, retrying with capped backoff until it joins (or is stopped;
a rejected login ends the restores, said once). If the join buffer starts after the
snapshot's N, the data thread re-requests the hole through recovery (join state `hole`)
before it goes live; only if that fails (or there is no --rerequest) is a new snapshot
fetched. on_event(kind, text) hears "restoring", "restored" and "restore_failed"."""
from __future__ import annotations

import select
import socket
import threading
import time

from . import soupbin

MAX_ATTEMPTS = 4
BACKOFF_S = 0.25
RESTORE_BACKOFF_MAX_S = 2.0
WATCH_S = 0.005
RECV = 1 << 20


class LoginRejected(Exception):
    pass


class SnapshotFailed(Exception):
    pass


def parse_hostport(text: str) -> tuple[str, int]:
    from ..errors import UsageError
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"bad --snapshot '{text}': expected HOST:PORT", hint="for example --snapshot 10.77.0.1:26500")
    return host, int(port)


class SnapshotClient:
    def __init__(self, join, books_stats, host: str, port: int, user: str = "", password: str = "",
                 attempts: int = MAX_ATTEMPTS, backoff_s: float = BACKOFF_S,
                 connect_timeout_s: float = 5.0, dead_after_s: float = soupbin.DEAD_AFTER_S,
                 total_timeout_s: float = 120.0, heartbeat_s: float = 0.9, restore: bool = False,
                 on_event=None, splice_timeout_s: float = 30.0):
        self.join, self.books_stats = join, books_stats
        self.host, self.port, self.user, self.password = host, port, user, password
        self.attempts, self.backoff_s = attempts, backoff_s
        self.connect_timeout_s, self.dead_after_s = connect_timeout_s, dead_after_s
        self.total_timeout_s, self.heartbeat_s = total_timeout_s, heartbeat_s
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.failed = threading.Event()  # set with `error` when no snapshot will come
        self.failures: list[str] = []
        self.error: str | None = None
        self.rejected: str | None = None
        self.orders_loaded = 0
        self.tries = 0
        self.restore, self.on_event, self.splice_timeout_s = restore, on_event, splice_timeout_s
        self.joined = threading.Event()   # the first join is live
        self.restoring = False            # a restore is under way (the books are being reloaded)
        self.restore_attempts = 0
        self.restore_failures: list[str] = []
        self.restore_error: str | None = None
        self.restore_log: list[dict] = []  # one entry per restore that joined
        self._load_base = (0, 0)           # loader counters when the load under way began
        self.thread = threading.Thread(target=self._run, name="hftcap-snapshot-client", daemon=True)

    def start(self) -> "SnapshotClient":
        self.thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        self.thread.join()

    def _event(self, kind: str, text: str):
        if self.on_event is not None:
            try:
                self.on_event(kind, text)
            except Exception:  # a reporting callback never stops a restore
                pass

    def _run(self):
        try:
            self._join()
            if self.joined.is_set() and self.restore:
                self._watch()
        finally:
            if self.error and not self.stop_event.is_set():
                self.failed.set()
            self.done.set()

    def _watch(self):
        """After the join: restore the books each time the data thread re-arms the join."""
        seen = self.join.stats()["rearms"]
        while not self.stop_event.wait(WATCH_S):
            st = self.join.stats()
            if st["rearms"] > seen and st["state"] in ("buffering", "behind"):
                seen = st["rearms"]
                if not self._restore_books():
                    return
            elif st["state"] == "live":
                seen = st["rearms"]

    def _restore_books(self) -> bool:
        """One restore: snapshots until the join is live again. False: no more restores."""
        self.restoring = True
        self._event("restoring", f"feed degraded (a gap was declared lost): restoring its books from the "
                                 f"snapshot server {self.host}:{self.port}")
        i = behind = 0
        try:
            while not self.stop_event.is_set():
                self.tries += 1
                self.restore_attempts += 1
                try:
                    if self._once():
                        s = self.join.stats()
                        entry = {"end_of_snapshot_sequence": s["snapshot_next"],
                                 "orders_loaded": self.orders_loaded,
                                 "restore_ms": round(s["restore_ns_last"] / 1e6, 3)}
                        self.restore_log.append(entry)
                        self._event("restored", f"feed restored from the snapshot (End of Snapshot "
                                                f"{entry['end_of_snapshot_sequence']:,}, {entry['orders_loaded']:,} orders): "
                                                f"synced {entry['restore_ms']} ms after the loss (CLOCK_MONOTONIC)")
                        return True
                    if self.join.state == "buffering":  # joined, and re-armed again since: at once
                        continue
                    self.restore_failures.append("behind: the join buffer started after the snapshot's sequence")
                    behind += 1
                    if behind == 1:  # one newer snapshot at once, then with backoff (no retry storm)
                        continue
                except LoginRejected as e:
                    self.restore_error = f"login rejected: {e}"
                    self._event("restore_failed", f"restore stopped: {self.restore_error}")
                    return False
                except (OSError, SnapshotFailed) as e:
                    self.restore_failures.append(str(e) if isinstance(e, SnapshotFailed) else f"{e.strerror or e}")
                del self.restore_failures[:-20]  # the last ones are enough
                if self.stop_event.wait(min(RESTORE_BACKOFF_MAX_S, self.backoff_s * (2 ** i))):
                    break
                i += 1
            return False
        finally:
            self.restoring = False

    def _join(self):
        """The first join: MAX_ATTEMPTS snapshots with backoff, then one error."""
        for i in range(self.attempts):
            if self.stop_event.is_set():
                self.error = "stopped before the snapshot was in"
                return
            self.tries += 1
            try:
                if self._once():
                    self.joined.set()
                    return
                self.failures.append("behind: the join buffer started after the snapshot's sequence")
                continue  # a newer snapshot joins the newer buffer: no backoff
            except LoginRejected as e:
                self.rejected = self.error = f"login rejected: {e}"
                return
            except (OSError, SnapshotFailed) as e:
                self.failures.append(str(e) if isinstance(e, SnapshotFailed) else
                                     f"{e.strerror or e}" if isinstance(e, OSError) else str(e))
            if self.stop_event.wait(self.backoff_s * (2 ** i)):
                self.error = "stopped before the snapshot was in"
                return
        self.error = f"no snapshot after {self.attempts} attempts (last: {self.failures[-1]})"

    def _recv(self, sock, deadline_total: float, last_sent: list) -> bytes:
        """Bytes from the server; sends a client heartbeat whenever we were idle a beat."""
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            if self.stop_event.is_set():
                raise SnapshotFailed("stopped")
            if now > deadline_total:
                raise SnapshotFailed(f"the snapshot did not end within {self.total_timeout_s:g} s")
            if now - quiet_since > self.dead_after_s:
                raise SnapshotFailed(f"server silent for {self.dead_after_s:g} s (heartbeat timeout)")
            if now - last_sent[0] >= self.heartbeat_s:
                sock.sendall(soupbin.packet(soupbin.CLIENT_HEARTBEAT))
                last_sent[0] = now
            r, _, _ = select.select([sock], [], [], min(0.1, self.heartbeat_s))
            if r:
                data = sock.recv(RECV)
                if not data:
                    raise SnapshotFailed("connection closed by the server mid-snapshot")
                return data

    def _once(self) -> bool:
        """One connection. True: joined (live); False: behind, snapshot again."""
        t_start = time.monotonic()
        deadline = t_start + self.total_timeout_s
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except socket.timeout:
            raise SnapshotFailed(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as e:
            raise SnapshotFailed(f"connect to {self.host}:{self.port}: {e.strerror or e}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(soupbin.login_request(self.user, self.password, "", 1))
            last_sent = [time.monotonic()]
            reader = soupbin.Reader()
            login_deadline = min(deadline, time.monotonic() + soupbin.LOGIN_TIMEOUT_S)
            accepted = None
            while accepted is None:
                reader.feed(self._recv(sock, login_deadline, last_sent))
                try:
                    for kind, payload in reader.packets():
                        if kind == soupbin.LOGIN_REJECTED:
                            raise LoginRejected(soupbin.REJECT_REASONS.get(payload, f"reason {payload!r}"))
                        if kind == soupbin.LOGIN_ACCEPTED:
                            accepted = soupbin.parse_login_accepted(payload)
                            break
                        if kind not in (soupbin.SERVER_HEARTBEAT, soupbin.DEBUG):
                            raise SnapshotFailed(f"packet {kind!r} before Login Accepted")
                except soupbin.ProtocolError as e:
                    raise SnapshotFailed(f"bad login reply: {e}") from None
            pending = bytes(reader.buf)
            s0 = self.join.stats()
            self._load_base = (s0["load_messages"], s0["load_bytes"])
            self.join.load_begin()
            while True:
                if pending:
                    r, used, next_seq = self.join.load(pending)
                    pending = pending[used:]
                    if r == 1:
                        break
                    if r == 2:
                        raise SnapshotFailed("hostile framing: " + ", ".join(
                            f"{k}={v}" for k, v in self.join.stats()["soup"].items()
                            if v and k in ("bad_length", "unknown_type", "end_of_session", "bad_end")))
                pending += self._recv(sock, deadline, last_sent)
            self.orders_loaded = self.books_stats().get("orders_live", 0)
            self.join.hand_over(next_seq)
            try:
                sock.sendall(soupbin.packet(soupbin.LOGOUT_REQUEST))
            except OSError:
                pass
        finally:
            sock.close()
        # The data thread splices between packets or when idle (at most ~100 ms later), once the
        # feed has reached N; with a hole it first re-requests [N, start of the buffer).
        until = time.monotonic() + self.splice_timeout_s
        while self.join.state in ("ready", "hole"):
            if time.monotonic() > until or (self.stop_event.wait(0.002) and self.join.state in ("ready", "hole")):
                raise SnapshotFailed("the data thread did not take the snapshot (no packets, stopped?)")
        return self.join.state == "live"

    def result(self) -> dict:
        s = self.join.stats()
        ns = lambda a, b: round((s[b] - s[a]) / 1e6, 3) if s[a] and s[b] else None  # noqa: E731
        return {
            "server": f"{self.host}:{self.port}", "state": s["state"], "attempts": self.tries,
            "failures": list(self.failures), "error": self.error,
            "orders_loaded": self.orders_loaded, "messages_loaded": s["load_messages"],
            "bytes": s["load_bytes"], "end_of_snapshot_sequence": s["snapshot_next"] or None,
            "load_ms": ns("load_start_ns", "load_end_ns"),
            "join_to_synced_ms": ns("first_packet_ns", "live_ns"),
            "buffered": s["buffered"], "buffered_applied": s["applied"],
            "buffered_discarded": s["discarded"], "buffer_overwritten": s["overwritten"],
            "buffer_capacity": s["capacity"], "behind": s["behind"], "clears": s["clears"],
            "first_buffered_sequence": s["first_seq"] or None, "framing": s["soup"],
            "hole": {"holes": s["holes"], "filled": s["holes_filled"], "failed": s["holes_failed"],
                     "messages": s["hole_messages"]},
            "lost_after_snapshot": s["lost_after_n"],
            "restores": self._restores(s),
            "clock": "CLOCK_MONOTONIC",
        }

    def _restores(self, s: dict) -> dict:
        """Restores after a gap declared lost: how many began (re-arms) and joined, and the
        time from the loss (re-arm) to synced."""
        n = s["restores"]
        return {"started": s["rearms"], "completed": n, "in_progress": s["rearms"] > n,
                "last_ms": round(s["restore_ns_last"] / 1e6, 3) if n else None,
                "max_ms": round(s["restore_ns_max"] / 1e6, 3) if n else None,
                "mean_ms": round(s["restore_ns_sum"] / n / 1e6, 3) if n else None,
                "attempts": self.restore_attempts, "failures": list(self.restore_failures[-5:]),
                "error": self.restore_error, "log": list(self.restore_log[-20:])}

    def progress(self) -> dict:
        """For the live view: what the join is doing now (racy reads, monotonic counters)."""
        s = self.join.stats()
        phase = ("live" if s["state"] == "live" else "restoring" if s["rearms"] else "loading")
        m0, b0 = self._load_base
        loading = phase != "live"
        return {"phase": phase, "state": s["state"],
                "orders_loaded": self.books_stats().get("orders_live", 0) if loading else None,
                "messages_loaded": s["load_messages"] - m0 if loading else None,
                "bytes": s["load_bytes"] - b0 if loading else None,
                "buffered": s["buffered"], "restores": s["restores"],
                "rearms": s["rearms"], "hole_messages": s["hole_messages"],
                "hole_left": (s["hole_end"] - s["hole_next"]) if s["state"] == "hole" else 0}
