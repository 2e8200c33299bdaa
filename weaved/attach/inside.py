"""The container side of an attachment: `ethwe` inside the container's network namespace, read
and brought to the wanted state (MTU, ARP settings, addresses, routes), or stripped again.

Everything here runs in the calling thread's namespace: call it through `netns.run_in_netns`.
Only what differs is written, so attaching twice changes nothing.

Two addresses in one subnet: the kernel makes the second a secondary of the first, and removing
that primary removes its secondaries too, unless ethwe's promote_secondaries is on. A detach
removes secondaries first and turns promote_secondaries on (by netlink) just before removing a
primary whose secondary stays, so no standing setting is relied on (nor planned).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from weaved.attach import arp, ethtool
from weaved.attach.kernel import (
    IFF_UP,
    MAIN_TABLE,
    RT_SCOPE_LINK,
    AttachError,
    Changes,
    nl,
    refusal,
    write_sysctl,
)
from weaved.attach.model import CONTAINER_IFNAME, MULTICAST_NET, Attachment
from weaved.attach.nlsock import Netlink
from weaved.dataplane.rtnl import IPV4_DEVCONF_PROMOTE_SECONDARIES, Addr

log = logging.getLogger(__name__)

AF_INET = socket.AF_INET
# Weave's ARP cache settings in the container: notice a moved address within seconds.
ARP_CACHE = {"base_reachable_time": "5", "delay_first_probe_time": "2", "ucast_solicit": "1"}


@dataclass(frozen=True)
class ContainerSide:
    """ethwe as read inside the container."""

    index: int
    name: str
    mac: str
    mtu: int
    up: bool
    addresses: tuple[ipaddress.IPv4Interface, ...]
    multicast_route: bool
    tx_checksum: bool | None
    accept_ra: int | None = None  # None: no IPv6 in the container

    def onto(self, a: Attachment) -> Attachment:
        """`a` with its container side as read here."""
        return replace(
            a,
            ifname=self.name,
            mac=self.mac,
            mtu=self.mtu,
            addresses=self.addresses,
            multicast_route=self.multicast_route,
            tx_checksum=self.tx_checksum,
            peer_index=self.index,
        )


def read_side(nls: Netlink, index: int | None = None) -> ContainerSide | None:
    link = nls.link(index) if index is not None else nls.link(name=CONTAINER_IFNAME)
    if link is None:
        return None
    index = link.index
    addresses = tuple(
        ipaddress.IPv4Interface(f"{a.address}/{a.prefixlen}") for a in nls.addresses(index)
    )
    multicast = any(
        r.dst_len == MULTICAST_NET.prefixlen
        and r.dst == str(MULTICAST_NET.network_address)
        and r.oif == index
        for r in nls.routes(MAIN_TABLE)
    )
    return ContainerSide(
        index=index,
        name=link.name,
        mac=link.mac,
        mtu=link.mtu,
        up=bool(link.flags & IFF_UP),
        addresses=addresses,
        multicast_route=multicast,
        tx_checksum=_tx_checksum(link.name),
        accept_ra=link.accept_ra,
    )


def _tx_checksum(name: str) -> bool | None:
    try:
        return ethtool.tx_checksum(name)
    except OSError:
        return None


def _new_side(nls: Netlink, made_as: str) -> ContainerSide | None:
    """ethwe just created (named `made_as` for now): its link read, the rest as a new veth
    has it."""
    link = nls.link(name=made_as)
    if link is None:
        return None
    return ContainerSide(
        index=link.index,
        name=link.name,
        mac=link.mac,
        mtu=link.mtu,
        up=bool(link.flags & IFF_UP),
        addresses=(),
        multicast_route=False,
        tx_checksum=True,
        accept_ra=link.accept_ra,
    )


def _bring_up(nls: Netlink, idx: int, name: str, current: str) -> None:
    """Set the link up, renamed `name` on the way when it is `current` still."""
    renamed = name if current != name else ""
    try:
        nls.set_link(idx, up=True, name=renamed)
    except OSError as exc:
        if exc.errno is None:
            raise
        if renamed and exc.errno == errno.EEXIST:
            raise AttachError(
                f"{name} already exists in the container (the new pair was removed again)"
            ) from None
        raise refusal(f"set {name} up", exc.errno) from None


def probe_side(index: int | None = None) -> ContainerSide | None:
    with Netlink() as nls:
        return read_side(nls, index)


def configure_side(
    mtu: int,
    addresses: Sequence[ipaddress.IPv4Interface],
    multicast_route: bool,
    changes: Changes,
    tx_checksum_off: bool = True,
    onlink_routes: Sequence[ipaddress.IPv4Network] = (),
    *,
    made_as: str = "",
) -> ContainerSide:
    """Bring ethwe to the wanted state; only what differs is written. `made_as`: the caller
    just created ethwe under that name (it becomes ethwe as it comes up, see
    `model.MADE_AS_PREFIX`), so only its link is read (no address, no route of its own, TX
    checksum offload on: a new veth's), and what it then is follows from what the kernel
    acknowledged here, not read again."""
    fresh = bool(made_as)
    with Netlink() as nls:
        side = _new_side(nls, made_as) if fresh else read_side(nls)
        if side is None:
            raise AttachError(f"{CONTAINER_IFNAME} disappeared from the container while attaching")
        idx, name = side.index, side.name
        current = name  # the name the kernel knows it by until it comes up
        name = CONTAINER_IFNAME if fresh else name
        if mtu and side.mtu != mtu:
            nl(f"set {name} mtu {mtu}", nls.set_link, idx, mtu=mtu)
            changes.append(f"{name}: mtu {side.mtu} → {mtu}")
        arp_settings(nls, idx, name, changes, fresh=fresh)
        # Read from its link message; one /proc/sys path walked only when it must change.
        if side.accept_ra and write_sysctl(f"net/ipv6/conf/{current}/accept_ra", "0"):
            changes.append(f"{name}: accept_ra=0")
        if tx_checksum_off and side.tx_checksum:
            try:
                ethtool.set_tx_checksum(current, False)
            except OSError as exc:
                raise AttachError(f"cannot turn TX checksum offload off on {name}: {exc}") from None
            changes.append(f"{name}: tx checksum offload off")
        have = {a.ip for a in side.addresses}
        added: list[ipaddress.IPv4Interface] = []
        for iface in addresses:
            if iface.ip in have:
                continue  # Weave's rule: the same IP under any prefix counts as present
            nl(f"add {iface} to {name}", nls.add_address, idx, iface)
            have.add(iface.ip)
            added.append(iface)
            changes.append(f"{name}: add {iface}")
        if not side.up:
            _bring_up(nls, idx, name, current)
            changes.append(f"{name}: up")
        if added:  # as Weave, a moment after "up" (sent while the attach goes on)
            try:
                arp.announce_soon(name, side.mac, [i.ip for i in added])
                changes.extend(f"{name}: gratuitous ARP for {i.ip}" for i in added)
            except OSError as exc:  # peers' short ARP timeouts will catch up
                log.warning("gratuitous ARP failed ifname=%s error=%s", name, exc)
        multicast = side.multicast_route
        if multicast_route and not side.multicast_route:
            try:
                nls.add_route(MULTICAST_NET, idx, RT_SCOPE_LINK, MAIN_TABLE)
                changes.append(f"{name}: route {MULTICAST_NET} dev {name}")
                multicast = True
            except OSError as exc:
                if exc.errno != errno.EEXIST:  # someone else's multicast route: leave it
                    raise AttachError(
                        f"add route {MULTICAST_NET} dev {name}: {exc.strerror}"
                    ) from None
        _add_onlink_routes(nls, idx, name, onlink_routes, changes)
        if fresh:  # not read back (ethtool's ioctl too takes the rtnl lock attaches queue for)
            return replace(
                side,
                name=name,
                mtu=mtu or side.mtu,
                up=True,
                addresses=tuple(added),
                multicast_route=multicast,
                tx_checksum=False if tx_checksum_off else side.tx_checksum,
                accept_ra=0 if side.accept_ra is not None else None,
            )
        after = read_side(nls, idx)
        if after is None:
            raise AttachError(f"{CONTAINER_IFNAME} disappeared from the container while attaching")
        return after


def arp_settings(
    nls: Netlink, idx: int, name: str, changes: Changes, *, fresh: bool = False
) -> None:
    """ARP_CACHE on a container's interface (ethwe, or CNI's IfName) through netlink
    (nlsock.arp_params); only what differs is set. `fresh`: the interface was just made, so
    it has the namespace's defaults: all are set, unread (reading dumps every interface's
    settings the kernel has, in all namespaces, to find this one's)."""
    try:
        have = {} if fresh else nls.arp_params(idx)
        differ = {k: int(v) for k, v in ARP_CACHE.items() if have.get(k) != int(v)}
        if differ:
            nls.set_arp_params(idx, differ)
    except OSError as exc:
        raise AttachError(f"cannot set {name}'s ARP settings: {exc.strerror}") from None
    changes.extend(f"{name}: arp {k}={v}" for k, v in differ.items())


