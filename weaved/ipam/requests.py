"""What the allocator is configured with, asked, and answers (its vocabulary; no logic).

Configuration (`AllocatorConfig` and the start modes), the `Outbox` its messages go to, the
results of requests (`Allocated`, `Claimed`, `Ready`, `Pending`, a later `Completion`), and the
pending operations the allocator queues and retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from weaved.ipam.address import CIDR
from weaved.ipam.errors import IpamError
from weaved.ipam.messages import Unicast
from weaved.mesh.gossip_api import PeerName

# ---- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedStart:
    """`seed=<names>`: every peer builds the same ring at start, no Paxos."""

    seeds: tuple[PeerName, ...]


@dataclass(frozen=True)
class ConsensusStart:
    """`consensus=N` (or N guessed from the initial peer list): Paxos on first allocation."""

    peer_count: int

    @property
    def quorum(self) -> int:
        return self.peer_count // 2 + 1


@dataclass(frozen=True)
class ObserverStart:
    """`observer`: never votes; asks electors for a ring when it needs one."""


StartMode = SeedStart | ConsensusStart | ObserverStart


@dataclass(frozen=True)
class AllocatorConfig:
    our_name: PeerName
    our_uid: int
    nickname: str
    universe: CIDR
    """The allocation range (`--ipalloc-range`), e.g. 10.32.0.0/12."""
    start: StartMode


class Outbox(Protocol):
    """Where the allocator's messages go (the gossiper encodes and hands them to the mesh)."""

    def unicast(self, dst: PeerName, message: Unicast) -> None:
        """Send now; the content is a snapshot taken at this call."""
        ...

    def broadcast_state(self) -> None:
        """Broadcast our full state; Weave encodes it when the message leaves, not now."""
        ...


# ---- results ------------------------------------------------------------------------------


class PendingReason(StrEnum):
    CONSENSUS = "waiting for consensus"
    SPACE = "waiting for space"
    OWNER = "waiting for the owning peer"


@dataclass(frozen=True)
class Allocated:
    cidr: CIDR


@dataclass(frozen=True)
class Claimed:
    cidr: CIDR


@dataclass(frozen=True)
class Ready:
    """The ring exists (answer to `prime`, Weave's `GET /ring`)."""


@dataclass(frozen=True)
class Pending:
    """Not finished yet: a `Completion` with this `op_id` will follow."""

    op_id: int
    reason: PendingReason


Result = Allocated | Claimed | Ready


@dataclass(frozen=True)
class Completion:
    """The late answer to a request that returned `Pending`: a result or an `IpamError`."""

    op_id: int
    outcome: Result | IpamError


# ---- pending operations -------------------------------------------------------------------


@dataclass(eq=False)
class Op:
    op_id: int
    answered: bool = field(default=False, init=False)
    answer: Result | IpamError | None = field(default=None, init=False)
    queued: bool = field(default=False, init=False)


@dataclass(eq=False, kw_only=True)
class AllocateOp(Op):
    ident: str
    subnet: CIDR
    is_container: bool = True


@dataclass(eq=False, kw_only=True)
class ClaimOp(Op):
    ident: str
    cidr: CIDR
    is_container: bool = True
    no_error_on_unknown: bool = False
    tries: int = 0


@dataclass(eq=False)
class PrimeOp(Op):
    pass


AnyOp = PrimeOp | ClaimOp | AllocateOp


@dataclass(frozen=True)
class PendingClaimInfo:
    ident: str
    cidr: CIDR


@dataclass(frozen=True)
class PendingAllocateInfo:
    ident: str
    subnet: CIDR
