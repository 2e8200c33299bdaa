"""The `weaved-vxlan` overlay inside the real OverlaySwitch: negotiation with weaved and Weave
peers, fallback to sleeve with the reason shown, recovery, encryption. No sockets: heartbeats
are handed to the forwarder as the receive socket would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from weaved.datapath.fastdp.config import OVERLAY_NAME, Timing
from weaved.datapath.fastdp.frames import (
    Heartbeat,
    HeartbeatKind,
    build_heartbeat,
    mac_text,
    parse_heartbeat,
)
from weaved.datapath.fastdp.messages import (
    Ack,
    Hello,
    Macs,
    Subtag,
    Unavailable,
    decode_control,
    encode_control,
)
from weaved.datapath.fastdp.overlay import (
    ENCRYPTED_REASON,
    RELAYING,
    FastdpForwarder,
    FastdpOverlay,
    carried_by_fastdp,
)
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.messages import OverlayControl, parse_message
from weaved.mesh.overlay import Forwarder, ForwarderHooks, OverlayParams, OverlaySwitch

US = PeerName(0x020000000101)
PEER = PeerName(0x020000000102)
UID = 4242
FAST = Timing(fast_interval=0.01, interval=0.02, timeout=0.12, recover=1)


@dataclass
class FakeSleeveForwarder:
    hooks: ForwarderHooks
    name: str = "sleeve"

    def confirm(self) -> None:
        self.hooks.established()

    def control_message(self, subtag: int, body: bytes) -> None:
        return None

    def attrs(self) -> dict[str, object]:
        return {"name": "sleeve", "mtu": 1438}

    def stop(self) -> None:
        return None


@dataclass
class FakeSleeve:
    name: str = "sleeve"

    async def start(self, us: PeerName, is_known_peer: Callable[[PeerName], bool]) -> None:
        return None

    async def stop(self) -> None:
        return None

    def prepare(self, params: OverlayParams, hooks: ForwarderHooks) -> Forwarder:
        return FakeSleeveForwarder(hooks)

    def diagnostics(self) -> object:
        return None


@dataclass
class Wire:
    sent: list[bytes] = field(default_factory=list)  # TCP bodies
    frames: list[bytes] = field(default_factory=list)  # heartbeats put into the tunnel
    established: int = 0
    failed: list[str] = field(default_factory=list)


def params(features: str | None, key: bytes | None = None, outbound: bool = True) -> OverlayParams:
    feats = {"Overlays": features} if features is not None else {}
    return OverlayParams(
        PEER, "host2", ("192.0.2.11", 40000), ("192.0.2.12", 6783), outbound, UID, key, feats
    )


def make(
    features: str | None = "weaved-vxlan sleeve", key: bytes | None = None
) -> tuple[FastdpOverlay, OverlaySwitch, Wire]:
    overlay = FastdpOverlay("", 6784, timing=FAST)
    overlay.us = US
    overlay.send_frame = lambda frame: wire.frames.append(frame)  # type: ignore[method-assign]
    switch = OverlaySwitch([overlay, FakeSleeve()])
    wire = Wire()
    return overlay, switch, wire


def prepare(switch: OverlaySwitch, wire: Wire, p: OverlayParams):  # type: ignore[no-untyped-def]
    return switch.prepare(
        p,
        wire.sent.append,
        lambda: setattr(wire, "established", wire.established + 1),
        wire.failed.append,
    )


def controls(wire: Wire) -> list[object]:
    out: list[object] = []
    for body in wire.sent:
        msg = parse_message(body)
        assert isinstance(msg, OverlayControl) and msg.index == 0
        out.append(decode_control(msg.subtag, msg.body))
    return out


def peer_beats(fwd: FastdpForwarder, seq: int, mtu: int = 1450) -> None:
    """The peer's heartbeats arrive, and the peer acks ours."""
    for kind, length in ((HeartbeatKind.SMALL, 64), (HeartbeatKind.FULL, mtu + 14)):
        assert fwd.heartbeat(Heartbeat(US, PEER, kind, UID, length, seq))
        fwd.control_message(*encode_control(Ack(kind, seq)))


def test_negotiation() -> None:
    _, switch, wire = make()
    assert switch.features() == {"Overlays": "weaved-vxlan sleeve"}
    assert [s.name for s in prepare(switch, wire, params("weaved-vxlan sleeve")).subs] == [
        OVERLAY_NAME,
        "sleeve",
    ]
    # Weave Net 2.8.1 with its own (Open vSwitch) fastdp: only sleeve in common.
    assert [s.name for s in prepare(switch, wire, params("fastdp sleeve")).subs] == ["sleeve"]
    assert [s.name for s in prepare(switch, wire, params(None)).subs] == ["sleeve"]


