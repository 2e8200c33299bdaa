"""Wiring of the daemon process: the kernel dataplane and the parts (mesh, IPAM, DNS)."""

from __future__ import annotations

import asyncio
import logging

from weaved.context import Context
from weaved.daemon.attach_part import AttachPart
from weaved.daemon.component import Component
from weaved.daemon.dns_part import DnsPart
from weaved.daemon.ipam_part import IpamPart
from weaved.daemon.lastgood import load_start_spec
from weaved.daemon.mesh_part import MeshPart
from weaved.daemon.metrics_part import MetricsPart
from weaved.daemon.service import Daemon, DaemonConfig
from weaved.datapath.fastdp.part import FastdpPart
from weaved.datapath.sleeve.part import SleeveDatapathPart
from weaved.dataplane.kernel import KernelDataplane
from weaved.engine.identity import resolve_peer_name
from weaved.errors import WeavedError
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.peername import read_system_ids
from weaved.spec.models import Spec, parse_peer_name_text

log = logging.getLogger(__name__)


def build_parts(spec: Spec, ctx: Context) -> list[Component]:
    """The peer's identity is fixed for the life of the process (Weave's too)."""
    ids = read_system_ids()
    name = PeerName(parse_peer_name_text(resolve_peer_name(spec, ids.bridge_mac, ids)))
    mesh = MeshPart(spec, name)
    ipam = IpamPart(spec, mesh, ctx.state_dir)
    sleeve = SleeveDatapathPart(mesh)
    mesh.report_extra = sleeve.router_report_extra
    parts: list[Component] = [mesh, sleeve, FastdpPart(spec, mesh.router), ipam]
    dns = DnsPart(spec, mesh, ipam) if spec.dns.enabled else None
    if dns is not None:
        parts.append(dns)
    parts.append(AttachPart(spec, ctx.state_dir, ipam, dns))
    parts.append(MetricsPart(spec, mesh, ipam, dns))
    return parts


def run_daemon(ctx: Context, resync_seconds: float = 30.0) -> int:
    config = DaemonConfig(ctx.spec_path, ctx.state_dir, ctx.socket_path, resync_seconds)
    try:
        spec, _refused = load_start_spec(ctx.spec_path, ctx.state_dir)
    except WeavedError as exc:
        log.error("no valid spec to start with:\n%s", exc)
        return 1

    async def main() -> int:
        daemon = Daemon(
            config, lambda: KernelDataplane(ctx.state_dir), build_parts(spec, ctx), start_spec=spec
        )
        return await daemon.run()

    return asyncio.run(main())
