"""The `IPallocation` gossip channel: bytes from the mesh in, the allocator's messages out.

Implements the mesh's `Gossiper` contract (weaved/mesh/gossip_api.py) on top of an
`Allocator`, and is the allocator's `Outbox`. Weave's behaviour kept here (FACTS §3.2, §5):

* periodic gossip (tag 4) is merged and never forwarded (`on_gossip` returns None);
* a broadcast (tag 6) is merged and what gets relayed is *our own* complete current state;
* our gossip data always encodes the latest state at the moment the mesh sends it, and merging
  two pending items keeps one (they would encode the same bytes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from weaved.ipam.allocator import Allocator
from weaved.ipam.messages import RingUpdate, SpaceRequest, SpaceRequestDenied, Unicast
from weaved.ipam.wire import decode_gossip, decode_unicast, encode_gossip, encode_unicast
from weaved.mesh.gossip_api import GossipData, GossipSender, PeerName, format_peer_name

log = logging.getLogger(__name__)

CHANNEL = "IPallocation"


class IpamGossipData:
    """Our state, encoded only when sent."""

    def __init__(self, encode_state: Callable[[], bytes]) -> None:
        self._encode_state = encode_state

    def encode(self) -> list[bytes]:
        return [self._encode_state()]

    def merge(self, other: GossipData) -> GossipData:
        return self


class IpamGossiper:
    """Give it to the mesh as the `IPallocation` channel, then call `set_sender` with the
    `GossipSender` the mesh hands back. `clock` supplies `now` for the allocator (the core
    never reads the clock itself)."""

    def __init__(self, allocator: Allocator, clock: Callable[[], float]) -> None:
        self.allocator = allocator
        self.clock = clock
        self.sender: GossipSender | None = None
        allocator.attach(self)

    def set_sender(self, sender: GossipSender) -> None:
        self.sender = sender

    # ---- Outbox (allocator -> mesh) -------------------------------------------------------

    def unicast(self, dst: PeerName, message: Unicast) -> None:
        if self.sender is None:
            log.debug("ipam: no mesh yet, dropping unicast to %s", format_peer_name(dst))
            return
        self.sender.gossip_unicast(dst, encode_unicast(message))

    def broadcast_state(self) -> None:
        if self.sender is None:
            log.debug("ipam: no mesh yet, dropping broadcast")
            return
        self.sender.gossip_broadcast(self.gossip_data())

    def gossip_data(self) -> IpamGossipData:
        return IpamGossipData(lambda: encode_gossip(self.allocator.gossip_state()))

    # ---- Gossiper (mesh -> allocator) -----------------------------------------------------

    def on_gossip_unicast(self, sender: PeerName, payload: bytes) -> None:
        message = decode_unicast(payload)
        now = self.clock()
        if isinstance(message, SpaceRequest):
            self.allocator.on_space_request(sender, message.range, now)
        elif isinstance(message, SpaceRequestDenied):
            self.allocator.on_space_request_denied(sender, message.range, now)
        elif isinstance(message, RingUpdate):
            self.allocator.on_gossip_state(sender, message.state, now)

    def on_gossip_broadcast(self, sender: PeerName, payload: bytes) -> GossipData | None:
        self.allocator.on_gossip_state(sender, decode_gossip(payload), self.clock())
        return self.gossip_data()

    def gossip(self) -> GossipData | None:
        return self.gossip_data()

    def on_gossip(self, payload: bytes) -> GossipData | None:
        self.allocator.on_gossip_state(None, decode_gossip(payload), self.clock())
        return None
