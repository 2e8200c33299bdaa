"""`FastdpPart` against an in-memory kernel: desired/observed/converge as the daemon calls
them, convergence to an empty plan, fallback removing entries, drift, no VXLAN support."""

from __future__ import annotations

import asyncio
from typing import Any

from weaved.datapath.fastdp.config import OVERLAY_NAME, Timing
from weaved.datapath.fastdp.fdb import Device, FdbRow, LinkRow
from weaved.datapath.fastdp.frames import Heartbeat, HeartbeatKind
from weaved.datapath.fastdp.health import PathState
from weaved.datapath.fastdp.messages import Ack, Hello, Macs, encode_control
from weaved.datapath.fastdp.netlink import FastdpKernel, VxlanUnsupported
from weaved.datapath.fastdp.overlay import FastdpForwarder, FastdpOverlay
from weaved.datapath.fastdp.part import FastdpPart
from weaved.datapath.fastdp.retain import RETAIN_FOR
from weaved.datapath.overlays import OVERLAYS
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.overlay import ForwarderHooks, OverlayParams
from weaved.mesh.router import MeshConfig, Router
from weaved.model.resources import Kind
from weaved.plan.changes import Action, Plan, make_plan
from weaved.spec.models import Spec

US = PeerName(0x020000000101)
H2 = PeerName(0x020000000102)
C2 = "02:42:0a:28:00:02"


class MemoryKernel(FastdpKernel):
    """The kernel objects fastdp owns, as plain data; counts writes like the real one."""

    def __init__(self, unsupported: bool = False) -> None:
        super().__init__(ipr=object())
        self.unsupported = unsupported
        self.link: LinkRow | None = None
        self.rows: list[FdbRow] = []
        self.bridge: list[FdbRow] = [FdbRow("02:00:00:00:01:01", "weave", True, "permanent")]

    def close(self) -> None:
        return None

    def observe_link(self, device: Device) -> LinkRow | None:
        return self.link

    def device_rows(self, device: Device) -> list[FdbRow]:
        return list(self.rows)

    def bridge_rows(self, bridge: str) -> list[FdbRow]:
        return list(self.bridge)

    def underlay_mtu(self, ips: Any) -> int:
        return 1500

    def execute(self, plan: Plan, device: Device) -> int:
        for change in plan.changes:
            self.writes += 1
            mac = change.key.split("/")[2] if change.kind is not Kind.LINK else ""
            if change.kind is Kind.LINK:
                if change.action is Action.DELETE:
                    self.link, self.rows = None, []
                    continue
                if self.unsupported:
                    raise VxlanUnsupported("create vxlan-6784: EOPNOTSUPP")
                self.link = LinkRow(
                    "vxlan",
                    device.vni,
                    device.port,
                    False,
                    "set",
                    "weave",
                    True,
                    device.mtu,
                    False,
                    True,
                )
                continue
            before, after = change.before, change.after
            if before is not None:
                self.rows = [
                    r
                    for r in self.rows
                    if not (
                        r.mac == mac
                        and (r.dst == before.get("dst") if before.get("dst") else r.master)
                    )
                ]
            if after is not None:
                if after.get("table") == "vxlan":
                    self.rows.append(
                        FdbRow(
                            mac,
                            device.name,
                            False,
                            "permanent",
                            after.get("dst"),
                            int(after.get("port")),
                        )
                    )
                else:
                    self.rows.append(FdbRow(mac, device.name, True, "static", sticky=True))
        return len(plan.changes)


class FakeDaemon:
    def __init__(self) -> None:
        self.dirty: list[str] = []

    def mark_dirty(self, reason: str = "trigger") -> None:
        self.dirty.append(reason)


def setup(kernel: MemoryKernel, spec: Spec | None = None) -> tuple[FastdpPart, FastdpOverlay, Spec]:
    spec = spec or Spec.model_validate({"version": 1, "peers": ["192.0.2.12"]})
    router = Router(
        MeshConfig(name=US, nickname="host1", overlays=(OVERLAY_NAME, "sleeve")),
        overlay_factories=OVERLAYS,
    )
    part = FastdpPart(spec, router, kernel_factory=lambda: kernel)
    overlay = part.overlay
    assert isinstance(overlay, FastdpOverlay)
    overlay.timing = Timing(fast_interval=0.01, interval=0.02, timeout=0.2, recover=1)
    overlay.selected = lambda _peer, _fwd: True  # no live connection in the router here
    return part, overlay, spec


