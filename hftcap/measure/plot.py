"""Percentile plots of latency distributions (`budget --plot`, `bench --plot`), with matplotlib.

Latency on a log axis against the percentile on a "nines" axis: x = -log10(1 - q), so 50%,
90%, 99%, 99.9% and 99.99% are evenly spaced (0.30, 1, 2, 3, 4). Each line is one hop of one
path of one run, labelled with the hop, the path and its clock domain; the runs' conditions
are the caption. Values come from the same rank rule as every table (hftcap.latency.percentiles:
the bucket midpoint of the k-th sample, k = ceil(q N)); a line stops at q = 1 - 1/N, the last
percentile its N samples resolve. Figures are drawn on a Figure with the Agg canvas: no pyplot
state, no display needed."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from . import latency

NINES_MIN, NINES_MAX = math.log10(2), 4.0
TICKS = ((0.5, "50%"), (0.9, "90%"), (0.99, "99%"), (0.999, "99.9%"), (0.9999, "99.99%"))
POINTS = 241
FORMATS = (".png", ".svg")


@dataclass
class Line:
    label: str
    snap: "latency.HistSnapshot"


def nines(q: float) -> float:
    return -math.log10(1.0 - q)


def curve(snap) -> tuple[np.ndarray, np.ndarray]:
    """(x on the nines axis, latency in ns) of a histogram from 50% to min(99.99%, 1 - 1/N)."""
    n = snap.count
    top = min(NINES_MAX, math.log10(n)) if n > 1 else NINES_MIN
    xs = np.linspace(NINES_MIN, max(top, NINES_MIN), POINTS if top > NINES_MIN else 1)
    ticks = {int(round(q * 1e6)) for q, _ in TICKS if nines(q) <= top + 1e-9}
    ppm = sorted({int(round((1.0 - 10.0 ** -x) * 1e6)) for x in xs} | ticks)
    p = latency.percentiles(snap.counts, snap.min_ns, snap.max_ns, [(str(q), q) for q in ppm])
    return (np.array([nines(q / 1e6) for q in ppm]), np.array([p[str(q)] for q in ppm], dtype=float))


def check_out(out: str) -> None:
    if os.path.splitext(out)[1].lower() not in FORMATS:
        raise UsageError(f"--plot {out}: the file must end in .png or .svg")


def percentile_figure(lines: list[Line], title: str, caption: list[str]):
    """The figure (matplotlib Figure) of the lines; tests read its data back."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter
    fig = Figure(figsize=(9.5, 5.6 + 0.16 * len(caption)), layout="constrained")
    ax = fig.subplots()
    lo, hi = math.inf, 0.0
    for k, ln in enumerate(lines):
        x, y = curve(ln.snap)
        ax.plot(x, y, label=f"{ln.label} (n={ln.snap.count:,})", gid=f"hftcap-line-{k}",
                marker="o" if len(x) == 1 else None, linewidth=1.6)
        lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
    ax.set_yscale("log")
    ax.set_xlim(NINES_MIN, NINES_MAX)
    if lines:
        ax.set_ylim(max(lo / 1.5, 0.5), hi * 1.5)
    ax.set_xticks([nines(q) for q, _ in TICKS], [t for _, t in TICKS])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: latency.fmt_ns(v)))
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (log scale)")
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    if lines:
        ax.legend(fontsize=8, loc="upper left")
    fig.get_layout_engine().set(rect=(0, 0.02 + 0.028 * len(caption), 1, 1 - 0.02 - 0.028 * len(caption)))
    fig.text(0.01, 0.01, "\n".join(caption), fontsize=7, family="monospace", va="bottom", ha="left")
    return fig


def save(fig, out: str) -> None:
    check_out(out)
    fig.savefig(out, dpi=120)


def _cond(c: dict) -> str:
    keys = ("path", "xdp_mode", "bind_mode", "poll_mode", "cpu", "kernel", "message_rate", "duration_s", "source")
    parts = [f"{k}={c.get(k)}" for k in keys if c.get(k) is not None]
    cs = c.get("clock_sources") or {}
    if isinstance(cs, dict):
        clk = ", ".join(f"{k}={v}" for k, v in cs.items() if isinstance(v, str))
        nic = cs.get("nic")
        if isinstance(nic, dict) and nic.get("status"):
            clk += f", nic: {nic['status']}"
        parts.append(f"clocks: {clk}")
    doc = c.get("doctor")
    if isinstance(doc, dict) and doc.get("counts"):
        parts.append("doctor: " + ", ".join(f"{v} {k}" for k, v in doc["counts"].items()))
    return ", ".join(parts)


