"""Links, addresses and routes through netlink (pyroute2): the only module that does so."""

from __future__ import annotations

import errno
import functools
import ipaddress
from collections.abc import Mapping
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NOPREFIXROUTE

from weaved.compile.facts import HostRoute
from weaved.dataplane import brport, sysctl
from weaved.dataplane.rtnl import Link, Rtnl
from weaved.errors import ApplyError
from weaved.model.addresses import ipv4_network
from weaved.model.host import PortFlags, PortRow
from weaved.model.resources import ADDR_LABEL, ALIAS, BRIDGE, RTPROT_WEAVED, Kind, Resource, attrs

AF_INET = 2
MAIN_TABLE = 254
IFF_UP = 1
SCOPES = {"universe": 0, "link": 253, "host": 254}
SCOPE_NAMES = {v: k for k, v in SCOPES.items()}


class Netlink:
    def __init__(self) -> None:
        self.ipr = IPRoute()  # writes
        self.rtnl = Rtnl()  # reads: dumps decoded only as far as weaved looks
        self.writes = 0

    def close(self) -> None:
        self.ipr.close()
        self.rtnl.close()

    # --- observe -------------------------------------------------------------------------
    def index(self, ifname: str) -> int | None:
        link = self.rtnl.link(name=ifname)
        return link.index if link is not None else None

    def links(self) -> dict[str, Link]:
        """Every link by name: one dump that the bridge, ports and routes are all read from."""
        return {link.name: link for link in self.rtnl.links()}

    def observe_bridge(self, links: Mapping[str, Link]) -> tuple[Resource | None, str]:
        """(our bridge, or None; what the link named like it is when it is not ours). A link
        is ours only with the alias weaved gives its bridge: a name proves nothing."""
        link = links.get(BRIDGE)
        if link is None:
            return None, ""
        kind = link.kind or "unknown"
        if link.alias != ALIAS:
            shown = f"alias {link.alias!r}" if link.alias else "no alias"
            return None, f"a {kind} with {shown}"
        return (
            Resource(
                f"link/{BRIDGE}",
                Kind.LINK,
                attrs(
                    type=kind,
                    mtu=link.mtu,
                    alias=link.alias,
                    mac=link.mac,
                    state="up" if link.flags & IFF_UP else "down",
                    ipv6_autoconf=sysctl.ipv6_autoconf(BRIDGE),
                    # From the link's message (its IPv4 devconf values): no /proc read.
                    promote_secondaries="on" if link.promote_secondaries else "off",
                ),
            ),
            "",
        )

    def owned_bridge_index(self, links: Mapping[str, Link] | None = None) -> int | None:
        link = links.get(BRIDGE) if links is not None else self.rtnl.link(name=BRIDGE)
        return link.index if link is not None and link.alias == ALIAS else None

    def observe_ports(self, links: Mapping[str, Link], prefix: str) -> dict[str, PortRow]:
        return brport.port_rows(links.values(), prefix)

    def observe_addresses(self, links: Mapping[str, Link] | None = None) -> list[Resource]:
        idx = self.owned_bridge_index(links)
        if idx is None:
            return []
        out = []
        for addr in self.rtnl.addresses(idx):
            if addr.label != ADDR_LABEL:
                continue  # an address someone else put on the bridge: not ours
            out.append(_address_resource(addr.address, addr.prefixlen, addr.label))
        return out

    def observe_routes(
        self, links: Mapping[str, Link] | None = None
    ) -> tuple[list[Resource], list[HostRoute]]:
        links = self.links() if links is None else links
        ours: list[Resource] = []
        foreign: list[HostRoute] = []
        names = {link.index: name for name, link in links.items()}
        bridge = self.owned_bridge_index(links)
        for route in self.rtnl.routes(MAIN_TABLE):
            dst = ipv4_network(f"{route.dst}/{route.dst_len}")
            dev = names.get(route.oif, "?")
            # Ours: our protocol number *and* our bridge; proto 87 elsewhere is someone else's.
            if route.proto == RTPROT_WEAVED and bridge is not None and route.oif == bridge:
                ours.append(_route_resource(dst, dev, route.prefsrc, route.scope, route.proto))
            elif route.type == 1:  # unicast routes only; local/broadcast live in other tables
                foreign.append(HostRoute(dst, dev, f"{dst} dev {dev}"))
        return ours, foreign

    # --- execute -------------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except NetlinkError as exc:
            raise ApplyError(f"{what}: {errno.errorcode.get(exc.code, exc.code)} ({exc})") from exc
        self.writes += 1
        return result

    def create_bridge(self, want: Resource) -> None:
        self._call(f"create bridge {BRIDGE}", self.ipr.link, "add", ifname=BRIDGE, kind="bridge")
        self.update_bridge(want, None)

    def update_bridge(self, want: Resource, have: Resource | None) -> None:
        idx = self.index(BRIDGE)
        if idx is None:
            raise ApplyError(f"bridge {BRIDGE} disappeared while being configured")

        def differs(field: str) -> bool:
            return have is None or have.get(field) != want.get(field)

        settings: dict[str, Any] = {}
        if differs("mtu"):
            settings["mtu"] = int(want.get("mtu"))
        if differs("mac"):
            settings["address"] = want.get("mac")
        if differs("alias"):
            settings["ifalias"] = want.get("alias")
        if settings:
            self._call(f"configure {BRIDGE}", self.ipr.link, "set", index=idx, **settings)
        if differs("ipv6_autoconf") and want.get("ipv6_autoconf") == "off":
            self.writes += sysctl.disable_ipv6_autoconf(BRIDGE)
        if differs("promote_secondaries") and want.get("promote_secondaries") == "on":
            self.writes += sysctl.enable_promote_secondaries(BRIDGE)
        if differs("state"):
            self._call(
                f"set {BRIDGE} {want.get('state')}",
                self.ipr.link,
                "set",
                index=idx,
                state=want.get("state"),
            )

    def delete_link(self, ifname: str) -> None:
        idx = self.index(ifname)
        if idx is not None:
            self._call(f"delete link {ifname}", self.ipr.link, "del", index=idx)

    def add_address(self, key: str) -> None:
        iface = ipaddress.IPv4Interface(key.split("/", 2)[2])
        idx = self.index(BRIDGE)
        if idx is None:
            raise ApplyError(f"cannot add {iface}: bridge {BRIDGE} does not exist")
        self._call(
            f"add address {iface}",
            self.ipr.addr,
            "add",
            index=idx,
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
            label=ADDR_LABEL,
            IFA_FLAGS=IFA_F_NOPREFIXROUTE,
        )

    def delete_address(self, key: str) -> None:
        iface = ipaddress.IPv4Interface(key.split("/", 2)[2])
        idx = self.index(BRIDGE)
        if idx is None:
            return
        try:
            self._call(
                f"delete address {iface}",
                self.ipr.addr,
                "del",
                index=idx,
                address=str(iface.ip),
                prefixlen=iface.network.prefixlen,
            )
        except ApplyError:
            if any(r.key == key for r in self.observe_addresses()):
                raise  # still there: a real failure; gone (with its primary): goal reached

    def add_route(self, want: Resource) -> None:
        dst = want.key.split("/", 1)[1]
        idx = self.index(want.get("dev"))
        if idx is None:
            raise ApplyError(f"cannot add route {dst}: device {want.get('dev')} does not exist")
        extra: dict[str, Any] = {"prefsrc": want.get("src")} if want.get("src") else {}
        self._call(
            f"add route {dst}",
            self.ipr.route,
            "add",
            dst=dst,
            oif=idx,
            proto=RTPROT_WEAVED,
            scope=SCOPES[want.get("scope", "universe")],
            **extra,
        )

    def delete_route(self, have: Resource) -> None:
        dst = have.key.split("/", 1)[1]
        extra: dict[str, Any] = {}
        idx = self.index(have.get("dev"))
        if idx is not None:
            extra["oif"] = idx
        try:
            self._call(
                f"delete route {dst}",
                self.ipr.route,
                "del",
                dst=dst,
                proto=RTPROT_WEAVED,
                scope=SCOPES.get(have.get("scope"), 0),
                **extra,
            )
        except ApplyError:
            # Gone already (e.g. removed with its device): the goal is reached.
            if any(r.key == have.key for r in self.observe_routes()[0]):
                raise

    # --- bridge ports ------------------------------------------------------------------------
    def set_port(self, name: str, want: Resource, have: Resource | None) -> None:
        """Make the existing link `name` a port of our bridge with the flags of `want`."""
        idx = self.index(name)
        if idx is None:
            # Gone since the observation (a container died): its part recreates or releases
            # it; failing here would roll back the whole plan (a just re-created bridge too).
            return
        bridge = self.owned_bridge_index()
        if bridge is None:
            raise ApplyError(f"cannot plug {name} in: bridge {BRIDGE} does not exist")
        try:
            self._configure_port(name, idx, bridge, want, have)
        except ApplyError as exc:
            cause = exc.__cause__
            if isinstance(cause, NetlinkError) and cause.code == errno.ENODEV:
                return  # the link at idx was deleted since it was looked up: as gone above
            raise

    def _configure_port(
        self, name: str, idx: int, bridge: int, want: Resource, have: Resource | None
    ) -> None:
        def differs(field: str) -> bool:
            return have is None or have.get(field) != want.get(field)

        if differs("ipv6") and want.get("ipv6") == "off":  # before it is up (model/host.py)
            self.writes += sysctl.disable_ipv6(name)
        if differs("master"):
            self._call(
                f"set {name} master {BRIDGE}", self.ipr.link, "set", index=idx, master=bridge
            )
        if any(differs(f) for f in ("master", "isolated", "hairpin", "learning", "flood")):
            flags = PortFlags(
                isolated=want.get("isolated") == "on",
                hairpin=want.get("hairpin") == "on",
                learning=want.get("learning") == "on",
                flood=want.get("flood") == "on",
            )
            self._call(f"set {name} port flags", brport.set_flags, self.ipr, idx, flags)
        if differs("state"):
            self._call(
                f"set {name} {want.get('state')}",
                self.ipr.link,
                "set",
                index=idx,
                state=want.get("state"),
            )


# Remembered: a host with 1 000 exposed addresses observes the same ones at every converge,
# and ipaddress's parsing and printing were half of observing them.
@functools.lru_cache(maxsize=8192)
def _address_resource(address: str, prefixlen: int, label: str) -> Resource:
    iface = ipaddress.IPv4Interface(f"{address}/{prefixlen}")
    return Resource(f"addr/{BRIDGE}/{iface.with_prefixlen}", Kind.ADDR, attrs(label=label))


@functools.lru_cache(maxsize=8192)
def _route_resource(
    dst: ipaddress.IPv4Network, dev: str, src: str, scope: int, proto: int
) -> Resource:
    return Resource(
        f"route/{dst}",
        Kind.ROUTE,
        attrs(dev=dev, src=src, scope=SCOPE_NAMES.get(scope, str(scope)), proto=proto),
    )
