"""`hftcap demo` in a real terminal (tmux): the ladder of the chosen symbol matches `hftcap book`
on the same stream, counters move, the latency panel has numbers, keys switch the symbol and
quit, the 80x24 view does not wrap, and nothing of the demo remains afterwards."""
from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bounds import bound
from tmuxterm import TmuxTerm

pytestmark = pytest.mark.root
HFTCAP = str(Path(sys.executable).parent / "hftcap")
SEED, STOCKS, RATE, K, MINUTES = 5, 4, 20_000, 4, 0.05
MESSAGES = int(RATE * MINUTES * 60)  # the demo's stream length for these options
ROW = re.compile(r"^\s*([\d,]+)\s+([\d,]+)\s+(\d+\.\d{4})\s+[│|]\s+(\d+\.\d{4})\s+([\d,]+)\s+([\d,]+)\s*$")


def demo_cmd(name):
    return [HFTCAP, "demo", "--name", name, "--seed", str(SEED), "--stocks", str(STOCKS), "--rate", str(RATE),
            "-k", str(K), "--minutes", str(MINUTES)]


def leftovers(name) -> list[str]:
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    procs = subprocess.run(["pgrep", "-af", f"--name {name}|{name}-ex"], capture_output=True, text=True).stdout
    procs = [p for p in procs.splitlines() if "pgrep" not in p]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return ([l for l in ns.splitlines() if l.startswith(name + "-")] + procs
            + [l for l in links.splitlines() if f"{name}-" in l])


def assert_nothing_left(name):
    """No namespace, veth (and so no XDP program) or process of the demo remains."""
    deadline = time.monotonic() + bound(5)
    while leftovers(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(name) == []


def ladder(screen: str) -> list[tuple]:
    rows = []
    for line in screen.splitlines():
        m = ROW.match(line)
        if m:
            bo, bs, bp, ap, as_, ao = m.groups()
            rows.append(((bp, int(bs.replace(",", "")), int(bo.replace(",", ""))),
                         (ap, int(as_.replace(",", "")), int(ao.replace(",", "")))))
    return rows


def counter(screen: str, name: str) -> int:
    m = re.search(rf"\b{name} ([\d,]+)", screen)
    assert m, f"no '{name}' counter on screen:\n{screen}"
    return int(m.group(1).replace(",", ""))


@pytest.fixture
def stream(tmp_path):
    f = tmp_path / "demo.itch"
    subprocess.run([HFTCAP, "exchange", "--seed", str(SEED), "--stocks", str(STOCKS), "--messages", str(MESSAGES),
                    "--write", str(f)], check=True, capture_output=True, timeout=bound(60))
    from hftcap.book.books import Books
    b = Books()
    b.feed_file(str(f))
    return f, [s for _, s in b.symbols()]


def offline_top(f, sym, n):
    import json
    cp = subprocess.run([HFTCAP, "book", str(f), "--symbol", sym, "--json", "--levels", str(n)],
                        capture_output=True, text=True, check=True, timeout=bound(60))
    bk = json.loads(cp.stdout)["book"]
    return [((b[0], b[1], b[2]), (a[0], a[1], a[2])) for b, a in zip(bk["bids"], bk["asks"])]


def test_demo_in_a_real_terminal(stream):
    f, symbols = stream
    name = "d" + uuid.uuid4().hex[:5]
    try:
        with TmuxTerm(demo_cmd(name), width=80, height=24) as term:
            term.wait_for("latency per hop", timeout=30)
            a = term.wait_for(lambda s: "total pkt" in s and counter(s, "msg") > 0 and ladder(s), timeout=20)
            # counters must move while the feed runs (wait_for fails with the screen if not)
            b = term.wait_for(lambda s: counter(s, "msg") > counter(a, "msg"), timeout=10)
            # The latency panel has measured numbers with units, and the NIC hops are absent on veth.
            assert re.search(r"sender_to_book\s+tai-midnight\s+[\d.]+(ns|us|ms)", b), b
            assert re.search(r"xdp_to_book\s+TAI\s+[\d.]+(ns|us|ms)", b), b
            assert re.search(r"nic_to_xdp\s+PHC->TAI\s+absent", b), b
            # 80x24: nothing wrapped, the ladder and the latency panel both on screen.
            lines = term.lines()
            assert all(len(l) <= 80 for l in lines)
            assert len(ladder(b)) >= 3 and "latency per hop" in b
            # The stream ends: the ladder is then the final book, which must equal the replay's.
            final = term.wait_for(lambda s: counter(s, "msg") == MESSAGES, timeout=30)
            assert counter(final, "gaps") == 0
            for sym in symbols[:2]:
                term.send("/", sym, "Enter")
                # The stream has ended: the ladder drawn for sym is final; wait (bounded) for
                # the frame that shows it, then compare it with the offline replay's.
                want = offline_top(f, sym, 10)
                screen = term.wait_for(lambda s: re.search(rf"^{sym} #", s, re.M) and ladder(s)
                                       and ladder(s) == want[:len(ladder(s))], timeout=5)
                rows = ladder(screen)
                assert rows and rows == offline_top(f, sym, len(rows)), (sym, screen)
            # n cycles to another stock.
            before = re.search(r"^(\S+) #", term.capture(), re.M).group(1)
            term.send("n")
            term.wait_for(lambda s: (m := re.search(r"^(\S+) #", s, re.M)) and m.group(1) != before, timeout=5)
            term.send("q")
            status, restored = term.wait_exit(30)
            assert status == 0 and restored
        assert_nothing_left(name)
    finally:  # only matters when an assertion above failed
        subprocess.run([HFTCAP, "lab", "down", "--name", name], capture_output=True)


def test_demo_ctrl_c_removes_everything():
    name = "d" + uuid.uuid4().hex[:5]
    try:
        with TmuxTerm(demo_cmd(name), width=100, height=30) as term:
            term.wait_for(lambda s: "total pkt" in s and counter(s, "msg") > 0, timeout=30)
            assert leftovers(name), "the demo's lab should exist while it runs"
            term.send("C-c")
            status, restored = term.wait_exit(30)
            assert status in (0, 130) and restored
        assert_nothing_left(name)
    finally:  # only matters when an assertion above failed
        subprocess.run([HFTCAP, "lab", "down", "--name", name], capture_output=True)
