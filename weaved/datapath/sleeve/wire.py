"""Sleeve datagram bodies (FACTS.md §7.1, §7.2): frame records and the special frames.

A datagram is `[6 sender name]` + (possibly sealed) body; the body is a run of
`[6 src][6 dst][u16 BE length][Ethernet frame]` records. Pure.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

from weaved.mesh.gossip_api import PeerName
from weaved.mesh.peername import peer_name_from_bytes, peer_name_to_bytes

__all__ = [
    "ETHERNET_OVERHEAD",
    "FRAG_TEST_SIZE",
    "FRAME_OVERHEAD",
    "HEARTBEAT_SIZE",
    "NAME_SIZE",
    "PMTU_TRIGGER_SIZE",
    "UDP_OVERHEAD",
    "SleeveFrame",
    "SpecialKind",
    "classify_special",
    "heartbeat_frame",
    "heartbeat_uid",
    "pack_frames",
    "unpack_frames",
]

NAME_SIZE = 6
FRAME_OVERHEAD = NAME_SIZE + NAME_SIZE + 2
ETHERNET_OVERHEAD = 14
UDP_OVERHEAD = 28
HEARTBEAT_SIZE = ETHERNET_OVERHEAD + 8
FRAG_TEST_SIZE = 60001
PMTU_TRIGGER_SIZE = 60000
_ZERO_ETH = bytes(ETHERNET_OVERHEAD)
_HDR = struct.Struct(">6s6sH")


@dataclass(frozen=True)
class SleeveFrame:
    src: PeerName
    dst: PeerName
    data: bytes


class SpecialKind(StrEnum):
    HEARTBEAT = "heartbeat"
    FRAG_TEST = "fragmentation-test"
    MTU_PROBE = "mtu-probe"


def pack_frames(frames: list[SleeveFrame]) -> bytes:
    out = bytearray()
    for f in frames:
        out += _HDR.pack(peer_name_to_bytes(f.src), peer_name_to_bytes(f.dst), len(f.data))
        out += f.data
    return bytes(out)


def unpack_frames(body: bytes) -> tuple[list[SleeveFrame], str | None]:
    """Frames up to the first problem, and a description of it (truncation, trailing bytes)."""
    frames: list[SleeveFrame] = []
    pos = 0
    while len(body) - pos >= FRAME_OVERHEAD:
        src, dst, length = _HDR.unpack_from(body, pos)
        pos += FRAME_OVERHEAD
        if len(body) - pos < length:
            return frames, (f"too short; expected frame of length {length}, got {len(body) - pos}")
        frames.append(
            SleeveFrame(
                peer_name_from_bytes(src), peer_name_from_bytes(dst), body[pos : pos + length]
            )
        )
        pos += length
    if pos < len(body):
        return frames, f"{len(body) - pos} octets of trailing garbage"
    return frames, None


def heartbeat_frame(conn_uid: int) -> bytes:
    return _ZERO_ETH + conn_uid.to_bytes(8, "big")


def heartbeat_uid(frame: bytes) -> int:
    return int.from_bytes(frame[ETHERNET_OVERHEAD:HEARTBEAT_SIZE], "big")


def classify_special(frame: bytes) -> SpecialKind | None:
    """Frames made by the remote router itself start with an all-zero Ethernet header."""
    if len(frame) < ETHERNET_OVERHEAD or frame[:ETHERNET_OVERHEAD] != _ZERO_ETH:
        return None
    if len(frame) == HEARTBEAT_SIZE:
        return SpecialKind.HEARTBEAT
    if len(frame) == FRAG_TEST_SIZE:
        return SpecialKind.FRAG_TEST
    return SpecialKind.MTU_PROBE
