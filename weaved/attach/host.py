"""The host side of an attachment: the veth's end that is a port of weaved's bridge, and the
bridge itself, which must be weaved's own before anything is plugged into it.

How a restarted daemon knows these objects are its own: the bridge by its alias, a container's
veth by the record that names it (the `vethwepl` prefix alone proves nothing).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weaved.attach.kernel import IFF_UP, Changes, link_kind, nl, nsid, sysctl
from weaved.dataplane.brport import port_data
from weaved.errors import ConflictError, DependencyError
from weaved.model.resources import ALIAS, BRIDGE, RTPROT_WEAVED

log = logging.getLogger(__name__)
RT_SCOPE_LINK = 253


NO_BRIDGE_HINT = "run `weaved apply` (or start `weaved daemon`)"


def own_bridge(ipr: IPRoute, hint: str = NO_BRIDGE_HINT) -> Any:
    """weaved's bridge link; DependencyError (with `hint`) when there is none, ConflictError
    when the link named so is not a bridge or not weaved's (a name proves nothing)."""
    found = ipr.link_lookup(ifname=BRIDGE)
    if not found:
        raise DependencyError(f'bridge "{BRIDGE}" not present\n  hint: {hint}')
    link = ipr.get_links(found[0])[0]
    if link_kind(link) != "bridge":
        raise ConflictError(f'"{BRIDGE}" exists but is a {link_kind(link) or "non-bridge"} device')
    if (link.get_attr("IFLA_IFALIAS") or "") != ALIAS:
        raise ConflictError(
            f'the bridge "{BRIDGE}" was not created by weaved (it has no alias {ALIAS!r}):'
            " containers are not plugged into it\n  hint: see `weaved plan`"
        )
    return link


def configure_port(
    ipr: IPRoute,
    index: int,
    bridge_index: int,
    mtu: int,
    changes: Changes,
    *,
    hairpin: bool = False,
    alias: str = "",
) -> None:
    """Make the link `index` an up port of the bridge with `mtu` (0: leave it), hairpin mode as
    given, no IPv6 router advertisements, and `alias` (empty: leave it); only what differs.
    Reads only this link (its port flags come with it): a dump of the bridge's ports made
    every attach cost as much as the containers already attached."""
    link = ipr.get_links(index)[0]
    name = str(link.get_attr("IFLA_IFNAME"))
    if mtu and link.get_attr("IFLA_MTU") != mtu:
        nl(f"set {name} mtu {mtu}", ipr.link, "set", index=index, mtu=mtu)
        changes.append(f"{name}: mtu {link.get_attr('IFLA_MTU')} → {mtu}")
    port = port_data(link)
    hairpin_now = bool(port.get_attr("IFLA_BRPORT_MODE")) if port is not None else False
    if link.get_attr("IFLA_MASTER") != bridge_index:
        nl(f"set {name} master {BRIDGE}", ipr.link, "set", index=index, master=bridge_index)
        changes.append(f"{name}: master {BRIDGE}")
        hairpin_now = False  # a new port starts with the kernel's defaults
    if hairpin_now != hairpin:
        word = "on" if hairpin else "off"
        nl(f"set {name} hairpin {word}", ipr.brport, "set", index=index, mode=int(hairpin))
        changes.append(f"{name}: hairpin {word}")
    if alias and link.get_attr("IFLA_IFALIAS") != alias:
        nl(f"set {name} alias", ipr.link, "set", index=index, ifalias=alias)
        changes.append(f"{name}: alias {alias}")
    sysctl(f"net/ipv6/conf/{name}/accept_ra", "0", changes, f"{name}: accept_ra=0")
    if not link["flags"] & IFF_UP:
        nl(f"set {name} up", ipr.link, "set", index=index, state="up")
        changes.append(f"{name}: up")


def host_peer(ipr: IPRoute, netns_id: int | None, peer_index: int) -> Any | None:
    """The host link whose veth peer is `peer_index` in the namespace known here as `netns_id`."""
    if netns_id is None:
        return None
    for link in ipr.get_links():
        if (
            link_kind(link) == "veth"
            and link.get_attr("IFLA_LINK") == peer_index
            and nsid(link.get_attr("IFLA_LINK_NETNSID")) == netns_id
        ):
            return link
    return None


def delete_quietly(ipr: IPRoute, name: str) -> None:
    """Delete the link `name` if it is there (a veth takes its peer with it); a refusal is
    logged, not raised (this runs while another error is on its way up)."""
    try:
        for index in ipr.link_lookup(ifname=name):
            ipr.link("del", index=index)
    except NetlinkError as exc:
        log.error("could not remove veth name=%s error=%s", name, exc)


def route_back(ipr: IPRoute, ips: Iterable[ipaddress.IPv4Address], src: str) -> None:
    """weaveDNS's /32 routes back to a container's addresses (compile/dns.py's, which the next
    converge would add): made by the attach itself, so the container's first lookup is
    answered without waiting for one. An address inside a subnet the bridge has an address in
    needs none. Without the bridge's link address (no converge yet) nothing is made here."""
    found = ipr.link_lookup(ifname=BRIDGE)
    if not found:
        return
    index = int(found[0])
    own = [
        ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        for a in ipr.get_addr(family=socket.AF_INET, index=index)
    ]
    if not any(str(a.ip) == src for a in own):
        return
    routed = [a.network for a in own if str(a.ip) != src]
    for ip in ips:
        if any(ip in net for net in routed):
            continue
        try:
            ipr.route(
                "replace",
                dst=f"{ip}/32",
                oif=index,
                proto=RTPROT_WEAVED,
                scope=RT_SCOPE_LINK,
                prefsrc=src,
            )
        except NetlinkError as exc:
            log.warning("no route back to ip=%s error=%s (the next converge adds it)", ip, exc)


def no_route_back(ipr: IPRoute, ips: Iterable[ipaddress.IPv4Address]) -> None:
    """Remove weaved's /32 routes to addresses a container gave back (route_back's)."""
    found = ipr.link_lookup(ifname=BRIDGE)
    if not found:
        return
    for ip in ips:
        try:
            ipr.route("del", dst=f"{ip}/32", oif=int(found[0]), proto=RTPROT_WEAVED)
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENOENT):
                log.warning("cannot remove route to ip=%s error=%s", ip, exc)
