"""Zone rules (FACTS.md §6): add, tombstone, merge, self-correction, purge, peer gone."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weaved.dns.zone import (
    GOSSIP_WINDOW,
    TOMBSTONE_TIMEOUT,
    Entry,
    Zone,
    ip_to_int,
    store_order,
)
from weaved.errors import ProtocolError
from weaved.mesh.gossip_api import PeerName

US = PeerName(0x3E80E75A63A7)
THEM = PeerName(0x2A9FF1998A21)
GONE = PeerName(0xAEC0016F34D5)
NOW = 1795304244
A1 = ip_to_int("10.32.0.1")
A2 = ip_to_int("10.32.0.2")


def known(peer: PeerName) -> bool:
    return peer in (US, THEM)


def test_add_then_lookup_is_case_insensitive_and_keeps_spelling() -> None:
    z = Zone(US)
    e = z.add("Web.weave.local.", "c1", US, A1)
    assert e == Entry("c1", US, A1, "Web.weave.local.")
    assert z.lookup("web.WEAVE.local.") == [A1]
    assert z.reverse_lookup(A1) == "Web.weave.local."


def test_names_differing_in_case_are_two_entries_answering_together() -> None:
    z = Zone(US)
    z.add("c1.weave.local.", "a", US, A1)
    z.add("C1.weave.local.", "b", US, A2)
    assert len(z) == 2
    assert sorted(z.lookup("c1.weave.local.")) == [A1, A2]


def test_readding_is_a_no_op_and_readding_a_tombstone_revives_it_with_version_plus_one() -> None:
    z = Zone(US)
    first = z.add("c1.weave.local.", "c1", US, A1)
    gen = z.generation
    assert z.add("c1.weave.local.", "c1", US, A1) == first
    assert z.generation == gen
    [dead] = z.delete(NOW, hostname="c1.weave.local.")
    assert (dead.version, dead.tombstone) == (1, NOW)
    assert z.lookup("c1.weave.local.") == []
    revived = z.add("c1.weave.local.", "c1", US, A1)
    assert (revived.version, revived.tombstone) == (2, 0)


def test_delete_only_touches_our_entries_and_matches_every_given_field() -> None:
    z = Zone(US)
    z.add("a.weave.local.", "c1", US, A1)
    z.add("b.weave.local.", "c1", US, A2)
    z.merge([Entry("c9", THEM, A1, "a.weave.local.")])
    assert z.delete(NOW, container_id="c1", addr=A2) == [
        Entry("c1", US, A2, "b.weave.local.", 1, NOW)
    ]
    dead = z.delete(NOW, hostname="a.weave.local.")
    assert [e.origin for e in dead] == [US]
    assert z.lookup("a.weave.local.") == [A1]  # the other peer's entry is still live
    assert z.delete(NOW, hostname="A.weave.local.") == []  # hostnames compare exactly


def test_container_died_tombstones_all_its_names() -> None:
    z = Zone(US)
    z.add("a.weave.local.", "c1", US, A1)
    z.add("b.weave.local.", "c1", US, A1)
    z.add("c.weave.local.", "c2", US, A2)
    dead = z.container_died(NOW, "c1")
    assert [e.hostname for e in dead] == ["a.weave.local.", "b.weave.local."]
    assert all(e.tombstone == NOW and e.version == 1 for e in dead)
    assert z.container_died(NOW + 5, "c1") == []  # already dead: nothing new


def test_tombstones_are_purged_after_thirty_minutes() -> None:
    z = Zone(US)
    z.add("a.weave.local.", "c1", US, A1)
    z.delete(NOW, container_id="c1")
    assert z.purge_tombstones(NOW + TOMBSTONE_TIMEOUT) == 0
    assert z.purge_tombstones(NOW + TOMBSTONE_TIMEOUT + 1) == 1
    assert len(z) == 0


def test_peer_gone_drops_every_entry_of_that_peer() -> None:
    z = Zone(US)
    z.merge([Entry("c", GONE, A1, "x.weave.local."), Entry("d", THEM, A2, "y.weave.local.")])
    assert z.peer_gone(GONE) == 1
    assert [e.origin for e in z.entries()] == [THEM]
    assert z.retain_origins(lambda p: p == US) == 1
    assert len(z) == 0


def test_merge_higher_version_wins_then_larger_tombstone() -> None:
    z = Zone(US)
    live = Entry("c", THEM, A1, "x.weave.local.")
    z.merge([live])
    dead = Entry("c", THEM, A1, "x.weave.local.", 1, NOW)
    assert z.merge([dead]) == [dead]
    assert z.merge([live]) == []  # older version loses
    later = Entry("c", THEM, A1, "x.weave.local.", 1, NOW + 10)
    assert z.merge([later]) == [later]
    assert z.merge([dead]) == []
    assert z.entries() == [later]


def test_receive_rejects_clock_skew() -> None:
    z = Zone(US)
    z.receive(NOW + GOSSIP_WINDOW, [], NOW, known)
    z.receive(NOW - GOSSIP_WINDOW, [], NOW, known)
    with pytest.raises(ProtocolError, match="clock skew"):
        z.receive(NOW + GOSSIP_WINDOW + 1, [], NOW, known)
    with pytest.raises(ProtocolError):
        z.receive(NOW - GOSSIP_WINDOW - 1, [], NOW, known)


def test_receive_drops_entries_of_unknown_origins() -> None:
    z = Zone(US)
    got = z.receive(
        NOW,
        [Entry("c", GONE, A1, "x.weave.local."), Entry("d", THEM, A2, "y.weave.local.")],
        NOW,
        known,
    )
    assert [e.origin for e in got.new] == [THEM]
    assert [e.origin for e in got.relay] == [THEM]
    assert z.lookup("x.weave.local.") == []


def test_receive_corrects_a_stale_copy_of_our_entry() -> None:
    z = Zone(US)
    z.add("a.weave.local.", "c1", US, A1)
    # Someone claims our live entry was deleted (say, by our previous incarnation).
    claim = Entry("c1", US, A1, "a.weave.local.", 3, NOW - 100)
    got = z.receive(NOW, [claim], NOW, known)
    fixed = Entry("c1", US, A1, "a.weave.local.", 4, 0)
    assert got.overridden == [fixed]
    assert got.relay == [fixed]
    assert z.entries() == [fixed]
    # An identical copy is left alone.
    assert z.receive(NOW, [fixed], NOW, known).overridden == []


def test_receive_tombstones_our_entries_we_no_longer_have() -> None:
    z = Zone(US)
    leftover = Entry("c1", US, A1, "a.weave.local.", 2, 0)
    got = z.receive(NOW, [leftover], NOW, known)
    dead = Entry("c1", US, A1, "a.weave.local.", 3, NOW)
    assert got.overridden == [dead]
    assert z.entries() == [dead]
    # A tombstone of ours we do not have is simply learnt.
    z2 = Zone(US)
    assert z2.receive(NOW, [dead], NOW, known).overridden == []
    assert z2.entries() == [dead]


def test_entries_are_listed_in_case_insensitive_table_order() -> None:
    z = Zone(US)
    z.merge(
        [
            Entry("c", THEM, A1, "b.weave.local."),
            Entry("c", THEM, A1, "A.weave.local."),
            Entry("c", US, A1, "a.weave.local."),
        ]
    )
    # Names compare case-insensitively first, then by origin (THEM < US).
    assert [e.hostname for e in z.entries()] == [
        "A.weave.local.",
        "a.weave.local.",
        "b.weave.local.",
    ]


def test_listeners_hear_changes() -> None:
    z = Zone(US)
    calls: list[int] = []
    z.subscribe(lambda: calls.append(z.generation))
    z.add("a.weave.local.", "c1", US, A1)
    z.merge([])
    z.delete(NOW, container_id="zzz")
    assert calls == [1]


# -- properties ---------------------------------------------------------------------------

entries = st.builds(
    Entry,
    container_id=st.sampled_from(["c1", "c2"]),
    origin=st.sampled_from([US, THEM]),
    addr=st.sampled_from([A1, A2]),
    hostname=st.sampled_from(["a.weave.local.", "A.weave.local.", "b.weave.local."]),
    version=st.integers(0, 3),
    tombstone=st.sampled_from([0, NOW, NOW + 1]),
)
batches = st.lists(st.lists(entries, max_size=6), max_size=6)


def table(z: Zone) -> list[Entry]:
    return sorted(z.entries(), key=store_order)


@settings(max_examples=300, deadline=None)
@given(batches, st.randoms(use_true_random=False))
def test_merge_order_does_not_matter(gossip: list[list[Entry]], rnd: random.Random) -> None:
    a, b = Zone(US), Zone(US)
    for batch in gossip:
        a.merge(batch)
    flat = [e for batch in gossip for e in batch]
    rnd.shuffle(flat)
    for e in flat:
        b.merge([e])
    assert table(a) == table(b)


@settings(max_examples=200, deadline=None)
@given(batches)
def test_merge_is_idempotent(gossip: list[list[Entry]]) -> None:
    z = Zone(US)
    for batch in gossip:
        z.merge(batch)
    before = table(z)
    assert z.merge(before) == []
    assert table(z) == before


@settings(max_examples=200, deadline=None)
@given(st.lists(entries, max_size=8))
def test_a_tombstone_from_the_origin_beats_every_older_copy(mesh_copies: list[Entry]) -> None:
    """Whatever stale copies circulate, the origin's deletion (version above them all) wins."""
    origin = Zone(US)
    origin.add("a.weave.local.", "c1", US, A1)
    for e in mesh_copies:  # our own stale or foreign copies come back to us
        origin.receive(NOW, [e], NOW, known)
    dead = origin.delete(NOW + 1, hostname="a.weave.local.", container_id="c1", addr=A1)
    other = Zone(THEM)
    other.merge(mesh_copies)
    other.merge(dead)
    other.merge(mesh_copies)  # stale copies arriving late change nothing
    assert other.lookup("a.weave.local.") == [
        e.addr
        for e in other.entries()
        if e.live and e.hostname.lower() == "a.weave.local." and e.key != dead[0].key
    ]
    assert other.get(dead[0].key) == dead[0]


