"""The live view in a real terminal: `python -m tui_fake` in tmux at 80x24 and 160x48.

What is checked is what a user sees: the ladder for the chosen stock (prices with 4 decimals,
bids falling, asks rising, best bid below best ask), latency numbers with units in the latency
panel and absent hops said to be absent, counters that move between two captures, keys that
switch the stock, pause, reset and quit, and a terminal left as it was found.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from bounds import wait_for  # noqa: E402
from tmuxterm import TmuxTerm, have_tmux  # noqa: E402

import hftcap  # noqa: E402

# The ten most active stocks of the fake (activity weights 15..40 against at most 10 for the rest)
MOST_ACTIVE = {"NVDA", "TSLA", "SPY", "AAPL", "QQQ", "MSFT", "AMD", "AMZN", "META", "GOOGL"}
PRICE = r"\d+\.\d{4}"
LADDER_ROW = re.compile(rf"^\s*([\d,]+)\s+([\d,]+)\s+({PRICE}) │ ({PRICE})\s+([\d,]+)\s+([\d,]+)"
                        r"(?:\s*$|\s{2,})")
DURATION = r"\d+(?:\.\d+)?(?:ns|us|ms|s)"
HOP_ROW = re.compile(rf"^(\w+)\s+(TAI|tai-midnight|PHC->TAI)\s+({DURATION})\s+({DURATION})\s+"
                     rf"({DURATION})\s+({DURATION})\s+([\d,]+)")


DOUBLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "doubles")


@pytest.fixture(autouse=True)
def _need_tmux():
    if not have_tmux():
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is not installed (needed for the terminal tests)")
        pytest.skip("tmux is not installed")


def fake_cmd(*args: str) -> str:
    """The fake live view, run with this interpreter and this test run's hftcap package."""
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(hftcap.__file__)))
    path = pkg_root + os.pathsep + DOUBLES
    return (f"env PYTHONPATH={shlex.quote(path)} {shlex.quote(sys.executable)} "
            f"-m tui_fake --seconds 60 " + " ".join(shlex.quote(a) for a in args))


def ladder(lines: list) -> list:
    return [tuple(m.groups()) for m in map(LADDER_ROW.match, lines) if m]


def price_e4(text: str) -> int:
    whole, frac = text.split(".")
    return int(whole) * 10000 + int(frac)


def total_packets(screen: str) -> int:
    m = re.search(r"^total pkt ([\d,]+)", screen, re.M)
    assert m, f"no counters line:\n{screen}"
    return int(m.group(1).replace(",", ""))


def header_symbol(screen: str) -> str:
    m = re.search(r"^(\S+) #\d+  state ", screen, re.M)
    assert m, f"no ladder header:\n{screen}"
    return m.group(1)


def check_ladder(rows: list, min_levels: int) -> None:
    assert len(rows) >= min_levels, rows
    bids = [price_e4(r[2]) for r in rows]
    asks = [price_e4(r[3]) for r in rows]
    assert bids == sorted(bids, reverse=True) and len(set(bids)) == len(bids), bids
    assert asks == sorted(asks) and len(set(asks)) == len(asks), asks
    assert bids[0] < asks[0], (bids[0], asks[0])
    for r in rows:
        assert int(r[0].replace(",", "")) >= 1 and int(r[1].replace(",", "")) >= 1, r
        assert int(r[4].replace(",", "")) >= 1 and int(r[5].replace(",", "")) >= 1, r


