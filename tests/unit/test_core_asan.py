"""The C data plane alone (no Python) under AddressSanitizer and UBSan, with hostile input:
the live consumer (tests/c/feed_fuzz.c) and the ITCH/book/file readers (tests/c/itch_fuzz.c)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "hftcap" / "_core"
FLAGS = ["-std=gnu11", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         f"-I{ROOT / 'xdp'}", f"-I{CORE}"]


def build_and_run(tmp_path, harness, sources, *args):
    cc = shutil.which("cc") or shutil.which("gcc")
    exe = tmp_path / harness
    cp = subprocess.run([cc, *FLAGS, str(ROOT / "tests" / "c" / f"{harness}.c"),
                         *[str(CORE / f"{s}.c") for s in sources], "-lz", "-o", str(exe)],
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    run = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300,
                         env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "runtime error" not in run.stderr and "AddressSanitizer" not in run.stderr, run.stderr
    return run.stdout


def test_consumer_under_sanitizers(tmp_path):
    out = build_and_run(tmp_path, "feed_fuzz", ["feed", "mold", "itch", "book", "files", "gen", "hist", "snap"])
    assert out.startswith("ok ") and "samples=0" not in out


def test_readers_and_books_under_sanitizers(tmp_path):
    out = build_and_run(tmp_path, "itch_fuzz", ["itch", "book", "files", "gen", "mold"], str(tmp_path / "f.bin"))
    assert "ok" in out
