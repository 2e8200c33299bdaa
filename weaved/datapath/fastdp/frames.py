"""Heartbeat frames sent through the VXLAN tunnel, and MAC address helpers. Pure.

The kernel owns UDP 6784, so heartbeats travel *inside* the tunnel as Ethernet frames:

    dst  6   the receiving peer's name (= the MAC of its bridge, so the bridge hands the frame
             to the host and floods it nowhere)
    src  6   the sending peer's name
    type 2   0x88B5
    "WDHB" 4 | version 1 | kind 1 (0 small, 1 full) | connection UID 8 | frame length 2 |
    sequence 4 | zero padding up to the frame length

A small heartbeat is 64 bytes. A full one is as long as the largest frame the datapath carries
(MTU + 14), so it only arrives when the path's MTU is big enough: the pair of them tells "UDP
6784 blocked" from "MTU too small". The receiver checks the declared length against the bytes
it got, the UID against its connection, and the addresses against the connection's peers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from weaved.datapath.fastdp.config import ETHERTYPE
from weaved.mesh.gossip_api import PeerName

__all__ = [
    "BROADCAST_MAC",
    "ETHERNET_HEADER",
    "FLOOD_MAC",
    "HEADER",
    "SMALL_SIZE",
    "Heartbeat",
    "HeartbeatError",
    "HeartbeatKind",
    "build_heartbeat",
    "is_unicast_mac",
    "mac_text",
    "parse_heartbeat",
    "parse_mac",
]

MAGIC = b"WDHB"
VERSION = 1
ETHERNET_HEADER = 14
HEADER = struct.Struct(">6s6sH4sBBQHI")
SMALL_SIZE = 64
MAX_SIZE = 65535 + ETHERNET_HEADER
FLOOD_MAC = "00:00:00:00:00:00"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


class HeartbeatError(ValueError):
    """Not one of our heartbeats, or a damaged one."""


class HeartbeatKind(IntEnum):
    SMALL = 0
    FULL = 1


@dataclass(frozen=True)
class Heartbeat:
    dst: PeerName
    src: PeerName
    kind: HeartbeatKind
    conn_uid: int
    length: int  # of the whole Ethernet frame
    seq: int


def build_heartbeat(hb: Heartbeat) -> bytes:
    if not HEADER.size <= hb.length <= MAX_SIZE:
        raise ValueError(f"heartbeat length {hb.length} out of range")
    head = HEADER.pack(
        hb.dst.to_bytes(6, "big"),
        hb.src.to_bytes(6, "big"),
        ETHERTYPE,
        MAGIC,
        VERSION,
        int(hb.kind),
        hb.conn_uid & 0xFFFF_FFFF_FFFF_FFFF,
        hb.length,
        hb.seq & 0xFFFF_FFFF,
    )
    return head + bytes(hb.length - len(head))


def parse_heartbeat(frame: bytes) -> Heartbeat:
    if len(frame) < HEADER.size:
        raise HeartbeatError(f"short frame ({len(frame)} bytes)")
    dst, src, ethertype, magic, version, kind, uid, length, seq = HEADER.unpack_from(frame)
    if ethertype != ETHERTYPE or magic != MAGIC:
        raise HeartbeatError("not a weaved heartbeat")
    if version != VERSION:
        raise HeartbeatError(f"unknown heartbeat version {version}")
    try:
        hb_kind = HeartbeatKind(kind)
    except ValueError:
        raise HeartbeatError(f"unknown heartbeat kind {kind}") from None
    if length != len(frame):
        raise HeartbeatError(f"frame of {len(frame)} bytes claims {length}")
    return Heartbeat(
        PeerName(int.from_bytes(dst, "big")),
        PeerName(int.from_bytes(src, "big")),
        hb_kind,
        uid,
        length,
        seq,
    )


def mac_text(value: int | bytes) -> str:
    """`02:00:00:00:01:01`: six lower-case hex pairs (a peer name is a MAC too)."""
    raw = value if isinstance(value, bytes) else value.to_bytes(6, "big")
    if len(raw) != 6:
        raise ValueError(f"a MAC address has 6 bytes, not {len(raw)}")
    return ":".join(f"{b:02x}" for b in raw)


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {text!r}") from None


def is_unicast_mac(text: str) -> bool:
    """A station address: not all-zero, not group (multicast or broadcast)."""
    raw = parse_mac(text)
    return raw != bytes(6) and not raw[0] & 1
