"""The IPAM channel's messages as plain values (FACTS §5.1); `wire` turns them into gob bytes.

* gossip (tag 4) and broadcast (tag 6): `IpamGossip` — Weave's `gossipState`;
* unicast (tag 5): a kind byte then `SpaceRequest`/`SpaceRequestDenied` (a `Range`) or
  `RingUpdate` (a `gossipState`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from weaved.ipam.address import Range
from weaved.ipam.paxos import GossipState
from weaved.ipam.ring import Ring
from weaved.mesh.gossip_api import PeerName


class UnicastKind(IntEnum):
    """First byte of an IPAM unicast payload."""

    SPACE_REQUEST = 0
    RING_UPDATE = 1
    SPACE_REQUEST_DENIED = 2


@dataclass(frozen=True)
class IpamGossip:
    """Weave's `gossipState`. `paxos` is only sent while no ring exists; neither present is a
    "no ring yet" announcement (or an observer's request for a ring)."""

    now: int
    nicknames: Mapping[PeerName, str] = field(default_factory=dict)
    paxos: GossipState | None = None
    ring: Ring | None = None


@dataclass(frozen=True)
class SpaceRequest:
    """ "Give me space in this range" (the requester's subnet, or one address for a claim)."""

    range: Range


@dataclass(frozen=True)
class SpaceRequestDenied:
    """ "I have nothing free there"; always followed by a RingUpdate."""

    range: Range


@dataclass(frozen=True)
class RingUpdate:
    """The sender's full state, unicast to one peer (answer to a request or a ring-less peer)."""

    state: IpamGossip


Unicast = SpaceRequest | SpaceRequestDenied | RingUpdate
