"""The mesh router inside the daemon: identity from the spec, targets reconciled like any other
object, Weave's status views on the control API."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from weaved.daemon.component import Component
from weaved.daemon.control import Handler, Request, Response
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.router import MeshConfig, Router
from weaved.mesh.status_text import (
    render_connections,
    render_peers,
    render_status_router,
    render_targets,
    report_router,
)
from weaved.model.resources import Kind, Resource, State, attrs
from weaved.spec.checks import read_password
from weaved.spec.models import DatapathMode, Spec

if TYPE_CHECKING:
    from weaved.daemon.service import Daemon

log = logging.getLogger(__name__)


def overlays_for(spec: Spec) -> tuple[str, ...]:
    """Overlay preference order: the kernel VXLAN path first (only weaved peers offer it; Weave
    2.8.1 peers get sleeve), sleeve as the fallback — unless the spec says sleeve only."""
    if spec.datapath.mode is DatapathMode.SLEEVE:
        return ("sleeve",)
    return ("weaved-vxlan", "sleeve")


def mesh_config(spec: Spec, name: PeerName) -> MeshConfig:
    return MeshConfig(
        name=name,
        nickname=spec.peer.nickname or socket.gethostname(),
        port=spec.port,
        password=read_password(spec),
        trusted_subnets=tuple(spec.trusted_subnets),
        conn_limit=spec.conn_limit,
        discovery=spec.discovery,
        overlays=overlays_for(spec),
    )


def target_key(target: str) -> str:
    return f"mesh/target/{target}"


class MeshPart(Component):
    name = "mesh"

    def __init__(self, spec: Spec, name: PeerName) -> None:
        self.router = Router(mesh_config(spec, name))
        self._targets: tuple[str, ...] = ()
        self._daemon: Daemon | None = None
        # The data plane's keys of Weave's Router report (Interface, CaptureStats, MACs).
        self.report_extra: Callable[[], dict[str, Any]] | None = None

    async def start(self, daemon: Daemon) -> None:
        self._daemon = daemon
        await self.router.start()

    async def stop(self) -> None:
        await self.router.stop()

    # --- targets as planned objects -----------------------------------------------------
    def desired(self, spec: Spec) -> State:
        return State.of(
            Resource(target_key(t), Kind.MESH_TARGET, attrs(source="spec")) for t in spec.peers
        )

    def observed(self) -> State:
        return State.of(
            Resource(target_key(t), Kind.MESH_TARGET, attrs(source="spec")) for t in self._targets
        )

    def converge(self, spec: Spec) -> int:
        wanted = tuple(spec.peers)
        if wanted == self._targets:
            return 0
        self.router.set_targets(wanted)
        changes = len(set(wanted) ^ set(self._targets))
        log.info("mesh targets set targets=%s", ",".join(wanted) or "none")
        self._targets = wanted
        return changes

    # --- views --------------------------------------------------------------------------
    def status_section(self) -> str:
        return render_status_router(self.router.status()).rstrip("\n")

    def report(self) -> tuple[str, Any]:
        extra = self.report_extra() if self.report_extra is not None else None
        return "Router", report_router(self.router.status(), extra)

    def routes(self) -> dict[tuple[str, str], Handler]:
        async def text(render: Any) -> Response:
            return Response(200, render(self.router.status()))

        async def peers(_r: Request) -> Response:
            return await text(render_peers)

        async def connections(_r: Request) -> Response:
            return await text(render_connections)

        async def targets(_r: Request) -> Response:
            return await text(render_targets)

        return {
            ("GET", "/status/peers"): peers,
            ("GET", "/status/connections"): connections,
            ("GET", "/status/targets"): targets,
        }
