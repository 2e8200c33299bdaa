"""Userspace GRO: consecutive TCP/IPv4 segments of one flow merged into one GSO superframe.

What the kernel's GRO does on a NIC, done here on the frames of one batch: written into the
TAP with a virtio-net header (NEEDS_CSUM, GSO_TCPV4, gso_size), a superframe crosses the
bridge and the container's veth as one packet, and the container's TCP stack acknowledges
it once; sent to a weaved peer that takes offloads it travels as one record. Pure.

Segments merge as Linux merges them: untagged IPv4 without options or fragmentation, the
same Ethernet header, addresses, ports, TOS, TTL, DF, acknowledgement number, window and
TCP options; contiguous sequence numbers; only ACK (PSH on the last one, which ends the
superframe); every segment the size of the first except a shorter last one. A superframe's
checksums are left to the kernel (the TCP field holds the pseudo-header sum), so a segment
must be known good before it merges: `trusted` (it came authenticated, or from our own
bridge), or its checksum is verified here first. Untrusted segments are verified as a run:
each good segment sums to 0 (mod 0xFFFF) with its pseudo-header, so a good run does, and a
damaged one shows as the TCP checksum would have shown it — one division per run instead of
one per segment. A run that fails is passed on unmerged for the kernel to judge each.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from weaved.datapath.sleeve.ethernet import BytesLike, checksum, ones_sum
from weaved.datapath.sleeve.vnet import F_NEEDS_CSUM, GSO_TCPV4, VnetHeader

__all__ = ["MAX_SUPERFRAME_PAYLOAD", "Item", "coalesce"]

# IP packets stay within 64 KB minus room for sleeve's own headers in one UDP datagram.
MAX_SUPERFRAME_PAYLOAD = 63 * 1024
_HEAD = struct.Struct(">HBBHHHBB2x4s4sHHIIBBH")  # from offset 12: ethertype .. TCP window
_L3 = 14
_L4 = 34
_ACK = 0x10
_PSH = 0x08
_MERGEABLE = {_ACK, _ACK | _PSH}
_TCP_CHECK = _L4 + 16

Item = tuple[BytesLike, BytesLike, bool]
"""(virtio-net header, frame, trusted)."""


class _Group:
    __slots__ = ("flags", "frames", "key", "mss", "next_seq", "payload", "unchecked", "vnet")

    def __init__(self, vnet: BytesLike, frame: BytesLike, key: tuple[object, ...]) -> None:
        self.vnet = vnet
        self.key = key
        self.frames: list[tuple[BytesLike, int]] = []
        self.mss = 0
        self.next_seq = 0
        self.payload = 0
        self.flags = 0
        self.unchecked = False  # holds segments whose checksums are still to be verified

    def add(
        self, frame: BytesLike, start: int, seq: int, length: int, flags: int, trusted: bool
    ) -> None:
        if not self.frames:
            self.mss = length
        self.frames.append((frame, start))
        self.next_seq = (seq + length) & 0xFFFFFFFF
        self.payload += length
        self.flags |= flags
        self.unchecked = self.unchecked or not trusted

    def _sums_ok(self) -> bool:
        """Do the segments' TCP checksums verify, taken together?"""
        total = 0
        for frame, _start in self.frames:
            tcp_len = len(frame) - _L4
            value = int.from_bytes(frame[_L4:], "big")
            total += (value << 8 if tcp_len & 1 else value) + 6 + tcp_len
        addresses = int.from_bytes(self.frames[0][0][_L3 + 12 : _L3 + 20], "big")
        return (total + len(self.frames) * addresses) % 0xFFFF == 0

    def finish(self) -> list[tuple[BytesLike, BytesLike]]:
        first, start = self.frames[0]
        if len(self.frames) == 1:
            return [(self.vnet, first)]
        if self.unchecked and not self._sums_ok():
            return [(self.vnet, frame) for frame, _start in self.frames]
        head = bytearray(first[:start])
        thl = start - _L4
        total = 20 + thl + self.payload
        struct.pack_into(">H", head, _L3 + 2, total)
        struct.pack_into(">H", head, _L3 + 10, 0)
        struct.pack_into(">H", head, _L3 + 10, checksum(memoryview(head)[_L3:_L4]))
        head[_L4 + 13] = self.flags
        pseudo = ones_sum(bytes(head[_L3 + 12 : _L3 + 20]), 6 + thl + self.payload)
        struct.pack_into(">H", head, _TCP_CHECK, pseudo)
        parts: list[BytesLike] = [head]
        parts.extend(frame[s:] for frame, s in self.frames)
        vnet = VnetHeader(F_NEEDS_CSUM, GSO_TCPV4, start, self.mss, _L4, 16).pack()
        return [(vnet, b"".join(parts))]


def coalesce(items: Sequence[Item]) -> list[tuple[BytesLike, BytesLike]]:
    """The frames of `items` in order, runs of mergeable segments replaced by superframes."""
    out: list[tuple[BytesLike, BytesLike]] = []
    group: _Group | None = None
    for vnet, frame, trusted in items:
        head = None
        if (
            len(frame) >= _L4 + 20
            and frame[12] == 8
            and frame[13] == 0
            and frame[14] == 0x45
            and frame[23] == 6
            and not vnet[0] & F_NEEDS_CSUM
            and vnet[1] == 0
        ):
            head = _HEAD.unpack_from(frame, 12)
        if head is not None:
            (_et, _vi, tos, total, _id, frag, ttl, _p, src, dst, sport, dport) = head[:12]
            seq, ack, off, flags, window = head[12:]
            start = _L4 + (off >> 4) * 4
            length = total + _L3 - start
            if (
                frag & 0x3FFF
                or total + _L3 != len(frame)
                or length <= 0
                or flags not in _MERGEABLE
                or start < _L4 + 20
            ):
                head = None
        if head is None:
            if group is not None:
                out.extend(group.finish())
                group = None
            out.append((vnet, frame))
            continue
        key = (
            bytes(frame[:12]),
            tos,
            ttl,
            frag,
            src,
            dst,
            sport,
            dport,
            ack,
            window,
            bytes(frame[_L4 + 20 : start]),
        )
        if group is not None and (
            key != group.key
            or seq != group.next_seq
            or length > group.mss
            or group.payload + length > MAX_SUPERFRAME_PAYLOAD
        ):
            out.extend(group.finish())
            group = None
        if group is None:
            group = _Group(vnet, frame, key)
        group.add(frame, start, seq, length, flags, trusted)
        if flags & _PSH or length < group.mss:
            out.extend(group.finish())
            group = None
    if group is not None:
        out.extend(group.finish())
    return out
