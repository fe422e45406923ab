"""Build a C harness with parts of hftcap/_core under AddressSanitizer and UBSan, run it, and
check that it exited 0 with no sanitizer report: the one helper of the tests that exercise the C
code alone (no Python), with hostile input."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "hftcap" / "_core"
FLAGS = ["-std=gnu11", "-D_GNU_SOURCE", "-O1", "-g", "-Wall", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", f"-I{ROOT / 'xdp'}", f"-I{CORE}"]


def build_and_run(tmp_path: Path, harness: str | Path, core: list[str], args=(), *, libs=(),
                  flags=(), asan_options: str = "detect_leaks=1:abort_on_error=0",
                  timeout: float = 300) -> subprocess.CompletedProcess:
    """harness: a .c file, or the C source itself (written to tmp_path); core: the names of the
    hftcap/_core/*.c files to link with it. Returns the finished run (stdout, stderr)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    assert cc, "a C compiler is needed to build the harness (the extension needs one too)"
    if isinstance(harness, str):
        src = tmp_path / "harness.c"
        src.write_text(harness)
    else:
        src = harness
    exe = tmp_path / src.stem
    cp = subprocess.run([cc, *FLAGS, *flags, str(src), *[str(CORE / f"{m}.c") for m in core],
                         *libs, "-o", str(exe)], capture_output=True, text=True, timeout=180)
    assert cp.returncode == 0, cp.stderr
    run = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, env={"ASAN_OPTIONS": asan_options, "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "runtime error" not in run.stderr and "AddressSanitizer" not in run.stderr, run.stderr
    return run
