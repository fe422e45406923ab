"""The suite's time bounds, scaled to the machine that runs it.

Every wait in the suite (for a line, a counter, a file, a process's end) has a bound: the time within
which the condition holds on a working machine, with a wide margin. A bound is never an assertion
on speed (speed lives in benchmarks/); it only stops a broken run. On a slower machine the same
work takes proportionally longer (a VM under software emulation, QEMU's TCG, runs 10-20x slower),
so every bound is multiplied by one factor, the same for the whole session:

- HFTCAP_TEST_TIME_SCALE, when set (a number >= 1): vagrant/run-tests.sh sets it for a TCG guest;
- otherwise a calibration measured once, at the first bound asked for: the best of five runs of a
  fixed pure-Python workload against its time on the reference machine (the project's 2-core dev
  VM, idle), never below 1. The best of five measures the machine's speed, not a moment's load.

`bound(s)` is the scaled bound; `wait_for(cond, s, what)` polls cond() until it is true and fails
with a clear message (the bound, the factor and cond's last value) when the bound is hit.
Test code passes `bound(...)` wherever it would have passed a timeout: subprocess timeouts, the
duration limits of the CLI commands it starts when they are a bound and not the measured period.
"""
from __future__ import annotations

import os
import time

REFERENCE_S = 0.025          # _workload() on the reference machine, best of five
ENV = "HFTCAP_TEST_TIME_SCALE"
_scale: float | None = None
_source = ""


def _workload() -> float:
    t = time.perf_counter()
    x = 0
    for i in range(300_000):
        x += i * i % 7
    return time.perf_counter() - t


def calibrate() -> float:
    """This machine's slowness against the reference one, >= 1."""
    return max(1.0, round(min(_workload() for _ in range(5)) / REFERENCE_S, 1))


def scale() -> float:
    """The factor of every bound in this session (see the module's doc)."""
    global _scale, _source
    if _scale is None:
        v = os.environ.get(ENV)
        _source = f"{ENV}={v}" if v else "calibrated"
        if v:
            try:
                _scale = float(v)
            except ValueError:
                raise ValueError(f"{ENV}={v!r}: not a number (the factor of the suite's time bounds)") from None
            if not _scale >= 1.0:
                raise ValueError(f"{ENV}={v!r}: must be >= 1 (a bound is never made tighter)")
        else:
            _scale = calibrate()
    return _scale


def bound(seconds: float) -> float:
    """The bound of `seconds` on the reference machine, on this one."""
    return seconds * scale()


def why() -> str:
    return f"time scale {scale():g}, {_source}"


def wait_for(cond, seconds: float, what: str, interval: float = 0.05):
    """Poll cond() until it returns a true value, which is returned; fail once bound(seconds) is
    hit, naming `what`, the bound and cond()'s last value."""
    import pytest
    limit = bound(seconds)
    deadline = time.monotonic() + limit
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not within {limit:.1f} s ({why()}); last value: {v!r}")
        time.sleep(interval)
