"""Wiring of the daemon process: the kernel dataplane and the parts (mesh, IPAM, DNS)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from weaved.attach.part import AttachPart
from weaved.cni.part import CniPart
from weaved.context import Context
from weaved.daemon.lastgood import load_start_spec
from weaved.daemon.memory import fix_mmap_threshold, give_back_freed_memory
from weaved.daemon.service import Daemon, DaemonConfig
from weaved.datapath.fastdp.part import FastdpPart
from weaved.datapath.overlays import OVERLAYS
from weaved.datapath.sleeve.part import SleeveDatapathPart
from weaved.dataplane.kernel import KernelDataplane
from weaved.dns.part import DnsPart
from weaved.docker.part import DockerPluginPart
from weaved.errors import WeavedError
from weaved.httpapi.part import HttpApiPart
from weaved.ipam.part import IpamPart
from weaved.ipam.persist import load_persisted_peer_name
from weaved.mesh.gossip_api import PeerName, format_peer_name
from weaved.mesh.part import MeshPart
from weaved.mesh.peername import read_system_ids
from weaved.metrics.part import MetricsPart
from weaved.part import Component
from weaved.spec.identity import resolve_peer_name
from weaved.spec.models import Spec, parse_peer_name_text

log = logging.getLogger(__name__)


def build_parts(
    spec: Spec, ctx: Context, host_root: Path = Path("/"), sys_root: Path = Path("/sys")
) -> list[Component]:
    """The peer's identity is fixed for the life of the process (Weave's too). Without the
    bridge, the name IPAM persisted is reused when Weave's rules allow (FACTS.md §1)."""
    persisted = load_persisted_peer_name(ctx.state_dir)
    ids = read_system_ids(
        host_root,
        persisted_name=format_peer_name(persisted) if persisted is not None else None,
        sys_root=sys_root,
    )
    name = PeerName(parse_peer_name_text(resolve_peer_name(spec, ids.bridge_mac, ids)))
    mesh = MeshPart(spec, name, overlay_factories=OVERLAYS)
    ipam = IpamPart(spec, mesh, ctx.state_dir)
    sleeve = SleeveDatapathPart(mesh)
    mesh.report_extra = sleeve.router_report_extra
    parts: list[Component] = [mesh, sleeve, FastdpPart(spec, mesh.router), ipam]
    dns = DnsPart(spec, mesh, ipam) if spec.dns.enabled else None
    if dns is not None:
        parts.append(dns)
    cni = CniPart(spec, ctx.state_dir, ipam, dns)
    cni.spec_path = ctx.spec_path
    attach = AttachPart(spec, ctx.state_dir, ipam, dns)
    plugin = DockerPluginPart(spec, ctx.state_dir, ipam, dns)
    # CNI's and the Docker plugin's addresses are not pruned at start
    attach.also_live = lambda: cni.live_keys() | plugin.live_keys()
    attach.also_ps = lambda: cni.ps_lines() + plugin.ps_lines()
    parts += [cni, plugin, attach]
    metrics = MetricsPart(spec, mesh, ipam, dns)
    http_api = HttpApiPart(spec, ipam, dns)
    http_api.metrics = metrics
    http_api.spec_path = ctx.spec_path
    parts += [metrics, http_api]
    return parts


def run_daemon(
    ctx: Context,
    resync_seconds: float = 30.0,
    host_root: str | None = None,
    sys_root: str | None = None,
) -> int:
    fix_mmap_threshold()  # before any netlink read: see memory.py
    config = DaemonConfig(ctx.spec_path, ctx.state_dir, ctx.socket_path, resync_seconds)
    try:
        spec, _refused = load_start_spec(ctx.spec_path, ctx.state_dir)
    except WeavedError as exc:
        log.error("no valid spec to start with:\n%s", exc)
        return 1

    async def main() -> int:
        roots = (
            Path(host_root or os.environ.get("WEAVED_HOST_ROOT") or "/"),
            Path(sys_root or os.environ.get("WEAVED_SYS_ROOT") or "/sys"),
        )
        daemon = Daemon(
            config,
            lambda: KernelDataplane(ctx.state_dir),
            build_parts(spec, ctx, *roots),
            start_spec=spec,
        )
        trimming = asyncio.create_task(give_back_freed_memory(), name="malloc-trim")
        try:
            return await daemon.run()
        finally:
            trimming.cancel()

    return asyncio.run(main())
