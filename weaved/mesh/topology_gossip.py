"""The router's topology bookkeeping: the `topology` gossip channel, our own changes announced
to neighbours (coalesced), the routes derived from the topology, and the listeners told of each
peer garbage-collected from it. Also the `PeerView` the other gossip channels see.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from weaved.errors import ProtocolError
from weaved.lograte import RateLimitedLog
from weaved.mesh.gossip import GossipHub
from weaved.mesh.gossip_api import GossipData, PeerName, PeerView
from weaved.mesh.peername import format_peer_name
from weaved.mesh.router_status import peer_label
from weaved.mesh.routes import Routes
from weaved.mesh.topology import Peer, Topology, TopologyGossipData, UpdateResult

__all__ = ["TopologyKeeper"]

log = logging.getLogger(__name__)


class TopologyKeeper:
    """Owns what the router derives from its `Topology` and what it gossips of it."""

    def __init__(
        self,
        topology: Topology,
        hub: GossipHub,
        delay: float,
        running: Callable[[], bool],
        wake_maker: Callable[[], None],
        limited: RateLimitedLog,
        defer: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        """`defer(callback)`: run `callback` soon; received updates are then garbage-collected
        once per turn of the loop (before the hub relays them), not once each."""
        self.topology = topology
        self._defer = defer
        self._settle_scheduled = False
        self._delay = delay  # coalescing of our own topology updates
        self._running = running
        self._wake_maker = wake_maker
        self._limited = limited
        self._routes: Routes | None = None
        self._pending: set[PeerName] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._peer_removed: list[Callable[[PeerName], None]] = []
        self._channel = hub.add_channel("topology", _TopologyGossiper(self))

    def routes(self) -> Routes:
        if self._routes is None:
            self._routes = Routes(self.topology.us, self.topology.graph())
        return self._routes

    def routes_changed(self) -> None:
        """Our connections changed: routes are recomputed when next asked for."""
        self._routes = None

    def peer_view(self) -> PeerView:
        return _PeerView(self)

    def on_peer_removed(self, callback: Callable[[PeerName], None]) -> None:
        self._peer_removed.append(callback)

    def apply(self, payload: bytes) -> UpdateResult:
        """A received topology payload, merged; raises on garbage."""
        result = self.topology.apply_update(payload, collect=self._defer is None)
        self.removed(list(result.removed))
        if result.improved or result.removed:
            self._routes = None
            self._wake_maker()
        if result.local_changed:
            self.announce({self.topology.us})
        if self._defer is not None and not self.topology.settled and not self._settle_scheduled:
            self._settle_scheduled = True
            self._defer(self._settle)
        return result

    def _settle(self) -> None:
        self._settle_scheduled = False
        removed = self.topology.settle()
        if removed:
            self.removed(removed)
            self._routes = None
            self._wake_maker()

    def removed(self, peers: list[Peer]) -> None:
        for peer in peers:
            self._limited.info(("removed",), "Removed unreachable peer peer=%s", peer_label(peer))
            for callback in self._peer_removed:
                try:
                    callback(peer.name)
                except Exception:
                    log.exception("peer-removed listener failed")

    def announce(self, names: set[PeerName]) -> None:
        """Our topology changed: tell random neighbours, coalescing for `delay` seconds."""
        self._pending |= names
        if self._timer is None and self._running():
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._delay, self._flush)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        self._timer = None
        names, self._pending = frozenset(self._pending), set()
        if names and self._running():
            self._channel.gossip_neighbours(TopologyGossipData(self.topology, names))


class _TopologyGossiper:
    """The router's own channel."""

    def __init__(self, keeper: TopologyKeeper) -> None:
        self._keeper = keeper

    def on_gossip_unicast(self, sender: PeerName, payload: bytes) -> None:
        raise ProtocolError(f"unexpected topology gossip unicast from {format_peer_name(sender)}")

    def on_gossip_broadcast(self, sender: PeerName, payload: bytes) -> GossipData | None:
        result = self._keeper.apply(payload)
        if not result.received:
            return None
        return TopologyGossipData(self._keeper.topology, result.received)

    def gossip(self) -> GossipData | None:
        topo = self._keeper.topology
        return TopologyGossipData(topo, frozenset(topo.peers))

    def on_gossip(self, payload: bytes) -> GossipData | None:
        result = self._keeper.apply(payload)
        if not result.improved:
            return None
        return TopologyGossipData(self._keeper.topology, result.improved)


class _PeerView:
    def __init__(self, keeper: TopologyKeeper) -> None:
        self._keeper = keeper

    def our_name(self) -> PeerName:
        return self._keeper.topology.ourself.name

    def known_peers(self) -> dict[PeerName, str]:
        return self._keeper.topology.nicknames()

    def reachable_peers(self) -> set[PeerName]:
        return set(self._keeper.routes().unicast_all)