def _add_onlink_routes(
    nls: Netlink, idx: int, name: str, nets: Sequence[ipaddress.IPv4Network], changes: Changes
) -> None:
    """Routes through ethwe for addresses on the bridge outside the container's subnets
    (weaveDNS's link address); one already there is left as it is."""
    for net in nets:
        try:
            nls.add_route(net, idx, RT_SCOPE_LINK, MAIN_TABLE)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                continue
            raise AttachError(f"add route {net} dev {name}: {exc.strerror}") from None
        changes.append(f"{name}: route {net} dev {name}")


def remove_addresses(
    wanted: Sequence[ipaddress.IPv4Interface] | None,
) -> tuple[tuple[ipaddress.IPv4Interface, ...], bool, tuple[ipaddress.IPv4Interface, ...]]:
    """Remove `wanted` (matched by IP; None = all) from ethwe; delete the veth when none is left.
    Returns (removed, veth removed, remaining: what the kernel then has)."""
    with Netlink() as nls:
        link = nls.link(name=CONTAINER_IFNAME)
        if link is None:
            return (), False, ()
        idx, name = link.index, link.name
        have = nls.addresses(idx)
        if wanted is None:
            removed = tuple(_iface(a) for a in have)
        else:
            order, promote = removal_order(have, {w.ip for w in wanted})
            if promote and not link.promote_secondaries:
                # A primary goes while a secondary of its subnet stays: without this the
                # kernel would take the secondary along (and the routes of a last address).
                nl(
                    f"set {name} promote_secondaries on",
                    nls.set_ipv4_conf,
                    idx,
                    {IPV4_DEVCONF_PROMOTE_SECONDARIES: 1},
                )
            for iface in order:
                remove_address(nls, idx, name, iface)
            removed = tuple(order)
            have = nls.addresses(idx)
        if have and wanted is not None:
            return removed, False, tuple(_iface(a) for a in have)
        # Deleting one end deletes the pair, and the multicast route with it.
        nl(f"delete {name}", nls.delete_link, idx)
        return removed, True, ()


