"""The nameserver channel over an in-memory mesh of three peers."""

from __future__ import annotations

import pytest

from weaved.dns.gossiper import DnsGossipData, DnsGossiper, container_fqdn
from weaved.dns.wire import decode_gossip, encode_gossip
from weaved.dns.zone import TOMBSTONE_TIMEOUT, Entry, Zone, ip_to_int
from weaved.errors import ProtocolError
from weaved.mesh.gossip import GossipQueue
from weaved.mesh.gossip_api import GossipData, PeerName

A, B, C = PeerName(0x3E80E75A63A7), PeerName(0x2A9FF1998A21), PeerName(0xAEC0016F34D5)


class Clock:
    def __init__(self) -> None:
        self.t = 1795304244.0

    def __call__(self) -> float:
        return self.t


class Peers:
    """PeerView of a fake topology shared by every peer."""

    def __init__(self, me: PeerName, known: set[PeerName]) -> None:
        self.me, self.known = me, known

    def our_name(self) -> PeerName:
        return self.me

    def known_peers(self) -> dict[PeerName, str]:
        return {p: "" for p in self.known}

    def reachable_peers(self) -> set[PeerName]:
        return set(self.known)


class Mesh:
    """Delivers broadcasts to everyone else, as the encoded bytes would travel."""

    def __init__(self, clock: Clock, names: list[PeerName]) -> None:
        self.known = set(names)
        self.nodes: dict[PeerName, DnsGossiper] = {}
        self.connected = True
        self.broadcasts: list[tuple[PeerName, GossipData]] = []
        for name in names:
            g = DnsGossiper(Zone(name), Peers(name, self.known), "weave.local.", clock)
            g.set_sender(Sender(self, name))
            self.nodes[name] = g

    def deliver(self, origin: PeerName, data: GossipData) -> None:
        self.broadcasts.append((origin, data))
        if not self.connected:
            return
        for name, node in self.nodes.items():
            if name != origin:
                for payload in data.encode():
                    node.on_gossip_broadcast(origin, payload)

    def periodic(self) -> None:
        for name, node in self.nodes.items():
            state = node.gossip()
            assert state is not None
            for other, peer in self.nodes.items():
                if other != name:
                    for payload in state.encode():
                        peer.on_gossip(payload)


class Sender:
    def __init__(self, mesh: Mesh, me: PeerName) -> None:
        self.mesh, self.me = mesh, me

    def gossip_unicast(self, dst: PeerName, payload: bytes) -> None:
        raise AssertionError("nameserver never unicasts")

    def gossip_broadcast(self, data: GossipData) -> None:
        self.mesh.deliver(self.me, data)

    def gossip_neighbours(self, data: GossipData) -> None:
        raise AssertionError("not used")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mesh(clock: Clock) -> Mesh:
    return Mesh(clock, [A, B, C])


def names(g: DnsGossiper, name: str) -> list[int]:
    return sorted(g.zone.lookup(name))


def test_an_added_name_reaches_every_peer(mesh: Mesh) -> None:
    entry = mesh.nodes[A].add("web.weave.local", "c1", "10.32.0.1")
    assert entry is not None and entry.hostname == "web.weave.local."
    for node in mesh.nodes.values():
        assert names(node, "web.weave.local.") == [ip_to_int("10.32.0.1")]
    [(origin, data)] = mesh.broadcasts
    assert origin == A
    assert decode_gossip(data.encode()[0])[1] == [entry]


def test_names_outside_the_domain_are_ignored(mesh: Mesh) -> None:
    assert mesh.nodes[A].add("web.example.com", "c1", "10.32.0.1") is None
    assert mesh.broadcasts == []


def test_removal_wins_across_the_mesh(mesh: Mesh, clock: Clock) -> None:
    mesh.nodes[A].add("web.weave.local.", "c1", "10.32.0.1")
    mesh.connected = False
    clock.t += 5
    [dead] = mesh.nodes[A].container_died("c1")
    assert dead.tombstone == int(clock.t) and dead.version == 1
    assert names(mesh.nodes[B], "web.weave.local.") != []  # partitioned: B missed it
    mesh.connected = True
    mesh.periodic()  # B and C still gossip the live copy, A gossips the tombstone
    mesh.periodic()
    for node in mesh.nodes.values():
        assert names(node, "web.weave.local.") == []


def test_dns_remove_only_removes_our_own(mesh: Mesh) -> None:
    mesh.nodes[A].add("web.weave.local.", "c1", "10.32.0.1")
    mesh.nodes[B].add("web.weave.local.", "c2", "10.36.0.1")
    assert mesh.nodes[B].delete(hostname="web.weave.local", addr="10.32.0.1") == []
    dead = mesh.nodes[B].delete(hostname="web.weave.local")
    assert [e.container_id for e in dead] == ["c2"]
    for node in mesh.nodes.values():
        assert names(node, "web.weave.local.") == [ip_to_int("10.32.0.1")]


