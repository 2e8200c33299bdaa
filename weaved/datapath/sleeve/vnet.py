"""virtio-net headers: what the TAP device says about each frame's offloads. Pure.

With IFF_VNET_HDR every frame read from or written to the TAP is preceded by a 10-byte
header (little-endian, `struct virtio_net_hdr`): flags (NEEDS_CSUM: the L4 checksum is only
the pseudo-header sum, to be completed over [csum_start:] and stored at csum_start +
csum_offset; DATA_VALID: already verified), the GSO type and segment size of a superframe
(up to 64 KB of TCP the kernel would otherwise have segmented), and the header length.

Between two weaved peers the header travels with the frame, so the receiving kernel does
the segmentation and checksum work (or none at all, delivering the superframe to a
container as if GRO had built it). A Weave Net peer needs ordinary frames: `plain_frames`
completes the checksum and segments in software — the fallback path.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from weaved.datapath.sleeve.ethernet import (
    ETH_HLEN,
    ETH_P_IP,
    ETH_P_IPV6,
    BytesLike,
    checksum,
    fragment_ipv4,
    ones_sum,
)

__all__ = [
    "F_DATA_VALID",
    "F_NEEDS_CSUM",
    "GSO_ECN",
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "GSO_UDP",
    "GSO_UDP_L4",
    "VNET_HDR_LEN",
    "ZERO_VNET",
    "OffloadError",
    "VnetHeader",
    "complete_checksum",
    "plain_frames",
    "segment",
]

VNET_HDR_LEN = 10
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO: one UDP datagram to be IP-fragmented
GSO_TCPV6 = 4
GSO_UDP_L4 = 5  # USO: UDP payload split into gso_size datagrams
GSO_ECN = 0x80
ZERO_VNET = bytes(VNET_HDR_LEN)

_HDR = struct.Struct("<BBHHHH")
_TCP_FIN = 0x01
_TCP_PSH = 0x08
_TCP_CWR = 0x80
_UDP_CSUM_OFFSET = 6
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_ETH_P_8021Q = 0x8100


class OffloadError(ValueError):
    """A header or superframe that cannot be processed (counted and dropped)."""


class VnetHeader(NamedTuple):
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @classmethod
    def unpack(cls, raw: BytesLike) -> VnetHeader:
        if len(raw) < VNET_HDR_LEN:
            raise OffloadError(f"virtio-net header too short ({len(raw)} bytes)")
        return cls(*_HDR.unpack_from(raw, 0))

    def pack(self) -> bytes:
        return _HDR.pack(*self)

    @property
    def gso(self) -> int:
        return self.gso_type & ~GSO_ECN


def _l3(frame: BytesLike) -> tuple[int, int]:
    """(offset of the network header, ethertype), skipping one 802.1Q tag."""
    if len(frame) < ETH_HLEN:
        raise OffloadError("frame shorter than an Ethernet header")
    etype = (frame[12] << 8) | frame[13]
    if etype == _ETH_P_8021Q:
        if len(frame) < ETH_HLEN + 4:
            raise OffloadError("truncated VLAN header")
        return ETH_HLEN + 4, (frame[16] << 8) | frame[17]
    return ETH_HLEN, etype


def complete_checksum(frame: BytesLike, csum_start: int, csum_offset: int) -> bytes:
    """Finish a NEEDS_CSUM frame: the field already holds the pseudo-header sum, so the
    checksum is the complement of the sum from csum_start to the end."""
    end = csum_start + csum_offset + 2
    if csum_start < ETH_HLEN or end > len(frame):
        raise OffloadError(f"checksum position {csum_start}+{csum_offset} outside frame")
    buf = bytearray(frame)
    value = checksum(memoryview(buf)[csum_start:])
    if value == 0 and csum_offset == _UDP_CSUM_OFFSET:
        value = 0xFFFF  # 0 means "no checksum" in UDP
    struct.pack_into(">H", buf, csum_start + csum_offset, value)
    return bytes(buf)


def _pseudo_sum(frame: BytesLike, l3: int, etype: int, proto: int, length: int) -> int:
    if etype == ETH_P_IP:
        addrs = bytes(frame[l3 + 12 : l3 + 20])
        return ones_sum(addrs, proto + length)
    addrs = bytes(frame[l3 + 8 : l3 + 40])
    return ones_sum(addrs, proto + length)


def _l4_offset(vh: VnetHeader, frame: BytesLike, l3: int, etype: int) -> int:
    if vh.flags & F_NEEDS_CSUM and vh.csum_start > l3:
        return vh.csum_start
    if etype == ETH_P_IP:
        return l3 + (frame[l3] & 0x0F) * 4
    if etype == ETH_P_IPV6:
        return l3 + 40
    raise OffloadError(f"GSO frame with ethertype {etype:#06x}")


def segment(vh: VnetHeader, frame: BytesLike) -> list[bytes]:
    """The ordinary frames a GSO superframe stands for, each with complete checksums (what
    the kernel's software GSO would have produced)."""
    gso = vh.gso
    if gso in (GSO_TCPV4, GSO_TCPV6):
        return _segment_tcp(vh, frame)
    if gso == GSO_UDP_L4:
        return _segment_udp_l4(vh, frame)
    if gso == GSO_UDP:
        l3, etype = _l3(frame)
        whole = (
            complete_checksum(frame, vh.csum_start, vh.csum_offset)
            if vh.flags & F_NEEDS_CSUM
            else bytes(frame)
        )
        if etype != ETH_P_IP or l3 != ETH_HLEN:
            raise OffloadError("UFO frame that is not untagged IPv4")
        return fragment_ipv4(whole, vh.gso_size + (whole[l3] & 0x0F) * 4)
    raise OffloadError(f"unknown GSO type {vh.gso_type}")


def _fix_ip_header(
    out: bytearray, l3: int, l4: int, etype: int, l4_len: int, index: int, ident: int
) -> None:
    if etype == ETH_P_IP:
        ihl = (out[l3] & 0x0F) * 4
        struct.pack_into(">HH", out, l3 + 2, (l4 - l3) + l4_len, (ident + index) & 0xFFFF)
        struct.pack_into(">H", out, l3 + 10, 0)
        struct.pack_into(">H", out, l3 + 10, checksum(memoryview(out)[l3 : l3 + ihl]))
    else:
        struct.pack_into(">H", out, l3 + 4, (l4 - l3 - 40) + l4_len)


def _segment_tcp(vh: VnetHeader, frame: BytesLike) -> list[bytes]:
    l3, etype = _l3(frame)
    if etype not in (ETH_P_IP, ETH_P_IPV6):
        raise OffloadError(f"TCP GSO frame with ethertype {etype:#06x}")
    l4 = _l4_offset(vh, frame, l3, etype)
    if len(frame) < l4 + 20:
        raise OffloadError("truncated TCP header")
    thl = (frame[l4 + 12] >> 4) * 4
    start = l4 + thl
    mss = vh.gso_size
    if thl < 20 or start > len(frame) or mss <= 0:
        raise OffloadError(f"bad TCP GSO frame (header {thl}, mss {mss})")
    headers = bytes(frame[:start])
    payload = memoryview(bytes(frame[start:]))
    seq0 = int.from_bytes(headers[l4 + 4 : l4 + 8], "big")
    flags = headers[l4 + 13]
    ident = (headers[l3 + 4] << 8) | headers[l3 + 5] if etype == ETH_P_IP else 0
    count = max(1, -(-len(payload) // mss))
    out_frames: list[bytes] = []
    for i in range(count):
        chunk = payload[i * mss : (i + 1) * mss]
        out = bytearray(headers)
        _fix_ip_header(out, l3, l4, etype, thl + len(chunk), i, ident)
        seg_flags = flags
        if i < count - 1:
            seg_flags &= ~(_TCP_FIN | _TCP_PSH)
        if i > 0:
            seg_flags &= ~_TCP_CWR
        struct.pack_into(">I", out, l4 + 4, (seq0 + i * mss) & 0xFFFFFFFF)
        out[l4 + 13] = seg_flags
        struct.pack_into(">H", out, l4 + 16, 0)
        out += chunk
        pseudo = _pseudo_sum(out, l3, etype, _IPPROTO_TCP, thl + len(chunk))
        struct.pack_into(">H", out, l4 + 16, checksum(memoryview(out)[l4:], pseudo))
        out_frames.append(bytes(out))
    return out_frames


def _segment_udp_l4(vh: VnetHeader, frame: BytesLike) -> list[bytes]:
    l3, etype = _l3(frame)
    if etype not in (ETH_P_IP, ETH_P_IPV6):
        raise OffloadError(f"UDP GSO frame with ethertype {etype:#06x}")
    l4 = _l4_offset(vh, frame, l3, etype)
    start = l4 + 8
    size = vh.gso_size
    if start > len(frame) or size <= 0:
        raise OffloadError("bad UDP GSO frame")
    headers = bytes(frame[:start])
    payload = memoryview(bytes(frame[start:]))
    ident = (headers[l3 + 4] << 8) | headers[l3 + 5] if etype == ETH_P_IP else 0
    count = max(1, -(-len(payload) // size))
    out_frames: list[bytes] = []
    for i in range(count):
        chunk = payload[i * size : (i + 1) * size]
        out = bytearray(headers)
        _fix_ip_header(out, l3, l4, etype, 8 + len(chunk), i, ident)
        struct.pack_into(">HH", out, l4 + 4, 8 + len(chunk), 0)
        out += chunk
        pseudo = _pseudo_sum(out, l3, etype, _IPPROTO_UDP, 8 + len(chunk))
        value = checksum(memoryview(out)[l4:], pseudo) or 0xFFFF
        struct.pack_into(">H", out, l4 + 6, value)
        out_frames.append(bytes(out))
    return out_frames


def plain_frames(vh: VnetHeader, frame: BytesLike) -> list[bytes]:
    """Ordinary, fully checksummed frames for a peer that takes no offloads."""
    if vh.gso != GSO_NONE:
        return segment(vh, frame)
    if vh.flags & F_NEEDS_CSUM:
        return [complete_checksum(frame, vh.csum_start, vh.csum_offset)]
    return [bytes(frame)]
