"""The `hftcap` command's entry point. `hftcap book` in its plain forms runs straight from here,
without the typer/rich machinery of cli.py (their imports alone are ~0.13 s of a replay that takes
~0.3 s); every other command, and any `book` argument this parser does not know (--help
included), goes to cli.main, which parses and reports exactly as before."""
from __future__ import annotations

import os
import sys

# `book` options: name -> (destination, takes a value)
_BOOK_OPTS = {"--symbol": ("symbol", True), "-s": ("symbol", True), "--levels": ("levels", True),
              "-l": ("levels", True), "--bbo": ("bbo", False), "--json": ("json_out", False)}


def _book_args(args: list[str]) -> dict | None:
    """The keyword arguments of run_book for `book ARGS`, or None to leave them to typer."""
    kw = {"symbol": None, "levels": 10, "bbo": False, "json_out": False}
    files = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            files += args[i + 1:]
            break
        name, eq, val = a.partition("=") if a.startswith("--") else (a, "", "")
        if not a.startswith("-") or a == "-":
            files.append(a)
        elif name in _BOOK_OPTS:
            dest, takes = _BOOK_OPTS[name]
            if not takes:
                if eq:
                    return None
                kw[dest] = True
            else:
                if not eq:
                    i += 1
                    if i >= len(args):
                        return None
                    val = args[i]
                if dest == "levels":
                    try:
                        val = int(val)
                    except ValueError:
                        return None
                kw[dest] = val
        else:
            return None
        i += 1
    if len(files) != 1:
        return None
    kw["path"] = files[0]
    return kw


def _fast_book(argv: list[str]) -> tuple[dict, bool] | None:
    """(run_book's keyword arguments, --debug) when `hftcap ARGV` takes the fast `book` route."""
    debug = argv[:1] == ["--debug"]
    rest = argv[1:] if debug else argv
    kw = _book_args(rest[1:]) if rest[:1] == ["book"] else None
    return None if kw is None else (kw, debug)


def _book(kw: dict, debug: bool) -> int:
    from .errors import HftcapError, report
    try:
        from .book.books import run_book
        return run_book(kw.pop("path"), **kw)
    except HftcapError as e:
        return report(e, debug)
    except BrokenPipeError:
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fast = _fast_book(argv)
    if fast is None:
        from .cli import main as cli_main
        return cli_main(argv)
    return _book(*fast)


def run() -> None:
    """The console script and `python -m hftcap`: main(), and after the fast `book` route the
    interpreter's teardown is skipped (os._exit once stdout and stderr are flushed). That route
    owns nothing outside the process (a file, its books, joined threads; no XDP, no sockets, no
    temporary files, no atexit work), and the teardown of its ~170 MiB of books and imports is ~4
    ms of a replay whose whole process is measured against the in-memory figure (issue 14)."""
    fast = _fast_book(sys.argv[1:])
    if fast is None:
        sys.exit(main())
    rc = _book(*fast)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        rc = rc or 1
    except Exception:
        sys.exit(rc)
    os._exit(rc)


if __name__ == "__main__":
    run()
