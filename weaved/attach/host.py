"""The host side of an attachment: the veth's end that is a port of weaved's bridge, and the
bridge itself, which must be weaved's own before anything is plugged into it.

How a restarted daemon knows these objects are its own: the bridge by its alias, a container's
veth by the record that names it (the `vethwepl` prefix alone proves nothing).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from pyroute2 import IPRoute

from weaved.attach.kernel import (
    IFF_UP,
    MAIN_TABLE,
    AttachError,
    Changes,
    link_kind,
    nl,
    nsid,
)
from weaved.attach.nlsock import Netlink
from weaved.dataplane.rtnl import Link, Rtnl
from weaved.errors import ConflictError, DependencyError
from weaved.model.resources import ALIAS, BRIDGE, RTPROT_WEAVED

log = logging.getLogger(__name__)
RT_SCOPE_LINK = 253


NO_BRIDGE_HINT = "run `weaved apply` (or start `weaved daemon`)"


def own_bridge(rt: Rtnl, hint: str = NO_BRIDGE_HINT) -> Link:
    """weaved's bridge link; DependencyError (with `hint`) when there is none, ConflictError
    when the link named so is not a bridge or not weaved's (a name proves nothing)."""
    link = rt.link(name=BRIDGE)
    if link is None:
        raise DependencyError(f'bridge "{BRIDGE}" not present\n  hint: {hint}')
    if link.kind != "bridge":
        raise ConflictError(f'"{BRIDGE}" exists but is a {link.kind or "non-bridge"} device')
    if link.alias != ALIAS:
        raise ConflictError(
            f'the bridge "{BRIDGE}" was not created by weaved (it has no alias {ALIAS!r}):'
            " containers are not plugged into it\n  hint: see `weaved plan`"
        )
    return link


def configure_port(
    nls: Netlink,
    index: int,
    bridge_index: int,
    mtu: int,
    changes: Changes,
    *,
    hairpin: bool = False,
    alias: str = "",
    link: Link | None = None,
) -> None:
    """Make the link `index` an up port of the bridge with `mtu` (0: leave it), hairpin mode as
    given, its own IPv6 off, and `alias` (empty: leave it); only what differs.
    `link`: the link as the caller just read it (else it is read here).
    Reads only this link (its port flags come with it): a dump of the bridge's ports made
    every attach cost as much as the containers already attached."""
    link = nls.link(index) if link is None else link
    if link is None:
        raise AttachError(f"link {index} vanished while it was plugged in")
    name = link.name
    if mtu and link.mtu != mtu:
        nl(f"set {name} mtu {mtu}", nls.set_link, index, mtu=mtu)
        changes.append(f"{name}: mtu {link.mtu} → {mtu}")
    hairpin_now = bool(link.port_flag("hairpin"))
    down = not link.flags & IFF_UP
    _ipv6_off(nls, link, changes)  # before it is up: it never makes an address (model/host.py)
    if down and link.master != bridge_index and not hairpin and not alias:
        # A new port: master and up in one request (each takes the kernel's rtnl lock).
        what = f"set {name} master {BRIDGE} up"
        nl(what, nls.set_link, index, master=bridge_index, up=True)
        changes.extend([f"{name}: master {BRIDGE}", f"{name}: up"])
        return
    if link.master != bridge_index:
        nl(f"set {name} master {BRIDGE}", nls.set_link, index, master=bridge_index)
        changes.append(f"{name}: master {BRIDGE}")
        hairpin_now = False  # a new port starts with the kernel's defaults
    if hairpin_now != hairpin:
        word = "on" if hairpin else "off"
        nl(f"set {name} hairpin {word}", nls.set_hairpin, index, hairpin)
        changes.append(f"{name}: hairpin {word}")
    if alias and link.alias != alias:
        nl(f"set {name} alias", nls.set_link, index, alias=alias)
        changes.append(f"{name}: alias {alias}")
    if not link.flags & IFF_UP:
        nl(f"set {name} up", nls.set_link, index, up=True)
        changes.append(f"{name}: up")


def _ipv6_off(nls: Netlink, link: Link, changes: Changes) -> None:
    """The port without IPv6 of its own, as the plan wants it (`ipv6: off`): it makes no
    link-local address (netlink; see nlsock.set_no_link_local for why not disable_ipv6).
    Known from its link message, so only a port that would make one is written to."""
    if link.ipv6:  # None: the kernel has no IPv6 for it
        nl(f"set {link.name} ipv6 off", nls.set_no_link_local, link.index)
        changes.append(f"{link.name}: ipv6 off")


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


def route_back(
    nls: Netlink, ips: Iterable[ipaddress.IPv4Address], src: str, bridge: Link | None = None
) -> None:
    """weaveDNS's /32 routes back to a container's addresses (compile/dns.py's, which the next
    converge would add): made by the attach itself, so the container's first lookup is
    answered without waiting for one. An address inside a subnet the bridge has an address in
    needs none. Without the bridge's link address (no converge yet) nothing is made here.
    `bridge`: as the caller just read it (else it is read here)."""
    bridge = nls.link(name=BRIDGE) if bridge is None else bridge
    if bridge is None:
        return
    own = [
        ipaddress.IPv4Interface(f"{a.address}/{a.prefixlen}") for a in nls.addresses(bridge.index)
    ]
    if not any(str(a.ip) == src for a in own):
        return
    routed = [a.network for a in own if str(a.ip) != src]
    for ip in ips:
        if any(ip in net for net in routed):
            continue
        try:
            nls.add_route(
                ipaddress.IPv4Network(f"{ip}/32"),
                bridge.index,
                RT_SCOPE_LINK,
                MAIN_TABLE,
                proto=RTPROT_WEAVED,
                prefsrc=src,
                replace=True,
            )
        except OSError as exc:
            log.warning("no route back to ip=%s error=%s (the next converge adds it)", ip, exc)


def no_route_back(nls: Netlink, ips: Iterable[ipaddress.IPv4Address]) -> None:
    """Remove weaved's /32 routes to addresses a container gave back (route_back's)."""
    bridge = nls.link(name=BRIDGE)
    if bridge is None:
        return
    for ip in ips:
        try:
            nls.delete_route(
                ipaddress.IPv4Network(f"{ip}/32"), bridge.index, RTPROT_WEAVED, MAIN_TABLE
            )
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.ENOENT):
                log.warning("cannot remove route to ip=%s error=%s", ip, exc)
