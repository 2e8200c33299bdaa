"""An in-memory mesh of IPAM peers for tests: real allocators, real gossipers, real gob bytes,
fake connections. No sockets, no clock: the network's `now` advances only when told.

Delivery follows Weave's semantics (FACTS §3.2): unicast goes byte for byte to the destination
if it is reachable; a broadcast travels down the originator's BFS tree and every relay forwards
the gossip data its own channel returned (for IPAM: its own state); periodic gossip goes to
direct neighbours. Messages are queued and delivered by `run()`, so handlers never re-enter.
"""

from __future__ import annotations

import functools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from weaved.errors import ProtocolError
from weaved.ipam.address import CIDR
from weaved.ipam.allocator import Allocator, AllocatorConfig, Completion, StartMode
from weaved.ipam.gossiper import IpamGossiper
from weaved.ipam.persist import MemoryStore, Store
from weaved.mesh.gossip_api import GossipData, PeerName


@dataclass
class SimPeer:
    name: PeerName
    nickname: str
    allocator: Allocator
    gossiper: IpamGossiper
    store: Store | None
    sender: _Sender
    completions: list[Completion] = field(default_factory=list)
    up: bool = True


class _View:
    """The PeerView the mesh would give one peer."""

    def __init__(self, net: SimNetwork, name: PeerName) -> None:
        self.net, self.name = net, name

    def our_name(self) -> PeerName:
        return self.name

    def known_peers(self) -> dict[PeerName, str]:
        return {p: self.net.peers[p].nickname for p in self.net.reachable(self.name)}

    def reachable_peers(self) -> set[PeerName]:
        return self.net.reachable(self.name)


class _Sender:
    """The GossipSender the mesh would give one peer."""

    def __init__(self, net: SimNetwork, name: PeerName) -> None:
        self.net, self.name = net, name

    def gossip_unicast(self, dst: PeerName, payload: bytes) -> None:
        self.net.sent_unicasts.append((self.name, dst, payload))
        self.net.queue.append(lambda: self.net.deliver_unicast(self.name, dst, payload))

    def gossip_broadcast(self, data: GossipData) -> None:
        self.net.queue.append(lambda: self.net.deliver_broadcast(self.name, data))

    def gossip_neighbours(self, data: GossipData) -> None:
        for n in sorted(self.net.neighbours(self.name)):
            self.net.queue.append(functools.partial(self.net.deliver_gossip, n, data))


