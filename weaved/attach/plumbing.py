"""Plug containers into the bridge: a veth pair `vethwepl<id>` (a port of `weave`, see
`host.py`) ↔ `ethwe` inside the container (`inside.py`); unplug them again. Finding them after
a restart is `observe.py`'s.

Everything is idempotent and observed before it is changed: attaching twice changes nothing,
attaching with one more address adds just that address. Work inside a container's namespace
runs on a thread of its own (`netns.run_in_netns`); the caller's thread stays where it is, which
is the host namespace that holds the bridge.

How a restarted daemon knows these objects are its own: the host side's name prefix
`vethwepl` (ownership table in DEVELOPERS.md). What the name encodes: the container's PID, as
Weave does, or for a named netns `n` + a short hash of the name, `m` + more of it when
another namespace's veth has that name (`model.netns_veth_ids`).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
from collections.abc import Collection, Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from weaved.attach.host import configure_port, host_peer, no_route_back, own_bridge, route_back
from weaved.attach.inside import configure_side, probe_side, remove_addresses
from weaved.attach.kernel import AttachError, Changes, link_kind, netnsid
from weaved.attach.model import (
    CONTAINER_IFNAME,
    VETH_PREFIX,
    Attachment,
    Detached,
    Target,
    made_as_name,
)
from weaved.attach.netns import NetnsGone, opened, run_in_netns
from weaved.attach.nlsock import host_socket
from weaved.attach.veth import VethPair, plug_veth
from weaved.compile.antispoof import pairs_of
from weaved.dataplane.nftsets import add_elements, remove_elements
from weaved.errors import ConflictError

log = logging.getLogger(__name__)


def attach(
    target: Target,
    addresses: Sequence[ipaddress.IPv4Interface],
    mtu: int = 0,
    multicast_route: bool = True,
    *,
    tx_checksum_off: bool = True,
    changes: Changes | None = None,
    onlink_routes: Sequence[ipaddress.IPv4Network] = (),
    route_back_from: str = "",
    veth: str = "",
) -> Attachment:
    """Plug `target` into the bridge with `addresses` (adding any it lacks) and return what the
    kernel then shows. `mtu` 0 = the bridge's MTU. `tx_checksum_off` False keeps the container's
    TX checksum offload (Weave's --keep-tx-on; only safe when no userspace datapath forwards its
    packets). `route_back_from`: weaveDNS's link address, to route its answers back (empty:
    no DNS at that address). `veth`: the host veth's name as recorded (empty: the target's).
    Appends what was done to `changes`. Blocking; call it from a thread in the host namespace
    that runs no asyncio loop (a plumbing thread)."""
    done: Changes = [] if changes is None else changes
    nls = host_socket()
    bridge = own_bridge(nls)  # before the namespace: without a bridge nothing else matters
    name = veth or target.veth
    with opened(target.netns_path) as fd:
        if target.netns_inode and os.fstat(fd).st_ino != target.netns_inode:
            raise NetnsGone(f"{target.label}: its network namespace changed; resolve it again")
        # Without its host veth the container is not plugged in: nothing to look at inside
        # first (an ethwe already there makes the new pair's rename fail, see below).
        taken = nls.link(name=name) is not None
        side = run_in_netns(fd, probe_side) if taken else None
        if taken and side is None and target.second_veth not in ("", name):
            # Another named netns's veth: the two names' short hashes collide. This one's
            # veth takes its second name (model.netns_veth_ids; observe knows both).
            name = target.second_veth
        existing = None if side is None else _plugged_into(fd, side.index, target)
        made_as = made_as_name(name)  # becomes ethwe as it comes up (model.MADE_AS_PREFIX)
        try:
            plugged = plug_veth(
                VethPair(name, made_as, fd, where=target.label, becomes=CONTAINER_IFNAME),
                lambda mtu: configure_side(
                    mtu,
                    list(addresses),
                    multicast_route,
                    done,
                    tx_checksum_off,
                    onlink_routes,
                    # Made by plug_veth unless found plugged already (else it raised).
                    made_as=made_as if existing is None else "",
                ),
                existing=existing,
                bridge=bridge,
                mtu=mtu,
                host_taken=(
                    f"{name} already exists but its peer is not {CONTAINER_IFNAME} in"
                    f" {target.label}\n  hint: `ip link del {name}` if it is stale"
                ),
                changes=done,
                sends_from=[a.ip for a in addresses],
            )
        except AttachError:
            if side is None and (inside := run_in_netns(fd, probe_side)) is not None:
                _plugged_into(fd, inside.index, target)  # says whose ethwe is in the way
            raise
    if route_back_from:
        route_back(nls, [a.ip for a in addresses], route_back_from, bridge)
    if done:
        log.info("attached target=%s changes=%s", target.label, "; ".join(done))
    host_side = Attachment(target, plugged.name, bridged=plugged.bridged, veth_index=plugged.index)
    return plugged.inside.onto(host_side)


def _plugged_into(fd: int, ethwe_index: int, target: Target) -> int:
    """The host end of the target's ethwe: it must be one of weaved's veths on this host."""
    with IPRoute() as ipr:
        ipr.get_links()  # a dump makes the kernel assign the namespace's nsid
        host = host_peer(ipr, netnsid(ipr, fd), ethwe_index)
    if host is None:
        raise ConflictError(
            f"{target.label} already has an {CONTAINER_IFNAME} that is not plugged"
            " into this host's bridge"
        )
    if not str(host.get_attr("IFLA_IFNAME")).startswith(VETH_PREFIX):
        raise ConflictError(
            f"{target.label}'s {CONTAINER_IFNAME} is plugged into"
            f" {host.get_attr('IFLA_IFNAME')}, which is not weaved's"
        )
    return int(host["index"])


def detach(
    target: Target, addresses: Sequence[ipaddress.IPv4Interface] | None = None, veth: str = ""
) -> Detached:
    """Remove `addresses` (None = all) from the target's ethwe; the veth goes with the last one.
    A target with nothing attached, or whose namespace is gone (taking the veth with it), is
    not an error: the goal is reached. `veth`: the host veth's name as recorded (empty: the
    target's)."""
    wanted = None if addresses is None else list(addresses)
    try:
        with opened(target.netns_path) as fd:
            removed, veth_removed, remaining = run_in_netns(fd, lambda: remove_addresses(wanted))
    except NetnsGone:
        return Detached(target)
    if removed:  # no longer sent from, nor answered at
        remove_elements(pairs_of(veth or target.veth, [i.ip for i in removed]))
        no_route_back(host_socket(), [i.ip for i in removed])
    if removed or veth_removed:
        log.info(
            "detached target=%s removed=%s veth_removed=%s",
            target.label,
            " ".join(map(str, removed)),
            veth_removed,
        )
    return Detached(target, removed, veth_removed, remaining)