def test_fallback_and_recovery_through_the_switch() -> None:
    async def main() -> None:
        overlay, switch, wire = make()
        fwd = prepare(switch, wire, params("weaved-vxlan sleeve"))
        fast = fwd.forwarder(OVERLAY_NAME)
        assert isinstance(fast, FastdpForwarder)
        changes: list[str] = []
        overlay.on_change = changes.append
        overlay.kernel_state(blocked=None, mtu=1450, ready={PEER})
        fwd.confirm()
        assert fwd.name == "sleeve" and wire.established == 1  # sleeve first, fastdp probing
        assert controls(wire)[:2] == [Hello(6784), Macs(frozenset())]
        assert [parse_heartbeat(f).length for f in wire.frames[:2]] == [64, 1464]
        assert parse_heartbeat(wire.frames[0]).dst == PEER
        peer_beats(fast, 1)
        assert fwd.name == "fastdp" and carried_by_fastdp(fwd)
        assert fwd.attrs() == {"name": "fastdp", "mtu": 1450}
        assert "path healthy" in changes
        assert overlay.paths()[0].served and overlay.paths()[0].port == 6784
        # UDP 6784 blocked: nothing arrives any more
        await asyncio.sleep(FAST.timeout + 0.1)
        assert fwd.name == "sleeve" and not carried_by_fastdp(fwd)
        attrs = fwd.attrs()
        assert attrs is not None and attrs["name"] == "sleeve"
        assert attrs["fallback"] == (
            "fastdp unhealthy: no heartbeats through VXLAN (UDP 6784) for 0.12s"
        )
        assert not overlay.paths()[0].served
        # healed
        peer_beats(fast, 50)
        assert fwd.name == "fastdp" and "fallback" not in (fwd.attrs() or {})
        # heartbeats keep flowing every interval
        before = len(wire.frames)
        await asyncio.sleep(FAST.interval * 3)
        assert len(wire.frames) > before
        fwd.stop()
        assert overlay.forwarders == {}

    asyncio.run(main())


def test_encryption_means_encrypted_sleeve_and_says_so() -> None:
    _, switch, wire = make()
    fwd = prepare(switch, wire, params("weaved-vxlan sleeve", key=b"k" * 32))
    assert fwd.forwarder(OVERLAY_NAME) is None
    fwd.confirm()
    assert fwd.name == "sleeve"
    assert fwd.attrs() == {"name": "sleeve", "mtu": 1438, "fallback": ENCRYPTED_REASON}


def test_macs_are_announced_and_learnt() -> None:
    async def main() -> None:
        overlay, switch, wire = make()
        fwd = prepare(switch, wire, params("weaved-vxlan sleeve", outbound=False))
        fast = fwd.forwarder(OVERLAY_NAME)
        assert isinstance(fast, FastdpForwarder)
        fwd.confirm()
        assert overlay.paths()[0].port is None  # accepted: wait for the peer's hello
        overlay.set_local_macs(frozenset({"02:42:0a:28:00:01"}))
        assert controls(wire)[-1] == Macs(frozenset({"02:42:0a:28:00:01"}))
        sent = len(wire.sent)
        overlay.set_local_macs(frozenset({"02:42:0a:28:00:01"}))
        assert len(wire.sent) == sent  # unchanged: nothing sent
        fast.control_message(*encode_control(Hello(6790)))
        fast.control_message(*encode_control(Macs(frozenset({"02:42:0a:28:00:02"}))))
        path = overlay.paths()[0]
        assert path.port == 6790 and path.macs == {"02:42:0a:28:00:02"}
        fast.control_message(Subtag.MACS, b"\x01")  # garbage: ignored, not fatal
        fast.control_message(77, b"")
        fwd.stop()

    asyncio.run(main())


def test_receive_path_checks() -> None:
    async def main() -> None:
        overlay, switch, wire = make()
        fwd = prepare(switch, wire, params("weaved-vxlan sleeve"))
        fwd.confirm()
        good = Heartbeat(US, PEER, HeartbeatKind.SMALL, UID, 64, 1)
        overlay._frame(build_heartbeat(good), "weave")
        assert overlay.stats.heartbeats_received == 1
        for frame, ifname in (
            (build_heartbeat(good), "eth0"),  # not through our bridge
            (build_heartbeat(Heartbeat(PEER, PEER, good.kind, UID, 64, 1)), "weave"),  # not to us
            (build_heartbeat(Heartbeat(US, PeerName(9), good.kind, UID, 64, 1)), "weave"),
            (build_heartbeat(Heartbeat(US, PEER, good.kind, UID + 1, 64, 1)), "weave"),
            (build_heartbeat(good)[:-3], "weave"),
        ):
            overlay._frame(frame, ifname)
        assert overlay.stats.frames_dropped == 5 and overlay.stats.heartbeats_received == 1
        diag = overlay.diagnostics()
        assert isinstance(diag, dict)
        assert diag["HeartbeatsReceived"] == 1 and diag["FramesDropped"] == 5
        assert diag["Paths"] == {mac_text(PEER): "probing"}
        fwd.stop()

    asyncio.run(main())


def test_not_set_up_until_a_reconciler_says_so() -> None:
    async def main() -> None:
        _, switch, wire = make()
        fwd = prepare(switch, wire, params("weaved-vxlan sleeve"))
        fwd.confirm()
        assert "fallback" not in (fwd.attrs() or {})  # probing: the reconciler may come
        await asyncio.sleep(FAST.timeout + 0.05)
        attrs = fwd.attrs() or {}
        assert "not set up" in str(attrs.get("fallback"))
        assert isinstance(controls(wire)[-1], Unavailable)
        fwd.stop()

    asyncio.run(main())


def test_relaying_links_stand_by() -> None:
    async def main() -> None:
        overlay, switch, wire = make()
        fwd = prepare(switch, wire, params("weaved-vxlan sleeve"))
        fast = fwd.forwarder(OVERLAY_NAME)
        assert isinstance(fast, FastdpForwarder)
        overlay.kernel_state(blocked=None, mtu=1450, ready={PEER})
        fwd.confirm()
        peer_beats(fast, 1)
        assert fwd.name == "fastdp"
        overlay.set_relaying(frozenset({PEER}))
        assert fwd.name == "sleeve"
        assert (fwd.attrs() or {})["fallback"] == f"fastdp standby: {RELAYING}"
        assert not overlay.paths()[0].served
        overlay.set_relaying(frozenset())
        assert fwd.name == "fastdp"
        fwd.stop()

    asyncio.run(main())
