"""IPAM's errors, inside weaved's one exception tree.

Merge refusals are `weaved.ipam.ring.RingError` (a `ProtocolError`: the peer sent something we
cannot accept). The classes here are answers to local requests (allocate, claim, release,
rmpeer) and persistence problems.
"""

from __future__ import annotations

from weaved.errors import WeavedError


class IpamError(WeavedError):
    """A request to the allocator cannot be satisfied; the message says why."""


class OutOfRangeError(IpamError):
    """The requested subnet does not overlap the allocation range."""


class AddressInUseError(IpamError):
    """A claimed address belongs to another container here or to another peer."""


class NotInitializedError(IpamError):
    """A claim inside the range arrived before any ring exists (consensus not reached)."""


class NotFoundError(IpamError):
    """Nothing is recorded for that container / address."""


class CancelledError(IpamError):
    """A pending request was cancelled (container died, caller gave up, shutdown)."""


class RmpeerRefusedError(IpamError):
    """rmpeer was asked for ourselves, an unknown peer, or a peer that is still reachable."""


class PersistError(WeavedError):
    """The IPAM state file cannot be read or written; the operator must look at it.

    A corrupt file is never silently replaced: that could hand out addresses already in use.
    """
