"""Bridge ports through netlink: their flags read (one dump for all), and set to a policy
(shared by the reconciler, container veths and the sleeve TAP)."""

from __future__ import annotations

from typing import Any

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
    """Every link whose name starts with `prefix`, with its master and port flags."""
    links = list(ipr.get_links())
    names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in links}
    chosen = [link for link in links if names[int(link["index"])].startswith(prefix)]
    if not chosen:
        return {}
    info = _protinfo(ipr)
    out: dict[str, PortRow] = {}
    for link in chosen:
        index = int(link["index"])
        master = link.get_attr("IFLA_MASTER")
        port = info.get(index) if master else None
        out[names[index]] = PortRow(
            name=names[index],
            master=names.get(int(master), "?") if master else "",
            up=bool(link["flags"] & IFF_UP),
            isolated=_flag(port, "IFLA_BRPORT_ISOLATED"),
            hairpin=_flag(port, "IFLA_BRPORT_MODE"),
            learning=_flag(port, "IFLA_BRPORT_LEARNING"),
            flood=_flag(port, "IFLA_BRPORT_UNICAST_FLOOD"),
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
