"""Network namespaces, through pyroute2 (netlink), never by shelling out to `ip`."""
from __future__ import annotations

import os

from ..errors import HftcapError

NETNS_DIR = "/var/run/netns"


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def listing() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def enter(name: str) -> None:
    """Move the whole (single-purpose) process into namespace `name`.

    Call before any thread starts and before any socket is opened: sockets belong to the
    namespace they were created in."""
    if not exists(name):
        raise HftcapError(f"network namespace '{name}' does not exist",
                          hint="create the lab first: hftcap lab up (or check --netns)")
    from pyroute2 import netns as _netns
    try:
        _netns.setns(name, flags=0)
    except PermissionError:
        raise HftcapError(f"entering network namespace '{name}' needs root (CAP_SYS_ADMIN)",
                          hint="run it with sudo") from None
    except OSError as e:
        raise HftcapError(f"cannot enter network namespace '{name}': {os.strerror(e.errno or 0)}") from None