def connect(overlay: FastdpOverlay, sent: list[tuple[int, bytes]]) -> FastdpForwarder:
    params = OverlayParams(
        H2,
        "host2",
        ("192.0.2.11", 40000),
        ("192.0.2.12", 6783),
        True,
        7,
        None,
        {"Overlays": "weaved-vxlan sleeve"},
    )
    hooks = ForwarderHooks(lambda t, b: sent.append((t, b)), lambda: None, lambda _r: None)
    fwd = overlay.prepare(params, hooks)
    assert isinstance(fwd, FastdpForwarder)
    fwd.confirm()
    return fwd


def beats(fwd: FastdpForwarder, seq: int) -> None:
    for kind, length in ((HeartbeatKind.SMALL, 64), (HeartbeatKind.FULL, 1464)):
        fwd.heartbeat(Heartbeat(US, H2, kind, 7, length, seq))
        fwd.control_message(*encode_control(Ack(kind, seq)))


def test_converges_and_stays_converged() -> None:
    async def main() -> None:
        kernel = MemoryKernel()
        part, overlay, spec = setup(kernel)
        daemon = FakeDaemon()
        await part.start(daemon)  # type: ignore[arg-type]
        # no peers yet: just the device, MTU from the underlay
        assert sorted(part.desired(spec).resources) == ["link/vxlan-6784"]
        assert part.converge(spec) > 0
        assert kernel.link is not None and kernel.link.mtu == 1450
        assert make_plan(part.desired(spec), part.observed()).empty
        assert part.converge(spec) == 0
        assert overlay.local_macs == {"02:00:00:00:01:01"}

        sent: list[tuple[int, bytes]] = []
        fwd = connect(overlay, sent)
        assert any("confirmed" in d for d in daemon.dirty)
        part.converge(spec)  # the heartbeat entry for host2
        assert overlay.is_ready(H2)
        assert not make_plan(part.desired(spec), part.observed()).changes
        fwd.control_message(*encode_control(Macs(frozenset({C2}))))
        beats(fwd, 1)
        assert fwd.control.healthy
        part.converge(spec)
        have = set(part.observed().resources)
        assert {
            "fdb/vxlan-6784/00:00:00:00:00:00/192.0.2.12",
            f"fdb/vxlan-6784/{C2}/192.0.2.12",
            f"fdb/weave/{C2}",
            "fdb/weave/02:00:00:00:01:02",
        } <= have
        assert part.converge(spec) == 0
        assert "fastdp" in part.render_paths() and "macs=1" in part.render_paths()
        status = part.status_section() or ""
        assert "vxlan-6784 (VXLAN id 6784, UDP 6784, MTU 1450" in status
        assert "1 fastdp, 0 sleeve" in status

        # the path fails: only the heartbeat entry stays
        await asyncio.sleep(0.3)
        assert not fwd.control.healthy
        part.converge(spec)
        assert set(part.observed().resources) == {
            "link/vxlan-6784",
            "fdb/vxlan-6784/02:00:00:00:01:02/192.0.2.12",
        }
        report = part.report()[1]
        assert report["Paths"][0]["Using"] == "sleeve"
        assert "no heartbeats" in report["Paths"][0]["Reason"]

        # drift: someone deletes the device; the next converge puts everything back
        kernel.link, kernel.rows = None, []
        beats(fwd, 2)
        part.converge(spec)
        assert make_plan(part.desired(spec), part.observed()).empty
        assert f"fdb/weave/{C2}" in part.observed().resources

        # the connection goes while fastdp carried it: its entries stay (the peer's daemon
        # may be restarting; the kernel still forwards), until RETAIN_FOR without a path
        fwd.stop()
        assert part.converge(spec) == 0
        assert f"fdb/weave/{C2}" in part.observed().resources
        assert make_plan(part.desired(spec), part.observed()).empty
        now = part.clock()
        part.clock = lambda: now + RETAIN_FOR + 1
        part.converge(spec)
        assert set(part.observed().resources) == {"link/vxlan-6784"}

        # datapath.mode sleeve: the device goes too, and the overlay is told why
        sleeve = Spec.model_validate({"version": 1, "datapath": {"mode": "sleeve"}})
        part.converge(sleeve)
        assert kernel.link is None
        assert overlay.blocked == "fastdp off: the spec's datapath.mode is sleeve"
        await part.stop()

    asyncio.run(main())