def removal_order(
    have: Sequence[Addr], ips: Collection[ipaddress.IPv4Address]
) -> tuple[list[ipaddress.IPv4Interface], bool]:
    """The addresses of `have` whose IP is in `ips`, secondaries before primaries (a
    primary's removal takes its secondaries along unless promote_secondaries is on), and
    whether a primary goes while a secondary of its subnet stays (promote_secondaries must
    then be on). The kernel's secondaries of a primary: same prefix length and network."""
    gone = [a for a in have if ipaddress.IPv4Address(a.address) in ips]
    kept = [a for a in have if ipaddress.IPv4Address(a.address) not in ips]
    promote = any(
        not a.secondary
        and any(k.secondary and _iface(k).network == _iface(a).network for k in kept)
        for a in gone
    )
    order = [a for a in gone if a.secondary] + [a for a in gone if not a.secondary]
    return [_iface(a) for a in order], promote


def remove_address(nls: Netlink, idx: int, name: str, iface: ipaddress.IPv4Interface) -> None:
    """Remove `iface` from link `idx`; one already gone (with its primary on a kernel that did
    not promote it, or by another hand since it was read) counts as removed."""
    try:
        nls.delete_address(idx, iface)
    except OSError as exc:
        if exc.errno is None:
            raise
        gone = exc.errno == errno.EADDRNOTAVAIL and all(
            a.address != str(iface.ip) for a in nls.addresses(idx)
        )
        if not gone:
            raise refusal(f"remove {iface} from {name}", exc.errno) from None


def _iface(a: Addr) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(f"{a.address}/{a.prefixlen}")
