"""Topology payloads decoded record by record with a cache (issue 16): same results as the
general gob path for our framing, Weave's framing and any gob stream; an update that
changes one peer decodes one record; definitions cannot be slipped into the primed decoder;
an update that changes nothing does not search the graph."""

from __future__ import annotations

import contextlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.wire import load_vector, needs_wire
from weaved.mesh import gob
from weaved.mesh.gob.weave_types import CONNECTION_SUMMARY_LIST, PEER_SUMMARY
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.handshake import RemoteIdentity
from weaved.mesh.topology import (
    ConnectionInfo,
    Peer,
    Topology,
    TopologyError,
)
from weaved.mesh.topology_wire import CODEC, PayloadCodec, Row, _decode_rows


def _peers(n: int, changed: int = -1) -> list[Peer]:
    out = []
    for i in range(1, n + 1):
        remote = PeerName(i % n + 1)
        conns = {remote: ConnectionInfo(remote, f"10.0.0.{i}:6783", True, i != changed)}
        out.append(Peer(PeerName(i), f"h{i}", 100 + i, 3 + (i == changed), i, True, conns))
    return out


def _values(rows: tuple[Row, ...]) -> list[tuple[object, object]]:
    """The decoded records without the bytes they came in."""
    return [(peer, conns) for peer, conns, _ in rows]


def test_one_changed_peer_decodes_one_record() -> None:
    codec = PayloadCodec()
    full = codec.encode(_peers(50))
    assert _values(codec.decode(full)) == _values(_decode_rows(full))
    assert codec.stats["decoded"] == 50
    assert _values(codec.decode(full)) == _values(_decode_rows(full))
    assert codec.stats["decoded"] == 50  # all known
    update = codec.encode(_peers(50, changed=7))
    assert _values(codec.decode(update)) == _values(_decode_rows(update))
    assert codec.stats["decoded"] == 51
    assert codec.stats["general"] == 0


@needs_wire
def test_weaves_framing_takes_the_record_path_with_its_own_type_ids() -> None:
    codec = PayloadCodec()
    for ex in load_vector("tcp-gossip-topology.json")["examples"]:
        payload = bytes.fromhex(ex["data_hex"])
        assert _values(codec.decode(payload)) == _values(_decode_rows(payload))
        # Weave's type ids are not ours: its records are re-encoded, never relayed as bytes.
        assert all(wire is None for _, _, wire in codec.decode(payload))
    assert codec.stats["general"] == 0


def test_received_records_are_relayed_as_they_came() -> None:
    """A record in our own encoding is passed on as its bytes (no encoding work); the
    payload is the one a fresh encoding makes."""
    peers = _peers(20)
    payload = PayloadCodec().encode(peers)
    us = Topology(PeerName(1), "h1", 101, 1, random.Random(1))
    us.add_local_connection(ConnectionInfo(PeerName(2), "10.0.0.2:6783", True, True))
    us.apply_update(payload)
    records_before = len(CODEC._records)
    names = [p.name for p in peers[1:]]
    relayed = us.encode(names)
    assert relayed == PayloadCodec().encode(peers[1:])
    assert len(CODEC._records) == records_before  # nothing encoded


def test_a_record_not_in_our_encoding_is_re_encoded() -> None:
    """An 8-byte NameByte with leading zeros decodes to the same name, but we write 6 bytes:
    such a record is relayed re-encoded, as before records were passed on as bytes."""
    codec = PayloadCodec()
    enc = gob.Encoder()
    summary = {"NameByte": bytes(2) + (5).to_bytes(6, "big"), "NickName": "h5", "UID": 7}
    summary |= {"Version": 2, "ShortID": 5, "HasShortID": True}
    payload = enc.encode(PEER_SUMMARY, summary) + enc.encode(CONNECTION_SUMMARY_LIST, [])
    [(peer, conns, wire)] = codec.decode(payload)
    assert peer[0] == 5 and conns == {} and wire is None
    us = Topology(PeerName(1), "h1", 101, 1, random.Random(1))
    us.register_remote(RemoteIdentity(PeerName(5), "h5", 7, 0, None, False, None), True)
    us.apply_update(payload)
    again = codec.decode(us.encode([PeerName(5)]))
    assert _values(again) == _values(codec.decode(payload))
    assert again[0][2] is not None  # now in our encoding (6 bytes)


def test_a_definition_inside_a_record_goes_down_the_general_path() -> None:
    codec = PayloadCodec()
    ours = codec.encode(_peers(2))
    spans = gob.message_spans(ours)
    # The last CL value replaced by definitions (again) and a value.
    _, cl_start, _ = spans[-1]
    bad = ours[:cl_start] + gob.Encoder().encode(CONNECTION_SUMMARY_LIST, [])
    with contextlib.suppress(TopologyError):
        codec.decode(bad)
    assert codec.stats["general"] >= 1
    # The primed decoder is intact.
    assert _values(codec.decode(ours)) == _values(_decode_rows(ours))


