"""Peer identity on the mesh: UIDs, short IDs, nicknames (FACTS.md §1).

The name itself (parse, format, the default-name derivation) is `weaved.spec.identity`'s, since
the engine needs it too; it is re-exported here for the mesh's modules.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Collection

# The name itself and its derivation live with the spec (below the engine, which needs them).
from weaved.spec.identity import (
    NAME_SALT,
    UNKNOWN_PEER,
    PeerName,
    PeerNameError,
    SystemIDs,
    SystemIDsBlank,
    derive_peer_name,
    format_peer_name,
    name_from_hash,
    parse_peer_name,
    read_system_ids,
)

__all__ = [
    "NAME_SALT",
    "SHORT_ID_BITS",
    "UNKNOWN_PEER",
    "PeerName",
    "PeerNameError",
    "SystemIDs",
    "SystemIDsBlank",
    "choose_short_id",
    "default_nickname",
    "derive_peer_name",
    "format_peer_name",
    "name_from_hash",
    "parse_peer_name",
    "peer_name_from_bytes",
    "peer_name_to_bytes",
    "random_conn_id",
    "random_short_id",
    "random_uid",
    "read_system_ids",
]

SHORT_ID_BITS = 12
MAX_NAME = (1 << 48) - 1


def peer_name_from_bytes(raw: bytes) -> PeerName:
    """Six big-endian bytes (gob `NameByte`, sleeve headers) -> name."""
    if len(raw) != 6:
        raise ValueError(f"peer name must be 6 bytes, got {len(raw)}")
    return PeerName(int.from_bytes(raw, "big"))


def peer_name_to_bytes(name: int) -> bytes:
    return name.to_bytes(6, "big")


def default_nickname() -> str:
    return socket.gethostname()


def random_uid(rng: random.Random | None = None) -> int:
    """A fresh incarnation id: random, non-zero (0 marks placeholder peers)."""
    r = rng or random.SystemRandom()
    while True:
        uid = r.getrandbits(64)
        if uid:
            return uid


def random_conn_id(rng: random.Random | None = None) -> int:
    return (rng or random.SystemRandom()).getrandbits(64)


def random_short_id(rng: random.Random | None = None) -> int:
    return (rng or random.SystemRandom()).randrange(1 << SHORT_ID_BITS)


def choose_short_id(
    taken: Collection[int] | Callable[[int], bool], rng: random.Random
) -> int | None:
    """Weave's pick after losing a collision: 10 random tries, then uniform among free IDs.

    `taken` is the set of short IDs that currently have an owner (or a predicate)."""
    is_taken: Callable[[int], bool] = taken if callable(taken) else taken.__contains__
    size = 1 << SHORT_ID_BITS
    for _ in range(10):
        candidate = rng.randrange(size)
        if not is_taken(candidate):
            return candidate
    free = [i for i in range(size) if not is_taken(i)]
    if not free:
        return None
    return free[rng.randrange(len(free))]


def short_name(name: PeerName) -> str:
    return format_peer_name(name) if name != UNKNOWN_PEER else "00:00:00:00:00:00"
