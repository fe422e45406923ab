"""latency.py: per-hop latency statistics from the C histograms, result files, `hftcap budget`.

The histograms live in C (hftcap/_core/hist.h): fixed log-linear buckets, exact below 256 ns,
128 buckets per power of two above (each at most 0.78% of its lower bound wide), up to 10 s,
then one overflow bucket. Python gets the bucket bounds once from `_core.hist_geometry()` and
computes everything here from a counts array, so any snapshot the consumer exports works.

Percentiles: for a quantile q and N = sum(counts) samples, the rank is k = ceil(q * N) (integer
arithmetic, k >= 1) and the answer is the bucket holding the k-th smallest sample -- the same
sample numpy's `percentile(..., method="inverted_cdf")` returns. Within that bucket we report
the midpoint of its inclusive range [low, high - 1], clamped to the recorded [min, max] when
those are known (so a single value or the top bucket is exact). The true sample lies in the same
bucket, so the error is at most half a bucket: <= 0.39% of the value (0 below 256 ns). A
percentile in the overflow bucket is reported as HC_HIST_MAX_NS + 1 and printed as ">10 s".

Absent: a histogram with no samples (count == 0, e.g. right after the warm-up reset, or a hop
whose clock is missing) has no percentiles at all: HopStats.absent holds the reason and every
value is None. Nothing prints a 0 for it.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys
from functools import lru_cache
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import HftcapError

PATHS = ("xdp", "kernel")
RESULT_FORMAT = "hftcap-latency-result"
RESULT_VERSION = 1

# (name, quantile in parts per million): integer ranks, no float rounding at the edges.
PERCENTILES = (("p50", 500_000), ("p90", 900_000), ("p99", 990_000), ("p99.9", 999_000),
               ("p99.99", 999_900))

# Result-file conditions, in the order the budget prints them.
CONDITION_KEYS = ("path", "xdp_mode", "bind_mode", "poll_mode", "cpu", "kernel", "interface",
                  "clock_sources", "message_rate", "duration_s", "time")


@dataclasses.dataclass(frozen=True)
class HopInfo:
    name: str
    paths: tuple[str, ...]
    span: str          # from -> to
    domain: str        # exactly as DESIGN.md's Hops table
    needs_phc: bool    # the hop starts at the NIC PHC stamp: absent without a TAI-synced PHC

    @property
    def domain_short(self) -> str:
        """The clock domain without its condition ('PHC->TAI', 'TAI', 'lab: tai-midnight')."""
        return self.domain.split(",")[0].strip()


_PHC = "PHC->TAI, only when the PHC is synced to TAI (phc2sys)"
HOPS: tuple[HopInfo, ...] = (
    HopInfo("nic_to_xdp", ("xdp",), "NIC PHC RX stamp -> XDP program", _PHC, True),
    HopInfo("xdp_to_dequeue", ("xdp",), "XDP program -> consumer took the descriptor", "TAI",
            False),
    HopInfo("nic_to_stack", ("kernel",), "SO_TIMESTAMPING hw -> sw stamp",
            "PHC->TAI, only when synced", True),
    HopInfo("stack_to_dequeue", ("kernel",), "SO_TIMESTAMPING sw stamp -> recvmmsg returned",
            "TAI (sw stamp mapped)", False),
    HopInfo("dequeue_to_decode", ("xdp", "kernel"),
            "descriptor taken -> all messages of the packet decoded", "TAI", False),
    HopInfo("decode_to_book", ("xdp", "kernel"),
            "decoded -> all book updates of the packet applied", "TAI", False),
    HopInfo("xdp_to_book", ("xdp",), "XDP program -> book updated", "TAI", False),
    HopInfo("stack_to_book", ("kernel",), "sw stamp -> book updated", "TAI", False),
    HopInfo("sender_to_book", ("xdp", "kernel"),
            "ITCH timestamp of the packet's first message -> book updated", "lab: tai-midnight",
            False),
    HopInfo("nic_to_book", ("xdp", "kernel"), "NIC PHC RX stamp -> book updated",
            "PHC->TAI, only when synced", True),
)
HOP_BY_NAME = {h.name: h for h in HOPS}


def hops_for(path: str) -> tuple[HopInfo, ...]:
    """The hops of one path, in the order of DESIGN.md."""
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r} (expected one of {', '.join(PATHS)})")
    return tuple(h for h in HOPS if path in h.paths)


def hop_absent_reason(hop: str, clocks: Mapping[str, Any] | None) -> str | None:
    """Why a hop cannot be measured with these clocks (a `describe_clocks()` dict), or None.

    Hops that start at the NIC PHC stamp need a PHC synced to CLOCK_TAI; every other hop is
    CLOCK_TAI (or the lab's tai-midnight) on both ends and always measurable."""
    info = HOP_BY_NAME[hop]
    if not info.needs_phc:
        return None
    if not clocks or not clocks.get("phc"):
        why = (clocks or {}).get("phc_reason") or "interface has no PHC"
        return f"no PHC: {why}"
    if not clocks.get("synced_to_tai"):
        return f"PHC not synced to TAI: {clocks.get('sync_reason') or 'unknown'}"
    return None


# ---------------------------------------------------------------------------------------------
# Geometry and snapshots


@dataclasses.dataclass(frozen=True)
class Geometry:
    sub_bucket_bits: int
    buckets: int
    overflow_index: int
    max_ns: int
    header_words: int
    record_words: int
    low: np.ndarray    # inclusive lower bound per bucket (uint64)
    high: np.ndarray   # exclusive upper bound per bucket (uint64)
    rep: np.ndarray    # the representative value reported for a percentile in each bucket

    def key(self) -> dict:
        return {"sub_bucket_bits": self.sub_bucket_bits, "buckets": self.buckets,
                "max_ns": self.max_ns}


@lru_cache(maxsize=1)
def geometry() -> Geometry:
    from .. import _core
    g = _core.hist_geometry()
    low = np.frombuffer(g["low"], dtype=np.uint64).copy()
    high = np.frombuffer(g["high"], dtype=np.uint64).copy()
    rep = low + (high - np.uint64(1) - low) // np.uint64(2)
    rep[g["overflow_index"]] = low[g["overflow_index"]]
    for a in (low, high, rep):
        a.setflags(write=False)
    return Geometry(g["sub_bucket_bits"], g["buckets"], g["overflow_index"], g["max_ns"],
                    g["header_words"], g["record_words"], low, high, rep)


@dataclasses.dataclass
class HistSnapshot:
    """One histogram's counts plus its exact extremes (None when unknown or empty)."""
    counts: np.ndarray                 # uint64, geometry().buckets long
    min_ns: int | None = None
    max_ns: int | None = None
    sum_ns: int | None = None          # sum of the in-range samples

    @property
    def count(self) -> int:
        return int(self.counts.sum(dtype=np.uint64))

    @property
    def overflow(self) -> int:
        return int(self.counts[geometry().overflow_index])

    @classmethod
    def from_record(cls, words: np.ndarray) -> "HistSnapshot":
        """From one export record (hist.h layout: count, min_ns, max_ns, sum_ns, counts...)."""
        g = geometry()
        if words.shape != (g.record_words,):
            raise ValueError(f"export record has {words.shape} words, expected {g.record_words}")
        count, mn, mx, sm = (int(x) for x in words[:g.header_words])
        counts = np.array(words[g.header_words:], dtype=np.uint64)
        if not count:
            return cls(counts, None, None, 0)
        return cls(counts, mn, mx, sm)

    @classmethod
    def from_histogram(cls, h) -> "HistSnapshot":
        """From a live `_core.Histogram` (copies the counts)."""
        return cls(np.frombuffer(h, dtype=np.uint64).copy(), h.min, h.max, h.sum)

    @classmethod
    def of(cls, obj) -> "HistSnapshot":
        if isinstance(obj, HistSnapshot):
            return obj
        if isinstance(obj, np.ndarray):
            return cls(_check_counts(obj))
        return cls.from_histogram(obj)


def _check_counts(counts) -> np.ndarray:
    a = np.asarray(counts)
    g = geometry()
    if a.shape != (g.buckets,):
        raise ValueError(f"counts array has shape {a.shape}, expected ({g.buckets},)")
    return a.astype(np.uint64, copy=False)


def parse_export(buf) -> list[HistSnapshot]:
    """Split a buffer of back-to-back export records (hc_hist_export) into snapshots."""
    g = geometry()
    words = np.frombuffer(buf, dtype=np.uint64)
    if words.size % g.record_words:
        raise ValueError(f"export buffer of {words.size} words is not a multiple of "
                         f"{g.record_words}")
    return [HistSnapshot.from_record(r) for r in words.reshape(-1, g.record_words)]


# ---------------------------------------------------------------------------------------------
# Percentiles and hop statistics


def percentiles(counts, min_ns: int | None = None, max_ns: int | None = None,
                quantiles: Iterable[tuple[str, int]] = PERCENTILES) -> dict[str, int | None]:
    """Percentiles (name -> ns) of a counts array; all None when it is empty (absent).

    `quantiles` are (name, parts per million). See the module docstring for the rank rule and
    the representative value; min_ns/max_ns, when given, clamp the representative."""
    g = geometry()
    c = _check_counts(counts)
    cum = np.cumsum(c, dtype=np.uint64)
    total = int(cum[-1])
    out: dict[str, int | None] = {}
    for name, ppm in quantiles:
        if total == 0:
            out[name] = None
            continue
        k = max(1, -(-total * ppm // 1_000_000))
        i = int(np.searchsorted(cum, np.uint64(k), side="left"))
        v = int(g.rep[i])
        if i != g.overflow_index:
            if min_ns is not None:
                v = max(v, min_ns)
            if max_ns is not None:
                v = min(v, max_ns)
        out[name] = v
    return out


@dataclasses.dataclass
class HopStats:
    hop: str
    path: str
    domain: str
    count: int = 0
    p50: int | None = None
    p90: int | None = None
    p99: int | None = None
    p99_9: int | None = None
    p99_99: int | None = None
    max: int | None = None
    min: int | None = None
    mean: float | None = None
    overflow: int = 0
    absent: str | None = None      # reason, when there are no samples

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["p99.9"] = d.pop("p99_9")
        d["p99.99"] = d.pop("p99_99")
        return d

    def ns_summary(self) -> dict:
        """The percentiles in the JSON form that listen and bench print (stable key names)."""
        return {"p50_ns": self.p50, "p90_ns": self.p90, "p99_ns": self.p99, "p999_ns": self.p99_9,
                "max_ns": self.max, "count": self.count}


def hop_stats(path: str, hop: str, data, domain: str | None = None,
              absent_reason: str | None = None) -> HopStats:
    """Statistics of one hop from a Histogram / HistSnapshot / counts array, or None/Absent.

    A hop with no samples is absent (reason `absent_reason`, else 'no samples')."""
    info = HOP_BY_NAME.get(hop)
    if info is None:
        raise ValueError(f"unknown hop {hop!r}")
    if path not in info.paths:
        raise ValueError(f"hop {hop!r} is not on the {path!r} path")
    dom = domain or info.domain_short
    if data is None or isinstance(data, Absent):
        why = data.reason if isinstance(data, Absent) else (absent_reason or "not recorded")
        return HopStats(hop, path, dom, absent=why)
    snap = HistSnapshot.of(data)
    n = snap.count
    if n == 0:
        return HopStats(hop, path, dom, absent=absent_reason or "no samples")
    g = geometry()
    p = percentiles(snap.counts, snap.min_ns, snap.max_ns)
    nz = np.flatnonzero(snap.counts)
    mx = snap.max_ns if snap.max_ns is not None else int(g.rep[nz[-1]])
    mn = snap.min_ns if snap.min_ns is not None else int(g.rep[nz[0]])
    in_range = n - snap.overflow
    mean = (snap.sum_ns / in_range) if (snap.sum_ns is not None and in_range) else None
    return HopStats(hop, path, dom, n, p["p50"], p["p90"], p["p99"], p["p99.9"], p["p99.99"],
                    mx, mn, mean, snap.overflow)


def interval_counts(prev, cur) -> np.ndarray:
    """Counts recorded between two snapshots of the same histogram (cur - prev).

    If any bucket decreased, the histogram was reset in between (warm-up discard): the
    interval is then `cur` alone, i.e. the samples since the reset."""
    a = _check_counts(HistSnapshot.of(prev).counts)
    b = _check_counts(HistSnapshot.of(cur).counts)
    if np.any(b < a):
        return b.copy()
    return b - a


def interval_stats(path: str, hop: str, prev, cur) -> HopStats:
    """HopStats of the samples between two snapshots. min/max of an interval are not recorded,
    so they are the representatives of the first/last non-empty bucket (within 0.39%)."""
    return hop_stats(path, hop, HistSnapshot(interval_counts(prev, cur)))


# ---------------------------------------------------------------------------------------------
# Result files


@dataclasses.dataclass(frozen=True)
class Absent:
    """A hop that was not measured, with the reason (e.g. 'no PHC: veth has no PHC')."""
    reason: str


@dataclasses.dataclass
class Result:
    file: str
    conditions: dict
    hops: dict[str, dict[str, HistSnapshot | Absent]]   # path -> hop -> data
    domains: dict[str, dict[str, str]]                   # path -> hop -> domain

    def stats(self) -> list[HopStats]:
        out = []
        for path in PATHS:
            for hop, data in self.hops.get(path, {}).items():
                out.append(hop_stats(path, hop, data, self.domains[path][hop]))
        return out


def _utc_now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def save_result(path: str | os.PathLike, hists_by_path_and_hop: Mapping[str, Mapping[str, Any]],
                conditions: Mapping[str, Any]) -> dict:
    """Write a latency result file (JSON) and return the document.

    hists_by_path_and_hop: {path: {hop: Histogram | HistSnapshot | counts array | Absent}}.
    Counts are stored sparse as [bucket, count] pairs. conditions: CONDITION_KEYS (missing ones
    stored as null; `kernel` and `time` filled in when absent) plus any extra keys; an optional
    `hop_domains` {hop: domain} overrides the DESIGN domain of a hop (e.g. a real exchange's
    ITCH clock for sender_to_book)."""
    g = geometry()
    cond = {k: conditions.get(k) for k in CONDITION_KEYS}
    cond.update({k: v for k, v in conditions.items() if k not in cond and k != "hop_domains"})
    if cond["kernel"] is None:
        cond["kernel"] = platform.release()
    if cond["time"] is None:
        cond["time"] = _utc_now_iso()
    domains = dict(conditions.get("hop_domains") or {})
    doc_paths: dict[str, dict] = {}
    for p, hops in hists_by_path_and_hop.items():
        valid = {h.name for h in hops_for(p)}
        out = {}
        for hop, data in hops.items():
            if hop not in valid:
                raise ValueError(f"hop {hop!r} is not on the {p!r} path")
            entry: dict[str, Any] = {"domain": domains.get(hop, HOP_BY_NAME[hop].domain_short)}
            if data is None or isinstance(data, Absent):
                entry["absent"] = data.reason if data is not None else "not recorded"
            else:
                s = HistSnapshot.of(data)
                nz = np.flatnonzero(s.counts)
                entry.update(min_ns=s.min_ns, max_ns=s.max_ns, sum_ns=s.sum_ns,
                             counts=[[int(i), int(s.counts[i])] for i in nz])
            out[hop] = entry
        doc_paths[p] = out
    doc = {"format": RESULT_FORMAT, "version": RESULT_VERSION, "geometry": g.key(),
           "conditions": cond, "paths": doc_paths}
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)
    return doc


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def load_result(path: str | os.PathLike) -> Result:
    """Read a result file written by save_result (raises HftcapError on anything wrong)."""
    name = os.fspath(path)
    try:
        with open(name) as f:
            doc = json.load(f)
    except OSError as e:
        raise HftcapError(f"cannot read {name}: {e.strerror}") from e
    except ValueError as e:
        raise HftcapError(f"{name} is not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT:
        raise HftcapError(f"{name} is not an hftcap latency result",
                          hint="write one with `hftcap listen --save FILE` or save_result()")
    if doc.get("version") != RESULT_VERSION:
        raise HftcapError(f"{name}: result version {doc.get('version')} not supported "
                          f"(this hftcap reads version {RESULT_VERSION})")
    g = geometry()
    if doc.get("geometry") != g.key():
        raise HftcapError(f"{name}: histogram geometry {doc.get('geometry')} differs from this "
                          f"build's {g.key()}")
    hops: dict[str, dict] = {}
    domains: dict[str, dict] = {}
    try:
        for p, entries in doc["paths"].items():
            valid = {h.name for h in hops_for(p)}
            hops[p], domains[p] = {}, {}
            for hop, e in entries.items():
                if hop not in valid:
                    raise ValueError(f"hop {hop!r} is not on the {p!r} path")
                domains[p][hop] = e["domain"]
                if "absent" in e:
                    hops[p][hop] = Absent(str(e["absent"]))
                    continue
                counts = np.zeros(g.buckets, dtype=np.uint64)
                for i, c in e["counts"]:
                    if not (0 <= i < g.buckets) or c < 0:
                        raise ValueError(f"bad bucket entry [{i}, {c}] for {p}/{hop}")
                    counts[i] += c
                hops[p][hop] = HistSnapshot(counts, e.get("min_ns"), e.get("max_ns"),
                                            e.get("sum_ns"))
    except (KeyError, TypeError, ValueError) as e:
        raise HftcapError(f"{name}: malformed result file ({e})") from e
    return Result(name, doc.get("conditions") or {}, hops, domains)


# ---------------------------------------------------------------------------------------------
# `hftcap budget`


def fmt_ns(v: int | float | None) -> str:
    """A latency with its unit, 3 significant digits; '-' for None, '>10 s' past the range."""
    if v is None:
        return "-"
    if v > geometry().max_ns:
        return ">10 s"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if v >= scale:
            x = v / scale
            return f"{x:.2f} {unit}" if x < 10 else f"{x:.1f} {unit}" if x < 100 else \
                f"{x:.0f} {unit}"
    return f"{int(v)} ns"


_BUDGET_COLS = (("p50", "p50"), ("p99", "p99"), ("p99.9", "p99_9"), ("max", "max"))


def _budget_rows(results: list[Result], path: str) -> list[tuple[HopInfo, str, list]]:
    """(hop, domain, [HopStats-or-None per file]) rows; one row per (hop, domain) so a row
    never mixes clock domains across runs."""
    rows = []
    for info in hops_for(path):
        by_domain: dict[str, list] = {}
        for k, r in enumerate(results):
            data = r.hops.get(path, {})
            dom = r.domains.get(path, {}).get(info.name, info.domain_short)
            if path not in r.hops:
                st = HopStats(info.name, path, dom, absent="path not run")
            elif info.name not in data:
                st = HopStats(info.name, path, dom, absent="not recorded")
            else:
                st = hop_stats(path, info.name, data[info.name], dom)
            by_domain.setdefault(dom, [None] * len(results))[k] = st
        for dom, cells in by_domain.items():
            rows.append((info, dom, cells))
    return rows


def _absent_cell(st: HopStats | None) -> str:
    return "-" if st is None else f"absent ({st.absent})"


def _cond_str(v) -> str:
    if v is None:
        return "unknown"
    if isinstance(v, dict) and "status" in v:       # a describe_clocks() dict
        return "; ".join([str(v["status"])] + [str(w) for w in v.get("warnings") or ()])
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cond_str(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_cond_str(x) for x in v)
    return str(v)


def run_budget(files: list[str], console=None, json_out: bool = False) -> int:
    """`hftcap budget FILE [FILE...]`: the per-hop latency table of one run, or several runs
    side by side (columns per run, labelled A, B, ...), with the conditions under it."""
    if not files:
        raise HftcapError("budget needs at least one result file",
                          hint="hftcap budget RUN.json [OTHER.json ...]", code=2)
    results = [load_result(f) for f in files]
    labels = [chr(ord("A") + i) if i < 26 else f"R{i}" for i in range(len(results))]
    paths = [p for p in PATHS if any(p in r.hops for r in results)]
    if json_out:
        doc = {"runs": [{"label": lab, "file": r.file, "conditions": r.conditions,
                         "hops": [s.to_dict() for s in r.stats()]}
                        for lab, r in zip(labels, results)]}
        out = console.file if console is not None else sys.stdout
        out.write(json.dumps(doc, indent=2) + "\n")
        return 0

    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    multi = len(results) > 1
    for path in paths:
        t = Table(title=f"latency budget: {path} path", title_justify="left")
        t.add_column("stage", no_wrap=True, min_width=17)
        if multi:
            # Runs side by side: one column per run, one row per statistic.
            t.add_column("", no_wrap=True)
            for lab in labels:
                t.add_column(f"run {lab}", justify="right")
        else:
            t.add_column("samples", justify="right")
            for title, _ in _BUDGET_COLS:
                t.add_column(title, justify="right")
        t.add_column("clock domain")
        for info, dom, cells in _budget_rows(results, path):
            if not multi:
                st = cells[0]
                if st.absent is not None:
                    t.add_row(info.name, "-", f"absent ({st.absent})",
                              *["-"] * (len(_BUDGET_COLS) - 1), dom)
                else:
                    t.add_row(info.name, str(st.count),
                              *[fmt_ns(getattr(st, a)) for _, a in _BUDGET_COLS], dom)
                continue
            # A run whose hop is in another clock domain (None) is shown on that domain's row.
            if all(st is None or st.absent is not None for st in cells):
                t.add_row(info.name, "", *[_absent_cell(st) for st in cells], dom,
                          end_section=True)
                continue
            stats = [("samples", "count")] + list(_BUDGET_COLS)
            for j, (title, attr) in enumerate(stats):
                row = [info.name if j == 0 else "", title]
                for st in cells:
                    if st is None or st.absent is not None:
                        row.append(_absent_cell(st) if j == 0 else "-")
                    elif attr == "count":
                        row.append(str(st.count))
                    else:
                        row.append(fmt_ns(getattr(st, attr)))
                row.append(dom if j == 0 else "")
                t.add_row(*row, end_section=(j == len(stats) - 1))
        console.print(t)
    if not paths:
        console.print("no latency data in " + ", ".join(files))
    ct = Table(title="conditions", title_justify="left")
    ct.add_column("")
    for lab in labels:
        ct.add_column(lab if multi else "value")
    ct.add_row("file", *[r.file for r in results])
    keys = list(CONDITION_KEYS)
    for r in results:
        keys += [k for k in r.conditions if k not in keys]
    for k in keys:
        vals = [_cond_str(r.conditions.get(k)) for r in results]
        ct.add_row(k, *vals)
    console.print(ct)
    console.print("percentiles: bucket midpoint of the k-th sample, k = ceil(q*N); "
                  "within 0.39% of the sample (histogram relative error)", highlight=False)
    return 0
