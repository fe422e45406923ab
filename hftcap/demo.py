"""`hftcap demo`: the whole tool in one command, in a lab it makes and removes.

A lab (two namespaces and a veth pair), the simulated exchange publishing a generated ITCH
stream for a handful of stocks into the exchange namespace, and `listen` with the live view on
the host side. Quitting (q), Ctrl-C, SIGTERM or an error removes everything it made: the
exchange process, the XDP program (a bpf_link, gone with this process) and the lab."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from .lab import topology as labmod
from .receive.options import Feed, ListenOptions
from .listen import run_listen
from .errors import HftcapError, UsageError, require_root

FEED = Feed("239.1.1.1", 26400)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child: get SIGTERM when the demo process dies, even by SIGKILL."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _hftcap() -> str:
    exe = Path(sys.executable).parent / "hftcap"
    return str(exe) if exe.exists() else "hftcap"


def exchange_cmd(lb, stocks: int, rate: float, k: int, seed: int, minutes: float) -> list[str]:
    messages = int(rate * minutes * 60)
    return [_hftcap(), "exchange", "--netns", lb.ex_ns, "--feed", str(FEED), "--seed", str(seed),
            "--stocks", str(stocks), "--messages", str(messages), "--msg-rate", str(rate), "-k", str(k),
            "--duration", str(minutes * 60 + 30), "--linger", "0", "--json"]


def run_demo(name: str = "demo", stocks: int = 8, rate: float = 20_000, k: int = 4, seed: int = 42,
             minutes: float = 10.0, path: str = "xdp", poll: str = "wakeup", symbol: str | None = None,
             live: bool = True, duration: float | None = None) -> dict:
    if not (rate > 0 and minutes > 0 and k >= 1 and 1 <= stocks <= 8192):
        raise UsageError("--rate, --minutes, --messages-per-packet and --stocks must be positive",
                         hint="for example: hftcap demo --stocks 8 --rate 20000 --minutes 10")
    if int(rate * minutes * 60) < 2 * stocks + 3:
        raise UsageError("the stream is too short for that many stocks", hint="raise --rate or --minutes")
    require_root("demo")
    labmod.down(name)  # idempotent: removes a stale lab left by a demo that was killed
    lb = labmod.up(name)
    ex = None
    failed = threading.Event()  # the exchange died with an error: stop the view at once
    log = tempfile.NamedTemporaryFile(prefix="hftcap-demo-exchange-", suffix=".log", delete=False)
    try:
        def watch_exchange():
            if ex.wait() != 0 and ex.returncode != -signal.SIGTERM:
                failed.set()

        def start_exchange(sess):
            nonlocal ex
            ex = subprocess.Popen(exchange_cmd(lb, stocks, rate, k, seed, minutes), stdout=subprocess.DEVNULL,
                                  stderr=log, preexec_fn=_die_with_parent)
            threading.Thread(target=watch_exchange, name="hftcap-demo-exchange", daemon=True).start()

        o = ListenOptions(interface=lb.host_if, feeds=[FEED], netns=lb.host_ns, path=path, poll=poll,
                          itch_clock="tai-midnight", warmup=1.0, duration=duration)
        result = run_listen(o, on_started=start_exchange, live=live, symbol=symbol, title="hftcap demo",
                            stop_event=failed)
        if ex is not None and ex.poll() not in (None, 0):
            log.flush()
            msg = Path(log.name).read_text().strip().splitlines()
            raise HftcapError(f"the demo's exchange failed: {msg[0] if msg else ex.returncode}",
                              hint=f"see {log.name}")
        return result
    finally:
        if ex is not None and ex.poll() is None:
            ex.terminate()
            try:
                ex.wait(5)
            except subprocess.TimeoutExpired:
                ex.kill()
                ex.wait()
        labmod.down(name)
        log.close()
        if os.path.getsize(log.name) == 0:
            os.unlink(log.name)