def test_spec_mtu_wins_and_acceptor_waits_for_hello() -> None:
    async def main() -> None:
        kernel = MemoryKernel()
        spec = Spec.model_validate({"version": 1, "datapath": {"mtu": 1376}})
        part, overlay, _ = setup(kernel, spec)
        part.converge(spec)
        assert kernel.link is not None and kernel.link.mtu == 1376
        params = OverlayParams(
            H2, "host2", ("192.0.2.11", 6783), ("192.0.2.12", 51000), False, 7, None, {}
        )
        hooks = ForwarderHooks(lambda t, b: None, lambda: None, lambda _r: None)
        fwd = overlay.prepare(params, hooks)
        assert isinstance(fwd, FastdpForwarder)
        fwd.confirm()
        part.converge(spec)
        assert not any(k.startswith("fdb/") for k in part.observed().resources)
        fwd.control_message(*encode_control(Hello(6784)))
        part.converge(spec)
        assert "fdb/vxlan-6784/02:00:00:00:01:02/192.0.2.12" in part.observed().resources
        fwd.stop()
        await part.stop()

    asyncio.run(main())


def test_no_vxlan_support_means_sleeve_with_the_reason() -> None:
    async def main() -> None:
        kernel = MemoryKernel(unsupported=True)
        part, overlay, spec = setup(kernel)
        part.converge(spec)
        assert overlay.blocked == "create vxlan-6784: EOPNOTSUPP"
        # it stops trying and planning: the plan is clean, the status says why
        assert part.desired(spec).resources == {}
        assert part.converge(spec) == 0
        assert "Problem: create vxlan-6784: EOPNOTSUPP" in (part.status_section() or "")
        await part.stop()

    asyncio.run(main())


def test_inert_without_the_overlay() -> None:
    spec = Spec.model_validate({"version": 1})
    router = Router(
        MeshConfig(name=US, nickname="host1", overlays=("sleeve",)), overlay_factories=OVERLAYS
    )
    part = FastdpPart(spec, router, kernel_factory=MemoryKernel)
    assert part.overlay is None
    assert part.desired(spec).resources == {}
    assert part.status_section() is None
    assert part.render_paths() == "fastdp is not configured\n"


def test_a_password_removes_the_vxlan_device_and_offers_fastdp_to_no_link() -> None:
    """Encryption on (trusted links included): VXLAN would accept unauthenticated frames
    from anyone on the underlay, so the device is planned away when the spec gets a
    password, and no new connection (encrypted or trusted) is offered fastdp."""

    async def main() -> None:
        kernel = MemoryKernel()
        part, overlay, spec = setup(kernel)
        part.converge(spec)
        assert kernel.link is not None
        encrypted = spec.model_copy(update={"password_file": "/etc/weave/password"})
        part.spec_changed(encrypted)
        assert part.desired(encrypted).resources == {}
        assert [c.action for c in make_plan(part.desired(encrypted), part.observed()).changes] == [
            Action.DELETE
        ]
        part.converge(encrypted)
        assert kernel.link is None and part.converge(encrypted) == 0
        assert "encryption is on" in (part.status_section() or "")
        try:
            connect(overlay, [])
        except Exception as exc:  # NotOffered: the switch shows it as the fallback reason
            assert "encryption is on" in str(exc)
        else:
            raise AssertionError("a trusted link was offered fastdp with a password set")
        await part.stop()

    asyncio.run(main())


