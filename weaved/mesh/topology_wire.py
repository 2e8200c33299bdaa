"""Peer records (`Peer`, `ConnectionInfo`) and the `topology` channel's payload codec
(FACTS.md §4). Pure.

A payload is, per peer, a gob `peerSummary` then its `connectionSummary` list. Most gossip
repeats records we have seen, so `PayloadCodec` memoises each peer's encoded record and decodes
only the records it does not know (one codec, `CODEC`, is shared by every topology).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from weaved.errors import ProtocolError
from weaved.mesh import gob
from weaved.mesh.gob.weave_types import CONNECTION_SUMMARY_LIST, PEER_SUMMARY
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.peername import peer_name_to_bytes

__all__ = [
    "CODEC",
    "ConnectionInfo",
    "PayloadCodec",
    "Peer",
    "Row",
    "TopologyError",
    "decode_topology",
]


class TopologyError(ProtocolError):
    """A topology payload that does not decode (or would grow the table beyond its bounds)."""


MAX_NICKNAME = 255  # a host name; Weave's nicknames are host names


class ConnectionInfo(NamedTuple):
    """A connection as a peer reports it (for our own peer: a live connection). A tuple: the
    decoded records hold these, and a peer's table entry shares them (no copy per update)."""

    remote: PeerName
    address: str
    outbound: bool
    established: bool


