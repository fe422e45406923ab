"""`hftcap floor line`: a cache line bounced between two pinned CPUs, timed in batches. Real
threads on real CPUs (no root, no network); wrong CPUs are one error line with a hint."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bounds import bound

HFTCAP = str(Path(sys.executable).parent / "hftcap")
CPUS = sorted(os.sched_getaffinity(0))
two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs this process may run on")


def floor_line(*args, prefix=()):
    return subprocess.run([*prefix, HFTCAP, "floor", "line", *args], capture_output=True, text=True,
                          timeout=bound(60), cwd="/")


def one_error(cp, code=2):
    """Exit code `code`, one error line and one hint, no traceback."""
    assert cp.returncode == code, (cp.returncode, cp.stdout, cp.stderr)
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("hftcap: error: ") and lines[1].startswith("hint: "), lines
    assert "Traceback" not in cp.stderr
    return lines


@two_cpus
def test_line_between_two_cpus_is_measured_in_the_batches_asked():
    a, b = CPUS[0], CPUS[1]
    cp = floor_line("--cpu-a", str(a), "--cpu-b", str(b), "--batches", "30", "--per-batch", "200")
    assert cp.returncode == 0, cp.stderr
    d = json.loads(cp.stdout)
    assert (d["cpu_a"], d["cpu_b"]) == (a, b)
    assert d["batches_asked"] == 30 and d["round_trips_per_batch"] == 200
    assert d["complete"] is True and d["batches"] == 30  # every batch kept when none stalled 2 s
    assert d["clock"].startswith("CLOCK_MONOTONIC")
    # A line another CPU wrote costs tens to hundreds of ns to read; a loop that did not really
    # wait for the other thread would come out at a few ns per trip or less.
    assert 5 < d["one_way_min_ns"] <= d["one_way_p50_ns"] <= d["one_way_p90_ns"] < 1_000_000


@two_cpus
def test_line_asks_two_different_cpus():
    lines = one_error(floor_line("--cpu-a", str(CPUS[1]), "--cpu-b", str(CPUS[1])))
    assert "needs two" in lines[0]


def test_line_refuses_a_cpu_it_may_not_run_on():
    # Restricted to one CPU by its affinity, the command may not pin a thread to another.
    other = max(CPUS) + 1 if len(CPUS) < 2 else CPUS[1]
    lines = one_error(floor_line("--cpu-a", str(CPUS[0]), "--cpu-b", str(other), prefix=("taskset", "-c", str(CPUS[0]))))
    assert f"--cpu-b {other}: not a CPU this process may run on" in lines[0]
    assert lines[1] == f"hint: choose from {CPUS[0]}"


@two_cpus
def test_line_bounds_its_arguments():
    for args, what in ((("--batches", "0"), "--batches 0"), (("--per-batch", "2000000"), "--per-batch 2000000"),
                       (("--max-seconds", "0"), "--max-seconds 0")):
        assert what in one_error(floor_line(*args))[0]