class SimNetwork:
    def __init__(self, universe: CIDR, seed: int = 0) -> None:
        self.universe = universe
        self.rng = random.Random(seed)
        self.now = 1_795_304_244.0
        self.peers: dict[PeerName, SimPeer] = {}
        self.links: set[frozenset[PeerName]] = set()
        self.queue: deque[Callable[[], None]] = deque()
        self.sent_unicasts: list[tuple[PeerName, PeerName, bytes]] = []
        self.delivered_broadcasts: list[tuple[PeerName, PeerName, bytes]] = []
        """(originator, receiver, payload) for every broadcast hop delivered."""
        self.errors: list[tuple[PeerName, ProtocolError]] = []
        """Messages a receiver refused; the real mesh would close the connection."""

    # ---- topology -------------------------------------------------------------------------

    def add_peer(
        self,
        name: int,
        nickname: str,
        start: StartMode,
        *,
        store: Store | None = None,
        uid: int | None = None,
    ) -> SimPeer:
        pname = PeerName(name)
        peer_store = store if store is not None else MemoryStore()
        config = AllocatorConfig(
            pname,
            uid if uid is not None else self.rng.getrandbits(63) + 1,
            nickname,
            self.universe,
            start,
        )
        completions: list[Completion] = []
        alloc = Allocator(
            config,
            peers=_View(self, pname),
            store=peer_store,
            on_complete=completions.append,
            rng=random.Random(self.rng.getrandbits(32)),
        )
        gossiper = IpamGossiper(alloc, lambda: self.now)
        sender = _Sender(self, pname)
        gossiper.set_sender(sender)
        peer = SimPeer(pname, nickname, alloc, gossiper, peer_store, sender, completions)
        self.peers[pname] = peer
        alloc.start(self.now)
        return peer

    def connect(self, a: int, b: int) -> None:
        """A new connection: both sides send their full state (Weave's on-connect gossip)."""
        pa, pb = PeerName(a), PeerName(b)
        self.links.add(frozenset((pa, pb)))
        for src, dst in ((pa, pb), (pb, pa)):
            data = self.peers[src].gossiper.gossip()
            if data is not None:
                self.queue.append(functools.partial(self.deliver_gossip, dst, data))
        self._peers_changed()

    def disconnect(self, a: int, b: int) -> None:
        self.links.discard(frozenset((PeerName(a), PeerName(b))))
        self._peers_changed()

    def stop(self, name: int) -> None:
        """The peer's process is gone (no hand-off): drop all its links."""
        pname = PeerName(name)
        self.peers[pname].up = False
        self.links = {link for link in self.links if pname not in link}
        self._peers_changed()

    def _peers_changed(self) -> None:
        for p in self.peers.values():
            if p.up:
                p.allocator.peers_changed(self.now)

    def neighbours(self, name: PeerName) -> set[PeerName]:
        return {other for link in self.links if name in link for other in link if other != name}

    def reachable(self, name: PeerName) -> set[PeerName]:
        seen = {name}
        todo = [name]
        while todo:
            for n in self.neighbours(todo.pop()):
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    # ---- delivery -------------------------------------------------------------------------

    def deliver_unicast(self, src: PeerName, dst: PeerName, payload: bytes) -> None:
        if dst in self.reachable(src) and self.peers[dst].up:
            self._hand(dst, lambda: self.peers[dst].gossiper.on_gossip_unicast(src, payload))

    def deliver_gossip(self, dst: PeerName, data: GossipData) -> None:
        if not self.peers[dst].up:
            return
        for payload in data.encode():
            self._hand(dst, functools.partial(self.peers[dst].gossiper.on_gossip, payload))

    def deliver_broadcast(self, origin: PeerName, data: GossipData) -> None:
        """Down the originator's BFS tree (ascending names per level); each hop relays what its
        channel returned, encoded when that hop sends."""
        visited = {origin}
        frontier: list[tuple[PeerName, GossipData]] = [(origin, data)]
        while frontier:
            nxt: list[tuple[PeerName, GossipData]] = []
            for hop, hop_data in frontier:
                payloads = hop_data.encode()
                for child in sorted(self.neighbours(hop)):
                    if child in visited:
                        continue
                    visited.add(child)
                    relay: GossipData | None = None
                    for payload in payloads:
                        self.delivered_broadcasts.append((origin, child, payload))
                        handler = self.peers[child].gossiper.on_gossip_broadcast
                        relay = self._hand(child, functools.partial(handler, origin, payload))
                    if relay is not None:
                        nxt.append((child, relay))
            frontier = nxt

    def _hand(self, dst: PeerName, handle: Callable[[], GossipData | None]) -> GossipData | None:
        """Run a receiver's handler; a refusal is recorded (the mesh would drop the link)."""
        try:
            return handle()
        except ProtocolError as e:
            self.errors.append((dst, e))
            return None

    def run(self, max_steps: int = 10_000) -> int:
        """Deliver queued messages (and whatever they cause) until quiet; returns the count."""
        steps = 0
        while self.queue:
            if steps >= max_steps:
                raise RuntimeError(f"IPAM simulation did not settle in {max_steps} steps")
            self.queue.popleft()()
            steps += 1
        return steps

    def gossip_round(self) -> None:
        """Every peer gossips its full state to its neighbours (Weave's 30 s timer)."""
        for p in self.peers.values():
            if p.up:
                data = p.gossiper.gossip()
                if data is not None:
                    p.sender.gossip_neighbours(data)

    def tick(self, seconds: float = 5.0) -> None:
        self.now += seconds
        for p in self.peers.values():
            if p.up:
                p.allocator.tick(self.now)
