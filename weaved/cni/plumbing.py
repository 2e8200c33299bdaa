"""The kernel side of a CNI attachment: a veth `vethweplc<hash>` on the bridge ↔ the runtime's
`IfName` inside the namespace the runtime made, with addresses, routes and Weave's ARP
settings. The hash is six hex digits; when another container's veth has that name (its peer is
elsewhere), the next six (`veth_names`). Which of the two is an attachment's: its record, or
the kernel (the veth's peer is its `IfName`; without a namespace, its alias).

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
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weaved.attach import arp
from weaved.attach.host import own_bridge
from weaved.attach.inside import arp_settings
from weaved.attach.kernel import netnsid, nl, nsid
from weaved.attach.model import CNI_VETH_PREFIX
from weaved.attach.netns import NetnsGone, opened, run_in_netns
from weaved.attach.nlsock import Netlink, host_socket
from weaved.attach.veth import VethPair, delete_quietly, plug_veth
from weaved.cni.records import ALIAS_PREFIX, CniRecord
from weaved.compile.antispoof import pairs_of
from weaved.dataplane.nftsets import remove_elements
from weaved.dataplane.rtnl import Link
from weaved.errors import ApplyError, ConflictError
from weaved.model.resources import BRIDGE

log = logging.getLogger(__name__)

VETH_PREFIX = CNI_VETH_PREFIX
NO_BRIDGE_HINT = "is `weaved daemon` running? see `weaved plan`"
IFF_UP = 0x1
RT_SCOPE_LINK = 253


def veth_names(container_id: str, ifname: str) -> tuple[str, str]:
    """The stable host-side names of (container, IfName), 15 characters (IFNAMSIZ's limit):
    the first, and the second for when the first is another attachment's veth (six hex digits
    of SHA-256 collide: ~3 % of hosts with 1 000 containers hold such a pair)."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    size = 15 - len(VETH_PREFIX)
    return VETH_PREFIX + digest[:size], VETH_PREFIX + digest[size : 2 * size]


@dataclass(frozen=True)
class Plugged:
    veth: str
    host_mac: str
    mac: str  # container side
    addresses: tuple[ipaddress.IPv4Interface, ...]


def bridge_info() -> tuple[int, int, list[ipaddress.IPv4Interface]]:
    """(index, mtu, addresses) of weaved's own bridge; DependencyError/ConflictError else."""
    nls = host_socket()
    link = own_bridge(nls, NO_BRIDGE_HINT)
    addrs = [
        ipaddress.IPv4Interface(f"{a.address}/{a.prefixlen}") for a in nls.addresses(link.index)
    ]
    return link.index, link.mtu, addrs


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
    # holder's MAC for a reused address learn the new one at once. A moment after "up", as
    # Weave and attach do: sent at once it could miss the bridge (a CI run's ping to a
    # reused address went to its previous holder's MAC).
    with Netlink() as nls:
        arp_settings(nls, index, ifname, [])
    try:
        arp.announce_soon(ifname, mac, [iface.ip for iface in addresses])
    except OSError as exc:
        log.warning("gratuitous ARP failed ifname=%s error=%s", ifname, exc)
    return mac


def plug(
    netns: str,
    ifname: str,
    veths: Sequence[str],
    addresses: Sequence[ipaddress.IPv4Interface],
    routes: Sequence[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address | None]],
    hairpin: bool,
    mtu: int = 0,
    alias: str = "",
    others: Collection[str] = (),
) -> Plugged:
    """Create (or complete) the pair under one of `veths` (`veth_names`; see `_choose`; a
    name in `others`, the veths other attachments record, is theirs), put the host side on
    the bridge with `alias` (the attachment's record, `CniRecord.to_alias`), configure the
    inside. Blocking; run it on a plumbing thread (attach/inflight.py)."""
    with opened(netns) as fd:
        veth = _choose(fd, ifname, veths, others)
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