def reassert(
    veth: str, ips: Sequence[ipaddress.IPv4Address], route_back_from: str, *, present: bool
) -> None:
    """Make a port's anti-spoofing elements and routes back for `ips` again (`present`), or
    remove them again: what a converge that planned without the call may have undone."""
    if not ips:
        return
    pairs = pairs_of(veth, ips)
    if present:
        add_elements(pairs)
        if route_back_from:
            route_back(host_socket(), ips, route_back_from)
    else:
        remove_elements(pairs)
        no_route_back(host_socket(), ips)


def detach_all(names: Collection[str] | None = None) -> list[str]:
    """Delete every `vethwepl*` veth on this host, or only those of `names` (for `reset`, the
    recorded ones: a look-alike nobody recorded is not ours); returns the names removed."""
    ipr = IPRoute()
    gone = []
    try:
        for link in ipr.get_links():
            name = str(link.get_attr("IFLA_IFNAME"))
            if names is not None and name not in names:
                continue
            if name.startswith(VETH_PREFIX) and link_kind(link) == "veth":
                try:
                    ipr.link("del", index=link["index"])
                    gone.append(name)
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:
                        raise AttachError(f"delete {name}: {os.strerror(exc.code)}") from None
    finally:
        ipr.close()
    return gone


def rebridge() -> list[str]:
    """Make every `vethwepl*` a port of the bridge again (after the bridge was re-created, its
    old ports are left masterless). Returns the names re-plugged."""
    nls = host_socket()
    fixed = []
    bridge_index = own_bridge(nls).index
    for link in nls.links():
        if not link.name.startswith(VETH_PREFIX) or link.kind != "veth":
            continue
        if link.master != bridge_index:
            changes: Changes = []
            configure_port(nls, link.index, bridge_index, 0, changes)
            fixed.append(link.name)
    return fixed
