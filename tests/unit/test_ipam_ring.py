"""The IPAM ring CRDT: creation, grants, merge rules and errors, and its algebra."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weaved.errors import Bug, ProtocolError
from weaved.ipam.address import Range, parse_ip
from weaved.ipam.ring import (
    DifferentRangeError,
    DifferentSeedsError,
    Entry,
    OwnershipConflictError,
    Ring,
    RingInvariantError,
)
from weaved.mesh.gossip_api import PeerName

H1 = PeerName(0x3E80E75A63A7)
H2 = PeerName(0x2A9FF1998A21)
H3 = PeerName(0xAEC0016F34D5)
START, END = parse_ip("10.32.0.0"), parse_ip("10.48.0.0")


def ip(text: str) -> int:
    return parse_ip(text)


def never(_: list[Range]) -> bool:
    return False


def always(_: list[Range]) -> bool:
    return True


def ring(
    peer: PeerName = H1, entries: list[Entry] | None = None, seeds: tuple[PeerName, ...] = ()
) -> Ring:
    return Ring(START, END, peer, entries or [], seeds)


# ---- creation ---------------------------------------------------------------------------


def test_creation_trace_a_host2_gets_lower_half() -> None:
    r = ring(H1)
    r.claim_for_peers([H1, H2, H1])  # unsorted, duplicated: consensus values look like this
    assert r.entries == [
        Entry(ip("10.32.0.0"), H2, 0, 524288),
        Entry(ip("10.40.0.0"), H1, 0, 524288),
    ]
    assert r.seeds == (H2, H1)


def test_creation_single_seed_owns_everything() -> None:
    r = ring(H2)
    r.claim_for_peers([H1])
    assert r.entries == [Entry(START, H1, 0, 1 << 20)]


def test_creation_three_peers_splits_recursively() -> None:
    r = ring(H1)
    r.claim_for_peers([H3, H1, H2])
    # sorted: H2 < H1 < H3; first floor(3/2)=1 peer gets the lower half, the rest split the top.
    assert [(e.token, e.peer, e.free) for e in r.entries] == [
        (ip("10.32.0.0"), H2, 524288),
        (ip("10.40.0.0"), H1, 262144),
        (ip("10.44.0.0"), H3, 262144),
    ]


def test_creation_odd_size_leaves_one_uncounted_address() -> None:
    r = Ring(0, 7, H1)
    r.claim_for_peers([PeerName(1), PeerName(2)])
    # share 7: [0,3) for peer 1, the upper part starts at 3 + 1 = 4
    assert r.entries == [Entry(0, PeerName(1), 0, 3), Entry(4, PeerName(2), 0, 3)]
    assert r.owned_ranges(PeerName(1)) == [Range(0, 4)]  # holds 4, free says 3


def test_creation_more_peers_than_addresses() -> None:
    r = Ring(0, 2, H1)
    r.claim_for_peers([PeerName(n) for n in (1, 2, 3, 4)])
    assert [(e.token, e.peer) for e in r.entries] == [(0, PeerName(1)), (1, PeerName(3))]
    r.check_invariants()


def test_creation_needs_empty_ring() -> None:
    r = ring()
    r.claim_for_peers([H1])
    with pytest.raises(Bug):
        r.claim_for_peers([H1])


# ---- grants (trace b) ---------------------------------------------------------------------


def trace_b_ring() -> Ring:
    a = ring(H1)
    a.claim_for_peers([H1])
    a.report_free({START: (1 << 20) - 1})  # cA = 10.32.0.1 allocated
    return a


def test_grant_trace_b_sequence() -> None:
    a = trace_b_ring()
    a.grant_range_to_host(ip("10.44.0.0"), END, H3)
    assert a.entries == [Entry(START, H1, 2, 786432), Entry(ip("10.44.0.0"), H3, 0, 262144)]
    assert a.report_free({START: 786431})
    assert a.entries[0] == Entry(START, H1, 3, 786431)
    a.grant_range_to_host(ip("10.36.0.0"), ip("10.40.0.0"), H2)
    assert a.entries == [
        Entry(START, H1, 4, 262144),
        Entry(ip("10.36.0.0"), H2, 0, 262144),
        Entry(ip("10.40.0.0"), H1, 0, 262144),
        Entry(ip("10.44.0.0"), H3, 0, 262144),
    ]


def test_grant_at_existing_token_updates_it() -> None:
    a = ring(H1)
    a.claim_for_peers([H1])
    a.grant_range_to_host(START, ip("10.40.0.0"), H2)
    assert a.entries == [Entry(START, H2, 1, 524288), Entry(ip("10.40.0.0"), H1, 0, 524288)]


def test_grant_wrapping_range_from_last_entry() -> None:
    a = Ring(0, 100, H1, [Entry(0, H2, 0, 50), Entry(50, H1, 0, 50)])
    a.grant_range_to_host(90, 100, H3)
    assert a.entries == [Entry(0, H2, 0, 50), Entry(50, H1, 1, 40), Entry(90, H3, 0, 10)]


def test_grant_of_foreign_space_is_a_bug() -> None:
    a = ring(H1)
    a.claim_for_peers([H1, H2])
    with pytest.raises(Bug):
        a.grant_range_to_host(START, ip("10.33.0.0"), H3)


# ---- merge rules --------------------------------------------------------------------------


def test_merge_adopts_everything_into_empty_ring() -> None:
    theirs = ring(H2)
    theirs.claim_for_peers([H1, H2])
    ours = ring(H1)
    assert ours.merge(theirs, never)
    assert ours.entries == theirs.entries and ours.seeds == theirs.seeds
    assert not ours.merge(theirs, never)


def test_merge_higher_version_wins() -> None:
    ours = ring(H3, [Entry(START, H1, 1, 10), Entry(ip("10.40.0.0"), H2, 5, 10)])
    theirs = ring(H2, [Entry(START, H1, 2, 9), Entry(ip("10.40.0.0"), H2, 4, 11)])
    assert ours.merge(theirs, never)
    assert ours.entries == [Entry(START, H1, 2, 9), Entry(ip("10.40.0.0"), H2, 5, 10)]


def test_merge_different_seeds_is_an_error() -> None:
    ours = ring(H1)
    ours.claim_for_peers([H1])
    theirs = ring(H2)
    theirs.claim_for_peers([H2])
    with pytest.raises(DifferentSeedsError, match="seeded by different peers"):
        ours.merge(theirs, never)
    assert isinstance(DifferentSeedsError("x"), ProtocolError)


def test_merge_different_range_is_an_error() -> None:
    ours = ring(H1)
    theirs = Ring(START, ip("10.40.0.0"), H2)
    theirs.claim_for_peers([H2])
    with pytest.raises(DifferentRangeError, match=r"received: 10.32.0.0/13, ours: 10.32.0.0/12"):
        ours.merge(theirs, never)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([Entry(ip("10.40.0.0"), H2), Entry(START, H2)], "not sorted"),
        ([Entry(START, H2), Entry(START, H1)], "twice"),
        ([Entry(END, H2)], "out of range"),
        ([Entry(START, H2, 0, (1 << 20) + 1)], "too much free"),
    ],
)
def test_merge_rejects_invalid_rings(entries: list[Entry], message: str) -> None:
    ours = ring(H1)
    with pytest.raises(RingInvariantError, match=message):
        ours.merge(ring(H2, entries), never)


def test_merge_equal_version_different_owner_larger_free_wins() -> None:
    ours = ring(H3, [Entry(START, H1, 3, 10)])
    theirs = ring(H2, [Entry(START, H2, 3, 20)])
    assert ours.merge(theirs, never)
    assert ours.entries == [Entry(START, H2, 3, 20)]
    back = ring(H3, [Entry(START, H2, 3, 20)])
    assert not back.merge(ring(H2, [Entry(START, H1, 3, 10)]), never)


def test_merge_equal_version_conflict_on_our_allocated_entry_is_an_error() -> None:
    ours = ring(H1, [Entry(START, H1, 3, 10)])
    with pytest.raises(OwnershipConflictError, match="Inconsistent entries"):
        ours.merge(ring(H2, [Entry(START, H2, 3, 20)]), always)


def test_merge_newer_version_giving_away_our_empty_range_is_accepted() -> None:
    ours = ring(H1, [Entry(START, H1, 3, 10)])
    assert ours.merge(ring(H2, [Entry(START, H2, 9, 5)]), never)
    assert ours.entries == [Entry(START, H2, 9, 5)]


def test_merge_newer_version_giving_away_our_allocated_range_is_an_error() -> None:
    ours = ring(H1, [Entry(START, H1, 3, 10)])
    with pytest.raises(OwnershipConflictError, match="Received update for IP range I own"):
        ours.merge(ring(H2, [Entry(START, H2, 9, 5)]), always)


def test_merge_newer_version_naming_us_is_reasserted_above_it() -> None:
    ours = ring(H1, [Entry(START, H1, 3, 10)])
    assert ours.merge(ring(H2, [Entry(START, H1, 7, 4)]), always)
    assert ours.entries == [Entry(START, H1, 8, 10)]


def test_merge_foreign_token_inside_our_allocated_range_is_an_error() -> None:
    ours = ring(H1, [Entry(START, H1, 1, 100)])
    theirs = ring(H2, [Entry(START, H1, 1, 100), Entry(ip("10.40.0.0"), H2, 0, 5)])
    with pytest.raises(OwnershipConflictError, match="which I think I own"):
        ours.merge(theirs, always)
    assert ours.entries == [Entry(START, H1, 1, 100)]  # untouched on error
    assert ours.merge(theirs, never)  # no allocations there: accepted


def test_merge_foreign_token_between_tokens_checks_allocations() -> None:
    ours = ring(H1, [Entry(START, H1, 1, 100), Entry(ip("10.44.0.0"), H2, 0, 5)])
    theirs = ring(H2, [Entry(ip("10.40.0.0"), H3, 0, 5)])
    with pytest.raises(OwnershipConflictError):
        ours.merge(theirs, always)


def test_merge_clips_our_free_count_after_a_split() -> None:
    ours = ring(H1, [Entry(START, H1, 1, 1 << 20)])
    theirs = ring(H2, [Entry(START, H1, 1, 5), Entry(ip("10.40.0.0"), H2, 0, 5)])
    assert ours.merge(theirs, never)
    assert ours.entries[0] == Entry(START, H1, 1, 524288)


def test_merge_adopts_seeds_when_we_have_none() -> None:
    ours = ring(H1, [Entry(START, H2, 0, 5)])
    theirs = ring(H2, [Entry(START, H2, 0, 5)], seeds=(H2,))
    assert ours.merge(theirs, never)
    assert ours.seeds == (H2,)


# ---- transfer, queries ----------------------------------------------------------------------


def test_transfer_bumps_versions_by_100() -> None:
    r = ring(H2)
    r.claim_for_peers([H1, H2])
    moved = r.transfer(H2, H1)
    assert moved == [Range(START, ip("10.40.0.0"))]
    assert r.entries[0] == Entry(START, H1, 100, 524288)


def test_transfer_splits_wrapping_range() -> None:
    r = Ring(0, 100, H1, [Entry(10, H2, 0, 50), Entry(60, H3, 0, 50)])
    assert r.transfer(H3, H1) == [Range(0, 10), Range(60, 100)]


def test_owner_and_owned_ranges() -> None:
    r = Ring(0, 100, H1, [Entry(10, H2, 0, 50), Entry(60, H1, 0, 40)])
    assert r.owner(5) == H1 and r.owner(10) == H2 and r.owner(59) == H2 and r.owner(99) == H1
    assert r.owned_ranges() == [Range(0, 10), Range(60, 100)]
    assert ring().owner(START) == PeerName(0)


def test_report_free_folds_wrapped_range() -> None:
    r = Ring(0, 100, H1, [Entry(10, H2, 0, 50), Entry(60, H1, 0, 40)])
    assert r.report_free({0: 5, 60: 20})
    assert r.entries[1] == Entry(60, H1, 1, 25)
    assert not r.report_free({0: 5, 60: 20})


def test_choose_peers_weighted_and_excludes_us() -> None:
    r = Ring(0, 100, H1, [Entry(0, H1, 0, 40), Entry(40, H2, 0, 30), Entry(70, H3, 0, 0)])
    assert r.choose_peers_to_ask_for_space(0, 100, random.Random(1)) == [H2]
    assert r.choose_peers_to_ask_for_space(0, 40, random.Random(1)) == []


def test_pick_peer_for_transfer_in_ring_order() -> None:
    r = Ring(0, 100, H1, [Entry(0, H1), Entry(40, H3), Entry(70, H2)])
    assert r.pick_peer_for_transfer(lambda p: True) == H3
    assert r.pick_peer_for_transfer(lambda p: p == H2) == H2
    assert r.pick_peer_for_transfer(lambda p: False) == PeerName(0)


# ---- algebra on valid histories -------------------------------------------------------------

PEERS = [PeerName(n) for n in (0x11, 0x22, 0x33, 0x44)]


def history(seed: int, steps: int) -> list[Ring]:
    """Snapshots of owners' rings from a valid history: owners grant parts of their free
    space, report free counts and exchange rings (merges), as real peers do."""
    rng = random.Random(seed)
    rings = {p: Ring(0, 1 << 16, p) for p in PEERS}
    seeds = rng.sample(PEERS, rng.randint(1, 3))
    for p in PEERS:
        rings[p].claim_for_peers(seeds)
    snapshots = [rings[p].copy() for p in PEERS]
    for _ in range(steps):
        p = rng.choice(PEERS)
        r = rings[p]
        action = rng.random()
        owned = r.owned_ranges()
        if action < 0.35 and owned:
            span = rng.choice(owned)
            if span.size >= 2:
                lo = rng.randrange(span.start, span.end - 1)
                hi = rng.randrange(lo + 1, span.end + 1)
                r.grant_range_to_host(lo, hi, rng.choice([q for q in PEERS if q != p]))
        elif action < 0.6 and owned:
            r.report_free({s.start: rng.randint(0, s.size) for s in owned})
        else:
            # Owners only have no allocations here, so every merge must succeed.
            r.merge(rings[rng.choice(PEERS)], never)
        snapshots.append(r.copy())
    return snapshots


def merged(peer: PeerName, *rs: Ring) -> Ring:
    out = Ring(0, 1 << 16, peer)
    for r in rs:
        out.merge(r, never)
    return out


OBSERVER = PeerName(0x99)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.data())
def test_merge_is_commutative_associative_idempotent(seed: int, data: st.DataObject) -> None:
    snaps = history(seed, 40)
    a, b, c = (data.draw(st.sampled_from(snaps)) for _ in range(3))
    ab = merged(OBSERVER, a, b)
    ba = merged(OBSERVER, b, a)
    assert ab.entries == ba.entries and ab.seeds == ba.seeds
    assert merged(OBSERVER, ab, c).entries == merged(OBSERVER, a, merged(OBSERVER, b, c)).entries
    again = ab.copy()
    assert not again.merge(ab, never)
    assert again.entries == ab.entries


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_owners_converge_after_exchanging_rings(seed: int) -> None:
    snaps = history(seed, 60)
    final = merged(OBSERVER, *snaps)
    final.check_invariants()
    # Every address is owned by exactly one peer: ranges of all peers tile the ring.
    total = sum(r.size for p in {e.peer for e in final.entries} for r in final.owned_ranges(p))
    assert total == 1 << 16
