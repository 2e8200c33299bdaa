"""Weave's forwarding decisions (FACTS.md §7.1, §7.4) over real route tables, and the MAC
cache with an injected clock."""

from __future__ import annotations

from weaved.datapath.sleeve.forwarding import (
    DROP_LOCAL,
    DROP_MAC_CONFLICT,
    DROP_NO_ROUTE,
    DROP_OWN_FRAME,
    DROP_STP,
    DROP_UNKNOWN_PEER,
    ForwardingTable,
    Switch,
)
from weaved.datapath.sleeve.maccache import MAC_MAX_AGE, MacCache
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.peername import peer_name_to_bytes
from weaved.mesh.routes import Graph, Routes

# Trace b's peers: A (host1), B (host2), C (host3).
A, B, C = PeerName(0x3E80E75A63A7), PeerName(0x2A9FF1998A21), PeerName(0xAEC0016F34D5)
D = PeerName(0x020000000004)
a, b, c, d = (peer_name_to_bytes(p) for p in (A, B, C, D))
MAC_A, MAC_B, MAC_C = (bytes.fromhex(f"0e00000000a{i}") for i in (1, 2, 3))
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e010203")


def line() -> Graph:
    """A - B - C, every connection established at both ends."""
    return {A: {B: True}, B: {A: True, C: True}, C: {B: True}}


def table(graph: Graph, us: PeerName) -> ForwardingTable:
    return ForwardingTable.from_routes(Routes(us, graph), list(graph))


def switch(graph: Graph, us: PeerName) -> Switch:
    sw = Switch(peer_name_to_bytes(us))
    sw.table = table(graph, us)
    return sw


# --- MAC cache -------------------------------------------------------------------------------


def test_mac_cache_add_conflict_and_forced_move() -> None:
    macs = MacCache()
    assert macs.add(MAC_A, a, 1.0) == (True, None)
    assert macs.add(MAC_A, a, 2.0) == (False, None)
    assert macs.table[MAC_A].last_seen == 2.0
    # Captured from another peer's MAC: kept, conflict reported.
    assert macs.add(MAC_A, b, 3.0) == (False, a)
    assert macs.lookup(MAC_A) == a
    # Received: the MAC moves.
    assert macs.add_forced(MAC_A, b, 4.0) == (False, a)
    assert macs.lookup(MAC_A) == b
    assert macs.add_forced(MAC_B, b, 4.0) == (True, None)
    assert macs.lookup(bytes(6)) is None


def test_mac_cache_expiry_and_peer_removal() -> None:
    macs = MacCache()
    macs.add(MAC_A, a, 0.0)
    macs.add(MAC_B, b, 100.0)
    macs.add_forced(MAC_C, b, 200.0)
    assert macs.expire(MAC_MAX_AGE) == []
    assert macs.expire(MAC_MAX_AGE + 0.5) == [(MAC_A, a)]
    macs.add(MAC_B, b, 650.0)  # refreshed
    assert macs.expire(MAC_MAX_AGE + 100.5) == []
    assert macs.delete_peer(b) == 2 and len(macs) == 0


# --- routes snapshot -------------------------------------------------------------------------


def test_table_from_routes_line() -> None:
    t = table(line(), A)
    assert t.next_hop(c) == b and t.next_hop(b) == b and t.next_hop(a) is None
    assert t.to_peer(c).sends == ((b, c),)
    assert t.to_peer(d) is DROP_NO_ROUTE
    # A's broadcast: to B; B passes A's broadcast on to C with C as destination (trace b:
    # "A's ARP request has dst B on A-B and dst C on B-C").
    assert t.broadcast_from(a).sends == ((b, b),)
    tb = table(line(), B)
    assert tb.broadcast_from(a).sends == ((c, c),)
    assert tb.broadcast_from(c).sends == ((a, a),)
    assert tb.broadcast_from(b).sends == ((a, a), (c, c))
    assert table(line(), C).broadcast_from(a).sends == ()


def test_unestablished_connections_carry_no_data() -> None:
    graph: Graph = {A: {B: True}, B: {A: False}}
    assert table(graph, A).next_hop(b) is None


