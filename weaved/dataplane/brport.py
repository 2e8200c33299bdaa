"""Bridge ports through netlink: their flags read (one dump for all), and set to a policy
(shared by the reconciler, container veths and the sleeve TAP)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from weaved.dataplane.rtnl import Link
from weaved.model.host import PortFlags, PortRow

IFF_UP = 1


def port_data(link: Any) -> Any | None:
    """A pyroute2 link message's bridge-port attributes (IFLA_INFO_SLAVE_DATA) when the link
    is a bridge port, else None: a port's flags come with its own link, no dump of the
    bridge's ports needed."""
    info = link.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_SLAVE_KIND") != "bridge":
        return None
    return info.get_attr("IFLA_INFO_SLAVE_DATA")


def hairpin_mode(ipr: Any, index: int) -> bool | None:
    """Whether the bridge port `index` has hairpin mode on; None when it is not a port.
    One link is asked for (its bridge-port data), never the whole bridge's dump."""
    try:
        link = ipr.get_links(index)[0]
    except NetlinkError:
        return None
    data = port_data(link)
    mode = data.get_attr("IFLA_BRPORT_MODE") if data is not None else None
    return None if mode is None else bool(mode)


def port_rows(links: Iterable[Link], prefix: str) -> dict[str, PortRow]:
    """Every link whose name starts with `prefix`, with its master and port flags, from one
    link dump (rtnl.Rtnl.links: a bridge port's flags come with it)."""
    every = list(links)
    names = {link.index: link.name for link in every}
    out: dict[str, PortRow] = {}
    for link in every:
        if not link.name.startswith(prefix):
            continue
        out[link.name] = PortRow(
            name=link.name,
            master=names.get(link.master, "?") if link.master else "",
            up=bool(link.flags & IFF_UP),
            isolated=link.port_flag("isolated"),
            hairpin=link.port_flag("hairpin"),
            learning=link.port_flag("learning"),
            flood=link.port_flag("flood"),
            ipv6=bool(link.ipv6),
        )
    return out


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
