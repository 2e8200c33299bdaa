"""The fast datapath's overlay-control messages (TCP tag 7, our forwarder's index). Pure.

Only weaved peers ever run this overlay, so the sub-tags are ours (Weave's fastdp uses 0 =
heartbeat ack and 1 = IPsec SA; we have no IPsec):

    0 ack          kind u8 | sequence u32 BE      a heartbeat of that kind arrived
    1 hello        version u8 | VXLAN port u16 BE  fastdp is available here, send to this port
    2 macs         n x 6-byte MAC                  every MAC local to the sender (full set)
    3 unavailable  UTF-8 reason                    fastdp cannot run here (no VXLAN device, …)

`macs` is how a peer learns which container MACs live behind which peer: each peer announces
the MACs its own bridge learnt on local ports to its direct neighbours, and only direct
neighbours use the fast datapath, so nothing has to travel further.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from weaved.datapath.fastdp.frames import HeartbeatKind, mac_text, parse_mac
from weaved.errors import ProtocolError

__all__ = [
    "MAX_MACS",
    "Ack",
    "ControlError",
    "ControlMessage",
    "Hello",
    "Macs",
    "Subtag",
    "Unavailable",
    "decode_control",
    "encode_control",
]

VERSION = 1
MAX_MACS = 65536
MAX_REASON = 1024
_ACK = struct.Struct(">BI")
_HELLO = struct.Struct(">BH")


class ControlError(ProtocolError):
    """A fastdp control message we cannot read (ignored, never fatal)."""


class Subtag(IntEnum):
    ACK = 0
    HELLO = 1
    MACS = 2
    UNAVAILABLE = 3


@dataclass(frozen=True)
class Ack:
    kind: HeartbeatKind
    seq: int


@dataclass(frozen=True)
class Hello:
    port: int
    version: int = VERSION


@dataclass(frozen=True)
class Macs:
    macs: frozenset[str]


@dataclass(frozen=True)
class Unavailable:
    reason: str


ControlMessage = Ack | Hello | Macs | Unavailable


def encode_control(msg: ControlMessage) -> tuple[int, bytes]:
    """(sub-tag, body)."""
    if isinstance(msg, Ack):
        return Subtag.ACK, _ACK.pack(int(msg.kind), msg.seq & 0xFFFF_FFFF)
    if isinstance(msg, Hello):
        return Subtag.HELLO, _HELLO.pack(msg.version, msg.port)
    if isinstance(msg, Macs):
        macs = sorted(msg.macs)[:MAX_MACS]
        return Subtag.MACS, b"".join(parse_mac(m) for m in macs)
    return Subtag.UNAVAILABLE, msg.reason.encode()[:MAX_REASON]


def decode_control(subtag: int, body: bytes) -> ControlMessage:
    if subtag == Subtag.ACK:
        if len(body) != _ACK.size:
            raise ControlError(f"ack of {len(body)} bytes")
        kind, seq = _ACK.unpack(body)
        try:
            return Ack(HeartbeatKind(kind), seq)
        except ValueError:
            raise ControlError(f"ack of unknown heartbeat kind {kind}") from None
    if subtag == Subtag.HELLO:
        if len(body) < _HELLO.size:
            raise ControlError(f"hello of {len(body)} bytes")
        version, port = _HELLO.unpack_from(body)
        if port == 0:
            raise ControlError("hello without a port")
        return Hello(port, version)
    if subtag == Subtag.MACS:
        if len(body) % 6 or len(body) > 6 * MAX_MACS:
            raise ControlError(f"MAC list of {len(body)} bytes")
        return Macs(frozenset(mac_text(body[i : i + 6]) for i in range(0, len(body), 6)))
    if subtag == Subtag.UNAVAILABLE:
        return Unavailable(body[:MAX_REASON].decode("utf-8", "replace") or "no reason given")
    raise ControlError(f"unknown fastdp control sub-tag {subtag}")
