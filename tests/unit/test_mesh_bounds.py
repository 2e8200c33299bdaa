"""What a hostile peer can make the mesh allocate or log is bounded (issue 18.6-18.8).

Each bomb is checked for its refusal and for what it cost (time and peak traced memory), so a
bound that silently stops holding fails here rather than in a lab."""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from tests.gob_bombs import STRUCT_VALUE, slice_bomb, struct_bomb, struct_definition
from weaved.lograte import RateLimitedLog
from weaved.mesh import gob
from weaved.mesh.admission import Admission, AdmissionLimits
from weaved.mesh.framing import HANDSHAKE_MAX_MESSAGE, MAX_MESSAGE_SIZE, MessageReader
from weaved.mesh.gossip import (
    MAX_SURROGATE_CHANNELS,
    MAX_SURROGATE_MESSAGES,
    GossipError,
    GossipHub,
    SurrogateData,
)
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.handshake import Handshake, HandshakeDone, HandshakeFailed
from weaved.mesh.messages import Gossip
from weaved.mesh.reasons import CloseReason

MB = 1024 * 1024


def _costs(fn: Callable[[], Any]) -> tuple[float, int]:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(gob.GobError):
            fn()
    finally:
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return seconds, peak


def test_a_type_definition_with_ten_million_fields_is_refused_before_allocating() -> None:
    bomb = struct_definition(65, 10_000_000)
    seconds, peak = _costs(lambda: gob.decode_one(bomb))
    assert seconds < 0.5 and peak < 4 * MB  # was 4.9 s and +752 MB


def test_a_struct_over_the_field_limit_is_refused() -> None:
    with pytest.raises(gob.GobError, match="struct fields"):
        gob.decode_one(struct_bomb(gob.MAX_FIELDS + 1))


def test_ten_megabytes_of_empty_structs_are_refused_by_the_decode_budget() -> None:
    bomb = slice_bomb(10_000_000)
    seconds, peak = _costs(lambda: gob.decode_one(bomb))
    assert seconds < 0.5 and peak < 4 * MB


def test_many_small_type_definitions_are_refused() -> None:
    bomb = b"".join(struct_definition(65 + i, 0) for i in range(gob.MAX_TYPES + 1)) + STRUCT_VALUE
    with pytest.raises(gob.GobError, match="type definitions"):
        gob.decode_one(bomb)


def test_the_decode_budget_leaves_realistic_messages_alone() -> None:
    typ = gob.Slice(gob.Struct("E", (gob.Field("Name", gob.STRING), gob.Field("N", gob.INT))))
    value = [{"Name": f"entry-{i}", "N": i} for i in range(50_000)]
    assert gob.decode_one(gob.encode_one(typ, value), typ) == value


def test_before_the_handshake_a_long_length_prefix_is_refused_from_the_prefix() -> None:
    hs = Handshake(outbound=False, features={"a": "b"}, password=None)
    hs.start()
    events = hs.receive_data(b"weave\x01\x02\x00" + (HANDSHAKE_MAX_MESSAGE + 1).to_bytes(4, "big"))
    assert isinstance(events[-1], HandshakeFailed)
    assert events[-1].closed.reason == CloseReason.FRAMING
    assert str(HANDSHAKE_MAX_MESSAGE) in events[-1].closed.detail


def test_after_the_handshake_the_reader_takes_full_size_messages() -> None:
    feats = {
        "PeerNameFlavour": "mac",
        "Name": "3e:80:e7:5a:63:a7",
        "NickName": "x",
        "UID": "1",
        "ConnID": "2",
    }
    hs = Handshake(outbound=False, features=feats, password=None)
    hs.start()
    body = gob.encode_one(gob.Map(gob.STRING, gob.STRING), feats)
    events = hs.receive_data(b"weave\x01\x02\x00" + len(body).to_bytes(4, "big") + body)
    done = events[-1]
    assert isinstance(done, HandshakeDone)
    assert done.reader.max_size == MAX_MESSAGE_SIZE


def test_a_huge_prefix_buffers_nothing() -> None:
    reader = MessageReader()
    reader.feed((0xFFFFFFFF).to_bytes(4, "big"))
    with pytest.raises(Exception, match="exceeds maximum size"):
        reader.next_message()