def test_a_restarted_peer_kills_its_leftover_entries(mesh: Mesh, clock: Clock) -> None:
    mesh.nodes[A].add("old.weave.local.", "c1", "10.32.0.1")
    # A restarts with an empty table; B's periodic gossip brings the old entry back to A.
    fresh = DnsGossiper(Zone(A), Peers(A, mesh.known), "weave.local.", clock)
    fresh.set_sender(Sender(mesh, A))
    mesh.nodes[A] = fresh
    mesh.broadcasts.clear()
    state = mesh.nodes[B].gossip()
    assert state is not None
    fresh.on_gossip(state.encode()[0])
    [(origin, data)] = mesh.broadcasts
    assert origin == A
    [dead] = decode_gossip(data.encode()[0])[1]
    assert (dead.hostname, dead.version, dead.tombstone) == ("old.weave.local.", 1, int(clock.t))
    for node in mesh.nodes.values():
        assert names(node, "old.weave.local.") == []


def test_periodic_gossip_returns_only_what_is_new(mesh: Mesh) -> None:
    mesh.connected = False
    mesh.nodes[A].add("a.weave.local.", "c1", "10.32.0.1")
    state = mesh.nodes[A].gossip()
    assert state is not None
    payload = state.encode()[0]
    new = mesh.nodes[B].on_gossip(payload)
    assert isinstance(new, DnsGossipData) and len(new.entries) == 1
    assert mesh.nodes[B].on_gossip(payload) is None


def test_broadcasts_are_relayed_as_received(mesh: Mesh, clock: Clock) -> None:
    entry = Entry("c", A, ip_to_int("10.32.0.1"), "a.weave.local.")
    payload = encode_gossip(int(clock.t), [entry])
    relay = mesh.nodes[B].on_gossip_broadcast(A, payload)
    assert isinstance(relay, DnsGossipData)
    assert list(relay.entries.values()) == [entry]
    # Already known: still relayed (the originator's tree decides who needs it).
    assert mesh.nodes[B].on_gossip_broadcast(A, payload) is not None


def test_entries_of_unknown_peers_are_dropped_and_gone_peers_forgotten(
    mesh: Mesh, clock: Clock
) -> None:
    stranger = PeerName(0x0A0B0C0D0E0F)
    payload = encode_gossip(int(clock.t), [Entry("x", stranger, 1, "x.weave.local.")])
    assert mesh.nodes[A].on_gossip(payload) is None
    assert len(mesh.nodes[A].zone) == 0
    mesh.nodes[C].add("c.weave.local.", "c", "10.44.0.0")
    assert mesh.nodes[A].peer_gone(C) == 1
    mesh.known.discard(C)
    assert mesh.nodes[B].sync_peers() == 1
    assert names(mesh.nodes[B], "c.weave.local.") == []


def test_clock_skew_is_a_protocol_error(mesh: Mesh, clock: Clock) -> None:
    payload = encode_gossip(int(clock.t) + 901, [])
    with pytest.raises(ProtocolError):
        mesh.nodes[A].on_gossip(payload)
    with pytest.raises(ProtocolError):
        mesh.nodes[A].on_gossip_broadcast(B, b"garbage")


def test_tombstones_are_swept(mesh: Mesh, clock: Clock) -> None:
    mesh.nodes[A].add("a.weave.local.", "c1", "10.32.0.1")
    mesh.nodes[A].delete(container_id="c1")
    clock.t += TOMBSTONE_TIMEOUT + 1
    assert mesh.nodes[A].purge_tombstones() == 1
    assert len(mesh.nodes[A].zone) == 0


def test_pending_gossip_merges_by_the_zone_rules() -> None:
    live = Entry("c", A, 1, "a.weave.local.")
    dead = Entry("c", A, 1, "a.weave.local.", 1, 99)
    other = Entry("d", B, 2, "b.weave.local.")
    merged = DnsGossipData(5, [dead]).merge(DnsGossipData(7, [live, other]))
    assert isinstance(merged, DnsGossipData)
    assert merged.timestamp == 7
    assert sorted(merged.entries.values(), key=lambda e: e.hostname) == [dead, other]


