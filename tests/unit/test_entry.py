"""The `hftcap` entry point (hftcap/entry.py): `hftcap book` in its plain forms runs without the
typer/rich/numpy machinery and answers exactly as the typer command does; anything else goes to
cli.main unchanged."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hftcap import _core
from hftcap.entry import _book_args

EXE = os.path.join(os.path.dirname(sys.executable), "hftcap")


@pytest.mark.parametrize("args,want", [
    (["f.itch"], {"path": "f.itch", "symbol": None, "levels": 10, "bbo": False, "json_out": False}),
    (["f.itch", "--json", "-s", "AAPL", "-l", "3"],
     {"path": "f.itch", "symbol": "AAPL", "levels": 3, "bbo": False, "json_out": True}),
    (["--symbol=MSFT", "--levels=5", "--bbo", "f.gz"],
     {"path": "f.gz", "symbol": "MSFT", "levels": 5, "bbo": True, "json_out": False}),
    (["--", "-odd-name"], {"path": "-odd-name", "symbol": None, "levels": 10, "bbo": False, "json_out": False}),
])
def test_book_arguments_parsed(args, want):
    assert _book_args(args) == want


@pytest.mark.parametrize("args", [[], ["a", "b"], ["f", "--help"], ["f", "-h"], ["f", "--levels", "x"],
                                  ["f", "--symbol"], ["f", "--json=1"], ["f", "--frobnicate"], ["f", "-x"]])
def test_anything_else_is_left_to_typer(args):
    assert _book_args(args) is None


@pytest.fixture(scope="module")
def itch_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("entry") / "s.itch"
    p.write_bytes(_core.generate(3, 8, 30_000))
    return p


def _run(*args):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, cwd="/")


def test_book_json_is_the_same_by_both_routes(itch_file):
    fast = _run("book", str(itch_file), "--json", "-l", "4")
    slow = subprocess.run([sys.executable, "-m", "hftcap.cli", "book", str(itch_file), "--json", "-l", "4"],
                          capture_output=True, text=True, timeout=120, cwd="/")
    assert fast.returncode == slow.returncode == 0, (fast.stderr, slow.stderr)
    a, b = json.loads(fast.stdout), json.loads(slow.stdout)
    a.pop("replay_seconds_monotonic"), b.pop("replay_seconds_monotonic")
    assert a == b and a["book"]["bids"]


def test_book_json_imports_no_cli_machinery(itch_file):
    code = ("import sys; from hftcap.entry import main; rc = main(['book', sys.argv[1], '--json']); "
            "bad = sorted(m for m in ('typer', 'rich', 'numpy', 'click', 'hftcap.cli') if m in sys.modules); "
            "print(bad, file=sys.stderr); sys.exit(rc or (3 if bad else 0))")
    r = subprocess.run([sys.executable, "-c", code, str(itch_file)], capture_output=True, text=True,
                       timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["messages"]


def test_book_errors_are_one_line_by_both_routes(tmp_path):
    missing = str(tmp_path / "nope.itch")
    fast = _run("book", missing)
    assert fast.returncode == 1
    assert fast.stderr.splitlines() == [f"hftcap: error: {missing}: no such file",
                                        "hint: give a NASDAQ ITCH 5.0 file (plain or .gz), a pcap or a pcapng"]
    bad = _run("book", missing, "--levels", "x")  # typer's own message and exit code
    assert bad.returncode == 2 and bad.stderr.startswith("hftcap: error: Invalid value for '--levels'")
    zero = _run("book", missing, "--levels", "0")
    assert zero.returncode == 2 and "--levels must be at least 1" in zero.stderr


def test_book_table_by_the_fast_route(itch_file):
    r = _run("book", str(itch_file), "-l", "2")
    assert r.returncode == 0, r.stderr
    assert "top 2 levels at end of file" in r.stdout and "messages:" in r.stdout


def test_fast_route_exits_without_teardown_but_with_all_its_output(itch_file):
    # The console script and `python -m hftcap` skip the interpreter's teardown after the fast
    # route (os._exit): what was written must still all arrive, with the route's exit code.
    by_exe = _run("book", str(itch_file), "--json")
    by_m = subprocess.run([sys.executable, "-m", "hftcap", "book", str(itch_file), "--json"],
                          capture_output=True, text=True, timeout=120, cwd="/")
    assert by_exe.returncode == by_m.returncode == 0, (by_exe.stderr, by_m.stderr)
    a, b = json.loads(by_exe.stdout), json.loads(by_m.stdout)
    assert a.pop("replay_seconds_monotonic") > 0 and b.pop("replay_seconds_monotonic") > 0
    assert a == b and sum(a["messages"].values()) == 30_000
    missing = _run("book", str(itch_file) + ".nope")
    assert missing.returncode == 1 and missing.stderr.startswith("hftcap: error:")


def test_fast_route_into_a_closed_pipe_is_one_exit_code_not_a_traceback(itch_file):
    r, w = os.pipe()
    os.close(r)  # nobody reads: the flush at the end meets EPIPE
    try:
        p = subprocess.run([EXE, "book", str(itch_file), "--json"], stdout=w, stderr=subprocess.PIPE,
                           text=True, timeout=120, cwd="/")
    finally:
        os.close(w)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr
