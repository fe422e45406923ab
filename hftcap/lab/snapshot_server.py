"""The lab exchange's snapshot server: SoupBinTCP (hftcap.feed.soupbin) serving, to each client
that logs in, a GLIMPSE-style spin of the book state at the moment of its request (spin.h): the
system event, every stock's directory and trading state, every resting order as A/F in time
priority, then the End of Snapshot naming the first multicast sequence not reflected.

The exchange keeps the whole stream it publishes; a request reads the C sender's published
count and replays that prefix into fresh books in C with the GIL released (Sender.spin), so the
live multicast never waits. One thread per client; Login Request checked (user, password,
session), Login Accepted / Rejected, server heartbeats every second when idle, a client silent
for DEAD_AFTER_S is dropped, Logout honoured, End of Session on shutdown."""
from __future__ import annotations

import select
import socket
import threading
import time

from ..errors import UsageError, from_oserror
from ..feed import soupbin

SEND_CHUNK = 256 * 1024


class SnapshotServer:
    def __init__(self, sender, port: int, host: str = "0.0.0.0", session: bytes = b"HFTCAP0001",
                 user: str | None = None, password: str | None = None,
                 heartbeat_s: float = soupbin.HEARTBEAT_S, dead_after_s: float = soupbin.DEAD_AFTER_S,
                 login_timeout_s: float = soupbin.LOGIN_TIMEOUT_S):
        if (user is None) != (password is None):
            raise UsageError("--snapshot-user and --snapshot-password-file go together")
        self.sender = sender
        self.session = session.decode("ascii", "replace").rstrip()
        self.user, self.password = user, password
        self.heartbeat_s, self.dead_after_s, self.login_timeout_s = heartbeat_s, dead_after_s, login_timeout_s
        self.stop_event = threading.Event()
        self.lock = threading.Lock()  # guards the counters, never held while sending
        self.stats = {"connections": 0, "logins_accepted": 0, "logins_rejected": 0, "snapshots": 0,
                      "snapshot_orders": 0, "snapshot_bytes": 0, "build_ms_max": 0.0,
                      "heartbeats_sent": 0, "heartbeats_received": 0, "logouts": 0,
                      "client_timeouts": 0, "protocol_errors": 0, "disconnects": 0, "spin_errors": 0}
        self.last_spins: list[dict] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(16)
        except OSError as e:
            self.sock.close()
            raise from_oserror(e, f"snapshot server on TCP {host}:{port}",
                               hint="another exchange is running? choose --snapshot-port") from None
        self.port = self.sock.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, name="hftcap-snapshot", daemon=True)

    def start(self) -> "SnapshotServer":
        self.acceptor.start()
        return self

    def close(self) -> dict:
        self.stop_event.set()
        self.acceptor.join()
        for t in self.threads:
            t.join()
        self.sock.close()
        return self.result()

    def result(self) -> dict:
        with self.lock:
            return {"port": self.port, **self.stats, "spins": list(self.last_spins[-8:])}

    def _count(self, key: str, n=1):
        with self.lock:
            self.stats[key] += n

    def _accept(self):
        while not self.stop_event.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if not r:
                continue
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self._count("connections")
            t = threading.Thread(target=self._client, args=(conn,), name="hftcap-snapshot-client", daemon=True)
            self.threads = [x for x in self.threads if x.is_alive()] + [t]
            t.start()

    # -- one client --
    def _client(self, conn: socket.socket):
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(self.dead_after_s)  # a client that stops reading is dropped, not waited for
            self._session(conn)
        except (OSError, soupbin.ProtocolError) as e:
            self._count("protocol_errors" if isinstance(e, soupbin.ProtocolError) else "disconnects")
        finally:
            conn.close()

    def _read_packets(self, conn, reader, timeout: float):
        """Packets that arrive within timeout; None when the peer closed."""
        r, _, _ = select.select([conn], [], [], timeout)
        if not r:
            return []
        data = conn.recv(65536)
        if not data:
            return None
        reader.feed(data)
        return list(reader.packets())

    def _session(self, conn: socket.socket):
        reader = soupbin.Reader(max_len=1 + soupbin.LOGIN_LEN)
        deadline = time.monotonic() + self.login_timeout_s
        login = None
        while login is None:
            left = deadline - time.monotonic()
            if left <= 0 or self.stop_event.is_set():
                self._count("client_timeouts")
                return
            pk = self._read_packets(conn, reader, min(left, 0.2))
            if pk is None:
                self._count("disconnects")
                return
            for kind, payload in pk:
                if kind != soupbin.LOGIN_REQUEST:
                    raise soupbin.ProtocolError(f"packet {kind!r} before the login")
                login = soupbin.parse_login_request(payload)
                break
        user, password, session, _seq = login
        if self.user is not None and (user != self.user or password != self.password):
            conn.sendall(soupbin.login_rejected(soupbin.REJECT_NOT_AUTHORIZED))
            self._count("logins_rejected")
            return
        if session and session != self.session:
            conn.sendall(soupbin.login_rejected(soupbin.REJECT_SESSION_UNAVAILABLE))
            self._count("logins_rejected")
            return
        conn.sendall(soupbin.login_accepted(self.session, 1))
        self._count("logins_accepted")

        box: dict = {}

        def build():
            try:
                box["spin"] = self.sender.spin()
            except (OSError, MemoryError) as e:
                box["error"] = e
        builder = threading.Thread(target=build, name="hftcap-snapshot-spin", daemon=True)
        builder.start()
        while builder.is_alive():  # the client hears heartbeats while its spin is built
            builder.join(self.heartbeat_s)
            if builder.is_alive():
                conn.sendall(soupbin.packet(soupbin.SERVER_HEARTBEAT))
                self._count("heartbeats_sent")
        if "spin" not in box:
            self._count("spin_errors")
            conn.sendall(soupbin.packet(soupbin.END_OF_SESSION))
            return
        data, st = box["spin"]
        with self.lock:
            self.stats["snapshots"] += 1
            self.stats["snapshot_orders"] += st["orders"]
            self.stats["build_ms_max"] = max(self.stats["build_ms_max"], st["build_ns"] / 1e6)
            self.last_spins.append(st)
        view = memoryview(data)
        for off in range(0, len(view), SEND_CHUNK):
            if self.stop_event.is_set():
                conn.sendall(soupbin.packet(soupbin.END_OF_SESSION))
                return
            conn.sendall(view[off:off + SEND_CHUNK])
            self._count("snapshot_bytes", min(SEND_CHUNK, len(view) - off))
            if self._control(conn, reader, 0.0) is False:
                return
        # After the spin: heartbeats until the client logs out, goes silent or we stop.
        last_heard = time.monotonic()
        while not self.stop_event.is_set():
            got = self._control(conn, reader, self.heartbeat_s)
            if got is False:
                return
            now = time.monotonic()
            if got:
                last_heard = now
            elif now - last_heard > self.dead_after_s:
                self._count("client_timeouts")
                return
            conn.sendall(soupbin.packet(soupbin.SERVER_HEARTBEAT))
            self._count("heartbeats_sent")
        conn.sendall(soupbin.packet(soupbin.END_OF_SESSION))

    def _control(self, conn, reader, timeout: float):
        """Client packets within timeout: True if some came, None if none, False on logout or close."""
        pk = self._read_packets(conn, reader, timeout)
        if pk is None:
            self._count("disconnects")
            return False
        for kind, _ in pk:
            if kind == soupbin.CLIENT_HEARTBEAT:
                self._count("heartbeats_received")
            elif kind == soupbin.LOGOUT_REQUEST:
                self._count("logouts")
                return False
            elif kind != soupbin.UNSEQUENCED:
                raise soupbin.ProtocolError(f"unexpected packet {kind!r} from the client")
        return True if pk else None

