"""Fast datapath: heartbeat frames, MAC helpers, control messages, the MTU rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weaved.datapath.fastdp.config import Timing, overlay_mtu
from weaved.datapath.fastdp.frames import (
    HEADER,
    SMALL_SIZE,
    Heartbeat,
    HeartbeatError,
    HeartbeatKind,
    build_heartbeat,
    is_unicast_mac,
    mac_text,
    parse_heartbeat,
    parse_mac,
)
from weaved.datapath.fastdp.messages import (
    MAX_MACS,
    Ack,
    ControlError,
    Hello,
    Macs,
    Subtag,
    Unavailable,
    decode_control,
    encode_control,
)
from weaved.mesh.gossip_api import PeerName

A = PeerName(0x020000000101)
B = PeerName(0x020000000102)


def test_heartbeat_layout() -> None:
    frame = build_heartbeat(Heartbeat(B, A, HeartbeatKind.FULL, 0x0102030405060708, 1464, 7))
    assert len(frame) == 1464
    assert frame[:6] == bytes.fromhex("020000000102")  # to the peer's bridge MAC
    assert frame[6:12] == bytes.fromhex("020000000101")
    assert frame[12:14] == b"\x88\xb5"
    assert frame[14:18] == b"WDHB"
    assert frame[18:20] == b"\x01\x01"  # version 1, full
    assert frame[20:28] == bytes.fromhex("0102030405060708")
    assert frame[28:30] == (1464).to_bytes(2, "big")
    assert frame[30:34] == (7).to_bytes(4, "big")
    assert frame[34:] == bytes(1464 - 34)


@given(
    kind=st.sampled_from(list(HeartbeatKind)),
    uid=st.integers(0, 2**64 - 1),
    length=st.integers(HEADER.size, 9014),
    seq=st.integers(0, 2**32 - 1),
)
def test_heartbeat_round_trip(kind: HeartbeatKind, uid: int, length: int, seq: int) -> None:
    hb = Heartbeat(A, B, kind, uid, length, seq)
    assert parse_heartbeat(build_heartbeat(hb)) == hb


def test_heartbeat_rejects() -> None:
    good = build_heartbeat(Heartbeat(B, A, HeartbeatKind.SMALL, 1, SMALL_SIZE, 1))
    with pytest.raises(HeartbeatError, match="claims"):
        parse_heartbeat(good[:-1])  # truncated on the way: the MTU check fails
    with pytest.raises(HeartbeatError, match="claims"):
        parse_heartbeat(good + b"\0")
    with pytest.raises(HeartbeatError, match="short"):
        parse_heartbeat(good[:20])
    with pytest.raises(HeartbeatError, match="not a weaved"):
        parse_heartbeat(good[:12] + b"\x08\x00" + good[14:])
    with pytest.raises(HeartbeatError, match="not a weaved"):
        parse_heartbeat(good[:14] + b"XXXX" + good[18:])
    with pytest.raises(HeartbeatError, match="version"):
        parse_heartbeat(good[:18] + b"\x09" + good[19:])
    with pytest.raises(HeartbeatError, match="kind"):
        parse_heartbeat(good[:19] + b"\x05" + good[20:])
    with pytest.raises(ValueError):
        build_heartbeat(Heartbeat(B, A, HeartbeatKind.SMALL, 1, 10, 1))


def test_mac_helpers() -> None:
    assert mac_text(A) == "02:00:00:00:01:01"
    assert mac_text(bytes.fromhex("aabbccddeeff")) == "aa:bb:cc:dd:ee:ff"
    assert parse_mac("AA:bb:c:d:e:f") == bytes.fromhex("aabb0c0d0e0f")
    for bad in ("", "aa:bb", "aa:bb:cc:dd:ee:gg", "aaa:bb:cc:dd:ee:ff"):
        with pytest.raises(ValueError):
            parse_mac(bad)
    assert is_unicast_mac("02:42:0a:00:00:01")
    assert not is_unicast_mac("00:00:00:00:00:00")
    assert not is_unicast_mac("ff:ff:ff:ff:ff:ff")
    assert not is_unicast_mac("01:00:5e:00:00:01")
    assert not is_unicast_mac("33:33:00:00:00:01")


def test_mtu_is_underlay_minus_vxlan_overhead_unless_set() -> None:
    assert overlay_mtu(None, 1500) == 1450
    assert overlay_mtu(None, 9000) == 8950
    assert overlay_mtu(1376, 1500) == 1376  # the spec wins
    assert overlay_mtu(None, 600) == 576  # never below the IPv4 minimum


def test_timing_is_checked() -> None:
    Timing()
    for bad in (
        {"fast_interval": 0.0},
        {"fast_interval": 2.0, "interval": 1.0},
        {"interval": 5.0, "timeout": 5.0},
        {"recover": 0},
    ):
        with pytest.raises(ValueError):
            Timing(**bad)


def test_control_messages_round_trip() -> None:
    macs = frozenset({"02:42:0a:00:00:01", "aa:bb:cc:dd:ee:ff"})
    for msg in (
        Ack(HeartbeatKind.FULL, 99),
        Hello(6790),
        Macs(macs),
        Macs(frozenset()),
        Unavailable("no VXLAN support"),
    ):
        subtag, body = encode_control(msg)
        assert decode_control(subtag, body) == msg
    assert encode_control(Ack(HeartbeatKind.SMALL, 1)) == (Subtag.ACK, b"\x00\x00\x00\x00\x01")
    assert encode_control(Hello(6784)) == (Subtag.HELLO, b"\x01\x1a\x80")


def test_control_messages_rejected() -> None:
    for subtag, body in (
        (Subtag.ACK, b"\x01"),
        (Subtag.ACK, b"\x07\x00\x00\x00\x01"),
        (Subtag.HELLO, b"\x01"),
        (Subtag.HELLO, b"\x01\x00\x00"),
        (Subtag.MACS, b"\x01\x02\x03"),
        (42, b""),
    ):
        with pytest.raises(ControlError):
            decode_control(subtag, body)
    assert decode_control(Subtag.UNAVAILABLE, b"") == Unavailable("no reason given")
    assert decode_control(Subtag.UNAVAILABLE, b"\xff") == Unavailable("\ufffd")
    with pytest.raises(ControlError):
        decode_control(Subtag.MACS, bytes(6 * (MAX_MACS + 1)))
