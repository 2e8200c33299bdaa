"""The fast datapath inside the daemon: the VXLAN device and its forwarding entries reconciled
like any other object (`weaved plan` shows `link/vxlan-6784`, `fdb/…`), from the mesh's view
of which peers fastdp can carry.

    mesh = MeshPart(spec, name, overlay_factories=OVERLAYS)  # weaved.datapath.overlays
    # its router lists "weaved-vxlan" before "sleeve"
    parts = [mesh, FastdpPart(spec, mesh.router), …]

Triggers (a path became healthy or unhealthy, a peer announced MACs, a connection came or
went) only mark the daemon dirty; `converge` observes, plans and applies. Kernel work runs on
one worker thread of this part's own (pyroute2 brings its own event loop); `observed` and
`converge` wait for it, bounded by `call_timeout`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from weaved.control import Handler, Request, Response
from weaved.datapath.fastdp import views
from weaved.datapath.fastdp.config import (
    DEFAULT_UNDERLAY_MTU,
    DEVICE,
    OVERLAY_NAME,
    VNI,
    Timing,
    overlay_mtu,
)
from weaved.datapath.fastdp.fdb import (
    Device,
    FdbRow,
    LinkRow,
    PeerPath,
    desired_state,
    observed_state,
    vxlan_fdb_key,
)
from weaved.datapath.fastdp.frames import mac_text
from weaved.datapath.fastdp.health import PathState
from weaved.datapath.fastdp.localmacs import (
    FULL_READ_SECONDS,
    BridgeIndex,
    LocalMacs,
    neigh_socket,
    read_changes,
)
from weaved.datapath.fastdp.netlink import FastdpKernel, VxlanUnsupported
from weaved.datapath.fastdp.overlay import (
    ENCRYPTED_MESH_REASON,
    FastdpForwarder,
    FastdpOverlay,
    PathView,
)
from weaved.datapath.fastdp.relay import RelaySettle, relaying_neighbours
from weaved.datapath.fastdp.retain import Retention
from weaved.errors import ApplyError, WeavedError
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.router import Router
from weaved.mesh.targets import split_target
from weaved.model.resources import BRIDGE, State
from weaved.part import Component, Host
from weaved.plan.changes import Plan, make_plan
from weaved.spec.models import DatapathMode, Spec

__all__ = ["FastdpPart"]

log = logging.getLogger(__name__)
T = TypeVar("T")

SLEEVE_MODE_REASON = "fastdp off: the spec's datapath.mode is sleeve"


@dataclass(frozen=True)
class _Seen:
    """One observation: the device, its entries, the bridge's table, the underlay MTU."""

    link: LinkRow | None
    rows: list[FdbRow]
    bridge_rows: list[FdbRow]
    underlay_mtu: int
    since: int  # LocalMacs.mark() before the bridge's table was read


