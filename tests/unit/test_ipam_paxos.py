"""Weave's one-shot Paxos between simulated nodes (gossip of whole views, random delivery)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from weaved.ipam.paxos import AcceptedValue, Node, NodeClaims, NodeID, Observer, ProposalID
from weaved.mesh.gossip_api import PeerName

H1 = NodeID(PeerName(0x3E80E75A63A7), 6464763779623281976)
H2 = NodeID(PeerName(0x2A9FF1998A21), 17701888343514076567)


def test_trace_a_exchange() -> None:
    """host1 proposes (quorum 2); host2 (quorum 0) promises and accepts; host1 decides."""
    h1, h2 = Node(H1, quorum=2), Node(H2)
    h1.propose()
    assert h1.knows[H1].promise == ProposalID(1, H1)
    assert h1.consensus() is None

    assert h2.update(h1.gossip_state() or {})
    assert h2.think()  # adopts host1's promise
    assert h2.knows[H2].promise == ProposalID(1, H1)

    assert h1.update(h2.gossip_state() or {})
    assert h1.think()  # quorum promised: accept with all names known
    accepted = h1.knows[H1]
    assert accepted.accepted == ProposalID(1, H1)
    assert sorted(accepted.accepted_val.value) == sorted([H1.name, H2.name])

    assert h2.update(h1.gossip_state() or {})
    assert h2.think()  # accepts what its promise's proposer accepted
    assert h2.consensus() is None  # quorum 0 never decides

    assert h1.update(h2.gossip_state() or {})
    agreed = h1.consensus()
    assert agreed is not None and agreed.origin == ProposalID(1, H1)


def test_quorum_one_decides_at_once() -> None:
    n = Node(H1, quorum=1)
    n.propose()
    agreed = n.consensus()
    assert agreed is not None and agreed.value == (H1.name,)


def test_proposal_order() -> None:
    assert ProposalID(1, H2).precedes(ProposalID(1, H1))  # same round: lower name first
    assert ProposalID(1, H1).precedes(ProposalID(2, H2))
    assert ProposalID().precedes(ProposalID(1, H2)) and not ProposalID().valid


def test_update_keeps_higher_promise_and_acceptance() -> None:
    n = Node(H1)
    low = NodeClaims(
        ProposalID(2, H1), ProposalID(1, H1), AcceptedValue((H1.name,), ProposalID(1, H1))
    )
    high = NodeClaims(
        ProposalID(1, H1), ProposalID(2, H2), AcceptedValue((H2.name,), ProposalID(2, H2))
    )
    assert n.update({H2: low})
    assert n.update({H2: high})
    assert n.knows[H2] == NodeClaims(ProposalID(2, H1), ProposalID(2, H2), high.accepted_val)
    assert not n.update({H2: low})


def test_observer_never_votes() -> None:
    o = Observer()
    assert o.gossip_state() is None and not o.is_elector
    assert not o.update({H1: NodeClaims(ProposalID(1, H1))})
    o.propose()
    assert o.consensus() is None


def simulate(n: int, quorum: int, proposers: list[int], seed: int, steps: int = 400) -> list[Node]:
    """Nodes gossip their views to random others; some start proposals, and re-propose now and
    then (the 5 s tick). Messages may be dropped."""
    rng = random.Random(seed)
    nodes = [Node(NodeID(PeerName(i + 1), rng.getrandbits(64)), quorum=0) for i in range(n)]
    for p in proposers:
        nodes[p].set_quorum(quorum)
        nodes[p].propose()
    for _ in range(steps):
        src, dst = rng.sample(nodes, 2)
        if rng.random() < 0.2:
            continue  # lost
        if dst.update(src.gossip_state() or {}):
            dst.think()
        if rng.random() < 0.02:
            nodes[rng.choice(proposers)].propose()
        if any(node.consensus() for node in nodes):
            break
    return nodes


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 6), st.integers(0, 100_000), st.data())
def test_simulated_peers_agree(n: int, seed: int, data: st.DataObject) -> None:
    quorum = n // 2 + 1
    proposers = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    nodes = simulate(n, quorum, proposers, seed, steps=2000)
    # Every decided value is the same one (safety), whoever sees it.
    for node in nodes:
        node.set_quorum(quorum)
    decided = {node.consensus() for node in nodes} - {None}
    origins = {d.origin for d in decided if d is not None}
    assert len(origins) <= 1
    values = {tuple(sorted(d.value)) for d in decided if d is not None}
    assert len(values) <= 1
    # Liveness is likely with this many steps; assert on the common case only.
    if len(proposers) == 1:
        assert decided
