"""Handshake state machine: every version/encryption combination, garbage, captured bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.wire import load_vector
from weaved.mesh.crypto import KeyPair
from weaved.mesh.handshake import (
    FeatureError,
    Handshake,
    HandshakeDone,
    HandshakeEvent,
    HandshakeFailed,
    SendBytes,
    check_remote,
    decode_features,
    encode_features,
    parse_features,
)
from weaved.mesh.peername import parse_peer_name
from weaved.mesh.reasons import CloseReason


def features(name: str = "3e:80:e7:5a:63:a7", uid: str = "1", conn: str = "5") -> dict[str, str]:
    return {
        "PeerNameFlavour": "mac",
        "Name": name,
        "NickName": "host",
        "ShortID": "12",
        "UID": uid,
        "ConnID": conn,
        "Trusted": "false",
        "Overlays": "sleeve",
    }


Result = HandshakeDone | HandshakeFailed | None


def run_pair(a: Handshake, b: Handshake, chunk: int = 0) -> tuple[Result, Result]:
    """Shuttle bytes between two handshakes until both finish or nothing moves."""
    out = {id(a): bytearray(a.start()), id(b): bytearray(b.start())}
    result: dict[int, Result] = {id(a): None, id(b): None}
    for _ in range(10_000):
        moved = False
        for me, other in ((a, b), (b, a)):
            buf = out[id(other)]
            if not buf or result[id(me)] is not None:
                continue
            n = chunk or len(buf)
            data, out[id(other)] = bytes(buf[:n]), buf[n:]
            moved = True
            for ev in me.receive_data(data):
                if isinstance(ev, SendBytes):
                    out[id(me)] += ev.data
                else:
                    result[id(me)] = ev
        if not moved:
            break
    return result[id(a)], result[id(b)]


@pytest.mark.parametrize("chunk", [0, 1, 7])
@pytest.mark.parametrize(
    ("pw_a", "pw_b"), [(None, None), (b"s3cret", b"s3cret")], ids=["plain", "encrypted"]
)
def test_matching_sides_complete(pw_a: bytes | None, pw_b: bytes | None, chunk: int) -> None:
    a = Handshake(outbound=True, features=features(uid="1"), password=pw_a)
    b = Handshake(outbound=False, features=features("2a:9f:f1:99:8a:21", "2"), password=pw_b)
    ra, rb = run_pair(a, b, chunk)
    assert isinstance(ra, HandshakeDone) and isinstance(rb, HandshakeDone)
    assert ra.version == rb.version == 2
    assert ra.features["Name"] == "2a:9f:f1:99:8a:21"
    assert rb.features["UID"] == "1"
    assert ra.session_key == rb.session_key
    assert (ra.session_key is None) == (pw_a is None)
    # The framing they hand over works end to end (sealed when encrypted).
    ra.reader.feed(rb.writer.frame(b"\x00"))
    assert ra.reader.messages() == [b"\x00"]


@pytest.mark.parametrize(
    ("pw_a", "pw_b", "reason_a", "reason_b"),
    [
        (b"x", None, CloseReason.EXPECTED_ENCRYPTION, CloseReason.EXPECTED_NO_ENCRYPTION),
        (None, b"x", CloseReason.EXPECTED_NO_ENCRYPTION, CloseReason.EXPECTED_ENCRYPTION),
        (b"right", b"wrong", CloseReason.DECRYPT_FAILED, CloseReason.DECRYPT_FAILED),
    ],
)
def test_encryption_mismatch_refused(
    pw_a: bytes | None, pw_b: bytes | None, reason_a: CloseReason, reason_b: CloseReason
) -> None:
    a = Handshake(outbound=True, features=features(), password=pw_a)
    b = Handshake(outbound=False, features=features(), password=pw_b)
    ra, rb = run_pair(a, b)
    assert isinstance(ra, HandshakeFailed) and ra.closed.reason == reason_a
    assert isinstance(rb, HandshakeFailed) and rb.closed.reason == reason_b
    if reason_a is CloseReason.EXPECTED_ENCRYPTION:
        assert ra.closed.detail == (
            "password specified, but peer requested an unencrypted connection"
        )
    if reason_a is CloseReason.DECRYPT_FAILED:
        assert "password" in ra.closed.detail


def _feed(hs: Handshake, data: bytes) -> list[HandshakeEvent]:
    hs.start()
    return hs.receive_data(data)


@pytest.mark.parametrize(
    ("header", "reason", "detail"),
    [
        (b"weave\x01\x01", CloseReason.VERSION_UNSUPPORTED, "version 1"),
        (
            b"weave\x03\x04",
            CloseReason.VERSION_INCOMPATIBLE,
            "[3,4] is incompatible with ours [1,2]",
        ),
        (b"wxave\x01\x02", CloseReason.BAD_HEADER, "not recognised"),
        (b"GET / HTTP/1.1\r\n", CloseReason.BAD_HEADER, "not recognised"),
    ],
)
def test_header_refusals(header: bytes, reason: CloseReason, detail: str) -> None:
    events = _feed(Handshake(outbound=True, features=features(), password=None), header)
    assert isinstance(events[-1], HandshakeFailed)
    assert events[-1].closed.reason == reason
    assert detail in events[-1].closed.detail


def test_version_2_only_peer_and_v1_fallback_refusal() -> None:
    hs = Handshake(outbound=True, features=features(), password=None)
    assert hs.start() == bytes.fromhex("77656176650102")  # byte for byte what 2.8.1 sends
    events = hs.receive_data(b"weave\x02\x02\x00")
    assert isinstance(events[0], SendBytes) and events[0].data == b"\x00"


def test_bad_crypto_flag() -> None:
    events = _feed(
        Handshake(outbound=True, features=features(), password=None), b"weave\x01\x02\x07"
    )
    assert isinstance(events[-1], HandshakeFailed)
    assert events[-1].closed.reason == CloseReason.BAD_CRYPTO_FLAG
    assert events[-1].closed.detail == "Bad encryption flag 7"


def test_oversized_and_garbage_features() -> None:
    hs = Handshake(outbound=True, features=features(), password=None)
    events = _feed(hs, b"weave\x01\x02\x00" + (11 << 20).to_bytes(4, "big"))
    assert isinstance(events[-1], HandshakeFailed)
    assert events[-1].closed.reason == CloseReason.FRAMING
    hs = Handshake(outbound=True, features=features(), password=None)
    events = _feed(hs, b"weave\x01\x02\x00" + b"\x00\x00\x00\x03abc")
    assert isinstance(events[-1], HandshakeFailed)
    assert events[-1].closed.reason == CloseReason.BAD_FEATURES


def test_eof_reasons() -> None:
    hs = Handshake(outbound=True, features=features(), password=None)
    hs.start()
    hs.receive_data(b"wea")
    assert "incomplete remote protocol header (3 octets instead of 7)" in hs.eof().closed.detail
    hs = Handshake(outbound=True, features=features(), password=None)
    assert "failed to receive remote protocol header" in hs.eof().closed.detail


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([b"", b"weave\x01\x02", b"weave\x01\x02\x00", b"weave\x01\x02\x01"]),
    garbage=st.binary(max_size=300),
    password=st.sampled_from([None, b"pw"]),
    chunk=st.integers(min_value=1, max_value=64),
)
def test_garbage_never_raises(
    prefix: bytes, garbage: bytes, password: bytes | None, chunk: int
) -> None:
    hs = Handshake(outbound=False, features=features(), password=password)
    hs.start()
    data = prefix + garbage
    outcome: list[HandshakeEvent] = []
    for i in range(0, len(data), chunk):
        outcome += hs.receive_data(data[i : i + chunk])
    terminal = [e for e in outcome if not isinstance(e, SendBytes)]
    assert len(terminal) <= 1
    for e in terminal:
        if isinstance(e, HandshakeFailed):
            assert isinstance(e.closed.reason, CloseReason) and e.closed.detail


def test_features_vectors_decode_and_round_trip() -> None:
    hs = load_vector("handshake.json")
    for conn in hs["connections"]:
        msg = conn["features_message"]
        if conn["stream"]["crypto_flag"]:
            continue  # sealed: covered by the known-key session test
        body = bytes.fromhex(msg["framed_hex"])[4:]
        assert decode_features(body) == msg["decoded"]
        assert decode_features(encode_features(msg["decoded"])) == msg["decoded"]


def test_single_entry_features_encode_like_go() -> None:
    # Go's map order is random, but a one-entry map has one encoding.
    got = encode_features({"Name": "x"})
    assert got.hex().startswith("0eff81040102ff8200010c010c0000")


def test_captured_remote_side_completes_our_handshake() -> None:
    hs_vectors = load_vector("handshake.json")
    for conn in hs_vectors["connections"]:
        stream = conn["stream"]
        if stream["crypto_flag"]:
            continue
        framed = bytes.fromhex(conn["features_message"]["framed_hex"])
        ours = Handshake(
            outbound="-> 192.0.2.1:6783" not in stream["direction"],
            features=features(),
            password=None,
        )
        ours.start()
        events = ours.receive_data(bytes.fromhex(stream["protocol_header_hex"]) + b"\x00" + framed)
        done = [e for e in events if isinstance(e, HandshakeDone)]
        assert done and done[0].features == conn["features_message"]["decoded"]
        ident = parse_features(done[0].features)
        assert ident.overlays == ("sleeve",)
        assert ident.trusted_by_remote is False


def test_known_key_session_handshake() -> None:
    s = load_vector("encrypted-session-known-key.json")
    me = KeyPair.from_private(bytes.fromhex(s["python_peer_private_hex"]))
    inbound = next(v for k, v in s.items() if k.startswith("tcp_weaver_to_python"))
    ours = Handshake(
        outbound=True, features=features(), password=s["password"].encode(), keypair=me
    )
    ours.start()
    data = bytes.fromhex(s["protocol_header_each_way_hex"][1]) + b"\x01"
    data += bytes.fromhex(s["weaver_public_hex"])
    data += b"".join(bytes.fromhex(m["framed_sealed_hex"]) for m in inbound)
    events = ours.receive_data(data)
    sent = b"".join(e.data for e in events if isinstance(e, SendBytes))
    assert sent[:33] == b"\x01" + me.public
    done = next(e for e in events if isinstance(e, HandshakeDone))
    assert done.session_key is not None and done.session_key.hex() == s["session_key_hex"]
    assert done.features == inbound[0]["decoded"]
    # Everything after the features opens with the counters continuing from 1.
    rest = done.reader.messages()
    assert [m.hex() for m in rest] == [m["plaintext_hex"] for m in inbound[1:]]


def test_parse_features_rules() -> None:
    ident = parse_features(features())
    assert ident.name == parse_peer_name("3e:80:e7:5a:63:a7")
    assert ident.short_id == 12 and ident.uid == 1 and ident.conn_id == 5
    for key in ("PeerNameFlavour", "Name", "NickName", "UID", "ConnID"):
        broken = features()
        del broken[key]
        with pytest.raises(FeatureError, match=f"Field {key} is missing"):
            parse_features(broken)
    with pytest.raises(FeatureError) as err:
        parse_features({**features(), "PeerNameFlavour": "hash"})
    assert err.value.closed.reason == CloseReason.FLAVOUR_MISMATCH
    for key, value in (("ShortID", "4096"), ("UID", "x"), ("ConnID", "-1"), ("Trusted", "yes")):
        with pytest.raises(FeatureError):
            parse_features({**features(), key: value})
    assert parse_features({**features(), "Trusted": "T"}).trusted_by_remote
    no_short = features()
    del no_short["ShortID"], no_short["Overlays"]
    ident = parse_features(no_short)
    assert ident.short_id is None and ident.overlays is None


def test_check_remote_self_and_collision() -> None:
    me = parse_peer_name("3e:80:e7:5a:63:a7")
    assert check_remote(parse_features(features()), parse_peer_name("::1"), 1) is None
    same = check_remote(parse_features(features(uid="1")), me, 1)
    assert same is not None and same.reason == CloseReason.CONNECT_TO_SELF
    other = check_remote(parse_features(features(uid="9")), me, 1)
    assert other is not None and other.reason == CloseReason.NAME_COLLISION