class FastdpPart(Component):
    name = "fastdp"

    def __init__(
        self,
        spec: Spec,
        router: Router,
        *,
        timing: Timing | None = None,
        remote_ports: tuple[str, ...] = ("vethwe-tap",),
        kernel_factory: Callable[[], FastdpKernel] = FastdpKernel,
        call_timeout: float = 10.0,
        watch_interval: float = 1.0,
    ) -> None:
        """`timing`: heartbeat intervals and timeout (default `Timing()`: 1 s, unhealthy after
        5 s). `remote_ports`: bridge ports behind which MACs are remote (sleeve's TAP); MACs
        the bridge learns on any other port are announced to peers as ours."""
        self.spec = spec
        self.router = router
        overlay = router.overlay(OVERLAY_NAME)
        self.overlay = overlay if isinstance(overlay, FastdpOverlay) else None
        self.remote_ports = remote_ports
        self.call_timeout = call_timeout
        self.watch_interval = watch_interval
        self.error: str | None = None
        self._kernel_factory = kernel_factory
        self._kernel: FastdpKernel | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._daemon: Host | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._underlay_mtu = DEFAULT_UNDERLAY_MTU
        self._local: frozenset[str] = frozenset()
        self._macs = LocalMacs(BRIDGE, (DEVICE, *remote_ports))
        # Announcements are applied only when the kernel read is this process's namespace
        # (the event socket's); another (tests' namespaces, fakes) is read every interval.
        self._apply_events = kernel_factory is FastdpKernel
        self._unsupported: str | None = None
        self._converged_paths: tuple[PeerPath, ...] | None = None
        self._graph: object = None
        self._relaying_now: frozenset[PeerName] = frozenset()
        self._relay_settle = RelaySettle()
        # Entries kept while a peer's path is undecided (retain.py): adopted at start, or
        # left by a connection that went while fastdp carried it.
        self.retention = Retention()
        self.clock: Callable[[], float] = time.monotonic
        self._wake = asyncio.Event()
        if self.overlay is not None:
            self.overlay.selected = self._selected
            self.overlay.encrypted_mesh = _encrypted(spec)
            if timing is not None:
                self.overlay.timing = timing

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self, daemon: Host) -> None:
        self._daemon = daemon
        if self.overlay is None:
            return
        self.overlay.on_change = self._changed
        self._tasks.append(asyncio.create_task(self._watch(), name="fastdp-watch"))

    async def stop(self) -> None:
        if self.overlay is not None:
            self.overlay.on_change = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        executor, self._executor = self._executor, None
        if executor is not None:
            kernel, self._kernel = self._kernel, None
            if kernel is not None:
                with contextlib.suppress(Exception):
                    executor.submit(kernel.close).result(timeout=self.call_timeout)
            executor.shutdown(wait=False)

    def spec_changed(self, spec: Spec) -> None:
        self.spec = spec
        if self.overlay is not None:
            self.overlay.encrypted_mesh = _encrypted(spec)

    # --- desired / observed / converge ------------------------------------------------------
    def device(self, spec: Spec) -> Device | None:
        """The device the spec wants; None when the fast datapath is off here."""
        if self.overlay is None or spec.datapath.mode is DatapathMode.SLEEVE:
            return None
        if _encrypted(spec):  # VXLAN would be an unauthenticated way into the bridge
            return None
        if self._unsupported is not None:
            return None
        return Device(
            name=DEVICE,
            vni=VNI,
            port=self.overlay.port,
            mtu=overlay_mtu(spec.datapath.mtu, self._underlay_mtu),
            bridge=BRIDGE,
        )

    def paths(self) -> tuple[PeerPath, ...]:
        if self.overlay is None:
            return ()
        return tuple(
            PeerPath(p.peer, p.nickname, p.ip, p.port, p.served, p.macs, p.macs_at)
            for p in self.overlay.paths()
            if p.port is not None
        )

    def desired(self, spec: Spec) -> State:
        self._adopt()
        return self._desired(spec, self.device(spec))

    def _desired(self, spec: Spec, device: Device | None) -> State:
        """What the mesh asks for, plus retained entries of undecided paths."""
        computed = desired_state(device, self.paths(), self._local)
        return self.retention.desired(computed, self._decided_ips(), self.clock())

    def _decided_ips(self) -> set[str]:
        """IPs of peers whose current fastdp path proved itself healthy or unhealthy."""
        if self.overlay is None:
            return set()
        decided = (PathState.HEALTHY, PathState.UNHEALTHY)
        return {p.ip for p in self.overlay.paths() if p.state in decided}

    def _adopt(self) -> None:
        """Once, at start: what the device holds is kept (a restart writes nothing)."""
        if self.retention.adopted:
            return
        try:
            seen = self._observe(None)
        except WeavedError:
            return
        peers = self.retention.adopt(observed_state(Device(), seen.link, seen.rows), self.clock())
        if peers:
            log.info("fastdp adopted the entries towards %d peers", peers)

    def _retain_lost(self) -> None:
        """Peers fastdp carried at the last converge whose path is gone or undecided now:
        keep their entries (their daemon may be restarting; the kernel still forwards)."""
        served = {p.ip for p in self.paths() if p.served}
        lost = self.retention.lose(served, self._decided_ips(), self.clock())
        if lost:
            log.info("fastdp keeps entries of undecided paths ips=%s", ",".join(sorted(lost)))

    def observed(self) -> State:
        try:
            seen = self._observe(None)
        except WeavedError as exc:
            log.error("fastdp observe failed error=%s", exc)
            return State()
        return observed_state(Device(), seen.link, seen.rows)

    def converge(self, spec: Spec) -> int:
        self.spec_changed(spec)
        self._check_relaying()
        self._adopt()
        self._retain_lost()
        writes = 0
        seen: _Seen | None = None
        try:
            for _ in range(3):  # a replaced device loses its entries: plan again
                seen = self._observe(self._underlay_ips(spec))
                self._absorb(seen)
                device = self.device(spec)
                plan = make_plan(
                    self._desired(spec, device), observed_state(Device(), seen.link, seen.rows)
                )
                if plan.empty:
                    break
                writes += self._execute(plan, device or Device())
                seen = None
            else:
                log.warning("fastdp kernel objects do not converge after 3 rounds")
            self.error = None
        except VxlanUnsupported as exc:
            self._unsupported = str(exc).splitlines()[0]
            log.error("fastdp unavailable, sleeve carries all traffic: %s", exc)
        except WeavedError as exc:
            self.error = str(exc).splitlines()[0]
            log.error("fastdp converge failed error=%s", exc)
        if seen is None:
            with contextlib.suppress(WeavedError):
                seen = self._observe(None)
        self._converged_paths = self.paths()
        self.retention.converged(
            desired_state(self.device(spec), self._converged_paths, self._local),
            {p.ip for p in self._converged_paths if p.served},
        )
        self._tell_overlay(spec, seen)
        return writes

    # --- status -------------------------------------------------------------------------------
    def status_section(self) -> str | None:
        if self.overlay is None:
            return None
        return views.status_section(*self._view())

    def report(self) -> tuple[str, Any]:
        return "FastDP", views.report_json(*self._view())

    def _view(self) -> tuple[Device | None, list[PathView], int, str | None]:
        paths = self.overlay.paths() if self.overlay else []
        problem = self._blocked_reason(self.spec)
        return self.device(self.spec), paths, self._underlay_mtu, problem

    def routes(self) -> dict[tuple[str, str], Handler]:
        async def text(_r: Request) -> Response:
            return Response(200, self.render_paths())

        return {("GET", "/status/fastdp"): text}

    def render_paths(self) -> str:
        if self.overlay is None:
            return "fastdp is not configured\n"
        return views.render_paths(self.overlay.paths())

    # --- kernel calls on the worker thread --------------------------------------------------
    def _on_worker(self, fn: Callable[[FastdpKernel], T]) -> T:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fastdp")

        def run() -> T:
            if self._kernel is None:
                self._kernel = self._kernel_factory()
            return fn(self._kernel)

        try:
            return self._executor.submit(run).result(timeout=self.call_timeout)
        except concurrent.futures.TimeoutError:
            raise ApplyError(f"fastdp netlink call took over {self.call_timeout:g}s") from None

    def _observe(self, ips: tuple[str, ...] | None) -> _Seen:
        """`ips`: measure the underlay MTU towards them (() = the default route's device);
        None: keep the last measurement."""
        mtu_before = self._underlay_mtu
        since = self._macs.mark()

        def observe(kernel: FastdpKernel) -> _Seen:
            device = Device()
            return _Seen(
                link=kernel.observe_link(device),
                rows=kernel.device_rows(device),
                bridge_rows=kernel.bridge_rows(BRIDGE),
                underlay_mtu=mtu_before if ips is None else kernel.underlay_mtu(ips),
                since=since,
            )

        return self._on_worker(observe)

    def _execute(self, plan: Plan, device: Device) -> int:
        return self._on_worker(lambda kernel: kernel.execute(plan, device))

    def _underlay_ips(self, spec: Spec) -> tuple[str, ...]:
        """Where the tunnel goes: connected peers, else the spec's peers given as addresses."""
        ips = [p.ip for p in self.paths()]
        if not ips:
            for target in spec.peers:
                with contextlib.suppress(ValueError):
                    ips.append(str(ipaddress.IPv4Address(split_target(target)[0])))
        return tuple(ips)

    def _absorb(self, seen: _Seen) -> None:
        self._underlay_mtu = seen.underlay_mtu
        self._macs.reset(seen.bridge_rows, seen.since)
        self._set_local(self._macs.macs())

    def _set_local(self, local: frozenset[str]) -> None:
        self._local = local
        if self.overlay is not None:
            self.overlay.set_local_macs(local)

    # --- the overlay's side -------------------------------------------------------------------
    def _blocked_reason(self, spec: Spec) -> str | None:
        """Why no connection can use fastdp here (None: they can)."""
        if spec.datapath.mode is DatapathMode.SLEEVE:
            return SLEEVE_MODE_REASON
        if _encrypted(spec):
            return ENCRYPTED_MESH_REASON
        if self._unsupported is not None:
            return self._unsupported
        if self.error is not None:
            return self.error
        return self.overlay.socket_problem if self.overlay is not None else None

    def _tell_overlay(self, spec: Spec, seen: _Seen | None) -> None:
        overlay = self.overlay
        if overlay is None:
            return
        device = self.device(spec)
        ready: set[PeerName] = set()
        if device is not None and seen is not None and seen.link is not None and seen.link.up:
            have = observed_state(Device(), seen.link, seen.rows)
            for p in self.paths():
                if vxlan_fdb_key(device, mac_text(p.peer), p.ip) in have:
                    ready.add(p.peer)
        overlay.kernel_state(
            blocked=self._blocked_reason(spec),
            mtu=device.mtu if device else overlay.mtu,
            ready=ready,
        )

    def _check_relaying(self) -> None:
        """Links that relay other peers' traffic leave it all to sleeve, once they did for
        `RELAY_SETTLE` seconds; they take fastdp back at once."""
        if self.overlay is None:
            return
        graph = self.router.topology.graph()
        if graph is not self._graph:
            self._graph = graph
            self._relaying_now = relaying_neighbours(graph, self.router.us)
        self.overlay.set_relaying(self._relay_settle.update(self._relaying_now, self.clock()))

    def _selected(self, peer: PeerName, fwd: FastdpForwarder) -> bool:
        switch = self.router.forwarder(peer)
        return switch is not None and switch.best_forwarder() is fwd

    def _changed(self, why: str) -> None:
        if self._daemon is not None:
            self._daemon.mark_dirty(f"fastdp {why}")

    async def _watch(self) -> None:
        """Local MACs (from the bridge table's announcements, see localmacs.py; without
        them the table is read every `watch_interval`), and a safety net for changes of the
        forwarder in use that no fastdp event announced."""
        loop = asyncio.get_running_loop()
        sock = neigh_socket()
        if sock is not None:
            loop.add_reader(sock.fileno(), self._drain, sock, BridgeIndex(BRIDGE))
        events = sock is not None and self._apply_events
        last_read = -FULL_READ_SECONDS
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.watch_interval)
                await asyncio.sleep(0.05)  # let a burst of events settle
                self._wake.clear()
                due = self.clock() - last_read >= FULL_READ_SECONDS
                read = not events or self._macs.stale or due
                if read and await self._refresh_local(loop):
                    last_read = self.clock()
                self._check_relaying()
                if self._converged_paths is not None and self.paths() != self._converged_paths:
                    self._changed("paths changed")
                elif self.retention.expired(self.clock()):
                    self._changed("retained entries expired")
        finally:
            if sock is not None:
                loop.remove_reader(sock.fileno())
                sock.close()

    def _drain(self, sock: socket.socket, bridge: BridgeIndex) -> None:
        if not self._apply_events:
            with contextlib.suppress(OSError):
                while sock.recv(65536):
                    pass
            self._wake.set()
            return
        changes = read_changes(sock, bridge)
        if changes is None:  # some were lost: read the whole table again
            self._macs.stale = True
            self._wake.set()
        elif changes:
            self._macs.apply(changes)
            if (local := self._macs.macs()) is not self._local:
                self._set_local(local)

    async def _refresh_local(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Read the bridge's whole table; False if it could not be read now."""
        if self._executor is None:
            return False
        since = self._macs.mark()

        def read() -> list[FdbRow]:
            if self._kernel is None:
                self._kernel = self._kernel_factory()
            return self._kernel.bridge_rows(BRIDGE)

        try:
            rows = await loop.run_in_executor(self._executor, read)
        except Exception as exc:
            log.debug("fastdp local MAC refresh failed error=%s", exc)
            return False
        self._macs.reset(rows, since)
        local = self._macs.macs()
        if local != self._local:
            self._set_local(local)
        return True


def _encrypted(spec: Spec) -> bool:
    """Encryption is on for some link: then no VXLAN device may exist (it accepts frames
    from anyone on the underlay, and this kernel has no ESP to authenticate them)."""
    return spec.password_file is not None
