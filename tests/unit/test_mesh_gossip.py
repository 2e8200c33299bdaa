"""Gossip hub against a fake transport: delivery, relaying, surrogates, coalescing."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from weaved.errors import ProtocolError
from weaved.mesh.gossip import GossipError, GossipHub, GossipQueue, SurrogateData
from weaved.mesh.gossip_api import GossipData, PeerName
from weaved.mesh.messages import (
    Gossip,
    GossipBroadcast,
    Tag,
    encode_unicast,
    parse_message,
)
from weaved.mesh.routes import Routes

US, A, B, C = PeerName(1), PeerName(2), PeerName(3), PeerName(4)
# us - A - C, us - B
GRAPH = {
    US: {A: True, B: True},
    A: {US: True, C: True},
    B: {US: True},
    C: {A: True},
}


@dataclass(frozen=True)
class Data:
    items: frozenset[str]

    def encode(self) -> list[bytes]:
        return [",".join(sorted(self.items)).encode()]

    def merge(self, other: GossipData) -> GossipData:
        assert isinstance(other, Data)
        return Data(self.items | other.items)


@dataclass
class Recorder:
    unicasts: list[tuple[PeerName, bytes]] = field(default_factory=list)
    reply: GossipData | None = None
    fail: Exception | None = None

    def on_gossip_unicast(self, sender: PeerName, payload: bytes) -> None:
        if self.fail:
            raise self.fail
        self.unicasts.append((sender, payload))

    def on_gossip_broadcast(self, sender: PeerName, payload: bytes) -> GossipData | None:
        if self.fail:
            raise self.fail
        return self.reply

    def gossip(self) -> GossipData | None:
        return Data(frozenset({"full"}))

    def on_gossip(self, payload: bytes) -> GossipData | None:
        if self.fail:
            raise self.fail
        return self.reply


class FakeTransport:
    def __init__(self) -> None:
        self.queues = {p: GossipQueue(US) for p in (A, B)}
        self.raw: list[tuple[PeerName, bytes]] = []
        self.routes = Routes(US, GRAPH)

    def current_routes(self) -> Routes:
        return self.routes

    def neighbours(self) -> list[PeerName]:
        return list(GRAPH[US])

    def gossip_queue(self, peer: PeerName) -> GossipQueue | None:
        return self.queues.get(peer)

    def send_body(self, peer: PeerName, body: bytes) -> bool:
        self.raw.append((peer, body))
        return peer in self.queues

    def wake(self, peer: PeerName) -> None:
        pass

    def drain(self, peer: PeerName) -> list[tuple[Tag, str, PeerName, GossipData]]:
        out = []
        while (item := self.queues[peer].pop()) is not None:
            out.append((item.tag, item.channel, item.source, item.data))
        return out


def hub(now: Callable[[], float] = lambda: 0.0) -> tuple[GossipHub, FakeTransport]:
    t = FakeTransport()
    return GossipHub(US, t, random.Random(1), now), t


def test_unicast_for_us_and_relayed_byte_for_byte() -> None:
    h, t = hub()
    rec = Recorder()
    h.add_channel("IPallocation", rec)
    mine = parse_message(encode_unicast("IPallocation", C, US, b"\x00hello"))
    h.deliver(mine)  # type: ignore[arg-type]
    assert rec.unicasts == [(C, b"\x00hello")]
    body = encode_unicast("IPallocation", B, C, b"\x01ring")
    h.deliver(parse_message(body))  # type: ignore[arg-type]
    assert t.raw == [(A, body)]  # to C via A, unchanged
    assert rec.unicasts == [(C, b"\x00hello")]


def test_unicast_sender_and_unknown_destination() -> None:
    h, t = hub()
    ch = h.add_channel("IPallocation", Recorder())
    ch.gossip_unicast(C, b"x")
    assert t.raw and t.raw[0][0] == A
    msg = parse_message(t.raw[0][1])
    assert msg == parse_message(encode_unicast("IPallocation", US, C, b"x"))
    ch.gossip_unicast(PeerName(99), b"x")  # no route: logged, nothing sent
    assert len(t.raw) == 1


def test_broadcast_relayed_along_tree_with_what_channel_returns() -> None:
    h, t = hub()
    rec = Recorder(reply=Data(frozenset({"relay"})))
    h.add_channel("nameserver", rec)
    h.deliver(GossipBroadcast("nameserver", A, b"payload"))
    # From A: our subtree is B only.
    assert t.drain(A) == []
    assert t.drain(B) == [(Tag.GOSSIP_BROADCAST, "nameserver", A, Data(frozenset({"relay"})))]
    # Our own broadcast goes to both.
    h.channels["nameserver"].gossip_broadcast(Data(frozenset({"mine"})))
    assert [x[2] for x in t.drain(A)] == [US]
    assert [x[2] for x in t.drain(B)] == [US]


def test_gossip_forwards_only_news_to_random_neighbours_except_sender() -> None:
    h, t = hub()
    rec = Recorder(reply=None)
    h.add_channel("topology", rec)
    h.deliver(Gossip("topology", A, b"old news"))
    assert t.drain(A) == [] and t.drain(B) == []
    rec.reply = Data(frozenset({"new"}))
    h.deliver(Gossip("topology", A, b"news"))
    assert t.drain(A) == []
    assert t.drain(B) == [(Tag.GOSSIP, "topology", US, Data(frozenset({"new"})))]


def test_channel_errors() -> None:
    h, _ = hub()
    rec = Recorder(fail=ProtocolError("clock skew"))
    h.add_channel("nameserver", rec)
    with pytest.raises(GossipError, match="clock skew"):
        h.deliver(Gossip("nameserver", A, b"x"))
    rec.fail = RuntimeError("bug")
    h.deliver(Gossip("nameserver", A, b"x"))  # logged, not raised
    with pytest.raises(ValueError, match="duplicate channel"):
        h.add_channel("nameserver", Recorder())


def test_surrogate_relays_and_drops_repeats() -> None:
    clock = [0.0]
    h, t = hub(lambda: clock[0])
    h.deliver(Gossip("weird", A, b"p1"))
    assert t.drain(B) == [(Tag.GOSSIP, "weird", US, SurrogateData((b"p1",)))]
    h.deliver(Gossip("weird", A, b"p1"))
    assert t.drain(B) == []
    clock[0] = 31.0
    h.deliver(Gossip("weird", A, b"p2"))  # expires p1 from the seen list
    h.deliver(Gossip("weird", A, b"p1"))
    assert [x[3] for x in t.drain(B)] == [SurrogateData((b"p2", b"p1"))]
    h.deliver(GossipBroadcast("weird", A, b"b"))
    assert t.drain(B) == [(Tag.GOSSIP_BROADCAST, "weird", A, SurrogateData((b"b",)))]
    # A real channel may take over a surrogate.
    h.add_channel("weird", Recorder())


def test_queue_coalesces_and_orders() -> None:
    q = GossipQueue(US)
    q.add_broadcast("dns", A, Data(frozenset({"b1"})))
    q.add_gossip("topology", Data(frozenset({"x"})))
    q.add_gossip("topology", Data(frozenset({"y"})))
    q.add_broadcast("dns", A, Data(frozenset({"b2"})))
    q.add_broadcast("dns", B, Data(frozenset({"c"})))
    first = q.pop()
    assert (
        first is not None and first.tag == Tag.GOSSIP and first.data == Data(frozenset({"x", "y"}))
    )
    assert first.bodies() == [bytes(first.bodies()[0])]
    second = q.pop()
    assert (
        second is not None and second.source == A and second.data == Data(frozenset({"b1", "b2"}))
    )
    third = q.pop()
    assert third is not None and third.source == B
    assert q.pop() is None and not q


def test_full_state_down_one_connection_and_periodic() -> None:
    h, t = hub()
    h.add_channel("topology", Recorder())
    h.add_channel("nameserver", Recorder())
    h.send_all_gossip_down(A)
    assert sorted(x[1] for x in t.drain(A)) == ["nameserver", "topology"]
    assert t.drain(B) == []
    h.send_all_gossip()
    assert len(t.drain(A)) + len(t.drain(B)) == 4


def test_deferred_relays_merge_per_sender_until_flushed() -> None:
    """With `defer`, what received gossip improved waits for one flush per loop turn, merged
    per channel and sender (one route computation for all of it)."""
    t = FakeTransport()
    scheduled: list[Callable[[], None]] = []
    h = GossipHub(US, t, random.Random(1), lambda: 0.0, scheduled.append)
    rec = Recorder(reply=Data(frozenset({"x"})))
    h.add_channel("topology", rec)
    h.deliver(Gossip("topology", B, b"1"))
    rec.reply = Data(frozenset({"y"}))
    h.deliver(Gossip("topology", B, b"2"))
    assert t.drain(A) == [] and len(scheduled) == 1  # nothing sent yet, one flush scheduled
    scheduled.pop()()
    assert t.drain(A) == [(Tag.GOSSIP, "topology", US, Data(frozenset({"x", "y"})))]
    assert t.drain(B) == []  # not back to the sender
    h.deliver(Gossip("topology", B, b"3"))
    assert len(scheduled) == 1  # the next turn gets its own flush
