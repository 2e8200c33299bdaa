"""Bridge-port settings read through netlink (shared by container veths and the sleeve TAP)."""

from __future__ import annotations

from typing import Any

AF_BRIDGE = 7


def hairpin_mode(ipr: Any, index: int) -> bool | None:
    """Whether the bridge port `index` has hairpin mode on; None when it is not a port."""
    for msg in ipr.link("dump", family=AF_BRIDGE):
        if msg["index"] == index:
            info = msg.get_attr("IFLA_PROTINFO")
            mode = info.get_attr("IFLA_BRPORT_MODE") if info is not None else None
            return None if mode is None else bool(mode)
    return None
