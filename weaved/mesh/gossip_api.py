"""The contract between the mesh and the channels that gossip over it (IPAM, DNS, topology).

It mirrors Weave's mesh library so the semantics in FACTS.md §3 carry over one to one:
a channel is a `Gossiper`; the mesh hands it what arrives and asks it for its state, and
gives it a `GossipSender` to originate messages. Payloads are the channel's own bytes (a
complete gob stream, or for IPAM unicast a kind byte + gob); the mesh wraps them in its
envelope. A handler that raises `weaved.errors.ProtocolError` makes the mesh close the
connection that carried the message, as Weave does; any other exception is a weaved bug
and is logged, never crashing the router.
"""

from __future__ import annotations

from typing import Protocol

from weaved.spec.identity import UNKNOWN_PEER, PeerName, format_peer_name

__all__ = ["UNKNOWN_PEER", "GossipData", "GossipSender", "Gossiper", "PeerName", "format_peer_name"]


class GossipData(Protocol):
    """Something a channel wants gossiped; pending data for one neighbour is merged, not queued."""

    def encode(self) -> list[bytes]:
        """One or more payloads, each sent as its own message."""
        ...

    def merge(self, other: GossipData) -> GossipData:
        """Combine with `other` (same channel); the result replaces both in the send queue."""
        ...


class Gossiper(Protocol):
    """A gossip channel's handler (Weave's `mesh.Gossiper`)."""

    def on_gossip_unicast(self, sender: PeerName, payload: bytes) -> None:
        """A unicast addressed to us (tag 5)."""
        ...

    def on_gossip_broadcast(self, sender: PeerName, payload: bytes) -> GossipData | None:
        """A broadcast (tag 6) from originator `sender`; return what to relay along its tree."""
        ...

    def gossip(self) -> GossipData | None:
        """Our full state, sent on new connections and every 30 s."""
        ...

    def on_gossip(self, payload: bytes) -> GossipData | None:
        """Periodic/neighbour gossip (tag 4): merge it, return the new part to forward (or None)."""
        ...


class GossipSender(Protocol):
    """What the mesh gives a channel so it can originate messages (Weave's `mesh.Gossip`)."""

    def gossip_unicast(self, dst: PeerName, payload: bytes) -> None:
        """Send to one peer along the 'all connections' unicast route; relayed byte for byte."""
        ...

    def gossip_broadcast(self, data: GossipData) -> None:
        """Send along our broadcast tree to every reachable peer."""
        ...

    def gossip_neighbours(self, data: GossipData) -> None:
        """Gossip (tag 4) to a random subset of neighbours, as periodic gossip does."""
        ...


class PeerView(Protocol):
    """What channels may ask the mesh about peers (IPAM reachability, DNS garbage collection)."""

    def our_name(self) -> PeerName: ...

    def known_peers(self) -> dict[PeerName, str]:
        """Every peer in the topology (reachable or not yet collected) → nickname."""
        ...

    def reachable_peers(self) -> set[PeerName]:
        """Peers with a unicast route from us (we are always included)."""
        ...
