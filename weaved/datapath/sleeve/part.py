"""The sleeve data path inside the daemon.

    mesh = MeshPart(spec, name, overlay_factories=OVERLAYS)
    sleeve = SleeveDatapathPart(mesh)          # before the router starts: it announces offloads
    parts = [mesh, ..., sleeve]                # after the mesh part (its router must run first)

The part keeps the TAP `vethwe-tap` on the bridge (created when the bridge exists, recreated
if deleted, checked after every converge), moves frames on its own threads, and shows its
view: `status_section()` (a `Service: sleeve` block), `report()` (all counters, under
"Sleeve"), and `router_report_extra()` — Weave's `Interface`, `CaptureStats` and `MACs`,
for `report_router(status, extra)` in the mesh part's `Router` object.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from weaved.control import Handler, Request, Response
from weaved.datapath.sleeve import views
from weaved.datapath.sleeve.datapath import SleeveDatapath
from weaved.engine.reconcile import RuntimeFacts
from weaved.mesh.router import Router
from weaved.model.host import TAP_FLAGS, WantedPort
from weaved.part import Component, Host
from weaved.spec.models import Spec

if TYPE_CHECKING:
    from weaved.mesh.part import MeshPart

__all__ = ["SleeveDatapathPart"]

log = logging.getLogger(__name__)


class SleeveDatapathPart(Component):
    name = "sleeve"

    def __init__(self, mesh: MeshPart, *, offload: bool = True) -> None:
        """`offload`: announce and use TAP offloads with weaved peers (GSO superframes in
        one datagram); off gives Weave's plain per-frame behaviour with every peer."""
        router: Router = mesh.router
        self.datapath: SleeveDatapath | None = None
        if router.overlay("sleeve") is None:
            log.info("sleeve data path off: the mesh runs no sleeve overlay")
            return
        self.datapath = SleeveDatapath(router, offload=offload)

    async def start(self, daemon: Host) -> None:
        if self.datapath is not None:
            await self.datapath.start()

    async def stop(self) -> None:
        if self.datapath is not None:
            await self.datapath.stop()

    def facts(self, facts: RuntimeFacts) -> RuntimeFacts:
        # The TAP's port flags are planned and repaired with the kernel objects (isolated:
        # frames that came over fastdp must never be flooded into sleeve, and back).
        if self.datapath is None:
            return facts
        tap = WantedPort(self.datapath.tap_name, TAP_FLAGS, "sleeve TAP")
        return replace(facts, ports=(*facts.ports, tap))

    def converge(self, spec: Spec) -> int:
        # The converge may just have created (or re-created) the bridge: attach at once.
        if self.datapath is not None:
            self.datapath.encrypted_mesh = spec.password_file is not None
            self.datapath.kick()
        return 0

    def status_section(self) -> str | None:
        if self.datapath is None:
            return None
        return views.status_text(self.datapath).rstrip("\n")

    def report(self) -> tuple[str, Any] | None:
        if self.datapath is None:
            return None
        return "Sleeve", views.report(self.datapath)

    def router_report_extra(self) -> dict[str, Any]:
        """`Interface`, `CaptureStats`, `MACs` for the `Router` object of the report."""
        return views.router_extra(self.datapath) if self.datapath is not None else {}

    def routes(self) -> dict[tuple[str, str], Handler]:
        async def status(_r: Request) -> Response:
            text = self.status_section()
            if text is None:
                return Response(404, {"error": "the sleeve data path is not running"})
            return Response(200, text + "\n")

        return {("GET", "/status/sleeve"): status}
