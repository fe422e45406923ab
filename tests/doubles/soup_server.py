"""Loopback SoupBinTCP doubles for the snapshot client's tests: a one-shot server that sends a
scripted reply (hostile framing, a cut-off spin), and a sender double whose spin is a given
stream's prefix (what the real exchange's Sender.spin gives)."""
from __future__ import annotations

import socket
import threading

from hftcap import _core


class PrefixSender:
    """spin() of the first n messages of `stream`, like Sender.spin() after n were published."""

    def __init__(self, stream: bytes, n: int):
        self.stream, self.n = stream, n

    def spin(self):
        return _core.spin_build(self.stream, self.n, 1)


class ScriptedServer:
    """Accepts up to `connections` clients on 127.0.0.1; to each, after its login request,
    sends `script` (bytes) and then closes (or, with hold=True, keeps the socket open silently)."""

    def __init__(self, script: bytes, connections: int = 8, hold: bool = False):
        self.script, self.hold = script, hold
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.held: list[socket.socket] = []
        self.left = connections
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set() and self.left:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.accepted += 1
            self.left -= 1
            c.settimeout(5)
            try:
                c.recv(49)
                c.sendall(self.script)
            except OSError:
                pass
            if self.hold:
                self.held.append(c)
            else:
                c.close()

    def close(self):
        self.stop.set()
        self.t.join()
        for c in self.held:
            c.close()
        self.sock.close()


class StepSender:
    """spin() of the first ns[i] messages of `stream` on its i-th call (the last one repeats):
    a snapshot server whose exchange goes on publishing between two snapshots. With a gate
    (threading.Event), each spin waits for it first (bounded), so a test can look at the feed
    while a restore is under way."""

    def __init__(self, stream: bytes, ns: list[int], gate=None, gate_timeout_s: float = 20.0):
        self.stream, self.ns, self.gate, self.gate_timeout_s = stream, list(ns), gate, gate_timeout_s
        self.calls = 0

    def spin(self):
        if self.gate is not None and not self.gate.wait(self.gate_timeout_s):
            raise OSError("StepSender: the test never opened the gate")
        n = self.ns[min(self.calls, len(self.ns) - 1)]
        self.calls += 1
        return _core.spin_build(self.stream, n, 1)
