"""MoldUDP64 sequence numbers as the tests compare them with what hftcap reports."""
from __future__ import annotations


def runs(seqs) -> list[list[int]]:
    """The runs of consecutive numbers in `seqs`, ascending, each as [first, last]."""
    out = []
    for s in sorted(seqs):
        if out and out[-1][1] + 1 == s:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out
