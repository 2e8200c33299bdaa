"""The kernel side of a CNI attachment: a veth `vethweplc<hash>` on the bridge ↔ the runtime's
`IfName` inside the namespace the runtime made, with addresses and routes.

How a restarted daemon knows these veths are its own: the record in `<state>/cni.json` names
each one, and each carries the record itself as its alias (`weaved-cni id=…`, see records.py),
which survives the loss of the state directory; the prefix alone proves nothing. The prefix is
`vethwepl` + "c", so the firewall's rules for containers (`vethwepl*`) apply and bridge
re-creation re-plugs it, while `weaved attach` (whose ids are PIDs or `n…`) leaves it alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weaved.attach import arp
from weaved.attach.host import own_bridge
from weaved.attach.inside import ARP_CACHE
from weaved.attach.kernel import nl
from weaved.attach.model import CNI_VETH_PREFIX
from weaved.attach.netns import NetnsGone, opened, run_in_netns
from weaved.attach.nlsock import host_socket
from weaved.attach.veth import VethPair, delete_quietly, plug_veth
from weaved.cni.records import ALIAS_PREFIX
from weaved.compile.antispoof import pairs_of
from weaved.dataplane.nftsets import remove_elements
from weaved.errors import ApplyError
from weaved.model.resources import BRIDGE

log = logging.getLogger(__name__)

VETH_PREFIX = CNI_VETH_PREFIX
NO_BRIDGE_HINT = "is `weaved daemon` running? see `weaved plan`"
IFF_UP = 0x1
RT_SCOPE_LINK = 253


def veth_for(container_id: str, ifname: str) -> str:
    """Stable host-side name of (container, IfName): 15 characters, IFNAMSIZ's limit."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return VETH_PREFIX + digest[: 15 - len(VETH_PREFIX)]


@dataclass(frozen=True)
class Plugged:
    veth: str
    host_mac: str
    mac: str  # container side
    addresses: tuple[ipaddress.IPv4Interface, ...]


def bridge_info(ipr: IPRoute) -> tuple[int, int, list[ipaddress.IPv4Interface]]:
    """(index, mtu, addresses) of weaved's own bridge; DependencyError/ConflictError else."""
    link = own_bridge(host_socket(), NO_BRIDGE_HINT)
    index = link.index
    addrs = [
        ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        for a in ipr.get_addr(family=socket.AF_INET, index=index)
    ]
    return index, link.mtu, addrs


def _inside(
    ifname: str,
    mtu: int,
    addresses: Sequence[ipaddress.IPv4Interface],
    routes: Sequence[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address | None]],
) -> str:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise ApplyError(f"{ifname} vanished from the container while it was set up")
        index = int(found[0])
        ipr.link("set", index=index, state="up", mtu=mtu)
        have = {
            (a.get_attr("IFA_ADDRESS"), a["prefixlen"])
            for a in ipr.get_addr(family=socket.AF_INET, index=index)
        }
        for iface in addresses:
            if (str(iface.ip), iface.network.prefixlen) not in have:
                nl(
                    f"add {iface} to {ifname}",
                    ipr.addr,
                    "add",
                    index=index,
                    address=str(iface.ip),
                    prefixlen=iface.network.prefixlen,
                )
        for dst, gw in routes:
            spec: dict[str, Any] = {"dst": str(dst), "oif": index}
            if gw is not None:
                spec["gateway"] = str(gw)
            else:
                spec["scope"] = RT_SCOPE_LINK
            try:
                ipr.route("replace", **spec)
            except NetlinkError as exc:
                raise ApplyError(f"route {dst} via {gw} dev {ifname}: {exc}") from None
        mac = str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))
    # Weave's ARP settings, and an announcement per address: peers that cached a previous
    # holder's MAC for a reused address learn the new one at once.
    for key, value in ARP_CACHE.items():
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv4/neigh/{ifname}/{key}").write_text(value)
    for iface in addresses:
        try:
            arp.announce(ifname, mac, iface.ip)
        except OSError as exc:
            log.warning("gratuitous ARP failed ifname=%s ip=%s error=%s", ifname, iface.ip, exc)
    return mac