@dataclass(slots=True)
class Peer:
    """A peer's record. A remote peer's `connections` dict is replaced, never changed in
    place; every change to our own record bumps its version (the encoding memo relies on it)."""

    name: PeerName
    nickname: str = ""
    uid: int = 0  # 0: placeholder, known only as the far end of someone's connection
    version: int = 0
    short_id: int = 0
    has_short_id: bool = False
    connections: dict[PeerName, ConnectionInfo] = field(default_factory=dict)
    local_refs: int = 0  # our connections (and attempts) that point at this peer
    # (summary fields, the connections dict it was made from, their count, the encoded record)
    wire: tuple[object, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def placeholder(self) -> bool:
        return self.uid == 0


def _name_from_bin(raw: object) -> PeerName:
    if not isinstance(raw, bytes) or not 0 < len(raw) <= 8:
        raise TopologyError(f"bad peer name bytes in topology update: {raw!r}")
    return PeerName(int.from_bytes(raw, "big"))


_PeerRow = tuple[PeerName, str, int, int, int, bool]
_Connections = dict[PeerName, ConnectionInfo]
Wire = tuple[bytes, bytes]
Row = tuple[_PeerRow, _Connections, Wire | None]
"""A decoded record: the summary's fields, the connections by remote name, and the record's
bytes when they are exactly what our encoder writes for it (then relaying the record sends
them as they came, see `memo`). The dict is shared by every table entry made from the record
(the codec's cache hands the same row out again): never modified, as `Peer` says."""
_Decoded = tuple[Row, ...]


def decode_topology(payload: bytes) -> list[tuple[Peer, list[ConnectionInfo]]]:
    """The (peer, connections) pairs of a topology payload, as fresh objects; raises
    `TopologyError`."""
    rows = CODEC.decode(payload)
    return [(Peer(*peer), list(conns.values())) for peer, conns, _ in rows]


def _row(summary: Any, conns: Any) -> Row:
    if not isinstance(summary, dict) or not isinstance(conns, list):
        raise TopologyError("topology update items have unexpected types")
    nickname = str(summary["NickName"])
    if len(nickname) > MAX_NICKNAME:
        raise TopologyError(f"topology update with a nickname over {MAX_NICKNAME} characters")
    peer: _PeerRow = (
        _name_from_bin(summary["NameByte"]),
        nickname,
        int(summary["UID"]),
        int(summary["Version"]),
        int(summary["ShortID"]),
        bool(summary["HasShortID"]),
    )
    connections: _Connections = {}
    for c in conns:  # a remote named twice: the last entry stands (Go's map does the same)
        info = ConnectionInfo(
            _name_from_bin(c["NameByte"]),
            str(c["RemoteTCPAddr"]),
            bool(c["Outbound"]),
            bool(c["Established"]),
        )
        connections[info.remote] = info
    return peer, connections, None


def _decode_rows(payload: bytes) -> _Decoded:
    """Any topology payload, through a fresh gob stream (the general, slower path)."""
    dec = gob.Decoder(payload)
    out: list[Row] = []
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
    return _summary_of(
        (peer.name, peer.nickname, peer.uid, peer.version, peer.short_id, peer.has_short_id)
    )


def _summary_of(row: _PeerRow) -> dict[str, Any]:
    name, nickname, uid, version, short_id, has_short_id = row
    return {
        "NameByte": peer_name_to_bytes(name),
        "NickName": nickname,
        "UID": uid,
        "Version": version,
        "ShortID": short_id,
        "HasShortID": has_short_id,
    }


def memo(peer: Peer, wire: Wire) -> None:
    """`wire` is `peer`'s encoded record as it is now (a decoded row's bytes)."""
    head = (peer.version, peer.uid, peer.nickname, peer.short_id, peer.has_short_id)
    peer.wire = (head, peer.connections, len(peer.connections), wire)


def _conn_summary(c: ConnectionInfo) -> dict[str, Any]:
    return {
        "NameByte": peer_name_to_bytes(c.remote),
        "RemoteTCPAddr": c.address,
        "Outbound": c.outbound,
        "Established": c.established,
    }


class PayloadCodec:
    """Topology payloads with memoised per-peer records, both ways.

    Gossip re-sends the same peer records over and over; gob-coding them was most of a
    mesh's CPU time. A payload is `[PS defs][PS 1][CL defs][CL 1][PS 2][CL 2]...`, and with
    the type ids every fresh encoder assigns (Go's and ours), a record's value bytes are the
    same in every payload. So encoding caches a record's bytes by its content, and decoding
    splits a payload into records and decodes only those not seen before (an incremental
    update re-decodes just the peers that changed), with one decoder primed once with the
    definitions. A payload framed any other way takes the general path."""

    # Repeats arrive within moments (from each neighbour, in each periodic round), so a few
    # records per peer of a 250-peer mesh is plenty; a decoded record costs ~4x its bytes.
    _MAX_RECORDS = 2048
    # Encodings of one peer's record kept (its latest versions): each connection made or lost
    # is a new version of our own record, which a churn of peer restarts makes twice a
    # restart (a 250-link record: 12 kB, plus a key of 250 ConnectionInfo); old ones stayed
    # until 2 048 were cached, ~30 MB (bench/memory's target grew ~0.25 MB/min for hours).
    _RECORDS_PER_PEER = 4
    _MAX_DECODED = 2048
    _MAX_DIALECTS = 8
    _MAX_DECODED_BYTES = 1 << 20  # keys in total; a peer's record is ~100 bytes + 50 a link
    # Key bytes of one peer's decoded records (its versions in flight; the newest is always
    # kept). Without this bound a churn of peer restarts filled the cache with old versions
    # of the best-connected peers' records (a 250-link record: 12 kB of key, 250
    # ConnectionInfo): bench/memory's target grew ~5 MB over a 10-minute churn, +25 000
    # ConnectionInfo, until the 1 MB bound. Small records keep many versions (bench/mesh's
    # 250 routers in one process share this cache, each with its own view of a peer).
    _DECODED_BYTES_PER_PEER = 32 << 10

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
        self._encoded_of: dict[PeerName, list[tuple[object, ...]]] = {}  # oldest first
        # Decoders primed per pair of definition blocks ("dialect": Weave's type ids differ
        # from ours), each with a serial that keys its records in the shared cache.
        self._dialects: dict[tuple[bytes, bytes], tuple[gob.Decoder, int]] = {}
        self._serial = 0
        self._decoded: dict[tuple[int, bytes], Row] = {}
        self._decoded_bytes = 0
        # per peer: its keys in the cache, oldest first, and their bytes
        self._decoded_of: dict[PeerName, tuple[dict[tuple[int, bytes], None], list[int]]] = {}
        self.stats = {"records": 0, "decoded": 0, "general": 0}

    def _record(self, peer: Peer) -> tuple[bytes, bytes]:
        # The peer's own memo first: building the content key below walks its connections.
        head = (peer.version, peer.uid, peer.nickname, peer.short_id, peer.has_short_id)
        conns_now = peer.connections
        memo = peer.wire
        if (
            memo is not None
            and memo[1] is conns_now
            and memo[2] == len(conns_now)
            and memo[0] == head
        ):
            return memo[3]  # type: ignore[return-value]
        cached = self._record_by_content(peer)
        peer.wire = (head, conns_now, len(conns_now), cached)
        return cached

    def _record_by_content(self, peer: Peer) -> tuple[bytes, bytes]:
        key = (
            peer.name,
            peer.nickname,
            peer.uid,
            peer.version,
            peer.short_id,
            peer.has_short_id,
            tuple(peer.connections.values()),
        )
        cached = self._records.get(key)
        if cached is None:
            if len(self._records) >= self._MAX_RECORDS:
                self._records.clear()
                self._encoded_of.clear()
            conns = [_conn_summary(c) for c in peer.connections.values()]
            cached = self._encode_record(_summary(peer), conns)
            self._records[key] = cached
            keys = self._encoded_of.setdefault(peer.name, [])
            keys.append(key)
            if len(keys) > self._RECORDS_PER_PEER:
                del self._records[keys.pop(0)]
        return cached

    def _encode_record(self, summary: dict[str, Any], conns: list[dict[str, Any]]) -> Wire:
        return (
            self._enc.encode(PEER_SUMMARY, summary),
            self._enc.encode(CONNECTION_SUMMARY_LIST, conns),
        )

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
        out: list[Row] = []
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
        if cl_at >= len(spans):  # also an empty payload: no records (the general path says so)
            return None
        values = [spans[ps_at], *spans[cl_at:]]
        if len(values) % 2:
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

    def _decode_record(self, decoder: gob.Decoder, record: bytes, ps_len: int) -> Row:
        self.stats["decoded"] += 1
        with _as_topology_error():
            summary = decoder.decode_value(record, 0, ps_len, PEER_SUMMARY)
            conns = decoder.decode_value(record, ps_len, len(record), CONNECTION_SUMMARY_LIST)
            peer, connections, _ = _row(summary, conns)
        # Relayed as they came only if byte for byte what we would write: then no peer can
        # tell (our type ids, Go's canonical value encoding; anything else is re-encoded).
        wire = (record[:ps_len], record[ps_len:])
        ours = self._encode_record(
            _summary_of(peer), [_conn_summary(c) for c in connections.values()]
        )
        return peer, connections, wire if wire == ours else None

    def _remember(self, key: tuple[int, bytes], row: Row) -> None:
        cache = self._decoded
        cache[key] = row
        self._decoded_bytes += len(key[1])
        keys, held = self._decoded_of.setdefault(row[0][0], ({}, [0]))
        keys[key] = None
        held[0] += len(key[1])
        while held[0] > self._DECODED_BYTES_PER_PEER and len(keys) > 1:
            self._forget(next(iter(keys)))
        while len(cache) > self._MAX_DECODED or self._decoded_bytes > self._MAX_DECODED_BYTES:
            self._forget(next(iter(cache)))  # oldest first

    def _forget(self, key: tuple[int, bytes]) -> None:
        """Out of the cache and out of its peer's list: a key the cache dropped (its oldest,
        at its bound) that a peer's list kept held its record's bytes (up to 32 kB a peer:
        8 MB beside the 1 MB cache with 250 peers)."""
        row = self._decoded.pop(key, None)
        if row is None:
            return
        self._decoded_bytes -= len(key[1])
        peer = row[0][0]
        keys, held = self._decoded_of[peer]
        del keys[key]
        held[0] -= len(key[1])
        if not keys:
            del self._decoded_of[peer]

    def records_held(self) -> int:
        """Decoded records in the cache (for tests: it must not grow with a peer's history)."""
        return len(self._decoded)


CODEC = PayloadCodec()
