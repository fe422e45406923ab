"""Reading captures in tests: through tshark (its own MoldUDP64 dissector), never hftcap."""
from __future__ import annotations

import subprocess

from listenproc import FEED_PORT
from bounds import bound


def tshark(*args, timeout=bound(120)) -> str:
    cp = subprocess.run(["tshark", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    errs = [line for line in cp.stderr.splitlines() if line.strip() and "Running as user" not in line]
    assert cp.returncode == 0 and not errs, f"tshark {args}: rc {cp.returncode}: {cp.stderr}"
    return cp.stdout


def mold_fields(path) -> list[tuple[int, int]]:
    out = tshark("-r", path, "-d", f"udp.port=={FEED_PORT},moldudp64", "-T", "fields",
                 "-e", "moldudp64.sequence", "-e", "moldudp64.count")
    return [tuple(int(x) for x in line.split("\t")) for line in out.splitlines()]


def assert_tiles(fields, sent, k, whole=True):
    """The message packets' (sequence, count): consecutive, k each; whole: exactly what was sent."""
    msgs = [(s, c) for s, c in fields if 0 < c < 0xFFFF]
    assert msgs, "no message packets"
    if whole:
        assert msgs[0][0] == sent["first_seq"]
    for (s0, c0), (s1, _) in zip(msgs, msgs[1:]):
        assert s1 == s0 + c0, f"sequence {s1} after {s0}+{c0}"
    assert all(c == k for _, c in msgs[:-1])
    if whole:
        assert msgs[-1][0] + msgs[-1][1] == sent["next_seq"]
        assert len(msgs) == sent["data_packets"]
    return msgs