def plug(
    netns: str,
    ifname: str,
    veth: str,
    addresses: Sequence[ipaddress.IPv4Interface],
    routes: Sequence[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address | None]],
    hairpin: bool,
    mtu: int = 0,
    alias: str = "",
) -> Plugged:
    """Create (or complete) the pair, put the host side on the bridge with `alias` (the
    attachment's record, `CniRecord.to_alias`), configure the inside.
    Blocking; run it on a plumbing thread (attach/inflight.py)."""
    with opened(netns) as fd:
        plugged = plug_veth(
            VethPair(veth, ifname, fd),
            lambda mtu: _inside(ifname, mtu, addresses, routes),
            mtu=mtu,
            hairpin=hairpin,
            alias=alias,
            peer_taken=f"{ifname} already exists in {netns}",
            no_bridge_hint=NO_BRIDGE_HINT,
            sends_from=[a.ip for a in addresses],
        )
    log.info("cni plugged veth=%s ifname=%s netns=%s", veth, ifname, netns)
    return Plugged(veth, plugged.mac, plugged.inside, tuple(addresses))


def unplug(
    veth: str, netns: str, ifname: str, sent_from: Sequence[ipaddress.IPv4Address] = ()
) -> None:
    """Remove the pair (from the host side; from inside when only the inside is left), then
    its addresses `sent_from` from the anti-spoofing set. Nothing there is not an error: DEL
    is idempotent."""
    _unplug(veth, netns, ifname)
    remove_elements(pairs_of(veth, sent_from))


def _unplug(veth: str, netns: str, ifname: str) -> None:
    nls = host_socket()
    if nls.link(name=veth) is not None:
        delete_quietly(nls, veth)
        return
    if not netns:
        return
    try:
        with opened(netns) as fd:

            def inside() -> None:
                with IPRoute() as inner:
                    for index in inner.link_lookup(ifname=ifname):
                        kind = inner.get_links(index)[0].get_attr("IFLA_LINKINFO")
                        if kind is not None and kind.get_attr("IFLA_INFO_KIND") == "veth":
                            inner.link("del", index=index)

            run_in_netns(fd, inside)
    except NetnsGone:
        pass


def host_problems(veth: str) -> list[str]:
    """What is wrong with the host side (CHECK): empty when all is well."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=veth)
        if not found:
            return [f"host veth {veth} is missing"]
        link = ipr.get_links(found[0])[0]
        bridge = ipr.link_lookup(ifname=BRIDGE)
        problems = []
        if not bridge or link.get_attr("IFLA_MASTER") != bridge[0]:
            problems.append(f"{veth} is not a port of the bridge {BRIDGE}")
        if not link["flags"] & IFF_UP:
            problems.append(f"{veth} is down")
        return problems


def addresses_inside(netns: str, ifname: str) -> list[ipaddress.IPv4Interface] | None:
    """The IPv4 addresses on `ifname` in the namespace; None when it or the namespace is gone."""
    seen = observe_inside(netns, ifname)
    return None if seen is None else seen[1]


def observe_inside(netns: str, ifname: str) -> tuple[str, list[ipaddress.IPv4Interface]] | None:
    """(MAC, IPv4 addresses) of `ifname` in the namespace; None when it or the namespace is
    gone (or no namespace is known)."""
    if not netns:
        return None
    try:
        with opened(netns) as fd:

            def inside() -> tuple[str, list[ipaddress.IPv4Interface]] | None:
                with IPRoute() as inner:
                    idx = inner.link_lookup(ifname=ifname)
                    if not idx:
                        return None
                    mac = str(inner.get_links(idx[0])[0].get_attr("IFLA_ADDRESS"))
                    return mac, [
                        ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
                        for a in inner.get_addr(family=socket.AF_INET, index=idx[0])
                    ]

            return run_in_netns(fd, inside)
    except NetnsGone:
        return None


def set_alias(veth: str, alias: str) -> None:
    """Record the attachment on its veth (one plugged before veths carried their record)."""
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=veth):
            try:
                ipr.link("set", index=index, ifalias=alias)
            except NetlinkError as exc:
                log.warning("cannot set the alias of veth=%s error=%s", veth, exc)


def observe_veths() -> dict[str, str]:
    """Host veths that carry a weaved-cni record as their alias: name → alias."""
    out = {}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = str(link.get_attr("IFLA_IFNAME"))
            alias = str(link.get_attr("IFLA_IFALIAS") or "")
            if name.startswith(VETH_PREFIX) and alias.startswith(ALIAS_PREFIX + " "):
                out[name] = alias
    return out
