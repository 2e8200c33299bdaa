"""The peers table and the `topology` channel payloads (FACTS.md §1, §4). Pure.

Holds every known peer with the connections it reports; our own record carries our live
connections. Merging follows Weave: unknown peers are added (names seen only inside
connection lists become placeholders, UID 0), a known peer is replaced only by a higher
version (or equal version and higher UID, or equal both and a newly present short ID), and
news about an older incarnation of ourselves bumps our version past it.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weaved.errors import ProtocolError
from weaved.mesh import gob
from weaved.mesh.gob_types import CONNECTION_SUMMARY_LIST, PEER_SUMMARY
from weaved.mesh.gossip_api import GossipData as GossipDataLike
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.handshake import RemoteIdentity
from weaved.mesh.peername import choose_short_id, peer_name_to_bytes
from weaved.mesh.routes import Graph, bfs

__all__ = [
    "ConnectionInfo",
    "Peer",
    "Topology",
    "TopologyError",
    "TopologyGossipData",
    "UpdateResult",
    "decode_topology",
]


class TopologyError(ProtocolError):
    """A topology payload that does not decode (or would grow the table beyond its bounds)."""


MAX_PEERS = 4096
"""Peers one topology may know: short IDs have 12 bits, so no real mesh is larger. Without a
bound, a peer could gossip any number of invented peers that vouch for each other."""
MAX_NICKNAME = 255  # a host name; Weave's nicknames are host names


@dataclass
class ConnectionInfo:
    """A connection as a peer reports it (for our own peer: a live connection)."""

    remote: PeerName
    address: str
    outbound: bool
    established: bool


@dataclass
class Peer:
    name: PeerName
    nickname: str = ""
    uid: int = 0  # 0: placeholder, known only as the far end of someone's connection
    version: int = 0
    short_id: int = 0
    has_short_id: bool = False
    connections: dict[PeerName, ConnectionInfo] = field(default_factory=dict)
    local_refs: int = 0  # our connections (and attempts) that point at this peer

    @property
    def placeholder(self) -> bool:
        return self.uid == 0


@dataclass(frozen=True)
class UpdateResult:
    received: frozenset[PeerName]  # every peer named in the update
    improved: frozenset[PeerName]  # peers whose record changed: what gossip forwards
    removed: tuple[Peer, ...]  # garbage-collected afterwards
    local_changed: bool  # our own record changed (version bump or new short ID)


def _name_from_bin(raw: object) -> PeerName:
    if not isinstance(raw, bytes) or not 0 < len(raw) <= 8:
        raise TopologyError(f"bad peer name bytes in topology update: {raw!r}")
    return PeerName(int.from_bytes(raw, "big"))


_PeerRow = tuple[PeerName, str, int, int, int, bool]
_ConnRow = tuple[PeerName, str, bool, bool]
_Decoded = tuple[tuple[_PeerRow, tuple[_ConnRow, ...]], ...]


def decode_topology(payload: bytes) -> list[tuple[Peer, list[ConnectionInfo]]]:
    """The (peer, connections) pairs of a topology payload, as fresh objects; raises
    `TopologyError`."""
    rows = _CODEC.decode(payload)
    return [(Peer(*peer), [ConnectionInfo(*c) for c in conns]) for peer, conns in rows]


def _decode_rows(payload: bytes) -> _Decoded:
    dec = gob.Decoder(payload)
    out: list[tuple[_PeerRow, tuple[_ConnRow, ...]]] = []
    try:
        while not dec.at_end():
            summary: Any = dec.next(PEER_SUMMARY)
            conns: Any = dec.next(CONNECTION_SUMMARY_LIST)
            if not isinstance(summary, dict) or not isinstance(conns, list):
                raise TopologyError("topology update items have unexpected types")
            peer: _PeerRow = (
                _name_from_bin(summary["NameByte"]),
                str(summary["NickName"]),
                int(summary["UID"]),
                int(summary["Version"]),
                int(summary["ShortID"]),
                bool(summary["HasShortID"]),
            )
            rows = tuple(
                (
                    _name_from_bin(c["NameByte"]),
                    str(c["RemoteTCPAddr"]),
                    bool(c["Outbound"]),
                    bool(c["Established"]),
                )
                for c in conns
            )
            out.append((peer, rows))
    except TopologyError:
        raise
    except gob.GobError as e:
        raise TopologyError(f"bad topology update: {e}") from e
    except Exception as e:  # garbage must surface as a protocol error, never a crash
        raise TopologyError(f"bad topology update: {type(e).__name__}: {e}") from e
    return tuple(out)


def _summary(peer: Peer) -> dict[str, Any]:
    return {
        "NameByte": peer_name_to_bytes(peer.name),
        "NickName": peer.nickname,
        "UID": peer.uid,
        "Version": peer.version,
        "ShortID": peer.short_id,
        "HasShortID": peer.has_short_id,
    }


def _conn_summary(c: ConnectionInfo) -> dict[str, Any]:
    return {
        "NameByte": peer_name_to_bytes(c.remote),
        "RemoteTCPAddr": c.address,
        "Outbound": c.outbound,
        "Established": c.established,
    }


class _PayloadCodec:
    """Topology payloads with memoised per-peer bytes.

    Gossip re-sends the same peer records over and over; gob-encoding them is most of a
    mesh's CPU time. A payload is `[PS defs][PS 1][CL defs][CL 1][PS 2][CL 2]...`, and with
    the type ids every fresh encoder assigns, a record's value bytes are the same in every
    payload, so they are cached by record content. Decoded payloads are cached too: the
    same update arrives from several neighbours."""

    _MAX_RECORDS = 16384
    _MAX_PAYLOADS = 512
    _MAX_PAYLOAD_BYTES = 1 << 20  # the cache's keys in total (its decoded rows are ~10x that)

    def __init__(self) -> None:
        enc = gob.Encoder()
        probe = _summary(Peer(PeerName(1)))
        first, again = enc.encode(PEER_SUMMARY, probe), enc.encode(PEER_SUMMARY, probe)
        self._ps_defs = first[: len(first) - len(again)]
        first, again = (
            enc.encode(CONNECTION_SUMMARY_LIST, []),
            enc.encode(CONNECTION_SUMMARY_LIST, []),
        )
        self._cl_defs = first[: len(first) - len(again)]
        self._enc = enc  # both types defined: from now on it emits values only
        self._records: dict[tuple[object, ...], tuple[bytes, bytes]] = {}
        self._payloads: OrderedDict[bytes, _Decoded] = OrderedDict()
        self._payload_bytes = 0

    def _record(self, peer: Peer) -> tuple[bytes, bytes]:
        key = (
            peer.name,
            peer.nickname,
            peer.uid,
            peer.version,
            peer.short_id,
            peer.has_short_id,
            tuple(
                (c.remote, c.address, c.outbound, c.established) for c in peer.connections.values()
            ),
        )
        cached = self._records.get(key)
        if cached is None:
            if len(self._records) >= self._MAX_RECORDS:
                self._records.clear()
            conns = [_conn_summary(c) for c in peer.connections.values()]
            cached = (
                self._enc.encode(PEER_SUMMARY, _summary(peer)),
                self._enc.encode(CONNECTION_SUMMARY_LIST, conns),
            )
            self._records[key] = cached
        return cached

    def encode(self, peers: Iterable[Peer]) -> bytes:
        parts: list[bytes] = []
        for i, peer in enumerate(peers):
            ps, cl = self._record(peer)
            parts += [self._ps_defs, ps, self._cl_defs, cl] if i == 0 else [ps, cl]
        return b"".join(parts)

    def decode(self, payload: bytes) -> _Decoded:
        rows = self._payloads.get(payload)
        if rows is not None:
            self._payloads.move_to_end(payload)
            return rows
        rows = _decode_rows(payload)
        if len(payload) > self._MAX_PAYLOAD_BYTES // 8:
            return rows  # a huge update is not worth keeping (and a peer could send many)
        self._payloads[payload] = rows
        self._payload_bytes += len(payload)
        while len(self._payloads) > self._MAX_PAYLOADS or (
            self._payload_bytes > self._MAX_PAYLOAD_BYTES
        ):
            old, _ = self._payloads.popitem(last=False)
            self._payload_bytes -= len(old)
        return rows


_CODEC = _PayloadCodec()


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
        self._graph: Graph | None = None

    # --- reading -------------------------------------------------------------------------

    def graph(self) -> Graph:
        """The connection graph (cached until the table changes; do not modify it)."""
        if self._graph is None:
            self._graph = self._build_graph()
        return self._graph

    def _build_graph(self) -> Graph:
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
        return _CODEC.encode(p for n in names if (p := self.peers.get(n)) is not None)

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
            self._graph = None
        peer.local_refs += 1
        return peer

    def dereference(self, name: PeerName) -> None:
        peer = self.peers.get(name)
        if peer is not None and peer.local_refs > 0:
            peer.local_refs -= 1

    def add_local_connection(self, info: ConnectionInfo) -> None:
        self.ourself.connections[info.remote] = info
        self.ourself.version += 1
        self._graph = None

    def set_local_established(self, remote: PeerName) -> None:
        info = self.ourself.connections.get(remote)
        if info is not None and not info.established:
            info.established = True
            self.ourself.version += 1
            self._graph = None

    def delete_local_connection(self, remote: PeerName) -> None:
        if self.ourself.connections.pop(remote, None) is not None:
            self.ourself.version += 1
            self._graph = None

    # --- merging -------------------------------------------------------------------------

    def apply_update(self, payload: bytes) -> UpdateResult:
        decoded = decode_topology(payload)
        unknown = {p.name for p, _ in decoded} | {c.remote for _, cs in decoded for c in cs}
        unknown -= self.peers.keys()
        if len(self.peers) + len(unknown) > MAX_PEERS:
            raise TopologyError(f"topology update would make more than {MAX_PEERS} peers")
        if any(len(p.nickname) > MAX_NICKNAME for p, _ in decoded):
            raise TopologyError(f"topology update with a nickname over {MAX_NICKNAME} characters")
        new_names: set[PeerName] = set()
        for peer, _ in decoded:
            if peer.name not in self.peers:
                self.peers[peer.name] = peer
                new_names.add(peer.name)
        for _, conns in decoded:
            for c in conns:
                if c.remote not in self.peers:
                    self.peers[c.remote] = Peer(c.remote)
                    new_names.add(c.remote)

        improved: set[PeerName] = set()
        local_changed = False
        for received, conns in decoded:
            existing = self.peers[received.name]
            if existing is self.ourself:
                if received.uid != existing.uid and received.version >= existing.version:
                    # Someone gossips about an older incarnation of us: supersede it.
                    existing.version = received.version + 1
                    local_changed = True
                continue
            if existing is received:
                existing.connections = {c.remote: c for c in conns}
                improved.add(received.name)
                continue
            if received.version < existing.version or (
                received.version == existing.version
                and (
                    received.uid < existing.uid
                    or (
                        received.uid == existing.uid
                        and (not received.has_short_id or existing.has_short_id)
                    )
                )
            ):
                continue
            existing.version = received.version
            existing.uid = received.uid
            existing.nickname = received.nickname
            existing.connections = {c.remote: c for c in conns}
            existing.short_id = received.short_id
            existing.has_short_id = received.has_short_id
            improved.add(received.name)

        if new_names or improved:
            self._graph = None
        removed = self.garbage_collect()
        for peer in removed:
            improved.discard(peer.name)
        if self.reassign_short_id_if_lost():
            local_changed = True
        return UpdateResult(
            received=frozenset(p.name for p, _ in decoded),
            improved=frozenset(improved),
            removed=tuple(removed),
            local_changed=local_changed,
        )

    def garbage_collect(self) -> list[Peer]:
        """Drop peers unreachable over any connection and not referenced by ours."""
        _, reached = bfs(self.graph(), self.us, established=False)
        removed = [p for n, p in self.peers.items() if n not in reached and p.local_refs == 0]
        for p in removed:
            del self.peers[p.name]
        if removed:
            self._graph = None
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
        return [self.topology.encode(sorted(self.names))]

    def merge(self, other: GossipDataLike) -> TopologyGossipData:
        if not isinstance(other, TopologyGossipData):
            raise TypeError("cannot merge topology data with another channel's data")
        return TopologyGossipData(self.topology, self.names | other.names)