def test_broadcast_tree_in_a_full_mesh_sends_each_frame_once() -> None:
    peers = [A, B, C, D]
    graph: Graph = {p: {q: True for q in peers if q != p} for p in peers}
    # From A: everyone is A's neighbour, so A sends to all and nobody passes it on.
    assert {h for h, _ in table(graph, A).broadcast_from(a).sends} == {b, c, d}
    for us in (B, C, D):
        assert table(graph, us).broadcast_from(a).sends == ()


# --- decisions -------------------------------------------------------------------------------


def test_captured_unknown_destination_floods_then_unicast_once_learned() -> None:
    sw = switch(line(), A)
    first = sw.captured(MAC_A, BCAST, 1.0)
    assert first.sends == ((b, b),) and first.broadcast and not first.inject
    assert sw.macs.lookup(MAC_A) == a
    # C's MAC learned from a frame C sent (relayed by B): unicast towards C via B.
    assert sw.received(c, a, MAC_C, MAC_A, 2.0).inject
    unicast = sw.captured(MAC_A, MAC_C, 3.0)
    assert unicast.sends == ((b, c),) and not unicast.broadcast
    assert sw.captured(MAC_A, MCAST, 4.0).broadcast


def test_captured_drops() -> None:
    sw = switch(line(), A)
    sw.captured(MAC_A, BCAST, 1.0)
    sw.captured(MAC_B, BCAST, 1.0)
    assert sw.captured(MAC_B, MAC_A, 2.0) is DROP_LOCAL  # the bridge should have done it
    assert sw.captured(MAC_A, bytes.fromhex("0180c2000000"), 2.0) is DROP_STP
    sw.received(b, a, MAC_C, BCAST, 2.0)  # MAC_C now at B
    assert sw.captured(MAC_C, BCAST, 3.0) is DROP_MAC_CONFLICT


def test_received_for_us_is_learned_injected_and_broadcasts_continue() -> None:
    sw = switch(line(), B)
    sw.captured(MAC_B, BCAST, 0.0)
    # A's broadcast arrives at B with dst B: inject, continue to C with dst C.
    bcast = sw.received(a, b, MAC_A, BCAST, 1.0)
    assert bcast.inject and bcast.sends == ((c, c),)
    assert sw.macs.lookup(MAC_A) == a
    # Unicast to a MAC of ours: inject only.
    uni = sw.received(a, b, MAC_A, MAC_B, 2.0)
    assert uni.inject and uni.sends == ()
    # Unicast to a MAC we do not know: like a broadcast (the sender did not know either).
    unknown = sw.received(a, b, MAC_A, bytes.fromhex("0e00000000ff"), 3.0)
    assert unknown.inject and unknown.sends == ((c, c),)


def test_received_for_another_peer_is_relayed_unchanged() -> None:
    sw = switch(line(), B)
    relay = sw.received(a, c, MAC_A, MAC_C, 1.0)
    assert relay.sends == ((c, c),) and not relay.inject
    assert sw.macs.lookup(MAC_A) is None  # relays teach B nothing
    assert switch(line(), A).received(c, d, MAC_C, MAC_A, 1.0) is DROP_UNKNOWN_PEER


def test_received_drops_unknown_and_own_frames() -> None:
    sw = switch(line(), B)
    assert sw.received(d, b, MAC_A, BCAST, 1.0) is DROP_UNKNOWN_PEER
    assert sw.received(b, b, MAC_A, BCAST, 1.0) is DROP_OWN_FRAME
    assert switch({A: {}}, A).received(a, b, MAC_A, BCAST, 1.0) is DROP_UNKNOWN_PEER


def test_a_mac_moving_between_peers_follows_received_frames() -> None:
    sw = switch(line(), A)
    sw.received(b, a, MAC_C, MAC_A, 1.0)
    assert sw.captured(MAC_A, MAC_C, 2.0).sends == ((b, b),)
    sw.received(c, a, MAC_C, MAC_A, 3.0)
    assert sw.captured(MAC_A, MAC_C, 4.0).sends == ((b, c),)
