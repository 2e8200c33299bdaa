"""Where a frame goes (FACTS.md §7.1, §7.4): Weave's router decisions, pure.

A `Switch` holds the MAC cache and a `ForwardingTable` (a snapshot of the mesh's routes,
peers as 6-byte names). For every frame it returns a `Decision`: inject it into our bridge
or not, and the (next hop, destination peer) pairs to send it to. Unicast frames go to the
established next hop towards the peer that owns the destination MAC, with that peer in the
frame header, and are relayed unchanged hop by hop. Broadcast, multicast and frames to
unknown MACs follow the originator's broadcast tree; the header's destination is rewritten
to each next hop. Decisions are precomputed per destination (and memoised per broadcast
source), so the common case allocates nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from weaved.datapath.sleeve.ethernet import STP_ADDRESS
from weaved.datapath.sleeve.maccache import MacCache
from weaved.mesh.gossip_api import UNKNOWN_PEER, PeerName
from weaved.mesh.peername import format_peer_name, peer_name_to_bytes
from weaved.mesh.routes import Routes

__all__ = [
    "DROP_LOCAL",
    "DROP_MAC_CONFLICT",
    "DROP_NO_ROUTE",
    "DROP_OWN_FRAME",
    "DROP_STP",
    "DROP_UNKNOWN_PEER",
    "Decision",
    "ForwardingTable",
    "Switch",
]

log = logging.getLogger(__name__)

Send = tuple[bytes, bytes]
"""(next hop, destination peer written into the sleeve header)."""


@dataclass(frozen=True, slots=True)
class Decision:
    inject: bool = False
    sends: tuple[Send, ...] = ()
    broadcast: bool = False
    drop: str | None = None  # why nothing happens (a counter name)


DROP_MAC_CONFLICT = Decision(drop="mac_conflict")
DROP_STP = Decision(drop="stp")
DROP_LOCAL = Decision(drop="local_destination")
DROP_NO_ROUTE = Decision(drop="no_route")
DROP_UNKNOWN_PEER = Decision(drop="unknown_peer")
DROP_OWN_FRAME = Decision(drop="own_frame")
INJECT_ONLY = Decision(inject=True)


class ForwardingTable:
    """Routes of one topology snapshot, keyed by 6-byte peer names."""

    def __init__(
        self,
        us: bytes,
        unicast: Mapping[bytes, bytes],
        known: Iterable[bytes],
        broadcast: Callable[[bytes], Sequence[bytes]],
    ) -> None:
        self.us = us
        self.unicast = {dst: hop for dst, hop in unicast.items() if dst != us}
        self.known = frozenset(known) | {us}
        self._broadcast = broadcast
        self._to_peer = {dst: Decision(sends=((hop, dst),)) for dst, hop in self.unicast.items()}
        self._from: dict[bytes, Decision] = {}
        self._received_from: dict[bytes, Decision] = {}

    @classmethod
    def empty(cls, us: bytes) -> ForwardingTable:
        return cls(us, {}, (), lambda _src: ())

    @classmethod
    def from_routes(cls, routes: Routes, known: Iterable[PeerName]) -> ForwardingTable:
        us = peer_name_to_bytes(routes.us)
        unicast = {
            peer_name_to_bytes(dst): peer_name_to_bytes(hop)
            for dst, hop in routes.unicast.items()
            if hop != UNKNOWN_PEER
        }

        def broadcast(src: bytes) -> list[bytes]:
            hops = routes.broadcast(PeerName(int.from_bytes(src, "big")))
            return [peer_name_to_bytes(h) for h in hops]

        return cls(us, unicast, (peer_name_to_bytes(p) for p in known), broadcast)

    def next_hop(self, dst: bytes) -> bytes | None:
        return self.unicast.get(dst)

    def to_peer(self, dst: bytes) -> Decision:
        """Send to `dst` via its next hop (a captured unicast, or a relay)."""
        return self._to_peer.get(dst, DROP_NO_ROUTE)

    def broadcast_from(self, src: bytes) -> Decision:
        """A broadcast `src` originated, as we pass it on (without injecting)."""
        found = self._from.get(src)
        if found is None:
            hops = tuple(self._broadcast(src))
            found = Decision(sends=tuple((h, h) for h in hops), broadcast=True)
            self._from[src] = found
        return found

    def received_broadcast(self, src: bytes) -> Decision:
        """A broadcast from `src` addressed to us: inject, and continue along its tree."""
        found = self._received_from.get(src)
        if found is None:
            onward = self.broadcast_from(src)
            found = Decision(inject=True, sends=onward.sends, broadcast=True)
            self._received_from[src] = found
        return found


class Switch:
    def __init__(self, us: bytes, macs: MacCache | None = None) -> None:
        self.macs = macs if macs is not None else MacCache()
        self.table = ForwardingTable.empty(us)

    @property
    def us(self) -> bytes:
        return self.table.us

    def captured(self, src_mac: bytes, dst_mac: bytes, now: float) -> Decision:
        """A frame our bridge handed us. (The MAC cache's `add` and `lookup`, inlined: this
        runs for every frame.)"""
        table = self.table
        us = table.us
        entries = self.macs.table
        entry = entries.get(src_mac)
        if entry is None:
            self.macs.add(src_mac, us, now)
            log.debug("discovered local MAC mac=%s", _mac(src_mac))
        elif entry.peer != us:
            # Probably a frame we injected ourselves; Weave drops it too.
            return DROP_MAC_CONFLICT
        else:
            entry.last_seen = now
        owner = entries.get(dst_mac)
        if owner is None:
            if dst_mac == STP_ADDRESS:
                return DROP_STP
            return table.broadcast_from(us)
        if owner.peer == us:
            return DROP_LOCAL
        return table.to_peer(owner.peer)

    def received(
        self, src_peer: bytes, dst_peer: bytes, src_mac: bytes, dst_mac: bytes, now: float
    ) -> Decision:
        """A frame in a datagram from a directly connected peer."""
        table = self.table
        known = table.known
        if src_peer not in known or dst_peer not in known:
            return DROP_UNKNOWN_PEER
        us = table.us
        if src_peer == us:
            return DROP_OWN_FRAME
        if dst_peer != us:
            return table.to_peer(dst_peer)
        entries = self.macs.table
        entry = entries.get(src_mac)
        if entry is not None and entry.peer == src_peer:
            entry.last_seen = now
        else:
            _new, moved = self.macs.add_forced(src_mac, src_peer, now)
            log.debug(
                "discovered remote MAC mac=%s peer=%s%s",
                _mac(src_mac),
                _peer(src_peer),
                f" (was at {_peer(moved)})" if moved is not None else "",
            )
        owner = entries.get(dst_mac)
        if owner is not None and owner.peer == us:
            return INJECT_ONLY
        return table.received_broadcast(src_peer)


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _peer(raw: bytes) -> str:
    return format_peer_name(int.from_bytes(raw, "big"))
