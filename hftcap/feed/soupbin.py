"""SoupBinTCP 3.00 framing (../shared/specs/RECOVERY.md section 4), shared by the lab's snapshot
server (hftcap.lab.snapshot_server) and the snapshot client (hftcap.feed.glimpse).

Every logical packet is a u16 big-endian length (type byte + payload) then the type. Logical
packets do not line up with TCP segments: `Reader` reassembles them. The client's bulk path
(Sequenced Data into the books) is C (join.h, hc_soup_load); this module does the control
packets around it."""
from __future__ import annotations

import struct

from ..errors import HftcapError, from_oserror

LOGIN_REQUEST = b"L"
LOGIN_ACCEPTED = b"A"
LOGIN_REJECTED = b"J"
SEQUENCED = b"S"
UNSEQUENCED = b"U"
SERVER_HEARTBEAT = b"H"
CLIENT_HEARTBEAT = b"R"
END_OF_SESSION = b"Z"
LOGOUT_REQUEST = b"O"
DEBUG = b"+"

REJECT_NOT_AUTHORIZED = b"A"
REJECT_SESSION_UNAVAILABLE = b"S"
REJECT_REASONS = {b"A": "not authorised (user or password)", b"S": "session not available"}

LOGIN_LEN = 46  # payload of L after the type byte: 6 + 10 + 10 + 20 (length field 47)
ACCEPTED_LEN = 30  # payload of A: session 10 + sequence 20

# Timers (RECOVERY.md sections 4 and 8): heartbeat after 1 s idle, peer dead after 15 s.
HEARTBEAT_S = 1.0
DEAD_AFTER_S = 15.0
LOGIN_TIMEOUT_S = 10.0


class ProtocolError(ValueError):
    """A packet that breaks the framing; the connection must close."""


def packet(kind: bytes, payload: bytes = b"") -> bytes:
    n = 1 + len(payload)
    if n > 0xFFFF:
        raise ValueError(f"SoupBinTCP packet of {n} bytes: at most 65535")
    return struct.pack(">H", n) + kind + payload


def _alpha(v: str | bytes, n: int) -> bytes:
    b = v.encode("ascii") if isinstance(v, str) else v
    if len(b) > n:
        raise ValueError(f"{b!r}: at most {n} characters")
    return b.ljust(n)


def login_request(user: str, password: str, session: str = "", sequence: int = 1) -> bytes:
    return packet(LOGIN_REQUEST, _alpha(user, 6) + _alpha(password, 10) + _alpha(session, 10)
                  + str(sequence).rjust(20).encode())


def parse_login_request(payload: bytes) -> tuple[str, str, str, int]:
    """(user, password, session, sequence) of an L payload; ProtocolError if malformed."""
    if len(payload) != LOGIN_LEN:
        raise ProtocolError(f"login request of {len(payload)} bytes: expected {LOGIN_LEN}")
    try:
        text = payload.decode("ascii")
        seq = int(text[26:46].strip() or "0")
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("login request with a non-numeric sequence") from None
    return text[0:6].rstrip(), text[6:16].rstrip(), text[16:26].rstrip(), seq


def login_accepted(session: str | bytes, sequence: int) -> bytes:
    return packet(LOGIN_ACCEPTED, _alpha(session, 10) + str(sequence).rjust(20).encode())


def parse_login_accepted(payload: bytes) -> tuple[str, int]:
    if len(payload) != ACCEPTED_LEN:
        raise ProtocolError(f"login accepted of {len(payload)} bytes: expected {ACCEPTED_LEN}")
    try:
        return payload[:10].decode("ascii").rstrip(), int(payload[10:30].decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("login accepted with a non-numeric sequence") from None


def login_rejected(reason: bytes) -> bytes:
    return packet(LOGIN_REJECTED, reason)


class Reader:
    """Reassembles logical packets from a byte stream: feed(bytes), then packets() yields
    (type, payload) for each complete one; a zero length raises ProtocolError."""

    def __init__(self, max_len: int = 0xFFFF):
        self.buf = bytearray()
        self.max_len = max_len

    def feed(self, data: bytes) -> None:
        self.buf += data

    def packets(self):
        while len(self.buf) >= 2:
            n = int.from_bytes(self.buf[:2], "big")
            if n == 0:
                raise ProtocolError("packet length 0 (no type byte)")
            if n > self.max_len:
                raise ProtocolError(f"packet length {n}: more than {self.max_len} expected here")
            if len(self.buf) < 2 + n:
                return
            kind, payload = bytes(self.buf[2:3]), bytes(self.buf[3:2 + n])
            del self.buf[:2 + n]
            yield kind, payload


def read_password_file(path: str) -> str:
    """The first line of a file: a SoupBinTCP password (1-10 characters), never an argument."""
    try:
        with open(path) as f:
            pw = f.readline().rstrip("\r\n")
    except OSError as e:
        raise from_oserror(e, f"reading the password file {path}") from None
    if not pw or len(pw) > 10:
        raise HftcapError(f"password file {path}: expected 1-10 characters on its first line")
    return pw
