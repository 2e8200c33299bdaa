"""A daemon with the fast datapath wired in, for the integration tests and the benchmark (one
per network namespace), composed as `weaved daemon` composes its parts:

    python -m tests.tools.fastdp_daemon '{"spec": "/path/weave.yaml", ...}'

Config keys: spec (its directory holds `state/` and `weaved.sock`), timing (heartbeat
`Timing` fields), sleeve (run sleeve's data path too, default true), resync (seconds),
debug (logger names at DEBUG). Parts: mesh (overlays `weaved-vxlan sleeve`), fastdp, sleeve's
data path (which plugs its TAP in as an isolated bridge port), and a stand-in for IPAM's
`expose` endpoint that `weaved apply` asks (this daemon runs no IPAM). SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from weaved.control import Handler, Request, Response
from weaved.daemon.service import Daemon, DaemonConfig
from weaved.datapath.fastdp.config import OVERLAY_NAME, Timing
from weaved.datapath.fastdp.overlay import FastdpOverlay
from weaved.datapath.fastdp.part import FastdpPart
from weaved.datapath.overlays import OVERLAYS
from weaved.datapath.sleeve.overlay import SleeveOverlay
from weaved.dataplane.kernel import KernelDataplane
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.part import MeshPart, mesh_config
from weaved.mesh.router import Router
from weaved.part import Component
from weaved.spec.loader import load_spec
from weaved.spec.models import Spec, parse_peer_name_text

__all__ = ["NoIpam", "build_parts", "main"]


class NoIpam(Component):
    """`weaved apply` asks which `net:` expose entries wait for IPAM: here none can."""

    name = "no-ipam"

    def routes(self) -> dict[tuple[str, str], Handler]:
        async def expose(_r: Request) -> Response:
            return Response(200, {"entries": [], "allocations": {}, "pending": {}})

        return {("GET", "/ipam/expose"): expose}


def build_parts(spec: Spec, timing: Timing, sleeve: bool = True) -> list[Component]:
    if spec.peer.name is None:
        raise SystemExit("the spec must name the peer (peer.name)")
    name = PeerName(parse_peer_name_text(spec.peer.name))
    mesh = MeshPart(spec, name, overlay_factories=OVERLAYS)
    config = dataclasses.replace(
        mesh_config(spec, name), overlays=(OVERLAY_NAME, "sleeve"), topology_delay=0.1
    )
    mesh.router = Router(
        config,
        overlays=[
            FastdpOverlay(config.host, config.port + 1, timing=timing),
            SleeveOverlay(config.host, config.port),
        ],
    )
    parts: list[Component] = [mesh, FastdpPart(spec, mesh.router), NoIpam()]
    if sleeve:
        from weaved.datapath.sleeve.part import SleeveDatapathPart

        parts.append(SleeveDatapathPart(mesh))
    return parts


def main(argv: list[str]) -> int:
    cfg: dict[str, Any] = json.loads(argv[1])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    for name in cfg.get("debug", []):
        logging.getLogger(name).setLevel(logging.DEBUG)
    spec_path = Path(cfg["spec"])
    spec = load_spec(spec_path)
    parts = build_parts(spec, Timing(**cfg.get("timing", {})), bool(cfg.get("sleeve", True)))
    config = DaemonConfig(
        spec_path,
        spec_path.parent / "state",
        spec_path.parent / "weaved.sock",
        float(cfg.get("resync", 60.0)),
    )

    async def run() -> int:
        return await Daemon(config, KernelDataplane, parts).run()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main(sys.argv))
