"""Protocol messages after the handshake (FACTS.md §2.4, §3.1): tags 0-7. Pure.

A message body is one tag byte plus its payload. Gossip payloads (tags 4, 5, 6) are an
envelope: gob items written by one encoder (channel string, sender uint, for tag 5 the
destination uint, then the channel data as []byte).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from weaved.errors import ProtocolError
from weaved.mesh import gob
from weaved.mesh.gob.varint import put_uint
from weaved.mesh.gossip_api import PeerName

__all__ = [
    "Blank",
    "Gossip",
    "GossipBroadcast",
    "GossipUnicast",
    "Heartbeat",
    "LegacyControl",
    "Message",
    "MessageError",
    "OverlayControl",
    "Tag",
    "UnknownTag",
    "encode_broadcast",
    "encode_gossip",
    "encode_heartbeat",
    "encode_legacy_control",
    "encode_overlay_control",
    "encode_unicast",
    "parse_message",
]


class Tag(IntEnum):
    HEARTBEAT = 0
    RESERVED1 = 1  # legacy sleeve control: heartbeat ack
    RESERVED2 = 2  # legacy sleeve control: fragmentation test received
    RESERVED3 = 3  # legacy sleeve control: PMTU verified
    GOSSIP = 4
    GOSSIP_UNICAST = 5
    GOSSIP_BROADCAST = 6
    OVERLAY_CONTROL = 7


class MessageError(ProtocolError):
    """A message body that cannot be parsed (bad envelope, truncated control message)."""


@dataclass(frozen=True)
class Blank:
    """An empty body: Weave logs and ignores it."""


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class LegacyControl:
    """Tags 1-3: sleeve control for a remote that sent no Overlays feature."""

    tag: int
    body: bytes


@dataclass(frozen=True)
class OverlayControl:
    index: int
    subtag: int
    body: bytes


@dataclass(frozen=True)
class Gossip:
    channel: str
    sender: PeerName  # always the immediate sender
    payload: bytes


@dataclass(frozen=True)
class GossipUnicast:
    channel: str
    sender: PeerName  # the original sender
    dest: PeerName
    payload: bytes | None  # None when not decodable (still relayable)
    envelope: bytes = field(repr=False)  # the body after the tag, relayed byte for byte


@dataclass(frozen=True)
class GossipBroadcast:
    channel: str
    sender: PeerName  # the originator
    payload: bytes


@dataclass(frozen=True)
class UnknownTag:
    tag: int
    body: bytes


Message = (
    Blank
    | Heartbeat
    | LegacyControl
    | OverlayControl
    | Gossip
    | GossipUnicast
    | GossipBroadcast
    | UnknownTag
)


def _envelope(tag: Tag, *items: tuple[gob.GobType, object]) -> bytes:
    enc = gob.Encoder()
    out = bytearray([tag])
    for typ, value in items:
        out += enc.encode(typ, value)
    return bytes(out)


def encode_heartbeat() -> bytes:
    return bytes([Tag.HEARTBEAT])


_HEADS: dict[tuple[Tag, str, PeerName], bytes] = {}
"""Tag, channel and sender items by (tag, channel, sender): the same on every message of one."""
_MAX_HEADS = 512
_BYTES_ITEM = bytes([5 << 1, 0])  # a top-level []byte: type id 5 (zig-zag), singleton field 0


def _gossip_envelope(tag: Tag, channel: str, sender: PeerName, payload: bytes) -> bytes:
    """`_envelope(tag, channel, sender, payload)`, with the payload copied once (the gossip
    relayed by a busy router is most of what it sends)."""
    key = (tag, channel, sender)
    head = _HEADS.get(key)
    if head is None:
        head = _envelope(tag, (gob.STRING, channel), (gob.UINT, sender))
        if len(_HEADS) >= _MAX_HEADS:
            _HEADS.clear()
        _HEADS[key] = head
    size = bytearray()
    put_uint(size, len(payload))
    item = bytearray()
    put_uint(item, len(_BYTES_ITEM) + len(size) + len(payload))
    return b"".join((head, item, _BYTES_ITEM, size, payload))


def encode_gossip(channel: str, sender: PeerName, payload: bytes) -> bytes:
    return _gossip_envelope(Tag.GOSSIP, channel, sender, payload)


def encode_broadcast(channel: str, sender: PeerName, payload: bytes) -> bytes:
    return _gossip_envelope(Tag.GOSSIP_BROADCAST, channel, sender, payload)


def encode_unicast(channel: str, sender: PeerName, dest: PeerName, payload: bytes) -> bytes:
    return _envelope(
        Tag.GOSSIP_UNICAST,
        (gob.STRING, channel),
        (gob.UINT, sender),
        (gob.UINT, dest),
        (gob.BYTES, payload),
    )


def encode_overlay_control(index: int, subtag: int, body: bytes = b"") -> bytes:
    return bytes([Tag.OVERLAY_CONTROL, index, subtag]) + body


def encode_legacy_control(tag: int, body: bytes = b"") -> bytes:
    return bytes([tag]) + body


def parse_message(body: bytes) -> Message:
    """Raises `MessageError` for a malformed gossip envelope."""
    if not body:
        return Blank()
    tag = body[0]
    if tag == Tag.HEARTBEAT:
        return Heartbeat()
    if tag in (Tag.GOSSIP, Tag.GOSSIP_UNICAST, Tag.GOSSIP_BROADCAST):
        return _parse_gossip(Tag(tag), body)
    rest = body[1:]
    if tag in (Tag.RESERVED1, Tag.RESERVED2, Tag.RESERVED3):
        return LegacyControl(tag, rest)
    if tag == Tag.OVERLAY_CONTROL:
        if len(rest) < 2:
            raise MessageError(f"overlay control message too short ({len(rest)} bytes)")
        return OverlayControl(rest[0], rest[1], rest[2:])
    return UnknownTag(tag, rest)


def _item(dec: gob.Decoder, typ: gob.GobType, what: str) -> object:
    try:
        return dec.next(typ)
    except gob.GobError as e:
        raise MessageError(f"gossip envelope: bad {what}: {e}") from e
    except Exception as e:  # garbage must never escape as anything but a protocol error
        raise MessageError(f"gossip envelope: bad {what}: {type(e).__name__}: {e}") from e


def _value_at(r: gob.Reader, type_byte: int) -> tuple[int, int, int]:
    """A top-level gob message of one predeclared type at the cursor: (first value byte, end
    of the message, the value's leading uint); the cursor is left at that first value byte.
    GobError when it is anything else."""
    length = r.uint()
    start = r.pos
    end = start + length
    if end > r.end or r.buf[start] != type_byte or r.buf[start + 1] != 0:
        raise gob.GobError("not the usual envelope")
    r.pos = start + 2
    value = r.uint()
    return r.pos, end, value


def _fast_gossip(tag: Tag, body: bytes) -> Message | None:
    """Gossip and broadcast envelopes as every encoder writes them (a string, a uint and a
    []byte message, gob type ids 6, 3 and 5), read without a decoder: this runs for every
    topology message. None for anything else, which the decoder then reads and judges."""
    r = gob.Reader(body, 1, len(body))
    try:
        at, end, size = _value_at(r, 0x0C)
        if at + size != end:
            return None
        channel = body[at:end].decode("utf-8", "surrogateescape")
        r.pos = end
        at, end, sender = _value_at(r, 0x06)
        if at != end:
            return None
        at, end, size = _value_at(r, 0x0A)
        if at + size != end or end != len(body):
            return None
    except (gob.GobError, IndexError):
        return None
    if tag == Tag.GOSSIP:
        return Gossip(channel, PeerName(sender), body[at:end])
    return GossipBroadcast(channel, PeerName(sender), body[at:end])


def _parse_gossip(tag: Tag, body: bytes) -> Message:
    if tag != Tag.GOSSIP_UNICAST:
        fast = _fast_gossip(tag, body)
        if fast is not None:
            return fast
    return _decode_gossip(tag, body)


def _decode_gossip(tag: Tag, body: bytes) -> Message:
    dec = gob.Decoder(body, start=1)  # (a 10 MiB message is not copied to drop its tag)
    channel = _item(dec, gob.STRING, "channel")
    sender = _item(dec, gob.UINT, "sender")
    if not isinstance(channel, str) or not isinstance(sender, int):
        raise MessageError("gossip envelope: unexpected item types")
    if tag == Tag.GOSSIP_UNICAST:
        dest = _item(dec, gob.UINT, "destination")
        if not isinstance(dest, int):
            raise MessageError("gossip envelope: unexpected destination type")
        try:
            payload = dec.next(gob.BYTES)
        except Exception:
            payload = None
        if payload is not None and not isinstance(payload, bytes):
            payload = None
        return GossipUnicast(channel, PeerName(sender), PeerName(dest), payload, body[1:])
    payload = _item(dec, gob.BYTES, "data")
    if not isinstance(payload, bytes):
        raise MessageError("gossip envelope: data is not []byte")
    if tag == Tag.GOSSIP:
        return Gossip(channel, PeerName(sender), payload)
    return GossipBroadcast(channel, PeerName(sender), payload)
