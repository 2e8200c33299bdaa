"""nameserver payloads against Weave Net 2.8.1's bytes (vectors/*nameserver*.json, gob vectors)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.wire import AVAILABLE, VECTORS, load_vector, params
from weaved.dns.wire import decode_gossip, encode_gossip
from weaved.dns.zone import Entry, ip_to_int
from weaved.errors import ProtocolError
from weaved.mesh.gob import Encoder, Struct
from weaved.mesh.gossip_api import PeerName


def _captured() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(VECTORS.glob("tcp-*nameserver*.json")):
        out += json.loads(path.read_text())["examples"]
    return out


def _generated() -> list[dict[str, Any]]:
    if not AVAILABLE:
        return []
    vectors = load_vector("gob-weave-types.json")["vectors"]
    return [v for v in vectors if v["name"].startswith("dns-")]


def _expected(annotated: dict[str, Any]) -> tuple[int, list[Entry]]:
    return annotated["Timestamp"], [
        Entry(
            e["ContainerID"],
            PeerName(int(e["Origin"].replace(":", ""), 16)),
            ip_to_int(e["Addr"]),
            e["Hostname"],
            e["Version"],
            e["Tombstone"],
        )
        for e in annotated["Entries"]
    ]


def _encoder_starting_at(first_id: int) -> Encoder:
    """An encoder whose next type id is `first_id`, like a weaver that encoded other types
    first; makes our output comparable byte for byte with a capture."""
    enc = Encoder()
    for i in range(first_id - 65):
        enc.encode(Struct(f"pad{i}", ()), {})
    return enc


@pytest.mark.parametrize("vector", params(_generated()), ids=lambda v: v["name"])
def test_go_generated_vectors_round_trip_byte_exact(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["gob_hex"])
    timestamp, entries = decode_gossip(data)
    raw = vector["pygob_decoded"][0]
    assert timestamp == raw["Timestamp"]
    assert [e.hostname for e in entries] == [e["Hostname"] for e in raw["Entries"]]
    assert encode_gossip(timestamp, entries) == data


@pytest.mark.parametrize(
    "example", params(_captured()), ids=lambda e: f"{e['kind']}-frame{e['pcap_frame']}"
)
def test_captured_payloads_decode_and_re_encode_byte_exact(example: dict[str, Any]) -> None:
    data = bytes.fromhex(example["data_hex"])
    timestamp, entries = decode_gossip(data)
    assert (timestamp, entries) == _expected(example["annotated"][0])
    first_id = -example["gob_messages"][0]["type_id"]
    # Type ids are per process (FACTS.md §8); with the same numbering the bytes match.
    assert encode_gossip(timestamp, entries, _encoder_starting_at(first_id)) == data
    assert decode_gossip(encode_gossip(timestamp, entries)) == (timestamp, entries)


def test_entries_are_sorted_case_sensitively_before_encoding() -> None:
    them = PeerName(0x2A9FF1998A21)
    e1 = Entry("c", them, 1, "b.weave.local.")
    e2 = Entry("c", them, 1, "B.weave.local.")
    e3 = Entry("c", them, 1, "a.weave.local.")
    _, entries = decode_gossip(encode_gossip(1, [e1, e2, e3]))
    assert [e.hostname for e in entries] == ["B.weave.local.", "a.weave.local.", "b.weave.local."]


def test_garbage_and_impossible_values_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        decode_gossip(b"\x05\xff\x82\x01\x02")
    with pytest.raises(ProtocolError):
        decode_gossip(encode_gossip(1, [Entry("c", PeerName(1), 1 << 32, "a.")]))
    with pytest.raises(ProtocolError):
        decode_gossip(encode_gossip(1, [Entry("c", PeerName(1 << 48), 1, "a.")]))
