"""The allocator's state and its bookkeeping: owned addresses, dead containers, nicknames,
persistence, and the check run after every action.

`AllocatorState` holds what one peer's allocator knows (ring, space, owned addresses, Paxos,
pending queues); the classes built on it add consensus (`consensus.RingKeeper`), request
attempts (`attempts.RequestAttempts`) and the public API (`allocator.Allocator`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from weaved.errors import Bug
from weaved.ipam.address import CIDR, Range
from weaved.ipam.errors import IpamError, RmpeerRefusedError
from weaved.ipam.messages import Unicast
from weaved.ipam.owned import Owned
from weaved.ipam.paxos import Node as PaxosNode
from weaved.ipam.paxos import NodeID, Observer, Participant
from weaved.ipam.persist import PersistedState, Store
from weaved.ipam.requests import (
    AllocateOp,
    AllocatorConfig,
    ClaimOp,
    Completion,
    ConsensusStart,
    ObserverStart,
    Op,
    Outbox,
    PrimeOp,
    Result,
    SeedStart,
)
from weaved.ipam.ring import Ring, normalize_peers
from weaved.ipam.space import Space
from weaved.mesh.gossip_api import UNKNOWN_PEER, PeerName, PeerView, format_peer_name
from weaved.mesh.peername import PeerNameError, parse_peer_name

log = logging.getLogger("weaved.ipam.allocator")  # one logger for the allocator's lines

CONTAINER_DIED_TIMEOUT = 30.0
"""A container reported dead keeps its addresses this long, in case it restarts."""


class _NullOutbox:
    def unicast(self, dst: PeerName, message: Unicast) -> None:
        log.debug("ipam: no outbox attached, dropping unicast to %s", format_peer_name(dst))

    def broadcast_state(self) -> None:
        log.debug("ipam: no outbox attached, dropping broadcast")


class AllocatorState:
    """One peer's allocator state; see `Allocator` for the API."""

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
        self.pending_primes: list[PrimeOp] = []
        self.pending_claims: list[ClaimOp] = []
        self.pending_allocates: list[AllocateOp] = []
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

    @property
    def quorum(self) -> int:
        start = self.config.start
        if isinstance(start, ConsensusStart):
            return start.quorum
        if isinstance(start, SeedStart):
            return len(normalize_peers(start.seeds)) // 2 + 1
        return 0

    def lookup(self, ident: str, subnet: CIDR | None = None) -> list[CIDR]:
        """`ident`'s addresses, optionally only those in `subnet`'s host range."""
        cidrs = self.owned.get(ident, Owned(())).cidrs
        if subnet is None:
            return list(cidrs)
        host = subnet.host_range()
        return [c for c in cidrs if host.contains(c.addr)]

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

    def _answer(self, op: Op, outcome: Result | IpamError) -> None:
        if op.answered:
            if isinstance(outcome, IpamError):
                log.info("ipam: request %d finished later with: %s", op.op_id, outcome)
            return
        op.answered = True
        op.answer = outcome
        if op.queued and self.on_complete is not None:
            self.on_complete(Completion(op.op_id, outcome))

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
