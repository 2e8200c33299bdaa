"""Peer names: text forms, derivation against the real weaver's answers, short IDs."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.wire import MISSING, WIRE
from weaved.mesh.peername import (
    PeerNameError,
    SystemIDs,
    SystemIDsBlank,
    choose_short_id,
    derive_peer_name,
    format_peer_name,
    parse_peer_name,
    peer_name_from_bytes,
    peer_name_to_bytes,
    random_uid,
)


def _cases() -> list[dict[str, object]]:
    path = WIRE / "peer-names.json"
    if not path.exists():
        pytest.skip("peer-names.json not available")
    cases: list[dict[str, object]] = json.loads(path.read_text())["cases"]
    return cases


def _ids(inputs: dict[str, dict[str, str]]) -> SystemIDs:
    def raw(key: str) -> bytes | None:
        return bytes.fromhex(inputs[key]["bytes_hex"]) if key in inputs else None

    def text(key: str) -> str | None:
        return inputs[key]["text"] if key in inputs else None

    bridge = next((k for k in inputs if k.startswith("bridge ")), None)
    return SystemIDs(
        bridge_mac=text(bridge) if bridge else None,
        machine_id=raw("<host-root>/etc/machine-id"),
        dbus_machine_id=raw("<host-root>/var/lib/dbus/machine-id"),
        product_uuid=raw("/sys/class/dmi/id/product_uuid"),
        hypervisor_uuid=raw("/sys/hypervisor/uuid"),
        persisted_name=text("<db-prefix>data.db peername"),
    )


def test_every_recorded_case_matches_weaver() -> None:
    cases = _cases()
    assert len(cases) >= 15
    for case in cases:
        args = list(case["extra_args"])  # type: ignore[call-overload]
        explicit = args[args.index("--name") + 1] if "--name" in args else None
        ids = _ids(case["inputs"])  # type: ignore[arg-type]
        if case["binary_exit_code"] == 0:
            got = derive_peer_name(ids, explicit)
            assert format_peer_name(got) == case["binary_output"], case["case"]
        elif "invalid peer name" in str(case.get("binary_error")):
            with pytest.raises(PeerNameError) as err:
                derive_peer_name(ids, explicit)
            assert str(err.value) == case["binary_error"], case["case"]
        else:
            with pytest.raises(SystemIDsBlank, match="All system IDs are blank"):
                derive_peer_name(ids, explicit)


def test_live_trace_names() -> None:
    if not (WIRE / "peer-names.json").exists():
        pytest.skip(MISSING)
    data = json.loads((WIRE / "peer-names.json").read_text())["live_trace_names"]
    for host in data.values():
        mid = host["machine_id"].replace("\\n", "\n").encode()
        assert format_peer_name(derive_peer_name(SystemIDs(machine_id=mid))) == host["name"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3e:80:e7:5a:63:a7", "3e:80:e7:5a:63:a7"),
        ("::1", "00:00:00:00:00:01"),
        ("12::34", "12:00:00:00:00:34"),
        ("aa:bb::", "aa:bb:00:00:00:00"),
        ("1:2:3:4:5:6", "01:02:03:04:05:06"),
        ("AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff"),
    ],
)
def test_parse_forms(text: str, expected: str) -> None:
    assert format_peer_name(parse_peer_name(text)) == expected


@pytest.mark.parametrize(
    "text",
    ["not-a-mac", "", "1:2:3:4:5", "1:2:3:4:5:6:7", "123:1:1:1:1:1", "1::2::3", "g:0:0:0:0:0"],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(PeerNameError, match="invalid peer name format"):
        parse_peer_name(text)


@given(st.integers(min_value=0, max_value=(1 << 48) - 1))
def test_text_and_bytes_round_trip(n: int) -> None:
    assert parse_peer_name(format_peer_name(n)) == n
    assert peer_name_from_bytes(peer_name_to_bytes(n)) == n


def test_uid_never_zero() -> None:
    class Zeroes(random.Random):
        calls = 0

        def getrandbits(self, k: int) -> int:
            self.calls += 1
            return 0 if self.calls < 3 else 42

    assert random_uid(Zeroes()) == 42


def test_choose_short_id_avoids_taken_and_falls_back() -> None:
    rng = random.Random(1)
    taken = set(range(4096)) - {7}
    assert choose_short_id(taken, rng) == 7
    assert choose_short_id(set(range(4096)), rng) is None
    got = choose_short_id({1, 2, 3}, rng)
    assert got is not None and got not in {1, 2, 3}
