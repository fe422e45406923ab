"""The XDP program's own cost, from the kernel's BPF run-time statistics.

While statistics are on, the kernel times every run of every BPF program with sched_clock()
and adds it to the program's run_time_ns and run_cnt (struct bpf_prog_info). hftcap turns them
on for a run with BPF_ENABLE_STATS, which the kernel ties to a file descriptor: they stay on
(kernel.bpf_stats_enabled reads 1) while hftcap holds it and return to the machine's own
setting when it is closed, on every exit path and also if the process is killed. Each timed
run costs two sched_clock() reads more, on every BPF program of the machine, for the run only.

The figure is run_time_ns / run_cnt between two readings: the mean over every frame the
program saw (feed packets and the few it passes, e.g. IGMP), not a percentile."""
from __future__ import annotations

import contextlib
import os

from ..errors import HftcapError

SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
CLOCK = "kernel sched_clock (BPF run-time statistics: run_time_ns / run_cnt, mean per run)"


def sysctl_value() -> int | None:
    """kernel.bpf_stats_enabled now (None when the file cannot be read)."""
    try:
        with open(SYSCTL) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def stats_enabled(core, want: bool = True):
    """BPF run-time statistics on inside the block (yields True), restored on leaving it."""
    if not want:
        yield False
        return
    try:
        fd = core.bpf_enable_stats()
    except OSError as e:
        raise HftcapError(f"cannot enable BPF run-time statistics: {os.strerror(e.errno or 0)}",
                          hint="needs root (CAP_SYS_ADMIN) and a kernel >= 5.8") from None
    try:
        yield True
    finally:
        os.close(fd)


class ProgCost:
    """Run-time statistics of one loaded program, measured from a base reading (mark())."""

    def __init__(self, core, prog_id: int | None):
        self.core = core
        self.prog_id = prog_id or None
        self.base = self._read()

    def _read(self) -> tuple[int, int] | None:
        if not self.prog_id:
            return None
        try:
            return self.core.bpf_prog_run_stats(self.prog_id)
        except OSError:
            return None

    def mark(self) -> None:
        """Measure from now on (the warm-up's runs are left out)."""
        self.base = self._read()

    def read(self) -> dict:
        """{"ns_per_run", "runs", "run_time_ns", "clock", "prog_id"} since mark(), or {"absent": why}."""
        cur = self._read()
        if cur is None or self.base is None:
            return {"absent": "the program's statistics cannot be read", "clock": CLOCK}
        ns, cnt = cur[0] - self.base[0], cur[1] - self.base[1]
        if cnt <= 0:
            why = ("no runs while BPF statistics were on" if sysctl_value() else
                   "kernel.bpf_stats_enabled is 0 (statistics off)")
            return {"absent": why, "clock": CLOCK, "prog_id": self.prog_id}
        return {"ns_per_run": round(ns / cnt, 1), "runs": cnt, "run_time_ns": ns, "clock": CLOCK,
                "prog_id": self.prog_id}


def describe(d: dict | None) -> str:
    """One line for tables and the live view."""
    if not d:
        return "-"
    if "absent" in d:
        return f"absent ({d['absent']})"
    return f"{d['ns_per_run']:,.0f} ns per run, mean of {d['runs']:,} runs (kernel sched_clock, bpf_stats)"
