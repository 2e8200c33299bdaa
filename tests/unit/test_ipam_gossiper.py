"""The IPallocation channel against the mesh's Gossiper contract."""

from __future__ import annotations

import itertools

import pytest

from weaved.errors import ProtocolError
from weaved.ipam.address import CIDR, Range
from weaved.ipam.allocator import Allocator, AllocatorConfig, ConsensusStart, SeedStart
from weaved.ipam.gossiper import IpamGossipData, IpamGossiper
from weaved.ipam.messages import IpamGossip, RingUpdate, SpaceRequest, SpaceRequestDenied
from weaved.ipam.sim import SimNetwork
from weaved.ipam.wire import decode_gossip, decode_unicast, encode_gossip, encode_unicast
from weaved.mesh.gossip_api import GossipData, PeerName

H1, H2 = PeerName(0x3E80E75A63A7), PeerName(0x2A9FF1998A21)
UNIVERSE = CIDR.parse_subnet("10.32.0.0/12")


class View:
    def our_name(self) -> PeerName:
        return H1

    def known_peers(self) -> dict[PeerName, str]:
        return {H1: "host1", H2: "host2"}

    def reachable_peers(self) -> set[PeerName]:
        return {H1, H2}


class Recorder:
    def __init__(self) -> None:
        self.unicasts: list[tuple[PeerName, bytes]] = []
        self.broadcasts: list[GossipData] = []
        self.neighbours: list[GossipData] = []

    def gossip_unicast(self, dst: PeerName, payload: bytes) -> None:
        self.unicasts.append((dst, payload))

    def gossip_broadcast(self, data: GossipData) -> None:
        self.broadcasts.append(data)

    def gossip_neighbours(self, data: GossipData) -> None:
        self.neighbours.append(data)


def channel(start: SeedStart | ConsensusStart | None = None) -> tuple[IpamGossiper, Recorder]:
    start = start or SeedStart((H1,))
    alloc = Allocator(AllocatorConfig(H1, 1, "host1", UNIVERSE, start), peers=View())
    g = IpamGossiper(alloc, lambda: 1795304244.0)
    rec = Recorder()
    g.set_sender(rec)
    alloc.start(1795304244.0)
    return g, rec


def test_gossip_data_is_encoded_when_sent() -> None:
    g, _rec = channel()
    data = g.gossip()
    assert data is not None
    g.allocator.allocate("c", UNIVERSE, 1795304250.0)
    (payload,) = data.encode()
    state = decode_gossip(payload)
    assert state.ring is not None and state.ring.entries[0].free == UNIVERSE.size - 1
    assert state.now == 1795304250
    assert isinstance(data, IpamGossipData) and data.merge(data) is data


def test_periodic_gossip_is_never_forwarded() -> None:
    g, _ = channel(ConsensusStart(2))
    other = IpamGossip(1, {H2: "host2"}, {}, None)
    assert g.on_gossip(encode_gossip(other)) is None
    assert g.allocator.nicknames[H2] == "host2"


def test_broadcast_relays_our_own_state() -> None:
    g, _rec = channel(ConsensusStart(2))
    relay = g.on_gossip_broadcast(H2, encode_gossip(IpamGossip(1, {H2: "host2"}, {}, None)))
    assert relay is not None
    (payload,) = relay.encode()
    assert dict(decode_gossip(payload).nicknames) == {H1: "host1", H2: "host2"}


def test_ring_less_broadcast_gets_a_ring_update() -> None:
    g, rec = channel()
    g.on_gossip_broadcast(H2, encode_gossip(IpamGossip(1, {H2: "host2"}, {}, None)))
    (dst, payload), *_ = rec.unicasts
    assert dst == H2
    msg = decode_unicast(payload)
    assert isinstance(msg, RingUpdate) and msg.state.ring is not None


def test_space_request_and_denial_unicasts() -> None:
    g, rec = channel()
    g.on_gossip_unicast(H2, encode_unicast(SpaceRequest(UNIVERSE.range())))
    kinds = [type(decode_unicast(p)).__name__ for _, p in rec.unicasts]
    assert kinds == ["RingUpdate"]
    assert rec.broadcasts  # the grant is broadcast too
    g.on_gossip_unicast(H2, encode_unicast(SpaceRequestDenied(Range(1, 2))))  # nothing pending


@pytest.mark.parametrize("payload", [b"", b"\x05", b"\x01\x00", b"garbage"])
def test_garbage_raises_protocol_error(payload: bytes) -> None:
    g, _ = channel()
    with pytest.raises(ProtocolError):
        g.on_gossip_unicast(H2, payload)
    with pytest.raises(ProtocolError):
        g.on_gossip(payload or b"\x00")


def test_many_concurrent_proposers_agree_on_one_ring() -> None:
    net = SimNetwork(UNIVERSE, seed=3)
    names = [0x100 * (i + 1) for i in range(5)]
    peers = [net.add_peer(n, f"p{i}", ConsensusStart(5)) for i, n in enumerate(names)]
    for a, b in itertools.pairwise(names):
        net.connect(a, b)
    net.run()
    for p in peers:
        p.allocator.allocate("c", UNIVERSE, net.now)
    for _ in range(5):
        net.run()
        net.tick()
    net.run()
    assert len({tuple((e.token, e.peer) for e in p.allocator.ring.entries) for p in peers}) == 1
    for _ in range(4):  # IPAM never forwards gossip: one hop per round along the line
        net.gossip_round()
        net.run()
    rings = {tuple(p.allocator.ring.entries) for p in peers}
    assert len(rings) == 1 and rings != {()}
    assert all(len(p.completions) == 1 for p in peers)
    assert not net.errors
