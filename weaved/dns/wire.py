"""The `nameserver` channel payload: gob `GossipData{Timestamp, Entries}` (FACTS.md §6). Pure.

Weave encodes each payload with a fresh gob encoder, so every message carries the type
definitions of GossipData, Entries and Entry; ours come out byte-identical to Go's for the
same value (type ids from 65), entries sorted case-sensitively first as Weave does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from weaved.dns.zone import Entry, wire_order
from weaved.errors import ProtocolError
from weaved.mesh.gob import Decoder, Encoder
from weaved.mesh.gob.weave_types import DNS_GOSSIP_DATA
from weaved.mesh.gossip_api import PeerName

_MAX_PEER_NAME = (1 << 48) - 1
_MAX_ADDR = (1 << 32) - 1


def encode_gossip(
    timestamp: int, entries: Iterable[Entry], encoder: Encoder | None = None
) -> bytes:
    """One complete gob stream holding a GossipData (`encoder`: to continue a stream)."""
    value = {
        "Timestamp": timestamp,
        "Entries": [
            {
                "ContainerID": e.container_id,
                "Origin": int(e.origin),
                "Addr": e.addr,
                "Hostname": e.hostname,
                "Version": e.version,
                "Tombstone": e.tombstone,
            }
            for e in sorted(entries, key=wire_order)
        ],
    }
    return (encoder or Encoder()).encode(DNS_GOSSIP_DATA, value)


def _entry(raw: dict[str, Any], origins: dict[int, PeerName]) -> Entry:
    addr = raw["Addr"]
    origin = origins.setdefault(raw["Origin"], raw["Origin"])
    if origin > _MAX_PEER_NAME:
        raise ProtocolError(f"nameserver entry with an impossible peer name {origin:#x}")
    if addr > _MAX_ADDR:
        # Go decodes Addr into a uint32 and fails the whole message the same way.
        raise ProtocolError(f"nameserver entry address {addr} does not fit 32 bits")
    return Entry(
        container_id=raw["ContainerID"],
        origin=origin,
        addr=addr,
        hostname=raw["Hostname"],
        version=raw["Version"],
        tombstone=raw["Tombstone"],
    )


def decode_gossip(payload: bytes) -> tuple[int, list[Entry]]:
    """(Timestamp, entries) of a payload; ProtocolError (GobError) for garbage.

    Like Go's decoder, only the first value is read; anything after it is ignored.
    """
    value = Decoder(payload).next(DNS_GOSSIP_DATA)
    # One int per origin, not one per entry: the zone keeps them (32 bytes a name).
    origins: dict[int, PeerName] = {}
    return value["Timestamp"], [_entry(raw, origins) for raw in value["Entries"]]