def _choose(fd: int, ifname: str, veths: Sequence[str], others: Collection[str]) -> str:
    """The attachment's host-side name: the one of `veths` whose link is its veth already
    (ADD again: the link's peer is `ifname` in the namespace open at `fd`), else the first
    that no link has and no other attachment records. A link whose peer is elsewhere is
    another container's whose name's short hash is the same: it is left alone."""
    nls = host_socket()
    links = {name: nls.link(name=name) for name in veths}
    for name, link in links.items():
        if link is not None and _peer_is(link, fd, ifname):
            return name
    for name, link in links.items():
        if link is None and name not in others:
            return name
    raise ConflictError(
        f"the host-side names of {ifname} in this container ({', '.join(veths)}) are other"
        " containers' veths"
    )


def _peer_is(link: Link, fd: int, ifname: str) -> bool:
    """Whether the host link's veth peer is `ifname` in the namespace open at `fd`."""
    with IPRoute() as ipr:
        found = ipr.get_links(link.index)  # reading it gives the peer's namespace an nsid here
        peer = found[0].get_attr("IFLA_LINK") if found else None
        where = nsid(found[0].get_attr("IFLA_LINK_NETNSID")) if found else None
        if peer is None or where is None or where != netnsid(ipr, fd):
            return False

    def index_inside() -> int | None:
        with Netlink() as inner:
            inside = inner.link(name=ifname)
            return None if inside is None else inside.index

    return bool(run_in_netns(fd, index_inside) == peer)


def unplug(
    veths: Sequence[str],
    netns: str,
    ifname: str,
    key: str,
    sent_from: Sequence[ipaddress.IPv4Address] = (),
) -> None:
    """Remove the attachment `key`'s pair: the first of `veths` (its recorded name, else its
    `veth_names`) that is its veth (`_whose`), else from inside when only the inside is left;
    then its addresses `sent_from` from the anti-spoofing set. Nothing there is not an error:
    DEL is idempotent."""
    removed = _unplug(veths, netns, ifname, key)
    if veths:
        remove_elements(pairs_of(removed or veths[0], sent_from))


def _unplug(veths: Sequence[str], netns: str, ifname: str, key: str) -> str:
    """The host-side name of the pair removed ("" when none was found on the host side)."""
    nls = host_socket()
    with contextlib.ExitStack() as stack:
        fd = None
        if netns:
            with contextlib.suppress(NetnsGone):  # its veths went with it, or are in use
                fd = stack.enter_context(opened(netns))
        for name in veths:
            link = nls.link(name=name)
            if link is not None and _whose(link, fd, ifname, key):
                delete_quietly(nls, name)
                return name
        if fd is not None:
            run_in_netns(fd, lambda: _delete_inside(ifname))
    return ""


def _whose(link: Link, fd: int | None, ifname: str, key: str) -> bool:
    """Whether the host link is attachment `key`'s veth: its peer is `ifname` in the
    namespace open at `fd`; without a namespace (or one that cannot be looked into), its
    alias does not name another attachment (`records.CniRecord.to_alias`)."""
    if fd is not None:
        try:
            return _peer_is(link, fd, ifname)
        except (OSError, NetlinkError) as exc:  # e.g. CNI_NETNS is a file but no namespace
            log.warning("cannot look into the namespace of veth=%s error=%s", link.name, exc)
    recorded = CniRecord.from_alias(link.alias, link.name)
    return recorded is None or recorded.key == key


def _delete_inside(ifname: str) -> None:
    with IPRoute() as inner:
        for index in inner.link_lookup(ifname=ifname):
            kind = inner.get_links(index)[0].get_attr("IFLA_LINKINFO")
            if kind is not None and kind.get_attr("IFLA_INFO_KIND") == "veth":
                inner.link("del", index=index)


def host_problems(veth: str, netns: str = "", ifname: str = "") -> list[str]:
    """What is wrong with the host side (CHECK): empty when all is well. With `netns` and
    `ifname`: the veth must be that interface's peer (not another container's)."""
    nls = host_socket()
    link = nls.link(name=veth)
    if link is None:
        return [f"host veth {veth} is missing"]
    bridge = nls.link(name=BRIDGE)
    problems = []
    if bridge is None or link.master != bridge.index:
        problems.append(f"{veth} is not a port of the bridge {BRIDGE}")
    if not link.flags & IFF_UP:
        problems.append(f"{veth} is down")
    if netns and ifname:
        with contextlib.suppress(NetnsGone), opened(netns) as fd:
            if not _peer_is(link, fd, ifname):
                problems.append(f"{veth} is not the host side of {ifname} in {netns}")
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
