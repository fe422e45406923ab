"""One exception family for the whole tool; the CLI formats every failure in one place.

C returns -errno; the boundary raises OSError; the control plane turns that into an
HftcapError with one line of message and at most one line of hint."""
from __future__ import annotations

import errno as _errno
import os


class HftcapError(Exception):
    """A failure the user can act on: `msg` is one line, `hint` at most one more."""

    def __init__(self, msg: str, hint: str | None = None, code: int = 1):
        super().__init__(msg)
        self.msg = msg
        self.hint = hint
        self.code = code


def report(e: HftcapError, debug: bool = False) -> int:
    """Print e as the command line does (one error line, at most one hint; the traceback only
    with --debug) and return its exit code."""
    import sys
    if debug:
        import traceback
        traceback.print_exc()
    print(f"hftcap: error: {e.msg}", file=sys.stderr)
    if e.hint:
        print(f"hint: {e.hint}", file=sys.stderr)
    return e.code


class UsageError(HftcapError):
    """Wrong arguments: exit code 2."""

    def __init__(self, msg: str, hint: str | None = None):
        super().__init__(msg, hint, code=2)


def from_oserror(e: OSError, what: str, hint: str | None = None) -> HftcapError:
    """Turn an OSError from the C core or the kernel into one message, keeping the errno."""
    err = e.errno or 0
    name = _errno.errorcode.get(err, str(err))
    text = os.strerror(err) if err else str(e)
    if hint is None:
        if err in (_errno.EPERM, _errno.EACCES):
            hint = "run as root (needs CAP_NET_ADMIN, CAP_BPF/CAP_SYS_ADMIN and CAP_NET_RAW)"
    err_obj = HftcapError(f"{what}: {text} ({name})", hint)
    err_obj.errno = err
    return err_obj


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise HftcapError(f"{what} needs root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW)",
                          hint=f"run it with sudo: sudo hftcap {what}")