def test_decode_value_refuses_definitions() -> None:
    enc = gob.Encoder()
    first = enc.encode(PEER_SUMMARY, {"NickName": "a"})
    dec = gob.Decoder(first)
    dec.next(PEER_SUMMARY)
    try:
        dec.decode_value(first, 0, len(first), PEER_SUMMARY)
    except gob.GobError:
        pass
    else:
        raise AssertionError("a definition was accepted by decode_value")
    again = enc.encode(PEER_SUMMARY, {"NickName": "b"})
    assert dec.decode_value(again, 0, len(again), PEER_SUMMARY)["NickName"] == "b"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 300))
def test_codec_agrees_with_the_general_path_on_mangled_payloads(junk: bytes, at: int) -> None:
    codec = PayloadCodec()
    good = codec.encode(_peers(3))
    codec.decode(good)
    payload = good[:at] + junk + good[at + len(junk) :]
    try:
        want: object = _values(_decode_rows(payload))
    except TopologyError:
        want = TopologyError
    try:
        got: object = _values(PayloadCodec().decode(payload))
    except TopologyError:
        got = TopologyError
    try:
        warm: object = _values(codec.decode(payload))
    except TopologyError:
        warm = TopologyError
    assert got == want and warm == want


def test_repeated_update_does_not_collect_but_a_lost_connection_does() -> None:
    us = Topology(PeerName(1), "h1", 101, 1, random.Random(1))
    peers = _peers(3)
    us.apply_update(PayloadCodec().encode(peers[1:]))  # 2 <-> 3, none to us
    assert set(us.peers) == {1}  # unreachable from us: collected
    # Now 2 and 3 are reachable through our own connection to 2.
    us.add_local_connection(ConnectionInfo(PeerName(2), "10.0.0.2:6783", True, True))
    us.apply_update(PayloadCodec().encode(peers[1:]))
    assert set(us.peers) == {1, 2, 3}
    calls = []
    original = us.garbage_collect

    def counting() -> list[Peer]:
        calls.append(1)
        return original()

    us.garbage_collect = counting  # type: ignore[method-assign]
    result = us.apply_update(PayloadCodec().encode(peers[1:]))
    assert not result.improved and calls == []
    # Peer 2 drops its connection to 3 (newer version): 3 is unreachable and goes.
    p2 = Peer(PeerName(2), "h2", 102, 9, 2, True, {})
    result = us.apply_update(PayloadCodec().encode([p2]))
    assert calls == [1] and [p.name for p in result.removed] == [3]
    assert set(us.graph()) == {1, 2}


def test_a_peers_old_records_do_not_pile_up_in_the_decode_cache() -> None:
    """bench/memory: each restart around a well-connected peer changes its record, and every
    version stayed decoded until 1 MB of them were cached (250 ConnectionInfo each)."""
    codec = PayloadCodec()
    hub = PeerName(1)
    for version in range(200):  # the hub's connections change with each restart around it
        conns = {
            PeerName(n): ConnectionInfo(PeerName(n), f"10.0.0.{n}:6783", True, True)
            for n in range(2, 250)
            if n != 2 + version % 248
        }
        payload = PayloadCodec().encode([Peer(hub, "hub", 7, version, 1, True, conns)])
        assert _values(codec.decode(payload)) == _values(_decode_rows(payload))
    assert codec.records_held() <= 4  # 12 kB each


def test_records_the_cache_dropped_are_not_kept_by_their_peer() -> None:
    """bench/memory: a churn of peer restarts makes new versions of many peers' records; the
    cache drops its oldest at its bound, but each peer's own list of its keys kept them (and
    their bytes, up to 32 kB a peer), so the process grew through the whole churn."""
    codec = PayloadCodec()
    for version in range(40):  # 250 peers x 40 versions: over the cache's 2 048 records
        peers = [
            Peer(p.name, p.nickname, p.uid, version, p.short_id, True, p.connections)
            for p in _peers(250)
        ]
        codec.decode(PayloadCodec().encode(peers))
    assert codec.records_held() <= PayloadCodec._MAX_DECODED
    listed = [key for keys, _ in codec._decoded_of.values() for key in keys]
    assert len(listed) == codec.records_held()  # each a key of the cache, once
    assert set(listed) == set(codec._decoded)
    held = sum(held for _, (held,) in codec._decoded_of.values())
    assert held == codec._decoded_bytes == sum(len(record) for _, record in listed)


def test_old_versions_of_a_peers_record_are_not_kept_encoded() -> None:
    """bench/memory: each connection the target makes or loses is a new version of its own
    250-link record, encoded once for gossip; every version stayed in the encode cache (12 kB
    each) until 2 048 of them were, so the target grew through the whole churn."""
    codec = PayloadCodec()
    conns = {
        PeerName(n): ConnectionInfo(PeerName(n), f"10.0.0.{n}:6783", True, True)
        for n in range(2, 252)
    }
    for version in range(200):
        us = Peer(PeerName(1), "us", 7, version, 1, True, conns)
        payload = codec.encode([us])
        assert _values(codec.decode(payload)) == _values(_decode_rows(payload))
    assert len(codec._records) <= PayloadCodec._RECORDS_PER_PEER
    assert codec.encode([us]) == PayloadCodec().encode([us])  # the latest is still right
