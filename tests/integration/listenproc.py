"""Run `hftcap listen` in the background of a test and read its JSON summary."""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from bounds import bound, wait_for

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
FEED_GROUP, FEED_PORT = "239.1.1.1", 26400
FEED = f"{FEED_GROUP}:{FEED_PORT}"


class Listener:
    def __init__(self, lab, *args, feed=FEED):
        self.lab = lab
        # listen's --duration is the bound of a run that ends by other means (or one the test
        # waits out): scaled like every bound of the suite (tests/bounds.py).
        args = list(args)
        if "--duration" in args:
            i = args.index("--duration") + 1
            args[i] = f"{bound(float(args[i])):g}"
        # Every listener serves its counters on loopback (a port of its own), so that a test can
        # wait for a count instead of a time: stop_after_end_of_session, metrics.
        if "--metrics" not in args:
            args += ["--metrics", "127.0.0.1:0"]
        self.cmd = [str(BIN / "hftcap"), "listen", "--netns", lab.host_ns, "-i", lab.host_if,
                    "--feed", feed, "--json", *map(str, args)]
        self.p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err_lines: list[str] = []

    def wait_ready(self, timeout=bound(15.0)):
        """Until listen's 'listening on' line. Reads the raw pipe: select() on a buffered file
        misses lines already in its buffer (listen prints a doctor line just before)."""
        deadline = time.monotonic() + timeout
        fd, buf = self.p.stderr.fileno(), b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                self.err_lines += [ln.decode(errors="replace") + "\n" for ln in lines]
                if any("listening on" in ln for ln in self.err_lines):
                    if buf:
                        self.err_lines.append(buf.decode(errors="replace"))
                    return self
        self.p.kill()
        out, err = self.p.communicate()
        raise AssertionError(f"listen did not start: {self.cmd}\n{''.join(self.err_lines)}{err}\n{out}")

    def result(self, timeout=bound(30.0)) -> dict:
        out, err = self.p.communicate(timeout=timeout)
        assert self.p.returncode == 0, f"listen exited {self.p.returncode}: {''.join(self.err_lines)}{err}"
        return json.loads(out)

    def metrics(self) -> dict:
        """The listener's Prometheus samples, {"name{labels}": value}."""
        import urllib.request
        line = next(x for x in self.err_lines if "metrics at" in x)
        url = re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", line).group(1)
        body = urllib.request.urlopen(url, timeout=bound(5)).read().decode()
        return {m.group(1): float(m.group(2))
                for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$", body, re.M)}

    def stop_after_end_of_session(self, sig=signal.SIGINT, timeout: float = 30.0) -> None:
        """Stop the listener once it has taken an End of Session (bounded): the sender sends it
        after its stream, on the same queue, so every packet sent before it has been taken by then;
        stopping at once after the sender returns would race the packets still in flight."""
        def taken():
            if self.p.poll() is not None:  # its metrics endpoint is gone: say why, not "refused"
                out, err = self.p.communicate()
                raise AssertionError(f"listen exited {self.p.returncode} before it took the End of Session: "
                                     f"{''.join(self.err_lines)}{err}\n{out[-2000:]}")
            return self.metrics().get("hftcap_moldudp64_end_of_session_total", 0) >= 1
        wait_for(taken, timeout,
                 f"the listener to take the sender's End of Session ({' '.join(self.cmd[1:3])})")
        self.p.send_signal(sig)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.communicate()


def send_test_packets(lab, npkts, k, port=FEED_PORT, first=1):
    """Send from the exchange namespace with the tests' own independent sender."""
    subprocess.run(["ip", "netns", "exec", lab.ex_ns, sys.executable, str(HERE / "moldsend.py"),
                    FEED_GROUP, str(port), lab.ex_addr, str(npkts), str(k), str(first)],
                   check=True, timeout=bound(30))


def xdp_prog_on(lab) -> int | None:
    from hftcap.lab import topology as labmod
    return labmod.status(lab.name)["namespaces"][lab.host_ns]["xdp_prog_id"]


def hftcap(*args, timeout=bound(120)) -> str:
    """Run the installed CLI, assert it succeeded, return its stdout."""
    cp = subprocess.run([str(BIN / "hftcap"), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert cp.returncode == 0, f"hftcap {' '.join(map(str, args))}: {cp.stderr}"
    return cp.stdout


def assert_books_equal_replay(books: dict, stream, stocks: int) -> None:
    """A live listener's books (`--symbol '*'`) are, for each of the `stocks` stocks, exactly
    `hftcap book` on the whole stream's file, and no side of them is empty."""
    assert len(books) == stocks
    for sym, book in books.items():
        off = json.loads(hftcap("book", stream, "--symbol", sym, "--json"))
        assert off["book"] == book, sym
        assert book["bids"] and book["asks"], f"{sym}: an empty side proves nothing"
