"""IPAM payloads against every captured and Go-generated vector."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.wire import AVAILABLE, VECTORS, load_vector, needs_wire, params
from weaved.errors import ProtocolError
from weaved.ipam.address import Range, parse_ip
from weaved.ipam.messages import IpamGossip, RingUpdate, SpaceRequest, SpaceRequestDenied
from weaved.ipam.paxos import NodeID, ProposalID
from weaved.ipam.ring import Entry
from weaved.ipam.wire import (
    decode_gossip,
    decode_range,
    decode_unicast,
    encode_gossip,
    encode_range,
    encode_unicast,
)
from weaved.mesh.gossip_api import PeerName

H1 = PeerName(0x3E80E75A63A7)
H2 = PeerName(0x2A9FF1998A21)
H3 = PeerName(0xAEC0016F34D5)


def examples() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if not AVAILABLE:
        return out
    for path in sorted(VECTORS.glob("*ipallocation*.json")):
        for i, e in enumerate(json.loads(path.read_text())["examples"]):
            out.append((f"{path.stem}[{i}]", e))
    relay = load_vector("relay-three-peers.json")
    for kind in ("unicast", "broadcast", "gossip"):
        for i, item in enumerate(relay[kind]):
            for role, rec in item.items():
                for j, e in enumerate(rec if isinstance(rec, list) else [rec]):
                    if (
                        isinstance(e, dict)
                        and e.get("envelope", {}).get("channel") == "IPallocation"
                    ):
                        out.append((f"relay-{kind}[{i}].{role}[{j}]", e))
    return out


EXAMPLES = examples()


@needs_wire
def test_vectors_found() -> None:
    assert len(EXAMPLES) >= 20


def ring_of(annotated: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    return [(e["Token"], e["Peer"], e["Version"], e["Free"]) for e in annotated["Entries"]]


@pytest.mark.parametrize(
    ("name", "example"), params(EXAMPLES, ids=[n for n, _ in EXAMPLES], width=2)
)
def test_decode_every_vector_and_reencode(name: str, example: dict[str, Any]) -> None:
    data = bytes.fromhex(example["data_hex"])
    decoded = example["decoded"][0]
    if example["tag"] == 5:
        msg = decode_unicast(data)
        assert decode_unicast(encode_unicast(msg)) == msg
        if isinstance(msg, SpaceRequest | SpaceRequestDenied):
            assert (msg.range.start, msg.range.end) == (decoded["Start"], decoded["End"])
            return
        assert isinstance(msg, RingUpdate)
        state = msg.state
    else:
        state = decode_gossip(data)
        assert decode_gossip(encode_gossip(state)) == state
    assert state.now == decoded["Now"]
    assert dict(state.nicknames) == {k: v for k, v in decoded["Nicknames"]["$map"]}
    if decoded["Ring"] is None:
        assert state.ring is None
    else:
        r = decoded["Ring"]
        assert state.ring is not None
        assert (state.ring.start, state.ring.end, state.ring.peer) == (
            r["Start"],
            r["End"],
            r["Peer"],
        )
        assert state.ring.entries == [
            Entry(e["Token"], e["Peer"], e["Version"], e["Free"]) for e in r["Entries"]
        ]
        assert list(state.ring.seeds) == r["Seeds"]
        state.ring.check_invariants()
    if not decoded["Paxos"]:
        # The reference decoder shows an absent and an empty map alike.
        assert not state.paxos
    else:
        assert state.paxos is not None
        pairs = decoded["Paxos"].get("$map", [])
        assert len(state.paxos) == len(pairs)
        for key, claims in pairs:
            node = NodeID(key["Name"], key["UID"])
            promise = claims["Promise"]
            got = state.paxos[node]
            assert got.promise == ProposalID(
                promise["Round"], NodeID(promise["Proposer"]["Name"], promise["Proposer"]["UID"])
            )
            assert list(got.accepted_val.value) == claims["AcceptedVal"]["Value"]


def go_vectors() -> list[dict[str, Any]]:
    if not AVAILABLE:
        return []
    doc = load_vector("gob-weave-types.json")
    return [v for v in doc["vectors"] if v["name"].startswith("ipam")]


@pytest.mark.parametrize("vector", params(go_vectors()), ids=lambda v: v["name"])
def test_byte_exact_against_go_encoder(vector: dict[str, Any]) -> None:
    """Fresh-encoder streams with single-entry maps are byte-for-byte Go's."""
    data = bytes.fromhex(vector["gob_hex"])
    if vector["name"].startswith("ipam-range"):
        assert encode_range(decode_range(data)) == data
    else:
        assert encode_gossip(decode_gossip(data)) == data


def test_paxos_absent_vs_empty() -> None:
    """Observers send no Paxos map, electors an empty one: receivers tell them apart."""
    observer = decode_gossip(encode_gossip(IpamGossip(1, {H1: "h"}, None, None)))
    elector = decode_gossip(encode_gossip(IpamGossip(1, {H1: "h"}, {}, None)))
    assert observer.paxos is None
    assert elector.paxos == {}


def test_trace_a_no_ring_announcement_is_an_elector_state() -> None:
    e = load_vector("tcp-gossip-ipallocation-no-ring-no-paxos.json")
    state = decode_gossip(bytes.fromhex(e["examples"][0]["data_hex"]))
    assert state.paxos == {} and state.ring is None


def test_space_request_bytes() -> None:
    r = Range(parse_ip("10.32.0.0"), parse_ip("10.48.0.0"))
    e = load_vector("tcp-unicast-ipallocation-spacerequest.json")
    captured = bytes.fromhex(e["examples"][0]["data_hex"])
    ours = encode_unicast(SpaceRequest(r))
    assert ours[0] == 0 and decode_unicast(captured) == SpaceRequest(r)
    # Same bytes modulo the type id (a fresh encoder numbers from 65, weaver used 89).
    assert len(ours) == len(captured)
    assert encode_unicast(SpaceRequestDenied(r))[0] == 2


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x07",
        b"\x00garbage",
        b"\x01\x03\xff\x81\x00",
        bytes.fromhex("0fff8201fc0a20000001fc0a30000000"),
    ],
)
def test_garbage_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_unicast(payload)


def test_impossible_ring_range_is_a_protocol_error() -> None:
    from weaved.ipam.ring import Ring

    good = IpamGossip(1, {}, None, Ring(10, 20, H1, [Entry(10, H1, 0, 10)]))
    data = bytearray(encode_gossip(good))
    decode_gossip(bytes(data))
    bad = data.replace(bytes([0x01, 0x0A, 0x01, 0x14]), bytes([0x01, 0x14, 0x01, 0x0A]))
    assert bad != data
    with pytest.raises(ProtocolError, match="impossible range"):
        decode_gossip(bytes(bad))
