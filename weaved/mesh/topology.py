"""The peers table, merged from the `topology` channel's payloads (FACTS.md §1, §4). Pure.

Holds every known peer with the connections it reports; our own record carries our live
connections. Merging follows Weave: unknown peers are added (names seen only inside
connection lists become placeholders, UID 0), a known peer is replaced only by a higher
version (or equal version and higher UID, or equal both and a newly present short ID), and
news about an older incarnation of ourselves bumps our version past it.
The records and their payload codec are in `topology_wire`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from weaved.mesh.gossip_api import GossipData as GossipDataLike
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.handshake import RemoteIdentity
from weaved.mesh.peername import choose_short_id
from weaved.mesh.routes import Graph, bfs
from weaved.mesh.topology_wire import (
    CODEC,
    ConnectionInfo,
    Peer,
    Row,
    TopologyError,
    decode_topology,
    memo,
)

__all__ = [
    "ConnectionInfo",
    "Peer",
    "Topology",
    "TopologyError",
    "TopologyGossipData",
    "UpdateResult",
    "decode_topology",
]

MAX_PEERS = 4096
"""Peers one topology may know: short IDs have 12 bits, so no real mesh is larger. Without a
bound, a peer could gossip any number of invented peers that vouch for each other."""


@dataclass(frozen=True)
class UpdateResult:
    improved: frozenset[PeerName]  # peers whose record changed: what gossip forwards
    removed: tuple[Peer, ...]  # garbage-collected afterwards
    local_changed: bool  # our own record changed (version bump or new short ID)
    rows: tuple[Row, ...] = field(repr=False, default=())  # the update's records, decoded

    @cached_property
    def received(self) -> frozenset[PeerName]:
        """Every peer the update carried a record of (only broadcasts need it)."""
        return frozenset(p[0] for p, _, _ in self.rows)


class Topology:
    """The peers table of one router. Not thread-safe; the router's event loop owns it."""

    def __init__(
        self,
        name: PeerName,
        nickname: str,
        uid: int,
        short_id: int,
        rng: random.Random | None = None,
    ) -> None:
        self.us = name
        self._rng = rng or random.Random()
        self.ourself = Peer(name, nickname, uid, 0, short_id, True, local_refs=1)
        self.peers: dict[PeerName, Peer] = {name: self.ourself}
        self._graph: dict[PeerName, Mapping[PeerName, bool]] | None = None
        self._graph_dirty: set[PeerName] = set()
        # False when something may have made a peer unreachable or unreferenced since the
        # last garbage collection: an update that changes nothing need not collect again.
        self._settled = False
        # Peers reachable from us over any gossiped connection as of the last collection, and
        # the peers whose connection lists grew since: while no connection is lost, a
        # collection only searches on from those (None: search the whole graph).
        self._reached: set[PeerName] | None = None
        self._grown: set[PeerName] = set()

    # --- reading -------------------------------------------------------------------------

    def graph(self) -> Graph:
        """The connection graph (cached until the table changes; do not modify it)."""
        graph: dict[PeerName, Mapping[PeerName, bool]]
        if self._graph is None:
            graph = self._graph = self._build_graph()
        elif self._graph_dirty:
            # Copy on write: a graph handed out earlier (held by a Routes) stays as it was.
            graph = dict(self._graph)
            for name in self._graph_dirty:
                peer = self.peers.get(name)
                if peer is None:
                    graph.pop(name, None)
                else:
                    graph[name] = {r: c.established for r, c in peer.connections.items()}
            self._graph = graph
        else:
            graph = self._graph
        self._graph_dirty = set()
        return graph

    def _touch(self, names: Iterable[PeerName]) -> None:
        """These peers' connections (or presence) changed: the graph is rebuilt for them."""
        self._graph_dirty.update(names)

    def _build_graph(self) -> dict[PeerName, Mapping[PeerName, bool]]:
        return {
            name: {r: c.established for r, c in peer.connections.items()}
            for name, peer in self.peers.items()
        }

    def discovery_view(self) -> dict[PeerName, dict[PeerName, tuple[str, bool]]]:
        return {
            name: {r: (c.address, c.outbound) for r, c in peer.connections.items()}
            for name, peer in self.peers.items()
        }

    def nicknames(self) -> dict[PeerName, str]:
        return {name: p.nickname for name, p in self.peers.items()}

    def short_id_owner(self, short_id: int) -> PeerName | None:
        """Among peers claiming a short ID the lowest name keeps it."""
        claimants = [
            p.name for p in self.peers.values() if p.has_short_id and p.short_id == short_id
        ]
        return min(claimants) if claimants else None

    def encode(self, names: Iterable[PeerName]) -> bytes:
        """One gob stream: each known peer's summary, then its connection list."""
        return CODEC.encode(p for n in names if (p := self.peers.get(n)) is not None)

    def encode_all(self) -> bytes:
        return self.encode([self.us, *sorted(n for n in self.peers if n != self.us)])

    # --- our own connections ---------------------------------------------------------------

    def register_remote(self, remote: RemoteIdentity, accept_new: bool) -> Peer | None:
        """Find (or, if allowed, add) the peer a new connection leads to and hold a reference.

        None: the peer is unknown and `accept_new` is false (a discovery dial)."""
        peer = self.peers.get(remote.name)
        if peer is None:
            if not accept_new:
                return None
            peer = Peer(
                remote.name,
                remote.nickname,
                remote.uid,
                0,
                remote.short_id or 0,
                remote.short_id is not None,
            )
            self.peers[remote.name] = peer
            self._touch((remote.name,))
            self._settled = False
        peer.local_refs += 1
        return peer

    def dereference(self, name: PeerName) -> None:
        peer = self.peers.get(name)
        if peer is not None and peer.local_refs > 0:
            peer.local_refs -= 1
            self._settled = False

    def add_local_connection(self, info: ConnectionInfo) -> None:
        self.ourself.connections[info.remote] = info
        self.ourself.version += 1
        self._touch((self.us,))
        self._grown.add(self.us)
        self._settled = False

    def set_local_established(self, remote: PeerName) -> None:
        info = self.ourself.connections.get(remote)
        if info is not None and not info.established:
            self.ourself.connections[remote] = info._replace(established=True)
            self.ourself.version += 1
            self._touch((self.us,))
            self._settled = False

    def delete_local_connection(self, remote: PeerName) -> None:
        if self.ourself.connections.pop(remote, None) is not None:
            self.ourself.version += 1
            self._touch((self.us,))
            self._reached = None
            self._settled = False

    # --- merging -------------------------------------------------------------------------

    def apply_update(self, payload: bytes, collect: bool = True) -> UpdateResult:
        """Merge a payload. `collect=False` leaves the garbage collection it may call for to
        `settle()` (the router runs it once per turn of its loop, not once per message)."""
        rows = CODEC.decode(payload)  # nicknames over MAX_NICKNAME raise there
        peers = self.peers
        # Names the update could add, counted only when the bound could be crossed: each
        # name takes at least 4 bytes of the payload (a non-empty NameByte in a struct).
        if len(peers) + len(payload) // 4 > MAX_PEERS:
            unknown = {p[0] for p, _, _ in rows} | {r for _, cs, _ in rows for r in cs}
            unknown -= peers.keys()
            if len(peers) + len(unknown) > MAX_PEERS:
                raise TopologyError(f"topology update would make more than {MAX_PEERS} peers")

        # Peer objects are made only for what is new or better: most of a gossip round
        # repeats what we hold. A record's connections dict is the decoded one, shared.
        new_names: set[PeerName] = set()
        improved: set[PeerName] = set()
        local_changed = False
        lost_connections = False
        named: list[Mapping[PeerName, object]] = []  # lists that may name new peers
        for (name, nickname, uid, version, short_id, has_short_id), conns, wire in rows:
            existing = peers.get(name)
            if existing is None:
                peer = Peer(name, nickname, uid, version, short_id, has_short_id, conns)
                if wire is not None:
                    memo(peer, wire)
                peers[name] = peer
                new_names.add(name)
                improved.add(name)
            elif existing is self.ourself:
                if uid != existing.uid and version >= existing.version:
                    # Someone gossips about an older incarnation of us: supersede it.
                    existing.version = version + 1
                    local_changed = True
            elif version < existing.version or (
                version == existing.version
                and (
                    uid < existing.uid
                    or (uid == existing.uid and (not has_short_id or existing.has_short_id))
                )
            ):
                pass  # not better than what we hold
            else:
                existing.version = version
                existing.uid = uid
                existing.nickname = nickname
                if not lost_connections:
                    lost_connections = not existing.connections.keys() <= conns.keys()
                existing.connections = conns
                existing.short_id = short_id
                existing.has_short_id = has_short_id
                if wire is not None:
                    memo(existing, wire)
                improved.add(name)
            named.append(conns)
        for listed in named:  # names known only from connection lists: placeholders
            for remote in listed:
                if remote not in peers:
                    peers[remote] = Peer(remote)
                    new_names.add(remote)

        removed: list[Peer] = []
        self._touch(new_names)
        self._touch(improved)
        # Collecting is a search of the whole graph; only lost connections, new peers (which
        # may hang on nothing) or lost references can leave a peer unreachable.
        if lost_connections:
            self._reached = None
        elif self._reached is not None:
            self._grown |= improved
        if new_names or lost_connections:
            self._settled = False
        if collect:
            removed = self.settle()
            for peer in removed:
                improved.discard(peer.name)
        # Only a peer that is new or changed can have taken our short ID (the full check
        # is a pass over every peer).
        ours = self.ourself.short_id
        if (
            any(
                (p := peers.get(n)) is not None and p.has_short_id and p.short_id == ours
                for n in (*new_names, *improved)
            )
            and self.reassign_short_id_if_lost()
        ):
            local_changed = True
        return UpdateResult(frozenset(improved), tuple(removed), local_changed, rows)

    @property
    def settled(self) -> bool:
        """No garbage collection pending (see `apply_update(collect=False)`)."""
        return self._settled

    def settle(self) -> list[Peer]:
        """Collect garbage if something may have left a peer unreachable since the last time."""
        if self._settled:
            return []
        removed = self.garbage_collect()
        self._settled = True
        return removed

    def garbage_collect(self) -> list[Peer]:
        """Drop peers unreachable over any connection and not referenced by ours."""
        reached = self._reached
        if reached is None:
            reached = set(bfs(self.graph(), self.us, established=False)[1])
        else:
            peers = self.peers
            frontier = [n for n in self._grown if n in reached]
            while frontier:
                peer = peers.get(frontier.pop())
                for remote in peer.connections if peer is not None else ():
                    if remote not in reached:
                        reached.add(remote)
                        frontier.append(remote)
        self._reached, self._grown = reached, set()
        if len(reached) >= len(self.peers):
            return []  # every peer reachable (the common case while a mesh grows)
        removed = [p for n, p in self.peers.items() if n not in reached and p.local_refs == 0]
        for p in removed:
            del self.peers[p.name]
        self._touch(p.name for p in removed)
        return removed

    def reassign_short_id_if_lost(self) -> bool:
        """If a lower-named peer claims our short ID, pick a free one (and bump our version)."""
        if self.short_id_owner(self.ourself.short_id) == self.us:
            return False
        owned = {p.short_id for p in self.peers.values() if p.has_short_id}
        new = choose_short_id(owned, self._rng)
        if new is None:
            return False
        self.ourself.short_id = new
        self.ourself.version += 1
        return True

    def set_version_beyond(self, version: int) -> bool:
        if version >= self.ourself.version:
            self.ourself.version = version + 1
            return True
        return False

    def known(self, name: PeerName) -> bool:
        return name in self.peers

    def snapshot(self) -> Mapping[PeerName, Peer]:
        return self.peers


@dataclass(frozen=True)
class TopologyGossipData:
    """Names of peers to gossip; encoded from the table when sent, so it is always current."""

    topology: Topology
    names: frozenset[PeerName]

    def encode(self) -> list[bytes]:
        # Peers collected since this was queued are left out; none left: nothing to send.
        payload = self.topology.encode(sorted(self.names))
        return [payload] if payload else []

    def merge(self, other: GossipDataLike) -> TopologyGossipData:
        if not isinstance(other, TopologyGossipData):
            raise TypeError("cannot merge topology data with another channel's data")
        return TopologyGossipData(self.topology, self.names | other.names)