def test_container_names() -> None:
    # A hostname inside the domain wins (`--hostname=web.weave.local`, Weave's way).
    assert container_fqdn("weave.local.", "web.weave.local", "c1") == "web.weave.local."
    assert container_fqdn("weave.local.", "web.weave.local.", "/c1") == "web.weave.local."
    assert container_fqdn("weave.local.", "db.app.weave.local", "c1") == "db.app.weave.local."
    # Any other hostname: the container's name, qualified with the domain.
    assert container_fqdn("weave.local.", "web.example.com", "/c1") == "c1.weave.local."
    assert container_fqdn("weave.local.", "web", "c1") == "c1.weave.local."
    assert container_fqdn("weave.local.", None, "/c1") == "c1.weave.local."
    assert container_fqdn("weave.local.", "", "c1.weave.local") == "c1.weave.local."
    assert container_fqdn("weave.local.", None, "web.v2") == "web.v2.weave.local."
    assert container_fqdn("corp.example.", "c2.weave.local", "/c2") == "c2.corp.example."
    assert container_fqdn("weave.local.", None, None) is None
    assert container_fqdn("weave.local.", "web.weave.local", None) == "web.weave.local."
    assert container_fqdn("weave.local.", "web", None) is None


def test_dockers_default_hostname_is_never_registered() -> None:
    cid = "9e9786a1bf6d4f6c0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f70819"
    # `docker run --name c2` (hostname = short ID) then `weaved attach c2`.
    assert container_fqdn("weave.local.", cid[:12], "/c2", cid) == "c2.weave.local."
    # The short ID stays the hostname inside `--domainname=weave.local`: still not a name.
    default = f"{cid[:12]}.weave.local"
    assert container_fqdn("weave.local.", default, "/c2", cid) == "c2.weave.local."
    assert container_fqdn("weave.local.", "c2.weave.local", "/c2", cid) == "c2.weave.local."


def test_pending_gossip_grows_in_place_without_touching_what_other_queues_hold() -> None:
    """A broadcast's data is in every neighbour's queue: merging into one queue must not
    change another's, yet a burst of registrations must not copy the pending set each time."""
    shared = DnsGossipData(1, [Entry("c0", A, 0, "n0.weave.local.")])
    first, second = GossipQueue(A), GossipQueue(A)
    first.add_broadcast("nameserver", A, shared)
    second.add_broadcast("nameserver", A, shared)
    for n in range(1, 50):
        first.add_broadcast("nameserver", A, DnsGossipData(1 + n, [Entry(f"c{n}", A, n, "x.")]))
    assert len(shared.entries) == 1  # what `second` holds is unchanged
    out = first.pop()
    assert out is not None and isinstance(out.data, DnsGossipData)
    assert len(out.data.entries) == 50 and out.data.timestamp == 50
    later = second.pop()
    assert later is not None and later.data is shared
    # The queue's own copy is grown, not copied again.
    grown = out.data.merge(DnsGossipData(99, []))
    assert grown is out.data


def test_a_payload_asks_the_mesh_for_its_peers_once(clock: Clock) -> None:
    """The mesh builds its peer list at each call: asking per received entry made every
    payload cost entries x peers (60-90 ms for 5 000 names in a 250-peer mesh)."""

    class CountingPeers(Peers):
        calls = 0

        def known_peers(self) -> dict[PeerName, str]:
            CountingPeers.calls += 1
            return super().known_peers()

    them = DnsGossiper(Zone(B), Peers(B, {A, B}), "weave.local.", clock)
    for n in range(50):
        them.add(f"n{n}.weave.local.", f"c{n}", f"10.32.0.{n + 1}")
    state = them.gossip()
    assert state is not None
    us = DnsGossiper(Zone(A), CountingPeers(A, {A, B}), "weave.local.", clock)
    us.on_gossip(state.encode()[0])
    assert CountingPeers.calls == 1 and len(us.zone) == 50
    us.on_gossip_broadcast(B, state.encode()[0])
    us.sync_peers()
    assert CountingPeers.calls == 3


def test_the_zone_state_kept_as_a_list_encodes_and_merges_as_any_other(mesh: Mesh) -> None:
    node = mesh.nodes[A]
    for n in range(20):
        node.add(f"n{n}.weave.local.", f"c{n}", f"10.32.0.{n + 1}")
    node.delete(container_id="c3")
    state = node.gossip()
    assert isinstance(state, DnsGossipData)
    plain = DnsGossipData(state.timestamp, node.zone.entries())
    assert state.encode() == plain.encode()
    extra = DnsGossipData(state.timestamp + 1, [Entry("x", B, 99, "x.weave.local.")])
    merged = state.merge(extra)
    assert isinstance(merged, DnsGossipData)
    assert merged.entries == {**plain.entries, **extra.entries}
    assert state.entries == plain.entries and repr(state) == repr(plain)
