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

import errno
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from weaved.attach.host import NO_BRIDGE_HINT, configure_port, own_bridge
from weaved.attach.kernel import AttachError, Changes, refusal
from weaved.attach.netns import run_in_netns
from weaved.attach.nlsock import Netlink, host_socket
from weaved.compile.antispoof import pairs_of
from weaved.dataplane.nftsets import add_elements, remove_elements
from weaved.dataplane.rtnl import Link
from weaved.errors import ConflictError, WeavedError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class VethPair:
    host: str  # becomes a port of the bridge
    peer: str  # its name where it lives
    netns_fd: int | None = None  # the peer's namespace; None: it stays here (Docker moves it)
    peer_mac: str | None = None  # None: the kernel's
    where: str = ""  # how change notes name the peer's namespace (a container's label)
    becomes: str = ""  # the peer's name once the caller has renamed it (for change notes)


@dataclass(frozen=True)
class Plugged(Generic[T]):
    index: int  # the host end's
    name: str
    mac: str
    bridged: bool  # the host end is a port of weaved's bridge
    created: bool  # by this call
    inside: T  # what the caller's `inside` returned


def plug_veth(
    pair: VethPair,
    inside: Callable[[int], T],
    *,
    existing: int | None = None,
    bridge: Link | None = None,
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
    `bridge`: weaved's bridge as the caller just checked it (else it is checked here).
    Blocking; run it from a thread in the host namespace that runs no asyncio loop. Netlink
    goes through the thread's own socket (`nlsock.host_socket`)."""
    done: Changes = [] if changes is None else changes
    nls = host_socket()
    bridge = own_bridge(nls, no_bridge_hint) if bridge is None else bridge
    mtu = mtu or bridge.mtu
    host: Link | None = None
    created = False
    if existing is None:
        host, created = _host_end(nls, pair, mtu, done, host_taken, peer_taken)
        index = host.index
    else:
        index = existing
    try:
        add_elements(pairs_of(pair.host, sends_from))
        configure_port(
            nls,
            index,
            bridge.index,
            mtu,
            done,
            hairpin=hairpin,
            alias=alias,
            link=host if created else None,
        )
        fd = pair.netns_fd
        result = inside(mtu) if fd is None else run_in_netns(fd, lambda: inside(mtu))
        # A pair this call made is as it made it (configure_port raised otherwise).
        link = host if host is not None and created else nls.link(index)
        if link is None:
            raise AttachError(f"{pair.host} vanished while it was plugged in")
    except BaseException:
        if created:  # nothing of it is left: the pair, nor what it could send from
            delete_quietly(nls, pair.host)
            _unlet_quietly(pair.host, sends_from)
        raise
    return Plugged(
        index=index,
        name=link.name,
        mac=link.mac,
        bridged=created or link.master == bridge.index,
        created=created,
        inside=result,
    )


def _host_end(
    nls: Netlink,
    pair: VethPair,
    mtu: int,
    changes: Changes,
    host_taken: str | None,
    peer_taken: str | None,
) -> tuple[Link, bool]:
    """The pair's host end, and whether this call created it. Without `peer_taken` the pair
    is created at once (the usual case: one request) and a host end already there is found
    after the kernel said so; with it, the peer's namespace is looked into first."""
    if peer_taken is None:
        made = _create(nls, pair, mtu, changes, exist_ok=True)
        if made is not None:
            return made, True
    found = nls.link(name=pair.host)
    if found is not None:
        if host_taken is not None:
            raise ConflictError(host_taken)
        return found, False
    if peer_taken is None:
        # The peer's name is taken in its namespace: the kernel's refusal says so.
        raise refusal(f"create veth {pair.host} ↔ {pair.peer}", errno.EEXIST)
    if _peer_exists(pair):
        raise ConflictError(peer_taken)
    made = _create(nls, pair, mtu, changes)
    assert made is not None
    return made, True


def _create(
    nls: Netlink, pair: VethPair, mtu: int, changes: Changes, *, exist_ok: bool = False
) -> Link | None:
    """The new pair's host end; None with `exist_ok` when a name is taken (EEXIST)."""
    what = f"create veth {pair.host} ↔ {pair.peer}"
    try:
        echoed = nls.add_veth(pair.host, pair.peer, mtu, pair.netns_fd, pair.peer_mac or "")
    except OSError as exc:
        if exc.errno is None:
            raise
        if exist_ok and exc.errno == errno.EEXIST:
            return None
        raise refusal(what, exc.errno) from None
    where = f"{pair.where}:" if pair.where else ""
    changes.append(f"create veth {pair.host} ↔ {where}{pair.becomes or pair.peer}")
    if echoed is not None:
        return echoed
    try:
        link = nls.link(name=pair.host)
        if link is None:
            raise AttachError(f"{what}: it vanished right after")
        return link
    except BaseException:
        delete_quietly(nls, pair.host)
        raise


def delete_quietly(nls: Netlink, name: str) -> None:
    """Delete the link `name` if it is there (a veth takes its peer with it); a refusal is
    logged, not raised (this runs while another error is on its way up). `nls` is a socket in
    the namespace of the link, e.g. `host_socket()` on a plumbing thread."""
    try:
        link = nls.link(name=name)
        if link is not None:
            nls.delete_link(link.index)
    except OSError as exc:
        log.error("could not remove veth name=%s error=%s", name, exc)


def _unlet_quietly(host: str, sends_from: Sequence[ipaddress.IPv4Address]) -> None:
    """Take a removed port's elements out of the anti-spoofing set; a refusal is logged, not
    raised (another error is on its way up; the next converge removes them)."""
    try:
        remove_elements(pairs_of(host, sends_from))
    except WeavedError as exc:
        log.error("could not remove anti-spoofing elements port=%s error=%s", host, exc)


def _peer_exists(pair: VethPair) -> bool:
    def look() -> bool:
        with Netlink() as inner:
            return inner.link(name=pair.peer) is not None

    return look() if pair.netns_fd is None else run_in_netns(pair.netns_fd, look)
