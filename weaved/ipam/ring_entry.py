"""The ring's entries and its errors: what `ring`, its merge and its wire form share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from weaved.errors import ProtocolError
from weaved.ipam.address import Range, format_ip
from weaved.mesh.gossip_api import PeerName, format_peer_name

__all__ = [
    "DifferentRangeError",
    "DifferentSeedsError",
    "Entry",
    "HasAllocations",
    "OwnershipConflictError",
    "RangeInfo",
    "RingError",
    "RingInvariantError",
]

HasAllocations = Callable[[list[Range]], bool]
"""Asks the allocator whether we handed out any address inside these ranges."""


class RingError(ProtocolError):
    """A received ring cannot be merged into ours; the connection that carried it is closed."""


class RingInvariantError(RingError):
    """The ring breaks a structural rule (order, duplicates, range, free counts)."""


class DifferentSeedsError(RingError):
    """The other ring was created from a different peer list: two separate IPAM networks."""


class DifferentRangeError(RingError):
    """The other ring covers a different allocation range (`--ipalloc-range` differs)."""


class OwnershipConflictError(RingError):
    """The other ring takes over addresses we own and have allocated."""


@dataclass(frozen=True)
class Entry:
    """Ownership of `[token, next token)`."""

    token: int
    peer: PeerName
    version: int = 0
    free: int = 0

    def same_claim(self, other: Entry) -> bool:
        """Weave's `entry.Equal`: token, owner and version (free is not compared)."""
        return (self.token, self.peer, self.version) == (other.token, other.peer, other.version)

    def __str__(self) -> str:
        return f"{format_ip(self.token)} -> {format_peer_name(self.peer)} (v{self.version})"


@dataclass(frozen=True)
class RangeInfo:
    """One contiguous piece of the ring for status output (wrapping entries are split)."""

    peer: PeerName
    range: Range
    version: int