def test_a_peer_cannot_grow_the_zone_beyond_its_cap() -> None:
    z = Zone(US, max_per_origin=3)
    flood = [Entry(f"c{i}", THEM, A1 + i, f"n{i}.weave.local.") for i in range(10)]
    got = z.receive(NOW, flood, NOW, known)
    assert len(got.new) == 3 and len(got.relay) == 3  # refused ones are not passed on
    assert z.count_of(THEM) == 3 and z.refused == 7 and len(z) == 3
    # Entries already held still take updates (a tombstone from their origin).
    dead = Entry("c0", THEM, A1, "n0.weave.local.", version=1, tombstone=NOW)
    assert z.merge([dead]) == [dead]
    # Our own names are never capped, and a peer's count drops when it goes.
    for i in range(5):
        z.add(f"ours{i}.weave.local.", f"o{i}", US, A2 + i)
    assert z.count_of(US) == 5
    assert z.peer_gone(THEM) == 3 and z.count_of(THEM) == 0
    assert len(z.merge(flood[5:])) == 3


operations = st.lists(
    st.one_of(
        st.tuples(st.just("merge"), st.lists(entries, max_size=4)),
        st.tuples(st.just("add"), entries),
        st.tuples(st.just("delete"), st.sampled_from(["c1", "c2"])),
        st.tuples(st.just("gone"), st.sampled_from([US, THEM])),
        st.tuples(st.just("purge"), st.sampled_from([NOW, NOW + TOMBSTONE_TIMEOUT + 2])),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_the_index_agrees_with_the_entries_whatever_happens(ops: list[tuple[str, Any]]) -> None:
    """The name index keeps a lone entry bare and several in a group: whichever way a name
    goes between one and several entries, lookups, keys and counts agree with the table."""
    z = Zone(US)
    for op, arg in ops:
        if op == "merge":
            z.merge(arg)
        elif op == "add":
            z.add(arg.hostname, arg.container_id, US, arg.addr)
        elif op == "delete":
            z.container_died(NOW, arg)
        elif op == "gone":
            z.peer_gone(arg)
        else:
            z.purge_tombstones(arg)
        table = z.entries()
        assert len(z) == len(table) == len({e.key for e in table})
        for e in table:
            assert z.get(e.key) == e
        for name in ("a.weave.local.", "b.weave.local."):
            live = [e.addr for e in table if e.live and e.hostname.lower() == name]
            assert z.lookup(name.upper()) == live
        for origin in (US, THEM):
            assert z.count_of(origin) == sum(1 for e in table if e.origin == origin)
        for addr in (A1, A2):
            holders = [e.hostname for e in table if e.live and e.addr == addr]
            assert z.reverse_lookup(addr) == (holders[0] if holders else None)
