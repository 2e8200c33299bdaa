"""The IPAM allocator: ring + space + consensus + owned addresses, as a sans-I/O object.

Everything comes in as a method call carrying `now` (allocation requests, decoded messages,
ticks, topology changes) and goes out through an `Outbox` (messages to send) and an
`on_complete` callback (answers to requests that had to wait). Weave runs the same logic as a
single-threaded actor; here the caller (the daemon's event loop) provides the single thread.

Requests that cannot finish at once — no ring yet, no free space, a claimed address owned by
another peer — return `Pending(op_id, reason)`; the answer arrives later as a `Completion`.
Pending work is retried on every ring change and on `tick` (every 5 s, like Weave). Release
and detach never wait.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from weaved.errors import Bug
from weaved.ipam.address import CIDR, MIN_SUBNET_SIZE, Range, format_ip
from weaved.ipam.errors import (
    AddressInUseError,
    CancelledError,
    IpamError,
    NotFoundError,
    OutOfRangeError,
    RmpeerRefusedError,
)
from weaved.ipam.messages import (
    IpamGossip,
    RingUpdate,
    SpaceRequest,
    SpaceRequestDenied,
    Unicast,
)
from weaved.ipam.owned import Owned
from weaved.ipam.paxos import Node as PaxosNode
from weaved.ipam.paxos import NodeID, Observer, Participant, PaxosStatus
from weaved.ipam.persist import PersistedState, Store
from weaved.ipam.ring import Ring, normalize_peers
from weaved.ipam.space import Space, SpaceError
from weaved.mesh.gossip_api import UNKNOWN_PEER, PeerName, PeerView, format_peer_name
from weaved.mesh.peername import PeerNameError, parse_peer_name

log = logging.getLogger(__name__)

TICK_INTERVAL = 5.0
"""Seconds between `tick` calls the daemon should make (Weave's ticker)."""

CONTAINER_DIED_TIMEOUT = 30.0
"""A container reported dead keeps its addresses this long, in case it restarts."""

MAX_CLAIM_TRIES = 5
"""Tries (one per tick or ring change) before a claim on an unreachable owner's address is
denied (Weave's maxTryCount)."""

NO_CONTAINER_ID = "_"
"""Weave's "I have no unique id" identifier: the claimed address itself becomes the id."""


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


class _NullOutbox:
    def unicast(self, dst: PeerName, message: Unicast) -> None:
        log.debug("ipam: no outbox attached, dropping unicast to %s", format_peer_name(dst))

    def broadcast_state(self) -> None:
        log.debug("ipam: no outbox attached, dropping broadcast")


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
class _Op:
    op_id: int
    answered: bool = field(default=False, init=False)
    answer: Result | IpamError | None = field(default=None, init=False)
    queued: bool = field(default=False, init=False)


@dataclass(eq=False, kw_only=True)
class _Allocate(_Op):
    ident: str
    subnet: CIDR
    is_container: bool = True


@dataclass(eq=False, kw_only=True)
class _Claim(_Op):
    ident: str
    cidr: CIDR
    is_container: bool = True
    no_error_on_unknown: bool = False
    tries: int = 0


@dataclass(eq=False)
class _Prime(_Op):
    pass


_OpT = _Prime | _Claim | _Allocate


@dataclass(frozen=True)
class PendingClaimInfo:
    ident: str
    cidr: CIDR


@dataclass(frozen=True)
class PendingAllocateInfo:
    ident: str
    subnet: CIDR


class Allocator:
    """One peer's allocator. Call `attach` (outbox) and `start` before anything else."""

    def __init__(
        self,
        config: AllocatorConfig,
        *,
        peers: PeerView,
        store: Store | None = None,
        on_complete: Callable[[Completion], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.our_name = config.our_name
        self.universe = config.universe
        u = config.universe.range()
        self.ring = Ring(u.start, u.end, config.our_name)
        self.space = Space()
        self.owned: dict[str, Owned] = {}
        self.nicknames: dict[PeerName, str] = {config.our_name: config.nickname}
        self.paxos: Participant = (
            Observer()
            if isinstance(config.start, ObserverStart)
            else PaxosNode(NodeID(config.our_name, config.our_uid))
        )
        self.awaiting_consensus = False
        self.shutting_down = False
        self.pending_primes: list[_Prime] = []
        self.pending_claims: list[_Claim] = []
        self.pending_allocates: list[_Allocate] = []
        # Space requests that arrived before our ring (a peer's unicast can overtake the ring
        # broadcast): answered as soon as the ring is here, before we allocate anything.
        self.early_space_requests: list[tuple[PeerName, Range]] = []
        self.dead: dict[str, float] = {}
        self.peers = peers
        self.store = store
        self.on_complete = on_complete
        self.rng = rng or random.Random()
        self.outbox: Outbox = _NullOutbox()
        self.now = 0.0
        self._next_op = 1
        self._dirty = False
        self._trying = False
        self._retry = False

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

    @property
    def quorum(self) -> int:
        start = self.config.start
        if isinstance(start, ConsensusStart):
            return start.quorum
        if isinstance(start, SeedStart):
            return len(normalize_peers(start.seeds)) // 2 + 1
        return 0

    # ---- requests -------------------------------------------------------------------------

    def allocate(
        self, ident: str, subnet: CIDR, now: float, *, is_container: bool = True
    ) -> Allocated | Pending:
        """Lowest free address of `subnet`'s host range for `ident` (its existing one if any).

        Raises `IpamError` (out of range, cancelled by shutdown).
        """
        op = _Allocate(self._new_op_id(), ident=ident, subnet=subnet, is_container=is_container)
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
        op = _Claim(
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
        op = _Prime(self._new_op_id())
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

    def lookup(self, ident: str, subnet: CIDR | None = None) -> list[CIDR]:
        """`ident`'s addresses, optionally only those in `subnet`'s host range."""
        cidrs = self.owned.get(ident, Owned(())).cidrs
        if subnet is None:
            return list(cidrs)
        host = subnet.host_range()
        return [c for c in cidrs if host.contains(c.addr)]

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

    def gossip_state(self) -> IpamGossip:
        """Our full state as sent in gossip, broadcasts and RingUpdates."""
        if self.ring.empty():
            # Electors send their Paxos map even when empty; observers send none, which is how
            # receivers know an observer is asking for a ring.
            paxos = self.paxos.gossip_state()
            return IpamGossip(int(self.now), dict(self.nicknames), paxos, None)
        return IpamGossip(int(self.now), dict(self.nicknames), None, self.ring.copy())

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
        if isinstance(op, _Claim):
            addr = format_ip(op.cidr.addr)
            owner = self.ring.owner(op.cidr.addr)
            if owner == UNKNOWN_PEER:
                return (
                    f"{addr} is in the range {self.universe},"
                    " but the allocator is not initialized yet"
                )
            reach = "" if self.is_reachable(owner) else ", which is unreachable"
            return f"{addr} is owned by peer {self._annotate(owner)}{reach}"
        if isinstance(op, _Allocate):
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

    def is_reachable(self, peer: PeerName) -> bool:
        return peer == self.our_name or peer in self.peers.reachable_peers()

    def check_invariants(self) -> None:
        """Space and ring must agree on what we own (Weave asserts this after every action)."""
        ring_space = Space()
        for r in self.ring.owned_ranges():
            ring_space.add(r)
        if ring_space.owned_ranges() != self.space.owned_ranges():
            raise Bug(
                f"IPAM space {self.space.owned_ranges()} disagrees with ring "
                f"{ring_space.owned_ranges()}"
            )

    # ---- internals: operations ------------------------------------------------------------

    def _new_op_id(self) -> int:
        op_id = self._next_op
        self._next_op += 1
        return op_id

    def _all_pending(self) -> list[_OpT]:
        """A snapshot in retry order: primes, then claims (existing addresses first), then
        allocations."""
        return [*self.pending_primes, *self.pending_claims, *self.pending_allocates]

    def _enqueue(self, op: _OpT) -> None:
        op.queued = True
        if isinstance(op, _Prime):
            self.pending_primes.append(op)
        elif isinstance(op, _Claim):
            self.pending_claims.append(op)
        else:
            self.pending_allocates.append(op)

    def _is_queued(self, op: _OpT) -> bool:
        return any(op is other for other in self._all_pending())

    def _dequeue(self, op: _OpT) -> None:
        if isinstance(op, _Prime):
            self.pending_primes.remove(op)
        elif isinstance(op, _Claim):
            self.pending_claims.remove(op)
        else:
            self.pending_allocates.remove(op)

    def _run(self, op: _OpT, now: float) -> Result | Pending:
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

    def _pending_reason(self, op: _Op) -> PendingReason:
        if self.ring.empty():
            return PendingReason.CONSENSUS
        return PendingReason.OWNER if isinstance(op, _Claim) else PendingReason.SPACE

    def _answer(self, op: _Op, outcome: Result | IpamError) -> None:
        if op.answered:
            if isinstance(outcome, IpamError):
                log.info("ipam: request %d finished later with: %s", op.op_id, outcome)
            return
        op.answered = True
        op.answer = outcome
        if op.queued and self.on_complete is not None:
            self.on_complete(Completion(op.op_id, outcome))

    def _try(self, op: _OpT) -> bool:
        if isinstance(op, _Allocate):
            return self._try_allocate(op)
        if isinstance(op, _Claim):
            return self._try_claim(op)
        if isinstance(op, _Prime):
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

    def _try_prime(self, op: _Prime) -> bool:
        if not self.ring.empty():
            self._answer(op, Ready())
            return True
        self._establish_ring()
        if not self.ring.empty():
            self._answer(op, Ready())
            return True
        return False

    def _try_allocate(self, op: _Allocate) -> bool:
        existing = self.lookup(op.ident, op.subnet)
        if existing:
            self.dead.pop(op.ident, None)
            self._answer(op, Allocated(existing[0]))
            return True
        if not self.universe.range().overlaps(op.subnet.range()):
            self._answer(op, OutOfRangeError(f"range {op.subnet} out of bounds: {self.universe}"))
            return True
        self._establish_ring()
        addr = self.space.allocate(op.subnet.host_range())
        if addr is not None:
            self.dead.pop(op.ident, None)
            cidr = op.subnet.with_addr(addr)
            self._add_owned(op.ident, cidr, op.is_container)
            self._debug("Allocated %s for %s in %s", format_ip(addr), op.ident, op.subnet)
            self._answer(op, Allocated(cidr))
            return True
        if not self.ring.empty():
            self._ask_for_space(op.subnet.range())
        return False

    def _ask_for_space(self, r: Range) -> None:
        """Ask one donor, weighted by free space; Weave's send fails for unreachable peers,
        so only reachable ones count."""
        reachable = self.peers.reachable_peers()
        for donor in self.ring.choose_peers_to_ask_for_space(r.start, r.end, self.rng):
            if donor in reachable:
                self._debug("asking %s for space in %s", format_peer_name(donor), r)
                self.outbox.unicast(donor, SpaceRequest(r))
                return

    def _try_claim(self, op: _Claim) -> bool:
        addr = op.cidr.addr
        op.tries += 1
        if not self.ring.contains(addr):
            return self._claim_outside(op)
        self._establish_ring()
        self.dead.pop(op.ident, None)
        owner = self.ring.owner(addr)
        if owner == UNKNOWN_PEER:
            # No ring yet: wait for one (Weave 2.8's claim); re-claims at start do not wait.
            if op.tries == 1:
                self._info(
                    "Claim %s for %s: is in the range %s, but the allocator is not initialized"
                    " yet; will try later",
                    op.cidr,
                    op.ident,
                    self.universe,
                )
            if op.no_error_on_unknown:
                self._answer(op, Claimed(op.cidr))
            return False
        if owner != self.our_name:
            if owner in self.peers.reachable_peers():
                self.outbox.unicast(owner, SpaceRequest(Range(addr, addr + 1)))
            elif op.no_error_on_unknown:
                self._answer(op, Claimed(op.cidr))
            elif op.tries > MAX_CLAIM_TRIES:
                self._answer(op, self._denied(op, owner))
                return True
            return False
        holder = self._find_owner(addr)
        if holder is None:
            try:
                self.space.claim(addr)
            except SpaceError as e:
                self._answer(op, AddressInUseError(str(e)))
                return True
            ident = format_ip(addr) if op.ident == NO_CONTAINER_ID else op.ident
            self._add_owned(ident, op.cidr, op.is_container)
            self._answer(op, Claimed(op.cidr))
        elif holder == op.ident:
            self._answer(op, Claimed(op.cidr))
        elif holder == format_ip(addr):
            self._answer(op, AddressInUseError(f"address {format_ip(addr)} already in use"))
        else:
            self._answer(op, AddressInUseError(f"address {op.cidr} is already owned by {holder}"))
        return True

    def _claim_outside(self, op: _Claim) -> bool:
        """Outside our range: the user knows what they are doing; just record it, once."""
        holder = self._find_owner(op.cidr.addr)
        if holder is None:
            self._info("Address %s claimed by %s - not in our range", op.cidr, op.ident)
            self._add_owned(op.ident, op.cidr, op.is_container)
        elif holder != op.ident and holder in self.dead:
            self._remove_owned_address(holder, op.cidr.addr)
            self._add_owned(op.ident, op.cidr, op.is_container)
        elif holder != op.ident:
            self._answer(op, AddressInUseError(f"address {op.cidr} already in use by {holder}"))
            return True
        self._answer(op, Claimed(op.cidr))
        return True

    def _denied(self, op: _Claim, owner: PeerName) -> AddressInUseError:
        return AddressInUseError(
            f"address {op.cidr} is owned by other peer {self._annotate(owner, ' ')}"
        )

    def _cancel_for(self, ident: str) -> None:
        for op in self._all_pending():
            if not isinstance(op, _Prime) and op.ident == ident:
                self._dequeue(op)
                self._answer(op, CancelledError(self._cancel_text(op)))

    @staticmethod
    def _cancel_text(op: _Op) -> str:
        if isinstance(op, _Allocate):
            return f"Allocate request for {op.ident} cancelled"
        if isinstance(op, _Claim):
            return f"Claim request for {op.ident} cancelled"
        return f"request {op.op_id} cancelled"

    # ---- internals: ring life cycle -------------------------------------------------------

    def _establish_ring(self) -> None:
        """Start consensus if we have no ring and have not started yet."""
        if not self.ring.empty() or self.awaiting_consensus:
            return
        self.awaiting_consensus = True
        self.paxos.set_quorum(self.quorum)
        self._propose()
        agreed = self.paxos.consensus()
        if agreed is not None:  # quorum 1: our own proposal is the consensus
            self._create_ring(agreed.value)

    def _propose(self) -> None:
        self.paxos.propose()
        self.outbox.broadcast_state()

    def _create_ring(self, peers: Iterable[PeerName]) -> None:
        names = normalize_peers(peers)
        self._info("Creating ring from %s", " ".join(self._annotate(n) for n in names))
        self.ring.claim_for_peers(names)
        self._ring_updated()
        self.outbox.broadcast_state()

    def _ring_updated(self) -> None:
        # Once a ring exists Paxos is over for good.
        self.awaiting_consensus = False
        self._dirty = True
        self.space.set_owned(self.ring.owned_ranges())
        early, self.early_space_requests = self.early_space_requests, []
        for sender, r in early:
            self._donate_space(r, sender)
        self._try_pending_ops()

    def _update(self, sender: PeerName | None, state: IpamGossip) -> None:
        self.nicknames.update(state.nicknames)
        if state.ring is not None:
            if self.ring.merge(state.ring, self.space.has_allocations_in):
                self._prune_nicknames()
                self._ring_updated()
        elif not self.ring.empty():
            # A ring-less peer (proposing, or an observer asking): answer with our ring.
            if sender is not None:
                self.outbox.unicast(sender, RingUpdate(self.gossip_state()))
        elif state.paxos is not None:
            if self.paxos.update(state.paxos):
                if self.paxos.think():
                    self.outbox.broadcast_state()
                agreed = self.paxos.consensus()
                if agreed is not None:
                    self._create_ring(agreed.value)
        elif self.paxos.is_elector and sender is not None:
            # An observer's explicit request (a broadcast, never periodic gossip, so we do not
            # force consensus needlessly): start consensus on its behalf.
            self._establish_ring()

    def _donate_space(self, r: Range, to: PeerName) -> None:
        # Allocation requests carry the whole subnet; its first and last addresses are of no
        # use to the requester. Claims ask for one address, all of it usable.
        usable = Range(r.start + 1, r.end - 1) if r.size >= MIN_SUBNET_SIZE else r
        chunk = self.space.donate(r, usable)
        if chunk is None:
            self._debug("No space to give to %s", format_peer_name(to))
            # Older peers ignore this kind and still learn from the RingUpdate below.
            self.outbox.unicast(to, SpaceRequestDenied(r))
        else:
            self._debug("Giving range %s to %s", chunk, format_peer_name(to))
            self.ring.grant_range_to_host(chunk.start, chunk.end, to)
            self._dirty = True
            self.outbox.broadcast_state()
        self.outbox.unicast(to, RingUpdate(self.gossip_state()))

    def _report_free_space(self) -> None:
        ranges = self.ring.owned_ranges()
        if not ranges:
            return
        free = {r.start: self.space.num_free_in_range(r) for r in ranges}
        if self.ring.report_free(free):
            self._dirty = True

    def _finish(self) -> None:
        """After every action, like Weave's actor loop: refresh free counts (bumping our
        entries' versions) and persist what changed."""
        self._report_free_space()
        self.check_invariants()
        if self._dirty and self.store is not None:
            self.store.save(PersistedState(self.our_name, self.ring.copy(), dict(self.owned)))
        self._dirty = False

    # ---- internals: owned addresses, peers ------------------------------------------------

    def _add_owned(self, ident: str, cidr: CIDR, is_container: bool) -> None:
        prev = self.owned.get(ident)
        if prev is not None and any(c.addr == cidr.addr for c in prev.cidrs):
            return  # held already: recording it again would only grow the state
        cidrs = (*prev.cidrs, cidr) if prev else (cidr,)
        self.owned[ident] = Owned(cidrs, is_container)
        self._dirty = True

    def _remove_owned_address(self, ident: str, addr: int) -> None:
        owned = self.owned.get(ident)
        if owned is None:
            return
        rest = tuple(c for c in owned.cidrs if c.addr != addr)
        if rest:
            self.owned[ident] = Owned(rest, owned.is_container)
        else:
            del self.owned[ident]
        self._dirty = True

    def _find_owner(self, addr: int) -> str | None:
        for ident, o in self.owned.items():
            if any(c.addr == addr for c in o.cidrs):
                return ident
        return None

    def _remove_dead_containers(self) -> None:
        cutoff = self.now - CONTAINER_DIED_TIMEOUT
        for ident, died in list(self.dead.items()):
            if died < cutoff:
                self._debug("Removing addresses of dead container %s", ident)
                self.dead.pop(ident, None)
                owned = self.owned.pop(ident, None)
                for c in owned.cidrs if owned else ():
                    if self.space.is_allocated(c.addr):
                        self.space.free(c.addr)
                self._dirty = True

    def _prune_nicknames(self) -> None:
        keep = self.ring.peer_names() | set(self.peers.known_peers()) | {self.our_name}
        for name in list(self.nicknames):
            if name not in keep:
                del self.nicknames[name]

    def _pick_heir(self) -> PeerName:
        """First reachable peer in ring order, else a reachable one from the nicknames, else
        any other peer in the ring, else any nickname (Weave's order)."""
        reachable = self.peers.reachable_peers()

        def alive(p: PeerName) -> bool:
            return p in reachable

        def anyone(p: PeerName) -> bool:
            return True

        for check in (alive, anyone):
            heir = self.ring.pick_peer_for_transfer(check)
            if heir != UNKNOWN_PEER:
                return heir
            for name in sorted(self.nicknames):
                if name != self.our_name and check(name):
                    return name
        return UNKNOWN_PEER

    def lookup_peer(self, peer: str | PeerName) -> PeerName:
        """A peer name or nickname → the peer's name; `RmpeerRefusedError` if unknown."""
        if isinstance(peer, int):
            return PeerName(peer)
        for name, nickname in sorted(self.nicknames.items()):
            if nickname == peer:
                return name
        try:
            return parse_peer_name(peer)
        except PeerNameError as e:
            raise RmpeerRefusedError(f"unknown peer {peer!r}: not a nickname or peer name") from e

    def _annotate(self, name: PeerName, sep: str = "") -> str:
        nickname = self.nicknames.get(name)
        text = format_peer_name(name)
        return f"{text}{sep}({nickname})" if nickname is not None else text

    def _load_persisted(self) -> bool:
        """Restore ring and owned addresses; a store from another peer or range is discarded
        (with a warning) and overwritten, a corrupt one raises `PersistError`."""
        if self.store is None:
            return False
        state = self.store.load()
        if state is None:
            self._info("No valid persisted data")
        elif state.peer_name != self.our_name:
            log.warning(
                "ipam: deleting persisted data for peer name %s (we are %s)",
                format_peer_name(state.peer_name),
                format_peer_name(self.our_name),
            )
        elif (state.ring.start, state.ring.end) != (self.ring.start, self.ring.end):
            log.warning(
                "ipam: deleting persisted data for IPAM range %s; our range is %s",
                state.ring.range.as_cidr_string(),
                self.universe,
            )
        else:
            self.ring = Ring(
                state.ring.start,
                state.ring.end,
                self.our_name,
                state.ring.entries,
                state.ring.seeds,
            )
            self.space.set_owned(self.ring.owned_ranges())
            self.owned = dict(state.owned)
            for o in self.owned.values():
                for c in o.cidrs:
                    if self.space.is_free(c.addr):
                        self.space.claim(c.addr)
            return True
        self._dirty = True
        return False

    def _info(self, fmt: str, *args: object) -> None:
        log.info("[allocator %s] " + fmt, format_peer_name(self.our_name), *args)

    def _debug(self, fmt: str, *args: object) -> None:
        log.debug("[allocator %s] " + fmt, format_peer_name(self.our_name), *args)
