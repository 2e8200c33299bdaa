"""Session key, TCP and sleeve sealing against weave's own vectors and the decrypted trace e."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.wire import load_vector
from weaved.datapath.sleeve.wire import SpecialKind, classify_special, heartbeat_uid, unpack_frames
from weaved.mesh.crypto import (
    DecryptError,
    KeyPair,
    ReplayWindow,
    SleeveOpener,
    SleeveSealer,
    TcpOpener,
    TcpSealer,
    form_session_key,
    tcp_nonce,
)
from weaved.mesh.peername import parse_peer_name, peer_name_to_bytes


def test_key_agreement_vector() -> None:
    v = load_vector("crypto.json")
    a = KeyPair.from_private(bytes.fromhex(v["A_private_hex"]))
    b = KeyPair.from_private(bytes.fromhex(v["B_private_hex"]))
    assert a.public.hex() == v["A_public_hex"]
    assert b.public.hex() == v["B_public_hex"]
    pw = v["password"].encode()
    ka = form_session_key(b.public, a.private, pw)
    kb = form_session_key(a.public, b.private, pw)
    assert ka == kb
    assert ka.hex() == v["session_key_hex"]
    assert "private" not in repr(a).replace("private=", "")  # no key material in repr
    assert v["A_private_hex"] not in repr(a)


def test_tcp_seal_vectors() -> None:
    v = load_vector("crypto.json")
    key = bytes.fromhex(v["session_key_hex"])
    a_send = TcpSealer(key, outbound=True)
    b_send = TcpSealer(key, outbound=False)
    for m in v["tcp_A_to_B"]:
        assert tcp_nonce(True, m["seq"]).hex() == m["nonce_hex"]
        assert a_send.seal(bytes.fromhex(m["plaintext_hex"])).hex() == m["sealed_hex"]
    for m in v["tcp_B_to_A"]:
        assert b_send.seal(bytes.fromhex(m["plaintext_hex"])).hex() == m["sealed_hex"]
    b_recv = TcpOpener(key, outbound=False)
    opened = [b_recv.open(bytes.fromhex(m["sealed_hex"])).hex() for m in v["tcp_A_to_B"]]
    assert opened == v["tcp_opened_at_B_hex"]


def test_tcp_replay_or_gap_fails() -> None:
    v = load_vector("crypto.json")
    key = bytes.fromhex(v["session_key_hex"])
    first = bytes.fromhex(v["tcp_A_to_B"][0]["sealed_hex"])
    second = bytes.fromhex(v["tcp_A_to_B"][1]["sealed_hex"])
    opener = TcpOpener(key, outbound=False)
    with pytest.raises(DecryptError):
        opener.open(second)  # gap
    opener.open(first)
    with pytest.raises(DecryptError):
        opener.open(first)  # replay
    with pytest.raises(DecryptError):
        opener.open(b"short")


def test_udp_vectors() -> None:
    v = load_vector("crypto.json")
    key = bytes.fromhex(v["session_key_hex"])
    a_name = peer_name_to_bytes(parse_peer_name("2a:9f:f1:99:8a:21"))
    opener = SleeveOpener(key, outbound=False)  # B accepted
    df = SleeveSealer(a_name, key, outbound=True, df=True)
    non_df = SleeveSealer(a_name, key, outbound=True, df=False)
    bodies = []
    for d in v["udp_A_to_B"]:
        raw = bytes.fromhex(d["datagram_hex"])
        assert raw[:6] == a_name
        body = opener.open(raw[6:])
        assert body is not None
        bodies.append(body)
        sealer = df if "DF stream" in d["what"] and "non-DF" not in d["what"] else non_df
        assert sealer.seal(body) == raw
    frames = [f for b in bodies for f in unpack_frames(b)[0]]
    summary = [f"{f.src:012x}>{f.dst:012x} len {len(f.data)}" for f in frames]
    assert summary == v["udp_decrypted_at_B"]
    # Replaying every datagram delivers nothing.
    assert all(opener.open(bytes.fromhex(d["datagram_hex"])[6:]) is None for d in v["udp_A_to_B"])
    assert heartbeat_uid(frames[0].data) == int(v["udp_conn_uid"])


def test_known_key_session() -> None:
    s = load_vector("encrypted-session-known-key.json")
    me = KeyPair.from_private(bytes.fromhex(s["python_peer_private_hex"]))
    assert me.public.hex() == s["python_peer_public_hex"]
    key = form_session_key(
        bytes.fromhex(s["weaver_public_hex"]), me.private, s["password"].encode()
    )
    assert key.hex() == s["session_key_hex"]
    outbound_key = next(k for k in s if k.startswith("tcp_python_to_weaver"))
    inbound_key = next(k for k in s if k.startswith("tcp_weaver_to_python"))
    sealer = TcpSealer(key, outbound=True)
    for m in s[outbound_key]:
        framed = bytes.fromhex(m["framed_sealed_hex"])
        assert sealer.seal(bytes.fromhex(m["plaintext_hex"])) == framed[4:]
    opener = TcpOpener(key, outbound=True)
    for m in s[inbound_key]:
        framed = bytes.fromhex(m["framed_sealed_hex"])
        assert int.from_bytes(framed[:4], "big") == len(framed) - 4
        assert opener.open(framed[4:]).hex() == m["plaintext_hex"]
    # UDP both directions: the python peer dialled, the weaver accepted.
    from_python = SleeveOpener(key, outbound=False)
    from_weaver = SleeveOpener(key, outbound=True)
    python_name = "2a:9f:f1:99:8a:21"
    for d in s["udp"]:
        if d["datagram_hex"] is None:  # the 41-fragment test datagram is not reassembled
            continue
        raw = bytes.fromhex(d["datagram_hex"])
        opener_udp = from_python if d["sender"] == python_name else from_weaver
        body = opener_udp.open(raw[6:])
        assert body is not None and body.hex() == d["plaintext_hex"]
        frames, err = unpack_frames(body)
        assert err is None
        kinds = [classify_special(f.data) for f in frames]
        expected = {
            "heartbeat": SpecialKind.HEARTBEAT,
            "fragmentation-test": SpecialKind.FRAG_TEST,
            "mtu-probe": SpecialKind.MTU_PROBE,
        }
        assert kinds == [expected[f["kind"]] for f in d["frames"]]


def test_wrong_key_and_short_packets() -> None:
    key = bytes(32)
    opener = SleeveOpener(bytes([1]) * 32, outbound=False)
    sealed = SleeveSealer(bytes(6), key, outbound=True, df=False).seal(b"hello")
    with pytest.raises(DecryptError):
        opener.open(sealed[6:])
    with pytest.raises(DecryptError):
        opener.open(b"\x00" * 10)
    plain = SleeveOpener(None, outbound=False)
    assert plain.open(b"abc") == b"abc"


def test_replay_window_rules() -> None:
    w = ReplayWindow()
    assert w.accept(0) and not w.accept(0)
    assert w.accept(5)
    big = 1 << 20
    assert w.accept(big + 3)  # next window; 0 and 5 move to previous
    assert not w.accept(5)
    assert w.accept(6)  # previous window, unseen
    assert w.accept(3 * big)  # jump: both windows reset
    assert not w.accept(big + 4)  # older than the previous window
    assert w.accept(2 * big + 1)


@given(st.lists(st.integers(min_value=0, max_value=1 << 24), max_size=60))
def test_replay_window_never_accepts_twice(seqs: list[int]) -> None:
    w = ReplayWindow()
    accepted: set[int] = set()
    for s in seqs:
        if w.accept(s):
            assert s not in accepted
            accepted.add(s)
