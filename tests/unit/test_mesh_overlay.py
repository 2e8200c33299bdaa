"""The overlay switch: common overlays, forwarder indexes, legacy control tags, best choice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from weaved.mesh.gossip_api import PeerName
from weaved.mesh.messages import LegacyControl, OverlayControl, parse_message
from weaved.mesh.overlay import (
    Forwarder,
    ForwarderHooks,
    NoCommonOverlay,
    OverlayParams,
    OverlaySwitch,
)


@dataclass
class FakeForwarder:
    name: str
    hooks: ForwarderHooks
    got: list[tuple[int, bytes]] = field(default_factory=list)
    confirmed: bool = False
    stopped: bool = False

    def confirm(self) -> None:
        self.confirmed = True

    def control_message(self, subtag: int, body: bytes) -> None:
        self.got.append((subtag, body))

    def attrs(self) -> dict[str, object]:
        return {"name": self.name, "mtu": 1376 if self.name == "fastdp" else 1438}

    def stop(self) -> None:
        self.stopped = True


@dataclass
class FakeOverlay:
    name: str
    made: list[FakeForwarder] = field(default_factory=list)
    broken: bool = False

    async def start(self, us: PeerName, is_known_peer: Callable[[PeerName], bool]) -> None:
        return None

    async def stop(self) -> None:
        return None

    def prepare(self, params: OverlayParams, hooks: ForwarderHooks) -> Forwarder:
        if self.broken:
            raise OSError("no datapath")
        f = FakeForwarder(self.name, hooks)
        self.made.append(f)
        return f

    def diagnostics(self) -> object:
        return None


def params(outbound: bool, overlays: str | None) -> OverlayParams:
    feats = {"Overlays": overlays} if overlays is not None else {}
    return OverlayParams(
        PeerName(2), "p", ("10.0.0.1", 1), ("10.0.0.2", 6783), outbound, 7, None, feats
    )


class Events:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.established = 0
        self.failed: list[str] = []

    def prepare(self, switch: OverlaySwitch, p: OverlayParams):  # type: ignore[no-untyped-def]
        return switch.prepare(
            p,
            self.sent.append,
            lambda: setattr(self, "established", self.established + 1),
            self.failed.append,
        )


def test_features_and_common_order_from_dialler() -> None:
    fast, sleeve = FakeOverlay("fastdp"), FakeOverlay("sleeve")
    switch = OverlaySwitch([fast, sleeve])
    assert switch.features() == {"Overlays": "fastdp sleeve"}
    ev = Events()
    # We accepted; the dialler listed sleeve first: its order decides the indexes.
    fwd = ev.prepare(switch, params(False, "sleeve fastdp"))
    assert [s.name for s in fwd.subs] == ["sleeve", "fastdp"]
    sleeve.made[0].hooks.send_control(1, b"")
    assert parse_message(ev.sent[-1]) == OverlayControl(0, 1, b"")
    fast.made[0].hooks.send_control(0, b"x")
    assert parse_message(ev.sent[-1]) == OverlayControl(1, 0, b"x")
    fwd.control_message(1, 3, b"\x05\x9e")
    assert fast.made[0].got == [(3, b"\x05\x9e")]
    fwd.control_message(9, 1, b"")  # unknown index: ignored
    fwd2 = ev.prepare(switch, params(True, "sleeve fastdp"))
    assert [s.name for s in fwd2.subs] == ["fastdp", "sleeve"]


def test_established_once_and_best_prefers_established() -> None:
    fast, sleeve = FakeOverlay("fastdp"), FakeOverlay("sleeve")
    ev = Events()
    fwd = ev.prepare(OverlaySwitch([fast, sleeve]), params(True, "fastdp sleeve"))
    fwd.confirm()
    assert fast.made[0].confirmed and sleeve.made[0].confirmed
    assert fwd.name == "fastdp"
    sleeve.made[0].hooks.established()
    assert (
        ev.established == 1
        and fwd.name == "sleeve"
        and fwd.attrs() == {"name": "sleeve", "mtu": 1438}
    )
    fast.made[0].hooks.established()
    assert ev.established == 1 and fwd.name == "fastdp"
    fast.made[0].hooks.failed("heartbeat timeout")
    assert fwd.name == "sleeve" and fast.made[0].stopped and ev.failed == []
    sleeve.made[0].hooks.failed("timed out waiting for UDP heartbeat")
    assert ev.failed == ["timed out waiting for UDP heartbeat"]


def test_legacy_peer_gets_sleeve_with_old_tags() -> None:
    sleeve = FakeOverlay("sleeve")
    ev = Events()
    fwd = ev.prepare(OverlaySwitch([FakeOverlay("fastdp"), sleeve]), params(True, None))
    assert fwd.legacy and [s.name for s in fwd.subs] == ["sleeve"]
    sleeve.made[0].hooks.send_control(3, b"\x04\x72")
    assert parse_message(ev.sent[-1]) == LegacyControl(3, b"\x04\x72")


def test_no_common_overlay() -> None:
    ev = Events()
    with pytest.raises(NoCommonOverlay):
        ev.prepare(OverlaySwitch([FakeOverlay("sleeve")]), params(True, "fastdp"))
    with pytest.raises(NoCommonOverlay):
        ev.prepare(OverlaySwitch([FakeOverlay("sleeve", broken=True)]), params(True, "sleeve"))
    with pytest.raises(ValueError):
        OverlaySwitch([FakeOverlay("sleeve"), FakeOverlay("sleeve")])
