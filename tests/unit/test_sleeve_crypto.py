"""The sleeve data path's direct libsodium sealing and opening give Weave's bytes: weave's own
vectors (crypto.json) and the decrypted trace e (a live weaver, known key)."""

from __future__ import annotations

import pytest

from tests.wire import load_vector
from weaved.datapath.sleeve.sodium import DirectOpener, box
from weaved.mesh.crypto import DecryptError, KeyPair, SleeveSealer, form_session_key, sleeve_nonce


def test_box_and_open_match_weave_vectors() -> None:
    v = load_vector("crypto.json")
    key = bytes.fromhex(v["session_key_hex"])
    opener = DirectOpener(key, outbound=False)  # B accepted; A dialled and sealed
    for d in v["udp_A_to_B"]:
        raw = bytes.fromhex(d["datagram_hex"])
        body = opener.open(memoryview(raw)[6:])
        assert body is not None
        seq_field = int.from_bytes(raw[6:14], "big")
        sealed = box(raw[:14], body, sleeve_nonce(True, seq_field), key)
        assert bytes(sealed) == raw
    # Replays deliver nothing; a flipped bit does not open.
    assert all(opener.open(bytes.fromhex(d["datagram_hex"])[6:]) is None for d in v["udp_A_to_B"])
    raw = bytearray(bytes.fromhex(v["udp_A_to_B"][0]["datagram_hex"]))
    raw[-1] ^= 1
    with pytest.raises(DecryptError):
        DirectOpener(key, outbound=False).open(bytes(raw[6:]))
    with pytest.raises(DecryptError):
        opener.open(b"\x00" * 10)


def test_direct_box_equals_pynacl_sealer() -> None:
    key = bytes(range(32))
    body = bytes(range(256)) * 300
    for df in (False, True):
        sealer = SleeveSealer(b"\x02" * 6, key, outbound=True, df=df)
        sealer.seq = 41
        expected = sealer.seal(body)
        field = 41 | ((1 << 63) if df else 0)
        prefix = b"\x02" * 6 + field.to_bytes(8, "big")
        assert bytes(box(prefix, body, sleeve_nonce(True, field), key)) == expected


def test_live_weaver_session_opens() -> None:
    s = load_vector("encrypted-session-known-key.json")
    me = KeyPair.from_private(bytes.fromhex(s["python_peer_private_hex"]))
    key = form_session_key(
        bytes.fromhex(s["weaver_public_hex"]), me.private, s["password"].encode()
    )
    from_python = DirectOpener(key, outbound=False)
    from_weaver = DirectOpener(key, outbound=True)
    opened = 0
    for d in s["udp"]:
        if d["datagram_hex"] is None:
            continue
        raw = bytes.fromhex(d["datagram_hex"])
        opener = from_python if d["sender"] == "2a:9f:f1:99:8a:21" else from_weaver
        body = opener.open(raw[6:])
        assert body is not None and body.hex() == d["plaintext_hex"]
        opened += 1
    assert opened >= 5
