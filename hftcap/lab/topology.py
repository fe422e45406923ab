"""The lab: two network namespaces joined by a veth pair, made with netlink (pyroute2).

    <name>-ex   exchange side: veth <name>-ex0 10.77.N.1/24, multicast route 224.0.0.0/4 via it
    <name>-host host side:     veth <name>-h0  10.77.N.2/24 (hftcap listen runs here)

Nothing is created in, or routed through, the root namespace: the veth is born inside the
exchange namespace with its peer placed directly in the host namespace. Each end gets one
RX and one TX queue, so an AF_XDP socket on queue 0 sees every packet.
Every function is idempotent; `down` removes exactly what `up` made."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from . import netns
from ..errors import HftcapError, UsageError, require_root

DEFAULT_NAME = "hftcap"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,8}$")


@dataclass(frozen=True)
class Lab:
    name: str

    @property
    def ex_ns(self) -> str:
        return f"{self.name}-ex"

    @property
    def host_ns(self) -> str:
        return f"{self.name}-host"

    @property
    def ex_if(self) -> str:
        return f"{self.name}-ex0"

    @property
    def host_if(self) -> str:
        return f"{self.name}-h0"

    @property
    def subnet(self) -> int:
        # A per-name /24 so labs side by side never share addresses.
        return int(hashlib.sha1(self.name.encode()).hexdigest(), 16) % 250 + 1

    @property
    def ex_addr(self) -> str:
        return f"10.77.{self.subnet}.1"

    @property
    def host_addr(self) -> str:
        return f"10.77.{self.subnet}.2"


def lab(name: str = DEFAULT_NAME) -> Lab:
    if not _NAME_RE.match(name):
        raise UsageError(f"bad lab name '{name}'",
                         hint="1-9 letters, digits, '-' or '_' (interface names are limited to 15 bytes)")
    return Lab(name)


def _ns_ipr(name: str):
    from pyroute2 import NetNS
    return NetNS(name)


def _link_index(ipr, ifname: str) -> int | None:
    idx = ipr.link_lookup(ifname=ifname)
    return idx[0] if idx else None


def up(name: str = DEFAULT_NAME) -> Lab:
    """Create the lab (or complete a half-made one). Returns its description."""
    require_root("lab up")
    from pyroute2 import netns as pnetns
    lb = lab(name)
    for ns in (lb.ex_ns, lb.host_ns):
        if not netns.exists(ns):
            pnetns.create(ns)
    ex = _ns_ipr(lb.ex_ns)
    host = _ns_ipr(lb.host_ns)
    try:
        if _link_index(ex, lb.ex_if) is None:
            stale = _link_index(host, lb.host_if)
            if stale is not None:
                host.link("del", index=stale)
            ex.link("add", ifname=lb.ex_if, kind="veth", num_rx_queues=1, num_tx_queues=1,
                    peer={"ifname": lb.host_if, "net_ns_fd": lb.host_ns,
                          "num_rx_queues": 1, "num_tx_queues": 1})
        for ipr, ifname, addr in ((ex, lb.ex_if, lb.ex_addr), (host, lb.host_if, lb.host_addr)):
            lo = _link_index(ipr, "lo")
            ipr.link("set", index=lo, state="up")
            idx = _link_index(ipr, ifname)
            if idx is None:
                raise HftcapError(f"lab '{name}': interface {ifname} did not appear",
                                  hint=f"hftcap lab down --name {name}, then try again")
            have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx)}
            if addr not in have:
                ipr.addr("add", index=idx, address=addr, prefixlen=24)
            ipr.link("set", index=idx, state="up")
        idx = _link_index(ex, lb.ex_if)
        have_mc = any(r.get_attr("RTA_DST") == "224.0.0.0" and r["dst_len"] == 4
                      for r in ex.get_routes(family=2))
        if not have_mc:
            ex.route("add", dst="224.0.0.0", dst_len=4, oif=idx)
    finally:
        ex.close()
        host.close()
    return lb


def down(name: str = DEFAULT_NAME) -> list[str]:
    """Remove the lab's namespaces (the veth goes with them). Returns what was removed."""
    require_root("lab down")
    from pyroute2 import netns as pnetns
    lb = lab(name)
    removed = []
    for ns in (lb.ex_ns, lb.host_ns):
        if netns.exists(ns):
            pnetns.remove(ns)
            removed.append(ns)
    return removed


def status(name: str = DEFAULT_NAME) -> dict:
    """What exists of the lab: namespaces, interfaces (state, addresses, XDP program)."""
    lb = lab(name)
    out = {"name": lb.name, "namespaces": {}, "complete": True}
    for ns, ifname in ((lb.ex_ns, lb.ex_if), (lb.host_ns, lb.host_if)):
        if not netns.exists(ns):
            out["namespaces"][ns] = None
            out["complete"] = False
            continue
        info = {"interface": ifname, "exists": False}
        ipr = _ns_ipr(ns)
        try:
            idx = _link_index(ipr, ifname)
            if idx is not None:
                link = ipr.get_links(idx)[0]
                info["exists"] = True
                info["state"] = link.get_attr("IFLA_OPERSTATE")
                info["addresses"] = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                                     for a in ipr.get_addr(index=idx)]
                xdp = link.get_attr("IFLA_XDP")
                prog = xdp.get_attr("IFLA_XDP_PROG_ID") if xdp is not None else None
                info["xdp_prog_id"] = prog or None
            else:
                out["complete"] = False
        finally:
            ipr.close()
        out["namespaces"][ns] = info
    return out
