"""Gossip channels over the mesh (FACTS.md §3.2): delivery, relaying, coalescing. Pure.

The hub knows the channels and decides where things go; it reaches connections only through
the small `Transport` interface, so it runs against fakes in tests. Per connection, pending
data is coalesced: one merged gossip item per channel, one merged broadcast item per channel
and originator; gossip goes out before broadcasts, and items are encoded only when sent.

Channels we do not run are relayed by surrogates (as Weave); what a remote can make them hold
is bounded: at most `MAX_SURROGATE_CHANNELS` of them (more is garbage: the connection is
closed), a pending surrogate item keeps its last `MAX_SURROGATE_MESSAGES` payloads, and the
repeat filter keeps digests, not payloads.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from weaved.errors import ProtocolError
from weaved.lograte import RateLimitedLog
from weaved.mesh.gossip_api import GossipData, Gossiper, PeerName
from weaved.mesh.messages import (
    Gossip,
    GossipBroadcast,
    GossipUnicast,
    Tag,
    encode_broadcast,
    encode_gossip,
    encode_unicast,
)
from weaved.mesh.peername import format_peer_name
from weaved.mesh.routes import Routes, all_neighbours

__all__ = [
    "GOSSIP_INTERVAL",
    "Channel",
    "GossipError",
    "GossipHub",
    "GossipQueue",
    "OutgoingGossip",
    "SurrogateData",
    "SurrogateGossiper",
    "Transport",
]

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log, 10.0)

GOSSIP_INTERVAL = 30.0
MAX_SURROGATE_CHANNELS = 16
MAX_SURROGATE_MESSAGES = 16
_MAX_SEEN = 256


class GossipError(ProtocolError):
    """A channel rejected what a peer sent; the connection that carried it is closed."""


@dataclass(frozen=True)
class SurrogateData:
    """Opaque payloads of a channel we do not run, relayed as they came."""

    messages: tuple[bytes, ...]

    def encode(self) -> list[bytes]:
        return list(self.messages)

    def merge(self, other: GossipData) -> GossipData:
        if not isinstance(other, SurrogateData):
            raise TypeError("cannot merge surrogate data with another channel's data")
        return SurrogateData((self.messages + other.messages)[-MAX_SURROGATE_MESSAGES:])


class SurrogateGossiper:
    """Stands in for a channel we lack: relays broadcasts and gossip, drops repeats of
    identical gossip seen within the gossip interval, ignores unicasts."""

    def __init__(self, now: Callable[[], float], interval: float = GOSSIP_INTERVAL) -> None:
        self._now = now
        self._interval = interval
        self._seen: list[tuple[float, bytes]] = []  # (when, digest of the payload)

    def on_gossip_unicast(self, sender: PeerName, payload: bytes) -> None:
        return None

    def on_gossip_broadcast(self, sender: PeerName, payload: bytes) -> GossipData | None:
        return SurrogateData((payload,))

    def gossip(self) -> GossipData | None:
        return None

    def on_gossip(self, payload: bytes) -> GossipData | None:
        now = self._now()
        digest = hashlib.blake2b(payload, digest_size=16).digest()
        if any(d == digest for _, d in self._seen):
            return None
        self._seen = [(t, d) for t, d in self._seen if t > now - self._interval]
        self._seen.append((now, digest))
        del self._seen[:-_MAX_SEEN]
        return SurrogateData((payload,))


@dataclass(frozen=True)
class OutgoingGossip:
    tag: Tag  # GOSSIP or GOSSIP_BROADCAST
    channel: str
    source: PeerName  # our name for gossip, the originator for broadcasts
    data: GossipData

    def bodies(self) -> list[bytes]:
        encode = encode_gossip if self.tag == Tag.GOSSIP else encode_broadcast
        return [encode(self.channel, self.source, payload) for payload in self.data.encode()]


@dataclass
class GossipQueue:
    """What is waiting to go to one connection."""

    us: PeerName
    _gossip: dict[str, GossipData] = field(default_factory=dict)
    _broadcasts: dict[tuple[str, PeerName], GossipData] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self._gossip or self._broadcasts)

    def add_gossip(self, channel: str, data: GossipData) -> None:
        pending = self._gossip.get(channel)
        self._gossip[channel] = data if pending is None else pending.merge(data)

    def add_broadcast(self, channel: str, source: PeerName, data: GossipData) -> None:
        key = (channel, source)
        pending = self._broadcasts.get(key)
        self._broadcasts[key] = data if pending is None else pending.merge(data)

    def pop(self) -> OutgoingGossip | None:
        if self._gossip:
            channel = next(iter(self._gossip))
            return OutgoingGossip(Tag.GOSSIP, channel, self.us, self._gossip.pop(channel))
        if self._broadcasts:
            (channel, source) = next(iter(self._broadcasts))
            data = self._broadcasts.pop((channel, source))
            return OutgoingGossip(Tag.GOSSIP_BROADCAST, channel, source, data)
        return None


class Transport(Protocol):
    """What the hub needs from the router: routes and our connections."""

    def current_routes(self) -> Routes: ...

    def neighbours(self) -> Iterable[PeerName]:
        """The peers our own topology record connects to (no routes computed)."""
        ...

    def gossip_queue(self, peer: PeerName) -> GossipQueue | None:
        """The queue of our connection to `peer` (any state), or None; waking the writer is
        the transport's business."""
        ...

    def send_body(self, peer: PeerName, body: bytes) -> bool:
        """Queue a raw message on our connection to `peer`."""
        ...

    def wake(self, peer: PeerName) -> None: ...


