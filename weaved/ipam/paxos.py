"""Weave's one-shot Paxos: agree once on the peer list that seeds the IPAM ring (FACTS §5.3).

Every node gossips its whole view (`GossipState`: node -> claims). A node adopts the highest
promise it has seen; the proposer whose promise a quorum shares accepts it (with the value of
the best earlier acceptance, else the names it knows); others accept a proposal equal to their
promise once someone accepted it. Consensus = a quorum of acceptances with the same origin.

Pure data and logic; the allocator broadcasts `gossip_state()` whenever `think()` says our
claims changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from weaved.mesh.gossip_api import UNKNOWN_PEER, PeerName


@dataclass(frozen=True, order=True)
class NodeID:
    """A node is a peer incarnation: a restarted peer must not inherit its old promises."""

    name: PeerName = UNKNOWN_PEER
    uid: int = 0


@dataclass(frozen=True)
class ProposalID:
    """Ordered by (round, proposer name, proposer uid); round 0 means "none"."""

    round: int = 0
    proposer: NodeID = NodeID()

    def key(self) -> tuple[int, int, int]:
        return (self.round, self.proposer.name, self.proposer.uid)

    def precedes(self, other: ProposalID) -> bool:
        return self.key() < other.key()

    @property
    def valid(self) -> bool:
        return self.round > 0


@dataclass(frozen=True)
class AcceptedValue:
    """A value plus the proposal that first carried it, so values compare by origin."""

    value: tuple[PeerName, ...] = ()
    origin: ProposalID = ProposalID()


@dataclass(frozen=True)
class NodeClaims:
    promise: ProposalID = ProposalID()
    accepted: ProposalID = ProposalID()
    accepted_val: AcceptedValue = AcceptedValue()

    def same_as(self, other: NodeClaims) -> bool:
        """Weave compares claims without the value itself (the origin identifies it)."""
        return (
            self.promise == other.promise
            and self.accepted == other.accepted
            and self.accepted_val.origin == other.accepted_val.origin
        )


GossipState = dict[NodeID, NodeClaims]


@dataclass(frozen=True)
class PaxosStatus:
    """What `status` shows while awaiting consensus."""

    elector: bool
    known_nodes: int
    quorum: int


@dataclass
class Node:
    """An elector. `quorum` stays 0 until we start consensus ourselves (first allocation):
    until then we promise and accept but never declare consensus, and wait for a ring."""

    id: NodeID
    quorum: int = 0
    knows: GossipState = field(default_factory=dict)

    @property
    def is_elector(self) -> bool:
        return True

    def gossip_state(self) -> GossipState | None:
        return dict(self.knows)

    def set_quorum(self, quorum: int) -> None:
        self.quorum = quorum

    def update(self, received: GossipState) -> bool:
        """Merge another node's view; True if we learned anything."""
        changed = False
        for node, theirs in received.items():
            ours = self.knows.get(node)
            if ours is None:
                self.knows[node] = theirs
                changed = True
                continue
            merged = ours
            if ours.promise.precedes(theirs.promise):
                merged = NodeClaims(theirs.promise, merged.accepted, merged.accepted_val)
                changed = True
            if ours.accepted.precedes(theirs.accepted):
                merged = NodeClaims(merged.promise, theirs.accepted, theirs.accepted_val)
                changed = True
            self.knows[node] = merged
        return changed

    def propose(self) -> None:
        """Prepare: a round above every round we have seen, promised by ourselves."""
        if self.quorum == 0:
            raise ValueError("Paxos propose() needs a quorum")
        top = 0
        for claims in self.knows.values():
            top = max(top, claims.promise.round, claims.accepted.round)
        ours = self.knows.get(self.id, NodeClaims())
        self.knows[self.id] = NodeClaims(
            ProposalID(top + 1, self.id), ours.accepted, ours.accepted_val
        )
        if self.quorum == 1:
            self.think()

    def think(self) -> bool:
        """Promise / accept-request / accepted steps; True if our claims changed."""
        before = self.knows.get(self.id, NodeClaims())
        promise, accepted, accepted_val = before.promise, before.accepted, before.accepted_val

        for claims in self.knows.values():
            if promise.precedes(claims.promise):
                promise = claims.promise

        # Our proposal only stays in the running while it is also our own promise.
        if promise.proposer == self.id:
            count = 0
            best = ProposalID()
            best_val = AcceptedValue()
            for claims in self.knows.values():
                if claims.promise == promise:
                    count += 1
                    if best.precedes(claims.accepted):
                        best, best_val = claims.accepted, claims.accepted_val
            if self.quorum > 0 and count >= self.quorum:
                if not best.valid:
                    best_val = AcceptedValue(self._pick_value(), promise)
                accepted, accepted_val = promise, best_val

        for claims in self.knows.values():
            if claims.accepted == promise:
                accepted, accepted_val = claims.accepted, claims.accepted_val
                break

        after = NodeClaims(promise, accepted, accepted_val)
        if after.same_as(before):
            return False
        self.knows[self.id] = after
        return True

    def _pick_value(self) -> tuple[PeerName, ...]:
        """The names of every node we know: at least a quorum, enough to seed the ring."""
        return tuple(node.name for node in self.knows)

    def consensus(self) -> AcceptedValue | None:
        """The agreed value once a quorum accepted the same origin; never with quorum 0."""
        if self.quorum == 0:
            return None
        counts: dict[ProposalID, int] = {}
        for claims in self.knows.values():
            if claims.accepted.valid:
                origin = claims.accepted_val.origin
                counts[origin] = counts.get(origin, 0) + 1
                if counts[origin] >= self.quorum:
                    return claims.accepted_val
        return None

    def status(self) -> PaxosStatus:
        return PaxosStatus(elector=True, known_nodes=len(self.knows), quorum=self.quorum)


@dataclass
class Observer:
    """A peer that never votes: it sends no Paxos state and waits for an elector's ring."""

    @property
    def is_elector(self) -> bool:
        return False

    def gossip_state(self) -> GossipState | None:
        return None

    def set_quorum(self, quorum: int) -> None:
        pass

    def update(self, received: GossipState) -> bool:
        return False

    def propose(self) -> None:
        pass

    def think(self) -> bool:
        return False

    def consensus(self) -> AcceptedValue | None:
        return None

    def status(self) -> PaxosStatus:
        return PaxosStatus(elector=False, known_nodes=0, quorum=0)


Participant = Node | Observer
