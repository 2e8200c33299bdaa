"""Bridge ports through netlink: their flags read (one dump for all), and set to a policy
(shared by the reconciler, container veths and the sleeve TAP)."""

from __future__ import annotations

import socket
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from weaved.model.host import PortFlags, PortRow

AF_BRIDGE = 7
IFF_UP = 1


def _protinfo(ipr: Any) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for msg in ipr.link("dump", family=AF_BRIDGE):
        info = msg.get_attr("IFLA_PROTINFO")
        if info is not None:
            out[int(msg["index"])] = info
    return out


def hairpin_mode(ipr: Any, index: int) -> bool | None:
    """Whether the bridge port `index` has hairpin mode on; None when it is not a port."""
    info = _protinfo(ipr).get(index)
    mode = info.get_attr("IFLA_BRPORT_MODE") if info is not None else None
    return None if mode is None else bool(mode)


def _flag(info: Any, name: str) -> bool | None:
    if info is None:
        return None
    value = info.get_attr(name)
    return None if value is None else bool(value)


def port_rows(ipr: Any, prefix: str) -> dict[str, PortRow]:
    """Every link whose name starts with `prefix`, with its master and port flags.

    Names come from if_nameindex(3) and ports from the bridge dump: a host with many
    containers has two links per container, and decoding every link's full message (stats
    and all) made the daemon's plan grow with them. Only a `prefix` link that is no bridge
    port is read on its own."""
    chosen = {index: name for index, name in socket.if_nameindex() if name.startswith(prefix)}
    if not chosen:
        return {}
    bridged = {
        int(msg["index"]): msg
        for msg in ipr.link("dump", family=AF_BRIDGE)
        if int(msg["index"]) in chosen
    }
    out: dict[str, PortRow] = {}
    for index, name in chosen.items():
        link = bridged.get(index)
        if link is None:
            try:
                link = ipr.get_links(index)[0]
            except NetlinkError:
                continue  # gone since the names were read
        master = link.get_attr("IFLA_MASTER")
        port = link.get_attr("IFLA_PROTINFO") if master and index in bridged else None
        out[name] = PortRow(
            name=name,
            master=_name_of(int(master)) if master else "",
            up=bool(link["flags"] & IFF_UP),
            isolated=_flag(port, "IFLA_BRPORT_ISOLATED"),
            hairpin=_flag(port, "IFLA_BRPORT_MODE"),
            learning=_flag(port, "IFLA_BRPORT_LEARNING"),
            flood=_flag(port, "IFLA_BRPORT_UNICAST_FLOOD"),
        )
    return out


def _name_of(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return "?"


def set_flags(ipr: Any, index: int, flags: PortFlags) -> None:
    """One netlink request for all of a port's flags."""
    ipr.brport(
        "set",
        index=index,
        isolated=int(flags.isolated),
        mode=int(flags.hairpin),
        learning=int(flags.learning),
        unicast_flood=int(flags.flood),
    )
