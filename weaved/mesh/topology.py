"""The peers table and the `topology` channel payloads (FACTS.md §1, §4). Pure.

Holds every known peer with the connections it reports; our own record carries our live
connections. Merging follows Weave: unknown peers are added (names seen only inside
connection lists become placeholders, UID 0), a known peer is replaced only by a higher
version (or equal version and higher UID, or equal both and a newly present short ID), and
news about an older incarnation of ourselves bumps our version past it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from weaved.errors import ProtocolError
from weaved.mesh import gob
from weaved.mesh.gob.weave_types import CONNECTION_SUMMARY_LIST, PEER_SUMMARY
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


def _row(summary: Any, conns: Any) -> tuple[_PeerRow, tuple[_ConnRow, ...]]:
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
    return peer, rows


def _connections(rows: tuple[_ConnRow, ...]) -> dict[PeerName, ConnectionInfo]:
    return {c[0]: ConnectionInfo(*c) for c in rows}


def _decode_rows(payload: bytes) -> _Decoded:
    """Any topology payload, through a fresh gob stream (the general, slower path)."""
    dec = gob.Decoder(payload)
    out: list[tuple[_PeerRow, tuple[_ConnRow, ...]]] = []
    with _as_topology_error():
        while not dec.at_end():
            summary = dec.next(PEER_SUMMARY)
            out.append(_row(summary, dec.next(CONNECTION_SUMMARY_LIST)))
    return tuple(out)


@contextmanager
def _as_topology_error() -> Iterator[None]:
    try:
        yield
    except TopologyError:
        raise
    except gob.GobError as e:
        raise TopologyError(f"bad topology update: {e}") from e
    except Exception as e:  # garbage must surface as a protocol error, never a crash
        raise TopologyError(f"bad topology update: {type(e).__name__}: {e}") from e


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
    """Topology payloads with memoised per-peer records, both ways.

    Gossip re-sends the same peer records over and over; gob-coding them was most of a
    mesh's CPU time. A payload is `[PS defs][PS 1][CL defs][CL 1][PS 2][CL 2]...`, and with
    the type ids every fresh encoder assigns (Go's and ours), a record's value bytes are the
    same in every payload. So encoding caches a record's bytes by its content, and decoding
    splits a payload into records and decodes only those not seen before (an incremental
    update re-decodes just the peers that changed), with one decoder primed once with the
    definitions. A payload framed any other way takes the general path."""

    _MAX_RECORDS = 8192
    _MAX_DECODED = 8192
    _MAX_DIALECTS = 8
    _MAX_DECODED_BYTES = 2 << 20  # keys in total; a peer's record is ~100 bytes + 50 a link

    def __init__(self) -> None:
        enc = gob.Encoder()
        probe = _summary(Peer(PeerName(1)))
        ps_first, ps_again = enc.encode(PEER_SUMMARY, probe), enc.encode(PEER_SUMMARY, probe)
        cl_first, cl_again = (
            enc.encode(CONNECTION_SUMMARY_LIST, []),
            enc.encode(CONNECTION_SUMMARY_LIST, []),
        )
        self._ps_defs = ps_first[: len(ps_first) - len(ps_again)]
        self._cl_defs = cl_first[: len(cl_first) - len(cl_again)]
        self._enc = enc  # both types defined: from now on it emits values only
        self._records: dict[tuple[object, ...], tuple[bytes, bytes]] = {}
        # Decoders primed per pair of definition blocks ("dialect": Weave's type ids differ
        # from ours), each with a serial that keys its records in the shared cache.
        self._dialects: dict[tuple[bytes, bytes], tuple[gob.Decoder, int]] = {}
        self._serial = 0
        self._decoded: dict[tuple[int, bytes], tuple[_PeerRow, tuple[_ConnRow, ...]]] = {}
        self._decoded_bytes = 0
        self.stats = {"records": 0, "decoded": 0, "general": 0}

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
        framed = self._records_of(payload)
        if framed is None:
            self.stats["general"] += 1
            return _decode_rows(payload)
        decoder, serial, spans = framed
        out: list[tuple[_PeerRow, tuple[_ConnRow, ...]]] = []
        cache = self._decoded
        for ps_start, ps_end, cl_start, cl_end in spans:
            if ps_end == cl_start:
                record = payload[ps_start:cl_end]
            else:
                record = payload[ps_start:ps_end] + payload[cl_start:cl_end]
            key = (serial, record)
            row = cache.get(key)
            if row is None:
                try:
                    row = self._decode_record(decoder, record, ps_end - ps_start)
                except TopologyError:  # let the general path judge (and word) it
                    self.stats["general"] += 1
                    return _decode_rows(payload)
                self._remember(key, row)
            out.append(row)
        self.stats["records"] += len(spans)
        return tuple(out)

    def _records_of(
        self, payload: bytes
    ) -> tuple[gob.Decoder, int, list[tuple[int, int, int, int]]] | None:
        """A decoder primed with the payload's definitions, its serial, and (PS start, PS end,
        CL start, CL end) per record, if the payload is framed the usual way: definitions,
        PS, definitions, CL, then PS, CL pairs. None sends it down the general path (which
        also reports what is wrong)."""
        try:
            spans = gob.message_spans(payload)
        except gob.GobError:
            return None
        i = 0
        while i < len(spans) and spans[i][0] < 0:
            i += 1
        ps_at = i
        i += 1
        while i < len(spans) and spans[i][0] < 0:
            i += 1
        cl_at = i
        values = [spans[ps_at], *spans[cl_at:]]
        if cl_at >= len(spans) or len(values) % 2:
            return None
        ps_id, cl_id = spans[ps_at][0], spans[cl_at][0]
        out: list[tuple[int, int, int, int]] = []
        for k in range(0, len(values), 2):
            (pid, ps_start, ps_end), (cid, cl_start, cl_end) = values[k], values[k + 1]
            if pid != ps_id or cid != cl_id:
                return None
            out.append((ps_start, ps_end, cl_start, cl_end))
        ps_start, ps_end, cl_start, cl_end = out[0]
        defs = (payload[:ps_start], payload[ps_end:cl_start])
        primed = self._dialects.get(defs)
        if primed is None:
            try:
                decoder = gob.Decoder(payload[:cl_end])
                decoder.next(PEER_SUMMARY)
                decoder.next(CONNECTION_SUMMARY_LIST)
            except (gob.GobError, RecursionError):
                return None
            self._serial += 1
            primed = (decoder, self._serial)
            if len(self._dialects) >= self._MAX_DIALECTS:
                del self._dialects[next(iter(self._dialects))]
            self._dialects[defs] = primed
        return primed[0], primed[1], out

    def _decode_record(
        self, decoder: gob.Decoder, record: bytes, ps_len: int
    ) -> tuple[_PeerRow, tuple[_ConnRow, ...]]:
        self.stats["decoded"] += 1
        with _as_topology_error():
            summary = decoder.decode_value(record, 0, ps_len, PEER_SUMMARY)
            conns = decoder.decode_value(record, ps_len, len(record), CONNECTION_SUMMARY_LIST)
            return _row(summary, conns)

    def _remember(self, key: tuple[int, bytes], row: tuple[_PeerRow, tuple[_ConnRow, ...]]) -> None:
        cache = self._decoded
        cache[key] = row
        self._decoded_bytes += len(key[1])
        while len(cache) > self._MAX_DECODED or self._decoded_bytes > self._MAX_DECODED_BYTES:
            old = next(iter(cache))  # oldest first
            del cache[old]
            self._decoded_bytes -= len(old[1])


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
        self._graph: dict[PeerName, Mapping[PeerName, bool]] | None = None
        self._graph_dirty: set[PeerName] = set()
        # False when something may have made a peer unreachable or unreferenced since the
        # last garbage collection: an update that changes nothing need not collect again.
        self._settled = False

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
        self._settled = False

    def set_local_established(self, remote: PeerName) -> None:
        info = self.ourself.connections.get(remote)
        if info is not None and not info.established:
            info.established = True
            self.ourself.version += 1
            self._touch((self.us,))
            self._settled = False

    def delete_local_connection(self, remote: PeerName) -> None:
        if self.ourself.connections.pop(remote, None) is not None:
            self.ourself.version += 1
            self._touch((self.us,))
            self._settled = False

    # --- merging -------------------------------------------------------------------------

    def apply_update(self, payload: bytes) -> UpdateResult:
        rows = _CODEC.decode(payload)
        peers = self.peers
        unknown = {p[0] for p, _ in rows} | {c[0] for _, cs in rows for c in cs}
        unknown -= peers.keys()
        if len(peers) + len(unknown) > MAX_PEERS:
            raise TopologyError(f"topology update would make more than {MAX_PEERS} peers")
        if any(len(p[1]) > MAX_NICKNAME for p, _ in rows):
            raise TopologyError(f"topology update with a nickname over {MAX_NICKNAME} characters")

        # Peer objects are made only for what is new or better: most of a gossip round
        # repeats what we hold.
        new_names: set[PeerName] = set()
        improved: set[PeerName] = set()
        local_changed = False
        lost_connections = False
        for (name, nickname, uid, version, short_id, has_short_id), conns in rows:
            existing = peers.get(name)
            if existing is None:
                peers[name] = Peer(name, nickname, uid, version, short_id, has_short_id)
                peers[name].connections = _connections(conns)
                new_names.add(name)
                improved.add(name)
                continue
            if existing is self.ourself:
                if uid != existing.uid and version >= existing.version:
                    # Someone gossips about an older incarnation of us: supersede it.
                    existing.version = version + 1
                    local_changed = True
                continue
            if version < existing.version or (
                version == existing.version
                and (
                    uid < existing.uid
                    or (uid == existing.uid and (not has_short_id or existing.has_short_id))
                )
            ):
                continue
            existing.version = version
            existing.uid = uid
            existing.nickname = nickname
            if not lost_connections:
                lost_connections = not existing.connections.keys() <= {c[0] for c in conns}
            existing.connections = _connections(conns)
            existing.short_id = short_id
            existing.has_short_id = has_short_id
            improved.add(name)
        for _, conns in rows:
            for c in conns:
                if c[0] not in peers:
                    peers[c[0]] = Peer(c[0])
                    new_names.add(c[0])

        removed: list[Peer] = []
        self._touch(new_names)
        self._touch(improved)
        # Collecting is a search of the whole graph; only lost connections, new peers (which
        # may hang on nothing) or lost references can leave a peer unreachable.
        if new_names or lost_connections or not self._settled:
            removed = self.garbage_collect()
            for peer in removed:
                improved.discard(peer.name)
            self._settled = True
        if (new_names or improved) and self.reassign_short_id_if_lost():
            local_changed = True
        return UpdateResult(
            received=frozenset(p[0] for p, _ in rows),
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
        return [self.topology.encode(sorted(self.names))]

    def merge(self, other: GossipDataLike) -> TopologyGossipData:
        if not isinstance(other, TopologyGossipData):
            raise TypeError("cannot merge topology data with another channel's data")
        return TopologyGossipData(self.topology, self.names | other.names)