def test_80x24_ladder_latency_counters():
    with TmuxTerm(fake_cmd("--symbol", "AAPL"), width=80, height=24) as term:
        assert term.size() == (80, 24)
        screen = term.wait_for(lambda s: any(map(HOP_ROW.match, s.split("\n"))), timeout=15)
        lines = term.lines()
        assert len(lines) == 24
        # Rows in their places: nothing wrapped or scrolled the screen.
        assert lines[0].startswith("hftcap tui_fake  if fake0"), lines[0]
        assert "q quit" in lines[23], lines[23]
        assert all(len(ln) <= 80 for ln in lines)
        assert header_symbol(screen) == "AAPL"
        i_hdr = next(i for i, ln in enumerate(lines) if ln.startswith("AAPL #"))
        assert lines[i_hdr + 1].split() == ["orders", "shares", "bid", "ask", "shares", "orders"]
        rows = ladder(lines)
        check_ladder(rows, 5)
        # The ladder rows follow its header without a break.
        assert all(LADDER_ROW.match(lines[i_hdr + 2 + k]) for k in range(len(rows)))
        i_lat = next(i for i, ln in enumerate(lines) if ln.startswith("latency per hop"))
        assert i_lat == i_hdr + 2 + len(rows)
        assert lines[i_lat + 1].split() == ["hop", "domain", "p50", "p99", "p99.9", "max",
                                            "samples"]
        hops = {m.group(1): m.groups() for m in map(HOP_ROW.match, lines) if m}
        assert {"xdp_to_dequeue", "dequeue_to_decode", "decode_to_book", "xdp_to_book",
                "sender_to_book"} <= set(hops), screen
        assert hops["sender_to_book"][1] == "tai-midnight"
        absent = [ln for ln in lines if ln.startswith(("nic_to_xdp", "nic_to_book"))]
        assert len(absent) == 2 and all(ln.split()[2:] == ["absent"] for ln in absent), absent
        # counters under the latency panel: rates, totals, XDP counters
        i_rate = next(i for i, ln in enumerate(lines) if ln.startswith("rate "))
        assert " pkt/s" in lines[i_rate] and "msg/s" in lines[i_rate], lines[i_rate]
        assert lines[i_rate + 1].startswith("total pkt ") and "drops " in lines[i_rate + 1]
        assert lines[i_rate + 2].startswith("xdp redirected ")
        assert i_rate + 3 == 23
        n1 = total_packets(screen)
        n2 = total_packets(term.wait_for(lambda s: total_packets(s) > n1, timeout=5))
        assert n2 > n1
        # Levels that changed since the previous frame are drawn in reverse video; the rest not.
        reverse = re.compile(r"\x1b\[(?:[\d;]*;)?7(?:;[\d;]*)?m")
        # Frames are sampled until one row of them was flagged and one was not (bounded): how
        # many frames that takes depends on the host's scheduling, the property does not.
        seen = {"flagged": 0, "total": 0}

        def both_seen():
            rows = [ln for ln in term.capture(escapes=True).split("\n") if "│" in ln]
            seen["total"] += len(rows)
            seen["flagged"] += sum(1 for ln in rows if reverse.search(ln))
            return 0 < seen["flagged"] < seen["total"]
        wait_for(both_seen, 10, f"a changed level in reverse video and an unchanged one not",
                 interval=0.1)
        # More room: the same process redraws the full layout after a resize.
        term.tmux("resize-window", "-t", term.session, "-x", "160", "-y", "48")
        screen = term.wait_for(lambda s: "last interval" in s and "trade time (itch)" in s,
                               timeout=5)
        assert len(ladder(screen.split("\n"))) == 10
        # Ctrl-C quits cleanly too.
        term.send("C-c")
        assert term.wait_exit(5) == (0, True)


