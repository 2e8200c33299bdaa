"""Plug a veth pair into weaved's bridge: the one way `weaved attach`, the CNI plugin and the
Docker plugin make a container's link (as Weave's `CreateAndAttachVeth` serves all three).

The host end becomes a port of weaved's own bridge; the peer end is created in the container's
namespace and configured there by the caller, or, for Docker, left in this namespace for
Docker to move. A pair found there already is completed, not recreated; a pair this call
created is removed again when any later step fails. Each caller keeps its own words for a
name that is taken (`host_taken`, `peer_taken`) and for a missing bridge (`no_bridge_hint`).

The bridge drops what any container port sends from an address that is not in the
anti-spoofing set (compile/antispoof.py): the addresses a port may send from (`sends_from`)
are added to that set before the port is brought up, so no port is ever up and unchecked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pyroute2 import IPRoute

from weaved.attach.host import NO_BRIDGE_HINT, configure_port, delete_quietly, own_bridge
from weaved.attach.kernel import Changes, nl
from weaved.attach.netns import run_in_netns
from weaved.compile.antispoof import pairs_of
from weaved.dataplane.nftsets import add_elements
from weaved.errors import ConflictError

T = TypeVar("T")


@dataclass(frozen=True)
class VethPair:
    host: str  # becomes a port of the bridge
    peer: str  # its name where it lives
    netns_fd: int | None = None  # the peer's namespace; None: it stays here (Docker moves it)
    peer_mac: str | None = None  # None: the kernel's
    where: str = ""  # how change notes name the peer's namespace (a container's label)


@dataclass(frozen=True)
class Plugged(Generic[T]):
    index: int  # the host end's
    name: str
    mac: str
    bridged: bool  # the host end is a port of weaved's bridge
    created: bool  # by this call
    inside: T  # what the caller's `inside` returned


def plug_veth(
    ipr: IPRoute,
    pair: VethPair,
    inside: Callable[[int], T],
    *,
    existing: int | None = None,
    mtu: int = 0,
    hairpin: bool = False,
    alias: str = "",
    host_taken: str | None = None,
    peer_taken: str | None = None,
    no_bridge_hint: str = NO_BRIDGE_HINT,
    changes: Changes | None = None,
    sends_from: Sequence[ipaddress.IPv4Address] = (),
) -> Plugged[T]:
    """Create the pair (unless `existing`, the host end's ifindex, says the caller found it
    plugged already), make the host end an up port of the bridge (`mtu` 0: the bridge's;
    `hairpin`; `alias` when given), then run `inside(mtu)` in the peer's namespace.

    A link named `pair.host` that is not `existing` is reused, or with `host_taken` refused
    (ConflictError with that text); with `peer_taken`, a link named `pair.peer` in the
    peer's namespace is refused before anything is made. Appends what was done to `changes`.
    `sends_from`: the addresses the port may send from, let through before the port is up.
    Blocking; run it from a thread in the host namespace that runs no asyncio loop."""
    done: Changes = [] if changes is None else changes
    bridge = own_bridge(ipr, no_bridge_hint)
    bridge_index = int(bridge["index"])
    mtu = mtu or int(bridge.get_attr("IFLA_MTU"))
    index = existing
    if index is None and (found := ipr.link_lookup(ifname=pair.host)):
        if host_taken is not None:
            raise ConflictError(host_taken)
        index = int(found[0])
    created = index is None
    if index is None:
        if peer_taken is not None and _peer_exists(pair):
            raise ConflictError(peer_taken)
        index = _create(ipr, pair, mtu, done)
    try:
        add_elements(pairs_of(pair.host, sends_from))
        configure_port(ipr, index, bridge_index, mtu, done, hairpin=hairpin, alias=alias)
        fd = pair.netns_fd
        result = inside(mtu) if fd is None else run_in_netns(fd, lambda: inside(mtu))
        link = ipr.get_links(index)[0]
    except BaseException:
        if created:
            delete_quietly(ipr, pair.host)
        raise
    return Plugged(
        index=index,
        name=str(link.get_attr("IFLA_IFNAME")),
        mac=str(link.get_attr("IFLA_ADDRESS") or ""),
        bridged=link.get_attr("IFLA_MASTER") == bridge_index,
        created=created,
        inside=result,
    )


def _create(ipr: IPRoute, pair: VethPair, mtu: int, changes: Changes) -> int:
    peer: dict[str, object] = {"ifname": pair.peer, "mtu": mtu}
    if pair.netns_fd is not None:
        peer["net_ns_fd"] = pair.netns_fd
    if pair.peer_mac:
        peer["address"] = pair.peer_mac
    what = f"create veth {pair.host} ↔ {pair.peer}"
    nl(what, ipr.link, "add", ifname=pair.host, kind="veth", mtu=mtu, peer=peer)
    where = f"{pair.where}:" if pair.where else ""
    changes.append(f"create veth {pair.host} ↔ {where}{pair.peer}")
    try:
        return int(ipr.link_lookup(ifname=pair.host)[0])
    except BaseException:
        delete_quietly(ipr, pair.host)
        raise


def _peer_exists(pair: VethPair) -> bool:
    def look() -> bool:
        with IPRoute() as inner:
            return bool(inner.link_lookup(ifname=pair.peer))

    return look() if pair.netns_fd is None else run_in_netns(pair.netns_fd, look)
