"""A daemon with the fast datapath wired in, for the integration tests and the benchmark (one
per network namespace), composed as `weaved daemon` composes its parts:

    python -m weaved.datapath.fastdp.standalone '{"spec": "/path/weave.yaml", ...}'

Config keys: spec (its directory holds `state/` and `weaved.sock`), timing (heartbeat
`Timing` fields), sleeve (run sleeve's data path too, default true), resync (seconds),
debug (logger names at DEBUG). Parts: mesh (overlays `weaved-vxlan sleeve`), fastdp, sleeve's
data path, and a shim that keeps sleeve's TAP an isolated bridge port (the contract between
the two data paths, until sleeve's part does it itself). SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from weaved.daemon.component import Component
from weaved.daemon.mesh_part import MeshPart, mesh_config
from weaved.daemon.service import Daemon, DaemonConfig
from weaved.datapath.fastdp.config import OVERLAY_NAME, Timing
from weaved.datapath.fastdp.overlay import FastdpOverlay
from weaved.datapath.fastdp.part import FastdpPart
from weaved.dataplane.kernel import KernelDataplane
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.router import Router
from weaved.mesh.sleeve_overlay import SleeveOverlay
from weaved.spec.loader import load_spec
from weaved.spec.models import Spec, parse_peer_name_text

__all__ = ["TapIsolation", "build_parts", "main"]

TAP = "vethwe-tap"


class TapIsolation(Component):
    """Sleeve's TAP must be an isolated bridge port like `vxlan-6784`: the bridge then never
    forwards between the two data paths (a frame goes out once, by one of them)."""

    name = "tap-isolation"

    def converge(self, spec: Spec) -> int:
        # `ip`, not pyroute2: this runs on the event loop, where pyroute2's loop cannot.
        subprocess.run(
            ["ip", "link", "set", "dev", TAP, "type", "bridge_slave", "isolated", "on"],
            capture_output=True,
            timeout=5,
            check=False,
        )
        return 0  # not counted as a write: it only restates the contract


def build_parts(spec: Spec, timing: Timing, sleeve: bool = True) -> list[Component]:
    if spec.peer.name is None:
        raise SystemExit("the spec must name the peer (peer.name)")
    name = PeerName(parse_peer_name_text(spec.peer.name))
    mesh = MeshPart(spec, name)
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
    parts: list[Component] = [mesh, FastdpPart(spec, mesh.router)]
    if sleeve:
        from weaved.datapath.sleeve.part import SleeveDatapathPart

        parts += [SleeveDatapathPart(mesh), TapIsolation()]
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
