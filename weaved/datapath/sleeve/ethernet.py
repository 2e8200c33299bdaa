"""Ethernet and IPv4 details sleeve needs (FACTS.md §7.1, §7.3). Pure.

The Internet checksum, the ICMP "fragmentation needed" that answers a too-big DF packet, and
the IPv4 fragmentation sleeve does itself while the path's fragmentation test has not passed.
Frames are untagged Ethernet (the bridge strips nothing; VLAN-tagged frames are forwarded but
never fragmented or answered).
"""

from __future__ import annotations

import struct

__all__ = [
    "ETH_HLEN",
    "ETH_P_ARP",
    "ETH_P_IP",
    "ETH_P_IPV6",
    "STP_ADDRESS",
    "BytesLike",
    "checksum",
    "ethertype",
    "fragment_ipv4",
    "icmp_frag_needed",
    "ipv4_checksum_ok",
    "is_ipv4",
    "ones_sum",
]

ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
STP_ADDRESS = bytes.fromhex("0180c2000000")  # bridge protocol frames never cross the mesh
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET_MASK = 0x1FFF
IPPROTO_ICMP = 1
ICMP_DEST_UNREACH = 3
ICMP_FRAG_NEEDED = 4
ICMP_QUOTE = 8  # bytes of the offending datagram's payload quoted after its header
DEFAULT_TTL = 64
_IPV4 = struct.Struct(">BBHHHBBH4s4s")

BytesLike = bytes | bytearray | memoryview


def ones_sum(data: BytesLike, initial: int = 0) -> int:
    """The 16-bit one's-complement sum of `data` (big-endian words, an odd tail padded with
    zero) plus `initial`, folded. Uses the identity sum ≡ value (mod 0xFFFF): one bignum
    conversion instead of a Python loop over words."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    value += initial
    if value == 0:
        return 0
    return value % 0xFFFF or 0xFFFF


def checksum(data: BytesLike, initial: int = 0) -> int:
    """RFC 1071 checksum of `data` (with `initial` already summed in, e.g. a pseudo-header)."""
    return ~ones_sum(data, initial) & 0xFFFF


def ethertype(frame: BytesLike) -> int:
    view = memoryview(frame)
    return int((view[12] << 8) | view[13]) if len(view) >= ETH_HLEN else -1


def is_ipv4(frame: BytesLike) -> bool:
    view = memoryview(frame)
    return len(view) >= ETH_HLEN + 20 and ethertype(view) == ETH_P_IP and view[14] >> 4 == 4


def ipv4_checksum_ok(packet: BytesLike) -> bool:
    view = memoryview(packet)
    ihl = (view[0] & 0x0F) * 4
    return len(view) >= ihl and checksum(view[:ihl]) == 0


def _ipv4_header(
    tos: int,
    total: int,
    ident: int,
    flags_offset: int,
    ttl: int,
    proto: int,
    src: bytes,
    dst: bytes,
) -> bytes:
    header = bytearray(_IPV4.pack(0x45, tos, total, ident, flags_offset, ttl, proto, 0, src, dst))
    struct.pack_into(">H", header, 10, checksum(header))
    return bytes(header)


def icmp_frag_needed(frame: BytesLike, mtu: int) -> bytes | None:
    """The frame to inject back towards the sender of the too-big DF IPv4 `frame`: ICMP
    destination unreachable / fragmentation needed, next-hop MTU `mtu`, from the original
    destination (address and MAC) to the original source, quoting the offending header and
    its first 8 payload bytes. None if `frame` is not a well-formed IPv4 frame."""
    view = memoryview(frame)
    if not is_ipv4(view):
        return None
    ip = view[ETH_HLEN:]
    ihl = (ip[0] & 0x0F) * 4
    if ihl < 20 or len(ip) < ihl:
        return None
    quote = bytes(ip[: ihl + ICMP_QUOTE])
    icmp = bytearray(struct.pack(">BBHHH", ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, mtu))
    icmp += quote
    struct.pack_into(">H", icmp, 2, checksum(icmp))
    src, dst = bytes(ip[16:20]), bytes(ip[12:16])
    header = _ipv4_header(ip[1], 20 + len(icmp), 0, 0, DEFAULT_TTL, IPPROTO_ICMP, src, dst)
    eth = bytes(view[6:12]) + bytes(view[0:6]) + ETH_P_IP.to_bytes(2, "big")
    return eth + header + bytes(icmp)


def _copied_options(options: bytes) -> bytes:
    """The options a non-first fragment carries: those with the copy bit, padded to 4."""
    out = bytearray()
    pos = 0
    while pos < len(options):
        kind = options[pos]
        if kind == 0:  # end of list
            break
        if kind == 1:  # no-op
            pos += 1
            continue
        if pos + 1 >= len(options):
            break
        length = options[pos + 1]
        if length < 2:
            break
        if kind & 0x80:
            out += options[pos : pos + length]
        pos += length
    out += bytes(-len(out) % 4)
    return bytes(out)


def fragment_ipv4(frame: BytesLike, mtu: int) -> list[bytes]:
    """Split an IPv4 frame into fragments of at most `mtu` IP bytes (data in multiples of 8,
    offsets and MF continuing those of the original, which may itself be a fragment).
    Returns [frame] when it fits or cannot be split."""
    view = memoryview(frame)
    if not is_ipv4(view):
        return [bytes(view)]
    ip = view[ETH_HLEN:]
    ihl = (ip[0] & 0x0F) * 4
    total = min((ip[2] << 8) | ip[3], len(ip))
    if total <= mtu or ihl < 20 or total < ihl:
        return [bytes(view)]
    eth = bytes(view[:ETH_HLEN])
    first_header = bytes(ip[:ihl])
    later_header = first_header[:20] + _copied_options(first_header[20:])
    flags_offset = (ip[6] << 8) | ip[7]
    more = flags_offset & IP_MF
    base = (flags_offset & IP_OFFSET_MASK) * 8
    data = ip[ihl:total]
    fragments: list[bytes] = []
    pos = 0
    while pos < len(data):
        header = first_header if pos == 0 else later_header
        room = (mtu - len(header)) & ~7
        if room <= 0:
            return [bytes(view)]
        chunk = data[pos : pos + room]
        last = pos + len(chunk) >= len(data)
        fo = ((base + pos) // 8) | (IP_MF if (not last or more) else 0)
        out = bytearray(header)
        out[0] = 0x40 | (len(header) // 4)
        struct.pack_into(">HHH", out, 2, len(header) + len(chunk), (ip[4] << 8) | ip[5], fo)
        struct.pack_into(">H", out, 10, 0)
        struct.pack_into(">H", out, 10, checksum(out))
        fragments.append(eth + bytes(out) + bytes(chunk))
        pos += len(chunk)
    return fragments
