"""Replay the Weave Net 2.8.1 side of every captured TCP session through our parsers.

Each direction of each plain trace is rebuilt as one byte stream (header, crypto flag, framed
messages), fed in odd-sized chunks to our handshake, and every message after it must parse:
gossip envelopes re-encode to the same bytes, topology payloads decode and merge, other
channels' payloads are valid gob. The encrypted trace e is replayed with its published key.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from tests.wire import WIRE, load_vector
from weaved.mesh import gob
from weaved.mesh.crypto import KeyPair
from weaved.mesh.gob.weave_types import DNS_GOSSIP_DATA, GOSSIP_STATE, RANGE
from weaved.mesh.handshake import Handshake, HandshakeDone, parse_features
from weaved.mesh.messages import (
    Gossip,
    GossipBroadcast,
    GossipUnicast,
    Heartbeat,
    Message,
    OverlayControl,
    encode_broadcast,
    encode_gossip,
    encode_unicast,
    parse_message,
)
from weaved.mesh.peername import format_peer_name, parse_peer_name
from weaved.mesh.routes import unicast_routes
from weaved.mesh.topology import ConnectionInfo, Topology, decode_topology

PLAIN_TRACES = [
    "trace-a-tcp.json",
    "trace-b-AB-tcp.json",
    "trace-b-BC-tcp.json",
    "trace-d-tcp.json",
]


def _streams(trace: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    data = load_vector(trace)
    out = []
    for stream in data["streams"]:
        msgs = [m for m in data["messages"] if m["direction"] == stream["direction"]]
        msgs.sort(key=lambda m: m["message_index"])
        out.append((stream, msgs))
    return out


def _handshake_through(
    stream_bytes: bytes, outbound: bool, **kw: Any
) -> tuple[HandshakeDone, bytes]:
    ours = Handshake(
        outbound=outbound,
        features={
            "PeerNameFlavour": "mac",
            "Name": "::1",
            "NickName": "",
            "UID": "1",
            "ConnID": "1",
        },
        **kw,
    )
    ours.start()
    rng = random.Random(len(stream_bytes))
    pos = 0
    done: HandshakeDone | None = None
    while pos < len(stream_bytes) and done is None:
        n = rng.randint(1, 700)
        for ev in ours.receive_data(stream_bytes[pos : pos + n]):
            assert not hasattr(ev, "closed"), ev
            if isinstance(ev, HandshakeDone):
                done = ev
        pos += n
    assert done is not None
    return done, stream_bytes[pos:]


def _check_payload(msg: Message) -> None:
    if isinstance(msg, Gossip | GossipBroadcast):
        payload = msg.payload
    elif isinstance(msg, GossipUnicast):
        assert msg.payload is not None
        payload = msg.payload
    else:
        return
    if msg.channel == "topology":
        assert decode_topology(payload)
    elif msg.channel == "IPallocation":
        if isinstance(msg, GossipUnicast):
            kind, rest = payload[0], payload[1:]
            gob.decode_one(rest, GOSSIP_STATE if kind == 1 else RANGE)
        else:
            gob.decode_one(payload, GOSSIP_STATE)
    elif msg.channel == "nameserver":
        gob.decode_one(payload, DNS_GOSSIP_DATA)
    else:
        pytest.fail(f"unexpected channel {msg.channel}")


@pytest.mark.parametrize("trace", PLAIN_TRACES)
def test_replay_plain_trace(trace: str) -> None:
    seen_tags: set[int] = set()
    for stream, msgs in _streams(trace):
        assert msgs[0]["kind"] == "features"
        raw = bytes.fromhex(stream["protocol_header_hex"]) + bytes([stream["crypto_flag"]])
        raw += b"".join(bytes.fromhex(m["framed_hex"]) for m in msgs)
        # Our side is the other end of this direction: we dialled if the sender accepted.
        outbound = stream["direction"].split(" -> ")[0].endswith(":6783")
        done, rest = _handshake_through(raw, outbound=outbound, password=None)
        assert done.features == msgs[0]["decoded"]
        parse_features(done.features)
        done.reader.feed(rest)
        bodies = done.reader.messages()
        assert len(bodies) == len(msgs) - 1 == stream["messages"] - 1
        for body, vec in zip(bodies, msgs[1:], strict=True):
            msg = parse_message(body)
            seen_tags.add(body[0])
            assert body[0] == vec["tag"]
            if isinstance(msg, Gossip):
                env = vec["envelope"]
                assert msg.channel == env["channel"] and msg.sender == env["src_uint"]
                assert encode_gossip(msg.channel, msg.sender, msg.payload) == body
            elif isinstance(msg, GossipBroadcast):
                assert encode_broadcast(msg.channel, msg.sender, msg.payload) == body
            elif isinstance(msg, GossipUnicast):
                assert msg.dest == vec["envelope"]["dst_uint"] and msg.payload is not None
                assert encode_unicast(msg.channel, msg.sender, msg.dest, msg.payload) == body
                assert bytes([5]) + msg.envelope == body
            elif isinstance(msg, OverlayControl):
                assert msg.index == 0 and msg.subtag in (1, 2, 3)
            else:
                assert isinstance(msg, Heartbeat)
            _check_payload(msg)
    assert {4, 7} <= seen_tags


def test_replay_encrypted_session_from_weaver() -> None:
    s = load_vector("encrypted-session-known-key.json")
    inbound = next(v for k, v in s.items() if k.startswith("tcp_weaver_to_python"))
    raw = bytes.fromhex(s["protocol_header_each_way_hex"][1]) + b"\x01"
    raw += bytes.fromhex(s["weaver_public_hex"])
    raw += b"".join(bytes.fromhex(m["framed_sealed_hex"]) for m in inbound)
    keypair = KeyPair.from_private(bytes.fromhex(s["python_peer_private_hex"]))
    done, rest = _handshake_through(
        raw, outbound=True, password=s["password"].encode(), keypair=keypair
    )
    done.reader.feed(rest)
    bodies = done.reader.messages()
    assert [b.hex() for b in bodies] == [m["plaintext_hex"] for m in inbound[1:]]
    kinds = []
    for body in bodies:
        msg = parse_message(body)
        _check_payload(msg)
        kinds.append(type(msg).__name__)
    assert kinds.count("Gossip") == 5 and "OverlayControl" in kinds


def _report_routes(case: str) -> dict[str, str]:
    path = WIRE / "outputs" / "three-peers-line" / case / "report.json"
    report = json.loads(path.read_text())["Router"]
    return {r["Dest"]: r["Via"] for r in report["UnicastRoutes"]}


def test_replayed_topology_gives_weave_routes() -> None:
    """host1 (A) in trace b merges what host2 gossiped: its routes go through the states of
    A's reports, with all three peers up and after host3 stopped."""
    a = parse_peer_name("3e:80:e7:5a:63:a7")
    b = parse_peer_name("2a:9f:f1:99:8a:21")
    topo = Topology(a, "host1", 13317849061010202239, 3469)
    topo.add_local_connection(ConnectionInfo(b, "192.0.2.2:59819", False, True))
    seen: list[dict[str, str]] = []
    for stream, msgs in _streams("trace-b-AB-tcp.json"):
        if not stream["direction"].endswith("192.0.2.1:6783"):
            continue
        for m in msgs[1:]:
            msg = parse_message(bytes.fromhex(m["framed_hex"])[4:])
            if isinstance(msg, Gossip) and msg.channel == "topology":
                topo.apply_update(msg.payload)
                routes = unicast_routes(topo.graph(), a, established=True)
                seen.append({format_peer_name(d): format_peer_name(v) for d, v in routes.items()})
    assert _report_routes("host1") in seen
    assert seen[-1] == _report_routes("host1-after-host3-stopped")
