"""How the allocator gets and keeps a ring: seed or Paxos consensus, merging received rings,
answering ring-less peers, and donating space to peers that ask for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from weaved.ipam.address import MIN_SUBNET_SIZE, Range
from weaved.ipam.messages import IpamGossip, RingUpdate, SpaceRequestDenied
from weaved.ipam.ring import normalize_peers
from weaved.ipam.state import AllocatorState
from weaved.mesh.gossip_api import PeerName, format_peer_name


class RingKeeper(AllocatorState):
    """Consensus, ring merges and donations on top of the allocator's state."""

    def _try_pending_ops(self) -> None:
        """Retry the queued requests after a ring change (the `Allocator` does it)."""
        raise NotImplementedError

    def gossip_state(self) -> IpamGossip:
        """Our full state as sent in gossip, broadcasts and RingUpdates."""
        if self.ring.empty():
            # Electors send their Paxos map even when empty; observers send none, which is how
            # receivers know an observer is asking for a ring.
            paxos = self.paxos.gossip_state()
            return IpamGossip(int(self.now), dict(self.nicknames), paxos, None)
        return IpamGossip(int(self.now), dict(self.nicknames), None, self.ring.copy())

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
