"""Message tags and gossip envelopes, both ways, against every captured example."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.wire import VECTORS
from weaved.mesh import gob
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.messages import (
    Blank,
    Gossip,
    GossipBroadcast,
    GossipUnicast,
    Heartbeat,
    LegacyControl,
    MessageError,
    OverlayControl,
    Tag,
    UnknownTag,
    _decode_gossip,
    _envelope,
    _fast_gossip,
    encode_broadcast,
    encode_gossip,
    encode_heartbeat,
    encode_overlay_control,
    encode_unicast,
    parse_message,
)


def _examples() -> list[dict[str, Any]]:
    out = []
    for path in sorted(VECTORS.glob("tcp-*.json")):
        data = json.loads(path.read_text())
        out += [e for e in data.get("examples", []) if "tag" in e]
    if not out:
        pytest.skip("tcp vectors not available")
    return out


def test_every_tcp_example_parses_and_reencodes() -> None:
    examples = _examples()
    tags = set()
    for ex in examples:
        body = bytes.fromhex(ex["framed_hex"])[4:]
        assert int.from_bytes(bytes.fromhex(ex["framed_hex"])[:4], "big") == len(body)
        msg = parse_message(body)
        tags.add(ex["tag"])
        env = ex.get("envelope") or {}
        if isinstance(msg, Gossip):
            assert (msg.channel, msg.sender) == (env["channel"], env["src_uint"])
            assert msg.payload.hex() == ex["data_hex"]
            assert encode_gossip(msg.channel, msg.sender, msg.payload) == body
        elif isinstance(msg, GossipBroadcast):
            assert msg.payload.hex() == ex["data_hex"]
            assert encode_broadcast(msg.channel, msg.sender, msg.payload) == body
        elif isinstance(msg, GossipUnicast):
            assert msg.payload is not None and msg.payload.hex() == ex["data_hex"]
            assert encode_unicast(msg.channel, msg.sender, msg.dest, msg.payload) == body
        elif isinstance(msg, OverlayControl):
            assert encode_overlay_control(msg.index, msg.subtag, msg.body) == body
        else:
            assert isinstance(msg, Heartbeat) and encode_heartbeat() == body
    assert tags == {0, 4, 5, 6, 7}


def test_envelope_vectors_from_go() -> None:
    path = VECTORS / "gob-weave-types.json"
    if not path.exists():
        pytest.skip("gob vectors not available")
    vecs = {v["name"]: v for v in json.loads(path.read_text())["vectors"]}
    g = vecs["envelope-gossip"]
    src = PeerName(int(g["value"]["src"].replace(":", ""), 16))
    assert (
        encode_gossip("topology", src, bytes.fromhex(g["value"]["data_hex"]))[1:].hex()
        == g["gob_hex"]
    )
    u = vecs["envelope-unicast"]
    got = encode_unicast(
        u["value"]["channel"],
        PeerName(int(u["value"]["src"].replace(":", ""), 16)),
        PeerName(int(u["value"]["dst"].replace(":", ""), 16)),
        bytes.fromhex(u["value"]["data_hex"]),
    )
    assert got[1:].hex() == u["gob_hex"]


def test_small_messages() -> None:
    assert parse_message(b"") == Blank()
    assert parse_message(b"\x00") == Heartbeat()
    assert parse_message(bytes.fromhex("070001")) == OverlayControl(0, 1, b"")
    assert parse_message(bytes.fromhex("070003059e")) == OverlayControl(0, 3, b"\x05\x9e")
    assert parse_message(b"\x02") == LegacyControl(2, b"")
    assert parse_message(b"\x09zz") == UnknownTag(9, b"zz")
    with pytest.raises(MessageError):
        parse_message(b"\x07\x00")


@given(st.integers(4, 6), st.binary(max_size=200))
def test_garbage_envelopes_only_raise_message_error(tag: int, rest: bytes) -> None:
    with contextlib.suppress(MessageError):
        parse_message(bytes([tag]) + rest)


@given(
    st.sampled_from([Tag.GOSSIP, Tag.GOSSIP_BROADCAST]),
    st.text(max_size=40),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=300),
)
def test_fast_envelope_reading_equals_the_decoder(
    tag: Tag, channel: str, sender: int, payload: bytes
) -> None:
    encode = encode_gossip if tag == Tag.GOSSIP else encode_broadcast
    body = encode(channel, PeerName(sender), payload)
    fast = _fast_gossip(tag, body)
    assert fast is not None and fast == _decode_gossip(tag, body)


@given(st.sampled_from([Tag.GOSSIP, Tag.GOSSIP_BROADCAST]), st.binary(max_size=120))
def test_fast_envelope_reading_accepts_only_what_the_decoder_reads_alike(
    tag: Tag, rest: bytes
) -> None:
    body = bytes([tag]) + rest
    fast = _fast_gossip(tag, body)
    if fast is not None:
        assert fast == _decode_gossip(tag, body)


def test_fast_envelope_reading_of_go_vectors() -> None:
    read = 0
    for e in _examples():
        body = bytes.fromhex(e["framed_hex"])[4:]
        if body and body[0] in (Tag.GOSSIP, Tag.GOSSIP_BROADCAST):
            fast = _fast_gossip(Tag(body[0]), body)
            assert fast is not None and fast == _decode_gossip(Tag(body[0]), body)
            read += 1
    assert read


@given(
    st.sampled_from([Tag.GOSSIP, Tag.GOSSIP_BROADCAST]),
    st.text(max_size=40),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=70_000),
)
def test_gossip_envelope_writing_equals_the_encoder(
    tag: Tag, channel: str, sender: int, payload: bytes
) -> None:
    """The envelope written with a kept head and one copy of the payload is the encoder's."""
    encode = encode_gossip if tag == Tag.GOSSIP else encode_broadcast
    for _ in range(2):  # the second from the kept head
        body = encode(channel, PeerName(sender), payload)
        assert body == _envelope(
            tag, (gob.STRING, channel), (gob.UINT, sender), (gob.BYTES, payload)
        )