def served(part: FastdpPart, overlay: FastdpOverlay, spec: Spec) -> FastdpForwarder:
    """A connection to host2 that fastdp carries, converged."""
    fwd = connect(overlay, [])
    part.converge(spec)
    fwd.control_message(*encode_control(Macs(frozenset({C2}))))
    beats(fwd, 1)
    assert fwd.control.healthy
    part.converge(spec)
    assert f"fdb/weave/{C2}" in part.observed().resources
    return fwd


def test_a_peer_reconnecting_keeps_its_entries_with_zero_writes() -> None:
    """Its daemon restarted: the old connection went, a new one probes, then proves the
    path. The entries that forward all along are never touched."""

    async def main() -> None:
        kernel = MemoryKernel()
        part, overlay, spec = setup(kernel)
        part.converge(spec)
        served(part, overlay, spec).stop()
        before = set(part.observed().resources)
        assert part.converge(spec) == 0
        fwd = connect(overlay, [])  # the new connection: probing
        assert part.converge(spec) == 0 and set(part.observed().resources) == before
        fwd.control_message(*encode_control(Macs(frozenset({C2}))))
        beats(fwd, 1)
        assert fwd.control.healthy
        assert part.converge(spec) == 0 and set(part.observed().resources) == before
        assert part.retention.kept == []  # the new path took over
        await part.stop()

    asyncio.run(main())


def test_a_restarted_daemon_adopts_the_kernel_with_an_empty_plan_and_zero_writes() -> None:
    async def main() -> None:
        kernel = MemoryKernel()
        part, overlay, spec = setup(kernel)
        part.converge(spec)
        served(part, overlay, spec)
        before = set(part.observed().resources)
        await part.stop()  # kill -9 or a stop: nothing is flushed
        assert set(part.observed().resources) == before

        again, overlay2, _ = setup(kernel)  # the new daemon: no connections yet
        assert make_plan(again.desired(spec), again.observed()).empty
        assert again.converge(spec) == 0
        fwd = connect(overlay2, [])
        assert again.converge(spec) == 0
        fwd.control_message(*encode_control(Macs(frozenset({C2}))))
        beats(fwd, 1)
        assert again.converge(spec) == 0 and set(again.observed().resources) == before
        await again.stop()

    asyncio.run(main())


def test_a_path_that_fails_after_a_restart_loses_the_adopted_entries() -> None:
    async def main() -> None:
        kernel = MemoryKernel()
        part, overlay, spec = setup(kernel)
        part.converge(spec)
        served(part, overlay, spec)
        await part.stop()
        again, overlay2, _ = setup(kernel)
        again.converge(spec)
        fwd = connect(overlay2, [])
        await asyncio.sleep(0.3)  # no heartbeats: unhealthy, decided
        assert fwd.control.state is PathState.UNHEALTHY
        again.converge(spec)
        assert set(again.observed().resources) == {
            "link/vxlan-6784",
            "fdb/vxlan-6784/02:00:00:00:01:02/192.0.2.12",
        }
        await again.stop()

    asyncio.run(main())


def test_standby_for_relayed_traffic_waits_until_the_topology_settles() -> None:
    """A third host leaves: for a moment our view still has its link to host2, so the link
    to host2 seems to relay. That must not flip it to sleeve and back."""
    h3 = PeerName(0x020000000103)
    full = {US: {H2: True, h3: True}, H2: {US: True, h3: True}, h3: {US: True, H2: True}}
    leaving = {US: {H2: True}, H2: {US: True, h3: True}, h3: {H2: True, US: True}}
    part, overlay, _spec = setup(MemoryKernel())
    graph: dict[PeerName, dict[PeerName, bool]] = full
    part.router.topology.graph = lambda: graph  # type: ignore[method-assign]
    now = 100.0
    part.clock = lambda: now
    part._check_relaying()
    assert overlay.standby_reason(H2) is None
    graph = leaving
    for now in (100.0, 101.0, 102.5):  # noqa: B007 (read by part.clock)
        part._check_relaying()
        assert overlay.standby_reason(H2) is None
    now = 103.5  # it persists: a real partial mesh, relayed paths use sleeve
    part._check_relaying()
    assert overlay.standby_reason(H2) is not None
    graph = {US: {H2: True}, H2: {US: True}}  # settled: nothing relays, at once
    part._check_relaying()
    assert overlay.standby_reason(H2) is None