def test_keys_switch_symbol_cycle_and_quit_restores_terminal():
    with TmuxTerm(fake_cmd("--symbol", "AAPL"), width=80, height=24) as term:
        term.wait_for(re.compile(r"^AAPL #1 ", re.M), timeout=15)
        assert term.alternate_on()
        term.send("/", "msft")
        term.wait_for(re.compile(r"^symbol: MSFT_", re.M), timeout=5)
        term.send("Enter")
        screen = term.wait_for(re.compile(r"^MSFT #2 ", re.M), timeout=5)
        check_ladder(ladder(screen.split("\n")), 5)
        # MSFT prices in the fake start near 415.10; AAPL's near 189.25.
        assert 400_0000 < price_e4(ladder(screen.split("\n"))[0][2]) < 430_0000
        term.send("n")
        screen = term.wait_for(lambda s: header_symbol(s) != "MSFT", timeout=5)
        assert header_symbol(screen) in MOST_ACTIVE
        first = header_symbol(screen)
        term.send("Tab")
        screen = term.wait_for(lambda s: header_symbol(s) != first, timeout=5)
        assert header_symbol(screen) in MOST_ACTIVE
        current = header_symbol(screen)
        # An unknown symbol: a one-line message, the selection stays.
        term.send("/", "ZZZZ", "Enter")
        screen = term.wait_for("unknown symbol 'ZZZZ'", timeout=5)
        assert header_symbol(screen) == current
        assert f"keeping {current}" in screen.split("\n")[23]
        # 'q' typed into the symbol prompt is a letter, not quit; Escape cancels the prompt.
        term.send("/", "q")
        term.wait_for(re.compile(r"^symbol: Q_", re.M), timeout=5)
        term.send("Escape")
        term.wait_for("q quit", timeout=5)
        assert term.exit_report() is None
        term.send("q")
        assert term.wait_exit(5) == (0, True)      # exit status 0, terminal settings restored
        assert not term.alternate_on()


def child_pids(pid: int) -> list:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def test_sigterm_restores_terminal_and_exits_143():
    with TmuxTerm(fake_cmd(), width=80, height=24) as term:
        term.wait_for("latency per hop", timeout=15)
        sh_pid = int(term.tmux("display-message", "-p", "-t", term.session, "#{pane_pid}"))
        (view_pid,) = child_pids(sh_pid)
        os.kill(view_pid, signal.SIGTERM)
        assert term.wait_exit(5) == (143, True)
        assert not term.alternate_on()


def test_160x48_full_view_pause_and_reset():
    with TmuxTerm(fake_cmd("--symbol", "NVDA"), width=160, height=48) as term:
        assert term.size() == (160, 48)
        screen = term.wait_for(lambda s: "last interval" in s and re.search(r"NVDA #3 ", s)
                               and re.search(r"^xdp_to_dequeue .*\d", s, re.M), timeout=15)
        lines = term.lines()
        assert lines[0].startswith("hftcap tui_fake  if fake0")
        assert "up 0:00:" in lines[0] + lines[1]
        assert "q quit" in lines[47]
        check_ladder(ladder(lines), 10)
        assert len(ladder(lines)) == 10
        assert "trade time (itch)" in screen and "msg/s" in screen and "since start" in screen
        # counters with totals and measured per-second rates
        screen = term.wait_for(re.compile(r"packets\s+[\d,]+\s+[\d.]+k\s"), timeout=5)
        assert re.search(r"bytes\s+[\d,]+\s+[\d.]+ [kM]B/s", screen)
        # Pause: the frame (and its counters) stop; unpause: they move again.
        term.send("p")
        screen = term.wait_for("PAUSED", timeout=5)
        frozen = re.search(r"packets\s+([\d,]+)", screen).group(1)
        # An observation period, not a wait: the fake source's counters move every frame
        # (asserted just below on unpausing), the paused screen must not, however long it is held.
        time.sleep(0.5)
        assert re.search(r"packets\s+([\d,]+)", term.capture()).group(1) == frozen
        term.send("p")
        term.wait_for(lambda s: "PAUSED" not in s
                      and re.search(r"packets\s+([\d,]+)", s).group(1) != frozen, timeout=5)
        # Reset: the since-start sample count starts again from zero.
        def samples(s):
            m = re.search(r"^xdp_to_book .*│\s+\S+\s+\S+\s+\S+\s+\S+\s+([\d,]+)", s, re.M)
            return int(m.group(1).replace(",", "")) if m else None
        before = samples(term.capture())
        assert before and before > 1000
        term.send("r")
        screen = term.wait_for("latency histograms reset", timeout=5)
        assert samples(screen) < before          # the frame drawn with the message is new
        term.send("q")
        assert term.wait_exit(5) == (0, True)
        assert not term.alternate_on()