DEFAULT_HOPS = {"xdp": ("nic_to_book", "xdp_to_book", "sender_to_book"),
                "kernel": ("nic_to_book", "stack_to_book", "sender_to_book")}


def budget_plot(files: list[str], out: str, hops: list[str] | None = None):
    """`budget FILE... --plot OUT` (result files or pcapng captures): per run and path, the chosen hops (default: the first of
    nic_to_book, xdp_to_book / stack_to_book, sender_to_book that has samples)."""
    from .capfile import load_any   # a listen --save result file or a listen --write capture
    check_out(out)
    results = [load_any(f) for f in files]
    labels = [chr(ord("A") + i) if i < 26 else f"R{i}" for i in range(len(results))]
    for h in hops or ():
        if h not in latency.HOP_BY_NAME:
            raise UsageError(f"unknown hop '{h}'", hint="one of: " + ", ".join(latency.HOP_BY_NAME))
    lines, caption = [], []
    for lab, r in zip(labels, results):
        for path in latency.PATHS:
            data = r.hops.get(path)
            if not data:
                continue
            have = [h for h, d in data.items() if isinstance(d, latency.HistSnapshot) and d.count]
            chosen = [h for h in hops if h in have] if hops else [h for h in DEFAULT_HOPS[path] if h in have][:1]
            for h in chosen:
                lines.append(Line(f"{lab}: {h}, {path} path, {r.domains[path][h]}", data[h]))
        caption.append(f"{lab}: {os.path.basename(r.file)}: {_cond(r.conditions)}")
    if not lines:
        raise UsageError("nothing to plot: no hop with samples in " + ", ".join(files),
                         hint="pick hops that were measured with --hop")
    caption.append("percentiles: bucket midpoint of the k-th sample, k = ceil(qN), within 0.39%; "
                   "a line ends at q = 1 - 1/N")
    fig = percentile_figure(lines, "latency percentiles: " + ", ".join(sorted({ln.label.split(": ")[1].split(",")[0]
                                                                               for ln in lines})), caption)
    save(fig, out)
    return fig


def bench_plot(hists: dict, paths: dict, conditions: dict, out: str, hop: str = "sender_to_book"):
    """`bench --plot OUT`: one line per bench mode of `hop`, from the summed histograms of all
    rounds. hists: {mode: {hop: HistSnapshot | Absent}}; paths: {mode: 'xdp' | 'kernel'}."""
    check_out(out)
    lines = []
    for mode, hs in hists.items():
        d = hs.get(hop)
        if isinstance(d, latency.HistSnapshot) and d.count:
            path = paths[mode]
            dom = "lab: tai-midnight" if hop == "sender_to_book" else latency.HOP_BY_NAME[hop].domain_short
            lines.append(Line(f"{mode}: {hop}, {path} path, {dom}", d))
    c = conditions
    caption = [f"{c['rounds']} rounds x {c['seconds_per_trial']} s per path (after {c['warmup_s']} s warm-up), "
               f"{c['message_rate']:,.0f} msg/s, {c['messages_per_packet']} msg/packet, seed {c['seed']}, "
               f"{c['stocks']} stocks; {c['order']}",
               f"kernel {c['kernel']}, {c['interface']}, receiver CPU {c['receiver_cpu']}, sender CPU "
               f"{c['sender_cpu']}; clocks: " + ", ".join(f"{k}={v}" for k, v in c["clocks"].items()),
               "modes: " + "; ".join(f"{m}: " + ", ".join(f"{k} {v}" for k, v in i.items() if v)
                                     for m, i in c.get("modes_obtained", {}).items()),
               "percentiles: bucket midpoint of the k-th sample, k = ceil(qN), within 0.39%; "
               "a line ends at q = 1 - 1/N"]
    fig = percentile_figure(lines, f"hftcap bench: {hop} percentiles per path", caption)
    save(fig, out)
    return fig