class Channel:
    """A gossip channel: the `GossipSender` its gossiper uses, plus delivery."""

    def __init__(self, name: str, gossiper: Gossiper, hub: GossipHub) -> None:
        self.name = name
        self.gossiper = gossiper
        self._hub = hub

    def __repr__(self) -> str:
        return f"Channel({self.name!r})"

    # GossipSender
    def gossip_unicast(self, dst: PeerName, payload: bytes) -> None:
        body = encode_unicast(self.name, self._hub.us, dst, payload)
        self._hub.relay_unicast(self.name, dst, body)

    def gossip_broadcast(self, data: GossipData) -> None:
        self._hub.relay_broadcast(self.name, self._hub.us, data)

    def gossip_neighbours(self, data: GossipData) -> None:
        self._hub.relay(self.name, self._hub.us, data)


class GossipHub:
    def __init__(
        self,
        us: PeerName,
        transport: Transport,
        rng: random.Random,
        now: Callable[[], float],
        defer: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        """`defer(callback)`: run `callback` soon (the router's `loop.call_soon`). With it,
        what received gossip improved is relayed once per turn of the loop, merged per channel
        and sender, so one route computation serves every message that arrived meanwhile
        (Weave defers its route recalculation for the same reason). Without it: at once."""
        self.us = us
        self._transport = transport
        self._rng = rng
        self._now = now
        self._defer = defer
        self._pending_relays: dict[tuple[str, PeerName], GossipData] = {}
        self.channels: dict[str, Channel] = {}

    def add_channel(self, name: str, gossiper: Gossiper) -> Channel:
        existing = self.channels.get(name)
        if existing is not None and not isinstance(existing.gossiper, SurrogateGossiper):
            raise ValueError(f"[gossip] duplicate channel {name}")
        channel = Channel(name, gossiper, self)
        self.channels[name] = channel
        return channel

    def channel(self, name: str) -> Channel:
        existing = self.channels.get(name)
        if existing is None:
            surrogates = sum(
                isinstance(c.gossiper, SurrogateGossiper) for c in self.channels.values()
            )
            if surrogates >= MAX_SURROGATE_CHANNELS:
                raise GossipError(f"more than {MAX_SURROGATE_CHANNELS} unknown gossip channels")
            _limited.info(("surrogate",), "gossip created surrogate channel channel=%s", name)
            existing = Channel(name, SurrogateGossiper(self._now), self)
            self.channels[name] = existing
        return existing

    # --- sending ---------------------------------------------------------------------------

    def relay_unicast(self, channel: str, dst: PeerName, body: bytes) -> None:
        hop = self._transport.current_routes().unicast_all.get(dst)
        if hop is None:
            _limited.info(
                ("no-route", channel),
                "gossip unknown relay destination channel=%s dst=%s",
                channel,
                format_peer_name(dst),
            )
            return
        if not self._transport.send_body(hop, body):
            _limited.info(
                ("no-connection", channel),
                "gossip unable to find connection to relay peer channel=%s hop=%s",
                channel,
                format_peer_name(hop),
            )

    def relay_broadcast(self, channel: str, source: PeerName, data: GossipData) -> None:
        for hop in self._transport.current_routes().broadcast_all(source):
            queue = self._transport.gossip_queue(hop)
            if queue is not None:
                queue.add_broadcast(channel, source, data)
                self._transport.wake(hop)

    def relay(self, channel: str, source: PeerName, data: GossipData) -> None:
        hops = all_neighbours(self.us, self._transport.neighbours(), source)
        if hops is None:
            hops = self._transport.current_routes().random_neighbours(source, self._rng)
        for hop in hops:
            self.send_down(channel, hop, data)

    def _relay_received(self, channel: Channel, sender: PeerName, data: GossipData) -> None:
        if self._defer is None or isinstance(channel.gossiper, SurrogateGossiper):
            self.relay(channel.name, sender, data)
            return
        key = (channel.name, sender)
        pending = self._pending_relays.get(key)
        if pending is None and not self._pending_relays:
            self._defer(self.flush_relays)
        self._pending_relays[key] = data if pending is None else pending.merge(data)

    def flush_relays(self) -> None:
        """Relay what received gossip improved since the last flush (see `defer`)."""
        pending, self._pending_relays = self._pending_relays, {}
        for (channel, sender), data in pending.items():
            self.relay(channel, sender, data)

    def send_down(self, channel: str, peer: PeerName, data: GossipData) -> None:
        queue = self._transport.gossip_queue(peer)
        if queue is not None:
            queue.add_gossip(channel, data)
            self._transport.wake(peer)

    def send_all_gossip(self) -> None:
        """Periodic: every channel's full state to random neighbours."""
        for channel in list(self.channels.values()):
            data = self._state(channel)
            if data is not None:
                self.relay(channel.name, self.us, data)

    def send_all_gossip_down(self, peer: PeerName) -> None:
        """A new peer: every channel's full state down its connection."""
        for channel in list(self.channels.values()):
            data = self._state(channel)
            if data is not None:
                self.send_down(channel.name, peer, data)

    @staticmethod
    def _state(channel: Channel) -> GossipData | None:
        try:
            return channel.gossiper.gossip()
        except Exception:
            log.exception("gossip channel failed to produce its state channel=%s", channel.name)
            return None

    # --- receiving -------------------------------------------------------------------------

    def deliver(self, msg: Gossip | GossipUnicast | GossipBroadcast) -> None:
        """Hand a received message to its channel and pass on what should travel further.

        Raises `GossipError` when the channel rejects the message (the caller closes the
        connection); a channel's own bug is logged and the message dropped."""
        try:
            channel = self.channel(msg.channel)
            if isinstance(msg, GossipUnicast):
                if msg.dest != self.us:
                    self.relay_unicast(
                        msg.channel, msg.dest, bytes([Tag.GOSSIP_UNICAST]) + msg.envelope
                    )
                    return
                if msg.payload is None:
                    raise GossipError("gossip unicast: undecodable payload")
                channel.gossiper.on_gossip_unicast(msg.sender, msg.payload)
            elif isinstance(msg, GossipBroadcast):
                data = channel.gossiper.on_gossip_broadcast(msg.sender, msg.payload)
                if data is not None:
                    self.relay_broadcast(msg.channel, msg.sender, data)
            else:
                update = channel.gossiper.on_gossip(msg.payload)
                if update is not None:
                    self._relay_received(channel, msg.sender, update)
        except GossipError:
            raise
        except ProtocolError as e:
            raise GossipError(f"[gossip {msg.channel}] {e}") from e
        except Exception:
            _limited.log(
                logging.ERROR,
                ("handler-bug", msg.channel),
                "gossip channel handler failed (weaved bug) channel=%s sender=%s",
                msg.channel,
                format_peer_name(msg.sender),
                exc_info=True,
            )
