"""virtio-net headers, software segmentation and userspace GRO: segmenting a superframe gives
what the kernel's GSO would; merging segments and segmenting again gives them back."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weaved.datapath.sleeve.ethernet import checksum, ipv4_checksum_ok, ones_sum
from weaved.datapath.sleeve.gro import coalesce
from weaved.datapath.sleeve.vnet import (
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    ZERO_VNET,
    OffloadError,
    VnetHeader,
    complete_checksum,
    plain_frames,
    segment,
)

ETH = bytes.fromhex("0e00000000020e0000000001")
SRC4, DST4 = bytes([10, 40, 1, 1]), bytes([10, 40, 2, 1])
SRC6 = bytes.fromhex("fd000000000000000000000000000001")
DST6 = bytes.fromhex("fd000000000000000000000000000002")


def tcp4(
    payload: bytes, seq: int, flags: int = 0x10, ident: int = 7, options: bytes = b""
) -> bytes:
    """A complete TCP/IPv4 segment with valid checksums."""
    thl = 20 + len(options)
    tcp = bytearray(
        struct.pack(">HHIIBBHHH", 40000, 5201, seq, 99, (thl // 4) << 4, flags, 512, 0, 0)
    )
    tcp += options
    ip = bytearray(
        struct.pack(
            ">BBHHHBBH4s4s", 0x45, 0, 20 + thl + len(payload), ident, 0x4000, 64, 6, 0, SRC4, DST4
        )
    )
    struct.pack_into(">H", ip, 10, checksum(ip))
    pseudo = ones_sum(SRC4 + DST4, 6 + thl + len(payload))
    struct.pack_into(">H", tcp, 16, checksum(bytes(tcp) + payload, pseudo))
    return ETH + b"\x08\x00" + bytes(ip) + bytes(tcp) + payload


def superframe4(
    payload: bytes, mss: int, seq: int = 1000, flags: int = 0x18
) -> tuple[VnetHeader, bytes]:
    """What the kernel hands over with TSO: partial checksum (pseudo-header sum)."""
    frame = bytearray(tcp4(payload, seq, flags))
    pseudo = ones_sum(SRC4 + DST4, 6 + 20 + len(payload))
    struct.pack_into(">H", frame, 34 + 16, pseudo)
    return VnetHeader(F_NEEDS_CSUM, GSO_TCPV4, 54, mss, 34, 16), bytes(frame)


def tcp_ok4(frame: bytes) -> bool:
    tcp_len = len(frame) - 34
    return (
        ipv4_checksum_ok(frame[14:])
        and checksum(frame[34:], ones_sum(frame[26:34], 6 + tcp_len)) == 0
    )


def test_header_round_trip_little_endian() -> None:
    vh = VnetHeader(F_NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16)
    raw = vh.pack()
    assert len(raw) == 10 and raw == bytes([1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0])
    assert VnetHeader.unpack(raw) == vh
    with pytest.raises(OffloadError):
        VnetHeader.unpack(b"\x00")


def test_complete_checksum_finishes_a_partial_one() -> None:
    vh, frame = superframe4(b"x" * 101, 1448)
    done = complete_checksum(frame, vh.csum_start, vh.csum_offset)
    assert tcp_ok4(done)
    assert plain_frames(vh._replace(gso_type=0), frame) == [done]
    with pytest.raises(OffloadError):
        complete_checksum(frame, 10, 16)


def test_tcp_segmentation_matches_gso() -> None:
    payload = bytes(range(256)) * 20  # 5120 bytes
    vh, frame = superframe4(payload, 1448, seq=0xFFFFF000, flags=0x18 | 0x01)
    parts = segment(vh, frame)
    assert [len(p) - 54 for p in parts] == [1448, 1448, 1448, 776]
    data = b""
    for i, p in enumerate(parts):
        assert tcp_ok4(p)
        seq, flags = struct.unpack(">I", p[38:42])[0], p[47]
        assert seq == (0xFFFFF000 + len(data)) & 0xFFFFFFFF
        assert flags == (0x19 if i == 3 else 0x10)  # FIN and PSH on the last only
        assert struct.unpack(">H", p[18:20])[0] == 7 + i  # IP ids count up
        data += p[54:]
    assert data == payload


def test_tcp6_and_udp_segmentation() -> None:
    payload = b"abcdefgh" * 300
    tcp = bytearray(struct.pack(">HHIIBBHHH", 1, 2, 5, 6, 0x50, 0x10, 100, 0, 0))
    ip6 = struct.pack(">IHBB16s16s", 0x60000000, 20 + len(payload), 6, 64, SRC6, DST6)
    frame = ETH + b"\x86\xdd" + ip6 + bytes(tcp) + payload
    vh = VnetHeader(F_NEEDS_CSUM, GSO_TCPV6, 74, 1000, 54, 16)
    parts = segment(vh, frame)
    assert len(parts) == 3
    for p in parts:
        n = len(p) - 54
        assert struct.unpack(">H", p[18:20])[0] == n
        assert checksum(p[54:], ones_sum(p[22:54], 6 + n)) == 0
    udp = struct.pack(">HHHH", 7, 8, 8 + len(payload), 0)
    ip = bytearray(
        struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 1, 0, 64, 17, 0, SRC4, DST4)
    )
    frame4 = ETH + b"\x08\x00" + bytes(ip) + udp + payload
    parts = segment(VnetHeader(F_NEEDS_CSUM, GSO_UDP_L4, 42, 1000, 34, 6), frame4)
    assert [len(p) - 42 for p in parts] == [1000, 1000, 400]
    for p in parts:
        assert ipv4_checksum_ok(p[14:])
        assert checksum(p[34:], ones_sum(p[26:34], 17 + len(p) - 34)) == 0


def test_unknown_gso_is_refused() -> None:
    with pytest.raises(OffloadError):
        segment(VnetHeader(0, 9, 0, 100, 0, 0), tcp4(b"x" * 10, 1))


def segments(sizes: list[int], seq: int = 5000) -> list[bytes]:
    out = []
    for i, size in enumerate(sizes):
        out.append(tcp4(bytes([i]) * size, seq, ident=100 + i))
        seq += size
    return out


def test_gro_merges_a_run_and_segmentation_gives_it_back() -> None:
    frames = segments([1448, 1448, 1448, 500])
    merged = coalesce([(ZERO_VNET, f, True) for f in frames])
    assert len(merged) == 1
    vnet, big = merged[0]
    vh = VnetHeader.unpack(vnet)
    assert (vh.flags, vh.gso_type, vh.gso_size, vh.csum_start, vh.csum_offset) == (
        F_NEEDS_CSUM,
        GSO_TCPV4,
        1448,
        34,
        16,
    )
    assert ipv4_checksum_ok(big[14:]) and len(big) == 54 + 4844
    again = segment(vh, big)
    assert [p[54:] for p in again] == [f[54:] for f in frames]
    assert all(tcp_ok4(p) for p in again)


def test_gro_keeps_flows_gaps_and_odd_frames_apart() -> None:
    a = segments([1000, 1000], seq=1)
    gap = segments([1000], seq=5000)
    other_flow = bytearray(segments([1000], seq=2001)[0])
    struct.pack_into(">H", other_flow, 34, 40001)
    arp = ETH + b"\x08\x06" + bytes(28)
    syn = tcp4(b"", 1, flags=0x02)
    items = [(ZERO_VNET, f, True) for f in [*a, arp, *gap, bytes(other_flow), syn]]
    merged = coalesce(items)
    assert len(merged) == 5
    assert VnetHeader.unpack(merged[0][0]).gso_type == GSO_TCPV4
    assert [m[1] for m in merged[1:]] == [arp, gap[0], bytes(other_flow), syn]


def test_gro_ends_at_psh_and_short_segments() -> None:
    frames = segments([1000, 1000, 600, 1000])
    merged = coalesce([(ZERO_VNET, f, True) for f in frames])
    assert [len(m[1]) for m in merged] == [54 + 2600, len(frames[3])]
    psh = [tcp4(b"a" * 100, 1, flags=0x18), tcp4(b"b" * 100, 101)]
    assert len(coalesce([(ZERO_VNET, f, True) for f in psh])) == 2


def test_gro_verifies_untrusted_segments() -> None:
    frames = segments([800, 800, 800])
    bad = bytearray(frames[1])
    bad[100] ^= 0xFF
    merged = coalesce([(ZERO_VNET, f, False) for f in [frames[0], bytes(bad), frames[2]]])
    assert [m[1] for m in merged] == [frames[0], bytes(bad), frames[2]]
    good = coalesce([(ZERO_VNET, f, False) for f in frames])
    assert len(good) == 1


def test_gro_leaves_offloaded_frames_alone() -> None:
    frames = segments([100, 100])
    vnet = VnetHeader(F_NEEDS_CSUM, 0, 0, 0, 34, 16).pack()
    assert len(coalesce([(vnet, f, True) for f in frames])) == 2
    valid = VnetHeader(F_DATA_VALID).pack()
    assert len(coalesce([(valid, f, True) for f in frames])) == 1


@settings(max_examples=60, deadline=None)
@given(
    mss=st.integers(min_value=64, max_value=1460),
    count=st.integers(min_value=2, max_value=30),
    tail=st.integers(min_value=1, max_value=1460),
    options=st.sampled_from([b"", bytes.fromhex("0101080a0000000100000002")]),
)
def test_gro_then_gso_is_identity(mss: int, count: int, tail: int, options: bytes) -> None:
    sizes = [mss] * (count - 1) + [min(tail, mss)]
    seq = 7
    frames = []
    for i, size in enumerate(sizes):
        frames.append(tcp4(bytes([i % 251]) * size, seq, ident=i, options=options))
        seq += size
    merged = coalesce([(ZERO_VNET, f, True) for f in frames])
    out: list[bytes] = []
    for vnet, frame in merged:
        vh = VnetHeader.unpack(vnet)
        out.extend(segment(vh, frame) if vh.gso_type else [bytes(frame)])
    assert [f[54 + len(options) :] for f in out] == [f[54 + len(options) :] for f in frames]
    assert [f[:18] + f[20:24] + f[26:] for f in out] == [f[:18] + f[20:24] + f[26:] for f in frames]


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=1460), min_size=2, max_size=12),
    victim=st.integers(min_value=0),
    offset=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_gro_run_check_catches_any_damaged_byte(
    sizes: list[int], victim: int, offset: int, flip: int
) -> None:
    """Untrusted segments are verified as a run: after one changed byte anywhere in the TCP
    part of any segment (odd lengths too), that segment is never inside a superframe — it is
    passed on as it came, for the kernel to judge (a changed header byte may also have made
    it another flow or out of sequence)."""
    mss = max(sizes)
    sizes = [mss] * (len(sizes) - 1) + [sizes[-1]]
    frames = segments(sizes, seq=1)
    assert len(coalesce([(ZERO_VNET, f, False) for f in frames])) == 1
    i = victim % len(frames)
    bad = bytearray(frames[i])
    bad[34 + offset % (len(bad) - 34)] ^= flip
    frames[i] = bytes(bad)
    merged = coalesce([(ZERO_VNET, f, False) for f in frames])
    assert frames[i] in [bytes(m[1]) for m in merged]
