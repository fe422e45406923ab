"""Shared fixtures. Tests that need root and namespaces are marked `root`: outside CI they
skip with a named reason when not root; in CI (CI=true) every skip is a failure."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import bounds
import pytest
from bounds import bound

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BIN = Path(sys.executable).parent
HFTCAP = str(BIN / "hftcap") if (BIN / "hftcap").exists() else shutil.which("hftcap")
# One factor for every time bound of the session (tests/bounds.py), calibrated once here and handed
# to the scripts the tests start (senders in namespaces) through the environment.
os.environ[bounds.ENV] = str(bounds.scale())


def pytest_report_header(config):
    return f"time bounds: {bounds.why()} (tests/bounds.py)"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root and network namespaces (run as root; CI does)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if IN_CI and rep.skipped and "ci_skip_ok" not in item.keywords:
        rep.outcome = "failed"
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.longrepr = f"skipped in CI, where every test must run: {reason}"


def run_hftcap(*args, timeout=bound(60), check=False, env=None, **kw):
    """Run the installed hftcap CLI; returns CompletedProcess with text output."""
    cp = subprocess.run([HFTCAP, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                        env=env, **kw)
    if check and cp.returncode != 0:
        raise AssertionError(f"hftcap {' '.join(map(str, args))} -> {cp.returncode}\n{cp.stdout}\n{cp.stderr}")
    return cp


@pytest.fixture
def lab():
    """A fresh lab with a unique name, removed afterwards whatever happens."""
    from hftcap.lab import topology as labmod
    name = "t" + uuid.uuid4().hex[:6]
    lb = labmod.up(name)
    try:
        yield lb
    finally:
        labmod.down(name)