# --- admission ---------------------------------------------------------------------------


def test_admission_caps_pending_connections_per_source_and_in_total() -> None:
    adm = Admission(AdmissionLimits(pending_total=10, pending_per_source=3, burst_per_source=100))
    assert [adm.admit("192.0.2.9", 0.0) for _ in range(4)][3] is not None
    for i in range(7):
        assert adm.admit(f"198.51.100.{i}", 0.0) is None
    assert adm.pending == 10
    assert adm.admit("198.51.100.99", 0.0) is not None  # the total is reached ...
    assert adm.admit("203.0.113.5", 0.0, known_peer=True) is None  # ... but not for our peers
    adm.done("192.0.2.9")
    assert adm.admit("192.0.2.9", 0.0, known_peer=True) is None
    assert adm.refused == 2


def test_admission_token_bucket_is_per_source() -> None:
    adm = Admission(AdmissionLimits(burst_per_source=5, refill_seconds=1.0))
    results = []
    for _ in range(10):
        results.append(adm.admit("192.0.2.9", 0.0))
        adm.done("192.0.2.9")
    assert results.count(None) == 5
    assert adm.admit("192.0.2.10", 0.0) is None  # another source is not held up
    assert adm.admit("192.0.2.9", 1.0) is None  # refilled


# --- logs and gossip -------------------------------------------------------------------------


def test_rate_limited_log_says_how_many_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.lograte"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.lograte"):
        for i in range(1000):
            limited.info("flood", "refused addr=%s", "192.0.2.9")
            limited.info(("other", i % 2), "other %d", i % 2)
        now[0] = 11.0
        limited.info("flood", "refused addr=%s", "192.0.2.9")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "refused addr=192.0.2.9",
        "other 0",
        "other 1",
        "refused addr=192.0.2.9 (999 similar suppressed)",
    ]


class _NoTransport:
    def current_routes(self) -> Any:
        raise AssertionError("not used")

    def neighbours(self) -> list[PeerName]:
        return []

    def gossip_queue(self, peer: PeerName) -> None:
        return None

    def send_body(self, peer: PeerName, body: bytes) -> bool:
        return False

    def wake(self, peer: PeerName) -> None:
        pass


def test_unknown_gossip_channels_are_bounded() -> None:
    import random

    hub = GossipHub(PeerName(1), _NoTransport(), random.Random(1), lambda: 0.0)
    hub.relay = lambda *a: None  # type: ignore[method-assign]
    for i in range(MAX_SURROGATE_CHANNELS):
        hub.deliver(Gossip(f"chan{i}", PeerName(2), b"x"))
    with pytest.raises(GossipError, match="unknown gossip channels"):
        hub.deliver(Gossip("one-too-many", PeerName(2), b"x"))


def test_pending_surrogate_data_keeps_only_the_latest_payloads() -> None:
    data = SurrogateData((b"a",))
    for i in range(1000):
        merged = data.merge(SurrogateData((bytes([i % 256]),)))
        assert isinstance(merged, SurrogateData)
        data = merged
    assert len(data.messages) == MAX_SURROGATE_MESSAGES


def test_a_topology_update_cannot_invent_more_peers_than_the_bound() -> None:
    import random

    from weaved.mesh.topology import (
        MAX_PEERS,
        ConnectionInfo,
        Peer,
        Topology,
        TopologyError,
    )
    from weaved.mesh.topology_wire import CODEC

    ours = Topology(PeerName(1), "us", 1, 1, random.Random(1))
    fake = [Peer(PeerName(0x100000 + i), "x", 7, 1) for i in range(MAX_PEERS)]
    hub = Peer(PeerName(0x200000), "hub", 7, 1)
    hub.connections = {p.name: ConnectionInfo(p.name, "192.0.2.9:6783", True, True) for p in fake}
    with pytest.raises(TopologyError, match="more than 4096 peers"):
        ours.apply_update(CODEC.encode([hub, *fake]))
    assert len(ours.peers) == 1
    hub.nickname = "n" * 1000
    hub.connections = {}
    with pytest.raises(TopologyError, match="nickname"):
        ours.apply_update(CODEC.encode([hub]))
