"""`hftcap budget FILE.pcapng`: the per-hop latency histograms rebuilt offline from the stamps
a `listen --write` capture keeps in each packet (hftcap's stamps option, DESIGN.md).

The hops are the consumer's own subtraction (feed.c record()) on the same stamps, recorded
into the same C histograms, so a capture's budget equals the live listener's for the packets
it holds (a warm-up discard or capture drops are the only differences)."""
from __future__ import annotations

import numpy as np

from ..errors import HftcapError
from ..receive import pcapng
from . import latency
from .clocks import DAY_NS


def _hops(path: str, pkts: list[pcapng.Packet], phc_is_tai: bool, epoch: int) -> tuple[dict, dict]:
    """{hop: Histogram} and {hop: negative samples} for the recorded packets."""
    from .. import _core
    rec = [p.stamps for p in pkts if p.stamps and p.stamps["recorded"]]
    cols = {k: np.array([s[k] for s in rec], dtype=np.uint64) for k in pcapng.STAMP_FIELDS}
    pairs = {"dequeue_to_decode": ("deq_tai_ns", "dec_tai_ns", None),
             "decode_to_book": ("dec_tai_ns", "book_tai_ns", None),
             "xdp_to_dequeue": ("xdp_tai_ns", "deq_tai_ns", "xdp_tai_ns"),
             "xdp_to_book": ("xdp_tai_ns", "book_tai_ns", "xdp_tai_ns"),
             "stack_to_dequeue": ("sw_tai_ns", "deq_tai_ns", "sw_tai_ns"),
             "stack_to_book": ("sw_tai_ns", "book_tai_ns", "sw_tai_ns"),
             "nic_to_xdp": ("hw_ns", "xdp_tai_ns", "xdp_tai_ns"),
             "nic_to_stack": ("hw_ns", "sw_tai_ns", "sw_tai_ns"),
             "nic_to_book": ("hw_ns", "book_tai_ns", None)}
    hists, neg = {}, {}
    valid = {h.name for h in latency.hops_for(path)}
    for hop, (a, b, need) in pairs.items():
        if hop not in valid:
            continue
        m = np.ones(len(rec), dtype=bool)
        if need:
            m &= cols[need] != 0
        if hop.startswith("nic_"):
            m &= cols["hw_ns"] != 0
            if not phc_is_tai:
                m[:] = False
        fr, to = cols[a][m], cols[b][m]
        ok = to >= fr
        h = _core.Histogram()
        h.record(np.ascontiguousarray(to[ok] - fr[ok]))
        hists[hop], neg[hop] = h, int((~ok).sum())
    h = _core.Histogram()
    n_neg = 0
    if epoch:
        m = cols["itch_ns"] != np.uint64(pcapng.NO_ITCH)
        book = cols["book_tai_ns"][m].astype(object)
        itch = cols["itch_ns"][m].astype(object)
        d = [((int(b) - epoch) % DAY_NS) - int(i) for b, i in zip(book, itch)]
        d = [x + DAY_NS if x < -(DAY_NS // 2) else x - DAY_NS if x > DAY_NS // 2 else x for x in d]
        good = np.array([x for x in d if x >= 0], dtype=np.uint64)
        n_neg = sum(1 for x in d if x < 0)
        h.record(good)
    hists["sender_to_book"], neg["sender_to_book"] = h, n_neg
    return hists, neg


def load(name: str) -> latency.Result:
    """A capture as a latency Result (what `hftcap budget` prints)."""
    try:
        cap = pcapng.read(name)
    except OSError as e:
        raise HftcapError(f"cannot read {name}: {e.strerror}") from e
    feeds = [i for i in cap.interfaces if "hftcap" in i]
    if not feeds:
        raise HftcapError(f"{name} has no hftcap interface: its packets carry no stamps",
                          hint="write one with `hftcap listen --write FILE.pcapng`")
    meta = feeds[0]["hftcap"]
    path = meta["path"]
    epoch = int(meta.get("itch_epoch_tai_ns") or 0)
    pkts = [p for p in cap.packets if p.iface == cap.interfaces.index(feeds[0])]
    hists, neg = _hops(path, pkts, bool(meta.get("phc_is_tai")), epoch)
    data: dict = {}
    domains: dict = {}
    for info in latency.hops_for(path):
        why = latency.hop_absent_reason(info.name, meta.get("clocks"))
        if info.name == "sender_to_book" and not epoch:
            why = "the ITCH timestamps' clock is not given (--itch-clock)"
        data[info.name] = latency.Absent(why) if why else latency.HistSnapshot.from_histogram(hists[info.name])
        domains[info.name] = meta.get("itch_clock") if info.name == "sender_to_book" else info.domain_short
    cond = {"path": path, "interface": feeds[0].get("name"), "feeds": meta.get("feeds"),
            "source": f"pcapng capture, {len(pkts)} packets", "negative_samples": {k: v for k, v in neg.items() if v},
            "clock_sources": {"epb": meta.get("ts_source"), "itch": meta.get("itch_clock")}}
    return latency.Result(name, cond, {path: data}, {path: domains})


def load_any(name: str) -> latency.Result:
    """A capture (pcapng) or a result file from listen --save."""
    return load(name) if pcapng.is_pcapng(name) else latency.load_result(name)
