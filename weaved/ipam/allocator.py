"""The IPAM allocator: ring + space + consensus + owned addresses, as a sans-I/O object.

Everything comes in as a method call carrying `now` (allocation requests, decoded messages,
ticks, topology changes) and goes out through an `Outbox` (messages to send) and an
`on_complete` callback (answers to requests that had to wait). Weave runs the same logic as a
single-threaded actor; here the caller (the daemon's event loop) provides the single thread.

Requests that cannot finish at once — no ring yet, no free space, a claimed address owned by
another peer — return `Pending(op_id, reason)`; the answer arrives later as a `Completion`.
Pending work is retried on every ring change and on `tick` (every 5 s, like Weave). Release
and detach never wait.

The class is built in layers, one module each: `state` (what a peer knows, owned addresses,
persistence) ← `consensus` (getting a ring, merging, donating space) ← `attempts` (one try at
allocate, claim, prime) ← here (the API and the queue of pending requests).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from weaved.errors import Bug
from weaved.ipam.address import CIDR, Range, format_ip
from weaved.ipam.attempts import RequestAttempts
from weaved.ipam.errors import CancelledError, IpamError, NotFoundError, RmpeerRefusedError
from weaved.ipam.messages import IpamGossip
from weaved.ipam.owned import Owned
from weaved.ipam.paxos import PaxosStatus
from weaved.ipam.requests import (
    Allocated,
    AllocateOp,
    AllocatorConfig,
    AnyOp,
    Claimed,
    ClaimOp,
    Completion,
    ConsensusStart,
    ObserverStart,
    Op,
    Outbox,
    Pending,
    PendingAllocateInfo,
    PendingClaimInfo,
    PendingReason,
    PrimeOp,
    Ready,
    Result,
    SeedStart,
    StartMode,
)
from weaved.mesh.gossip_api import UNKNOWN_PEER, PeerName

__all__ = [
    "TICK_INTERVAL",
    "Allocated",
    "Allocator",
    "AllocatorConfig",
    "Claimed",
    "Completion",
    "ConsensusStart",
    "ObserverStart",
    "Pending",
    "PendingAllocateInfo",
    "PendingClaimInfo",
    "PendingReason",
    "Ready",
    "SeedStart",
    "StartMode",
]

log = logging.getLogger(__name__)

TICK_INTERVAL = 5.0
"""Seconds between `tick` calls the daemon should make (Weave's ticker)."""


class Allocator(RequestAttempts):
    """One peer's allocator. Call `attach` (outbox) and `start` before anything else."""

    # ---- lifecycle ------------------------------------------------------------------------

    def attach(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def start(self, now: float) -> None:
        """Load persisted state (or build the seed ring); call once, after `attach`."""
        self.now = now
        # An empty persisted ring (saved before consensus) does not override a seed.
        loaded = self._load_persisted() and not self.ring.empty()
        start = self.config.start
        if loaded and isinstance(start, SeedStart):
            self._info("Found persisted IPAM data, ignoring supplied IPAM seed")
        elif loaded:
            self._info("Initialising with persisted data")
        elif isinstance(start, SeedStart):
            self._info("Initialising with supplied IPAM seed")
            self._create_ring(start.seeds)
        elif self.paxos.is_elector:
            self._info("Initialising via deferred consensus")
        else:
            self._info("Initialising as observer - awaiting IPAM data from another peer")
        self._finish()

    # ---- requests -------------------------------------------------------------------------

    def allocate(
        self, ident: str, subnet: CIDR, now: float, *, is_container: bool = True
    ) -> Allocated | Pending:
        """Lowest free address of `subnet`'s host range for `ident` (its existing one if any).

        Raises `IpamError` (out of range, cancelled by shutdown).
        """
        op = AllocateOp(self._new_op_id(), ident=ident, subnet=subnet, is_container=is_container)
        outcome = self._run(op, now)
        if isinstance(outcome, Pending | Allocated):
            return outcome
        raise Bug(f"allocate answered {outcome!r}")

    def claim(
        self,
        ident: str,
        cidr: CIDR,
        now: float,
        *,
        is_container: bool = True,
        no_error_on_unknown: bool = False,
    ) -> Claimed | Pending:
        """Record `cidr` (a specific address) for `ident`.

        Addresses outside the allocation range are simply recorded. Inside it, an address of
        ours is taken if free; one owned by another peer is requested from it (pending until
        it answers); before any ring exists the claim fails with `NotInitializedError` — or,
        with `no_error_on_unknown`, succeeds now and is completed in the background.
        Raises `AddressInUseError` with the reason when it is someone else's.
        """
        op = ClaimOp(
            self._new_op_id(),
            ident=ident,
            cidr=cidr,
            is_container=is_container,
            no_error_on_unknown=no_error_on_unknown,
        )
        outcome = self._run(op, now)
        if isinstance(outcome, Pending | Claimed):
            return outcome
        raise Bug(f"claim answered {outcome!r}")

    def prime(self, now: float) -> Ready | Pending:
        """Make sure a ring exists, starting consensus if needed (Weave's `GET /ring`)."""
        op = PrimeOp(self._new_op_id())
        outcome = self._run(op, now)
        if isinstance(outcome, Pending | Ready):
            return outcome
        raise Bug(f"prime answered {outcome!r}")

    def cancel(self, op_id: int) -> bool:
        """Give up on a pending request (the caller went away); True if it was pending."""
        for op in self._all_pending():
            if op.op_id == op_id:
                self._dequeue(op)
                self._answer(op, CancelledError(f"request {op_id} cancelled"))
                return True
        return False

    def owned_addresses(self) -> dict[str, tuple[CIDR, ...]]:
        """Every identifier and its addresses (for `GET /ip` and `ps`-like listings)."""
        return {ident: o.cidrs for ident, o in self.owned.items()}

    def release(self, ident: str, now: float) -> tuple[CIDR, ...]:
        """Free every address of `ident` and cancel its pending requests; returns what was
        freed (empty if nothing was recorded). Never waits for other peers."""
        self.now = now
        self._cancel_for(ident)
        self.dead.pop(ident, None)
        owned = self.owned.pop(ident, None)
        if owned is None:
            self._finish()
            return ()
        for c in owned.cidrs:
            if self.space.is_allocated(c.addr):
                self.space.free(c.addr)
        self._dirty = True
        self._finish()
        return owned.cidrs

    def release_address(self, ident: str, addr: int, now: float) -> CIDR:
        """Free one address of `ident`; `NotFoundError` if `ident` does not hold it."""
        self.now = now
        owned = self.owned.get(ident)
        match = next((c for c in owned.cidrs if c.addr == addr), None) if owned else None
        if owned is None or match is None:
            raise NotFoundError(f"Free: address {format_ip(addr)} not found for {ident}")
        rest = tuple(c for c in owned.cidrs if c is not match)
        if rest:
            self.owned[ident] = Owned(rest, owned.is_container)
        else:
            del self.owned[ident]
        if self.space.is_allocated(addr):
            self.space.free(addr)
        self._dirty = True
        self._finish()
        return match

    def prune_owned(self, live_containers: Iterable[str], now: float) -> list[str]:
        """Release every container not in `live_containers` (after a restart); identifiers
        that are not containers (`weave:expose`) are kept. Returns the released ones."""
        live = set(live_containers)
        gone = [i for i, o in self.owned.items() if o.is_container and i not in live]
        for ident in gone:
            self.release(ident, now)
        return gone

    def container_died(self, ident: str, now: float) -> None:
        """Keep its addresses for `CONTAINER_DIED_TIMEOUT` in case it restarts; cancel its
        pending requests now."""
        self.now = now
        if ident in self.owned:
            self.dead[ident] = now
        self._cancel_for(ident)
        self._finish()

    def container_started(self, ident: str) -> None:
        self.dead.pop(ident, None)

    # ---- mesh inputs ----------------------------------------------------------------------

    def on_gossip_state(self, sender: PeerName | None, state: IpamGossip, now: float) -> None:
        """A received `gossipState`: `sender` is the broadcast originator or unicast sender,
        None for periodic gossip (tag 4), to which we never reply. Raises `RingError`."""
        self.now = now
        try:
            self._update(sender, state)
        finally:
            self._finish()

    def on_space_request(self, sender: PeerName, r: Range, now: float) -> None:
        self.now = now
        if self.ring.empty():
            # Nothing to give yet; kept (once per sender and range) until the ring arrives.
            if (sender, r) not in self.early_space_requests:
                self.early_space_requests.append((sender, r))
        else:
            self._donate_space(r, sender)
        self._finish()

    def on_space_request_denied(self, sender: PeerName, r: Range, now: float) -> None:
        self.now = now
        for op in list(self.pending_claims):
            if r.contains(op.cidr.addr):
                self.pending_claims.remove(op)
                self._answer(op, self._denied(op, sender))
        self._finish()

    def tick(self, now: float) -> None:
        """Every `TICK_INTERVAL`: re-propose while awaiting consensus (messages may have been
        lost), else retry pending requests; forget containers dead for long enough."""
        self.now = now
        if self.awaiting_consensus:
            self._propose()
        else:
            self._try_pending_ops()
        self._remove_dead_containers()
        self._finish()

    def peers_changed(self, now: float) -> None:
        """Topology changed: drop nicknames nobody needs, and retry (a donor may be back)."""
        self.now = now
        self._prune_nicknames()
        if not self.awaiting_consensus:
            self._try_pending_ops()
        self._finish()

    # ---- admin ----------------------------------------------------------------------------

    def shutdown(self, now: float) -> PeerName | None:
        """Hand all our ranges to an heir (version + 100, broadcast, no acknowledgement), as
        `weave reset` does. Pending requests are cancelled. Returns the heir, if any."""
        self.now = now
        self._info("Shutdown")
        self.shutting_down = True
        for op in self._all_pending():
            self._dequeue(op)
            self._answer(op, CancelledError(self._cancel_text(op)))
        heir = self._pick_heir()
        if heir != UNKNOWN_PEER:
            self.ring.transfer(self.our_name, heir)
            self._dirty = True
            self.space.clear()
            self.outbox.broadcast_state()
        self._finish()
        return None if heir == UNKNOWN_PEER else heir

    def rmpeer(self, peer: str | PeerName, now: float) -> int:
        """Take over the ranges of a dead peer (name or nickname); returns how many addresses
        we gained. Refused for ourselves and unknown names. Whether the peer is really gone is
        the operator's call (Weave's too): the caller refuses peers connected to us and warns
        that running rmpeer for the same peer on two hosts gives its space twice."""
        self.now = now
        name = self.lookup_peer(peer)
        if name == self.our_name:
            raise RmpeerRefusedError("cannot take over ranges from ourselves")
        moved = self.ring.transfer(name, self.our_name)
        if not moved:
            self._finish()
            return 0
        before = self.space.num_free()
        self._ring_updated()
        gained = self.space.num_free() - before
        self.outbox.broadcast_state()
        self._finish()
        return gained

    def describe(self, name: PeerName) -> str:
        """A peer as Weave prints it: `NAME(nickname)`."""
        return self._annotate(name)

    def pending_detail(self, op_id: int) -> str | None:
        """Why a pending request still waits, in words (None if it is not pending)."""
        op = next((o for o in self._all_pending() if o.op_id == op_id), None)
        if op is None:
            return None
        if isinstance(op, ClaimOp):
            addr = format_ip(op.cidr.addr)
            owner = self.ring.owner(op.cidr.addr)
            if owner == UNKNOWN_PEER:
                return (
                    f"{addr} is in the range {self.universe},"
                    " but the allocator is not initialized yet"
                )
            reach = "" if self.is_reachable(owner) else ", which is unreachable"
            return f"{addr} is owned by peer {self._annotate(owner)}{reach}"
        if isinstance(op, AllocateOp):
            if self.ring.empty():
                return f"no address in {op.subnet} yet: the allocator is not initialized yet"
            return f"no free address in {op.subnet} on this peer; asking other peers for space"
        return "the allocator is not initialized yet"

    def paxos_status(self) -> PaxosStatus | None:
        """Consensus progress while awaiting it, else None."""
        return self.paxos.status() if self.awaiting_consensus else None

    def pending_claim_info(self) -> list[PendingClaimInfo]:
        return [PendingClaimInfo(op.ident, op.cidr) for op in self.pending_claims]

    def pending_allocate_info(self) -> list[PendingAllocateInfo]:
        return [PendingAllocateInfo(op.ident, op.subnet) for op in self.pending_allocates]

    # ---- internals: operations ------------------------------------------------------------

    def _new_op_id(self) -> int:
        op_id = self._next_op
        self._next_op += 1
        return op_id

    def _all_pending(self) -> list[AnyOp]:
        """A snapshot in retry order: primes, then claims (existing addresses first), then
        allocations."""
        return [*self.pending_primes, *self.pending_claims, *self.pending_allocates]

    def _enqueue(self, op: AnyOp) -> None:
        op.queued = True
        if isinstance(op, PrimeOp):
            self.pending_primes.append(op)
        elif isinstance(op, ClaimOp):
            self.pending_claims.append(op)
        else:
            self.pending_allocates.append(op)

    def _is_queued(self, op: AnyOp) -> bool:
        return any(op is other for other in self._all_pending())

    def _dequeue(self, op: AnyOp) -> None:
        if isinstance(op, PrimeOp):
            self.pending_primes.remove(op)
        elif isinstance(op, ClaimOp):
            self.pending_claims.remove(op)
        else:
            self.pending_allocates.remove(op)

    def _run(self, op: AnyOp, now: float) -> Result | Pending:
        """Try once; queue it if it must wait. The answer may come before the op finishes
        (a claim answered early), so we look at `answered`, not only at `done`."""
        self.now = now
        try:
            if self.shutting_down:
                raise CancelledError(self._cancel_text(op))
            if not self._try(op):
                self._enqueue(op)
        finally:
            self._finish()
        if op.answered:
            if isinstance(op.answer, IpamError):
                raise op.answer
            if op.answer is None:
                raise Bug("answered without an answer")
            return op.answer
        return Pending(op.op_id, self._pending_reason(op))

    def _pending_reason(self, op: Op) -> PendingReason:
        if self.ring.empty():
            return PendingReason.CONSENSUS
        return PendingReason.OWNER if isinstance(op, ClaimOp) else PendingReason.SPACE

    def _try(self, op: AnyOp) -> bool:
        if isinstance(op, AllocateOp):
            return self._try_allocate(op)
        if isinstance(op, ClaimOp):
            return self._try_claim(op)
        if isinstance(op, PrimeOp):
            return self._try_prime(op)
        raise Bug(f"unknown operation {op!r}")

    def _try_pending_ops(self) -> None:
        # Trying can change the ring (consensus with quorum 1), which tries again; run the
        # queues once more instead of re-entering them.
        if self._trying:
            self._retry = True
            return
        self._trying = True
        try:
            while True:
                self._retry = False
                for op in self._all_pending():
                    if self._is_queued(op) and self._try(op):
                        self._dequeue(op)
                if not self._retry:
                    break
        finally:
            self._trying = False

    def _cancel_for(self, ident: str) -> None:
        for op in self._all_pending():
            if not isinstance(op, PrimeOp) and op.ident == ident:
                self._dequeue(op)
                self._answer(op, CancelledError(self._cancel_text(op)))

    @staticmethod
    def _cancel_text(op: Op) -> str:
        if isinstance(op, AllocateOp):
            return f"Allocate request for {op.ident} cancelled"
        if isinstance(op, ClaimOp):
            return f"Claim request for {op.ident} cancelled"
        return f"request {op.op_id} cancelled"
