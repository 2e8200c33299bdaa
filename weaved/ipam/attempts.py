"""One attempt at each kind of request (allocate, claim, prime): answer it now, or leave it
queued (False) for the allocator to retry on the next ring change or tick.
"""

from __future__ import annotations

from weaved.ipam.address import Range, format_ip
from weaved.ipam.consensus import RingKeeper
from weaved.ipam.errors import AddressInUseError, OutOfRangeError
from weaved.ipam.messages import SpaceRequest
from weaved.ipam.requests import Allocated, AllocateOp, Claimed, ClaimOp, PrimeOp, Ready
from weaved.ipam.space import SpaceError
from weaved.mesh.gossip_api import UNKNOWN_PEER, PeerName, format_peer_name

MAX_CLAIM_TRIES = 5
"""Tries (one per tick or ring change) before a claim on an unreachable owner's address is
denied (Weave's maxTryCount)."""

NO_CONTAINER_ID = "_"
"""Weave's "I have no unique id" identifier: the claimed address itself becomes the id."""


class RequestAttempts(RingKeeper):
    """The allocator's request attempts, on top of consensus and state."""

    def _try_prime(self, op: PrimeOp) -> bool:
        if not self.ring.empty():
            self._answer(op, Ready())
            return True
        self._establish_ring()
        if not self.ring.empty():
            self._answer(op, Ready())
            return True
        return False

    def _try_allocate(self, op: AllocateOp) -> bool:
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

    def _try_claim(self, op: ClaimOp) -> bool:
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

    def _claim_outside(self, op: ClaimOp) -> bool:
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

    def _denied(self, op: ClaimOp, owner: PeerName) -> AddressInUseError:
        return AddressInUseError(
            f"address {op.cidr} is owned by other peer {self._annotate(owner, ' ')}"
        )
