"""The mesh router inside the daemon: identity from the spec, targets reconciled like any other
object, Weave's status views on the control API.

The router's settings are one planned object, `mesh/settings`: an edit of a live setting
(weaved.mesh.settings) is applied by the next converge; one that needs a restart stays in the
plan with a note saying so, and in `weaved status` as a problem. So does a peer-name collision
(another host uses our name), with the fix."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from weaved.control import Handler, Request, Response
from weaved.errors import WeavedError
from weaved.mesh.gossip_api import PeerName, format_peer_name
from weaved.mesh.overlay import OverlayFactory
from weaved.mesh.router import NAME_COLLISION_FIX, MeshConfig, Router
from weaved.mesh.settings import split_settings
from weaved.mesh.status_text import (
    render_connections,
    render_peers,
    render_status_router,
    render_targets,
    report_router,
    target_as_given,
)
from weaved.model.resources import Attrs, Kind, Resource, State, attrs
from weaved.part import Component, Host
from weaved.spec.checks import read_password
from weaved.spec.models import DatapathMode, Spec, parse_peer_name_text

log = logging.getLogger(__name__)


def overlays_for(spec: Spec) -> tuple[str, ...]:
    """Overlay preference order: the kernel VXLAN path first (only weaved peers offer it; Weave
    2.8.1 peers get sleeve), sleeve as the fallback — unless the spec says sleeve only."""
    if spec.datapath.mode is DatapathMode.SLEEVE:
        return ("sleeve",)
    return ("weaved-vxlan", "sleeve")


def mesh_config(spec: Spec, name: PeerName) -> MeshConfig:
    return replace(mesh_config_unchecked(spec, name), password=read_password(spec))


def mesh_config_unchecked(spec: Spec, name: PeerName) -> MeshConfig:
    """All but the password (which reading the password file gives)."""
    return MeshConfig(
        name=name,
        nickname=spec.peer.nickname or socket.gethostname(),
        port=spec.port,
        trusted_subnets=tuple(spec.trusted_subnets),
        conn_limit=spec.conn_limit,
        discovery=spec.discovery,
        overlays=overlays_for(spec),
    )


def target_key(target: str) -> str:
    return f"mesh/target/{target}"


def _return_large_buffers_to_the_system() -> None:
    """glibc raises its mmap threshold after a large block is freed, so later 10 MiB message
    buffers come from the heap and their pages stay in RSS; keep it at 1 MiB (a peer's large
    messages then cost memory only while they are read)."""
    m_mmap_threshold = -3
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(None).mallopt(m_mmap_threshold, 1 << 20)


SETTINGS_KEY = "mesh/settings"
RESTART_HINT = "systemctl restart weaved"


def settings_attrs(cfg: MeshConfig, secret: bytes, collisions: dict[str, str]) -> Attrs:
    """The settings as plan attributes; the password as a keyed digest (never the password,
    nor a plain hash of it, which a guess could be checked against)."""
    password = "none"
    if cfg.password is not None:
        digest = hashlib.blake2b(cfg.password, key=secret, digest_size=4).hexdigest()
        password = f"set#{digest}"
    unique = "yes"
    if collisions:
        unique = "no: also used by " + ", ".join(f"{n!r} at {ip}" for ip, n in collisions.items())
    return attrs(
        name=format_peer_name(cfg.name),
        nickname=cfg.nickname,
        listen=cfg.host or "0.0.0.0",
        port=cfg.port,
        password=password,
        trusted_subnets=",".join(cfg.trusted_subnets) or "none",
        conn_limit=cfg.conn_limit,
        discovery=str(cfg.discovery).lower(),
        overlays=",".join(cfg.overlays),
        peer_name_unique=unique,
    )


class MeshPart(Component):
    name = "mesh"

    def __init__(
        self, spec: Spec, name: PeerName, *, overlay_factories: Mapping[str, OverlayFactory]
    ) -> None:
        """`overlay_factories`: the data paths' overlays (weaved.datapath.overlays)."""
        self.router = Router(mesh_config(spec, name), overlay_factories=overlay_factories)
        self._started_name = name
        self._secret = os.urandom(16)  # keys the password digest shown in plans
        self.restart_needed: tuple[str, ...] = ()
        self._targets: tuple[str, ...] = ()
        self._daemon: Host | None = None
        # The data plane's keys of Weave's Router report (Interface, CaptureStats, MACs).
        self.report_extra: Callable[[], dict[str, Any]] | None = None

    async def start(self, daemon: Host) -> None:
        self._daemon = daemon
        _return_large_buffers_to_the_system()
        await self.router.start()

    async def stop(self) -> None:
        await self.router.stop()

    # --- settings and targets as planned objects --------------------------------------
    def wanted_config(self, spec: Spec) -> MeshConfig:
        # Without `peer.name` the name stays the one we started with: the bridge keeps its
        # MAC, so a restart would derive the same name again.
        name = self._started_name
        if spec.peer.name is not None:
            name = PeerName(parse_peer_name_text(spec.peer.name))
        try:
            return mesh_config(spec, name)
        except (WeavedError, OSError):  # an unreadable password file: the spec checks say so
            return replace(mesh_config_unchecked(spec, name), password=self.router.config.password)

    def desired(self, spec: Spec) -> State:
        wanted = self.wanted_config(spec)
        restart = split_settings(self.router.config, wanted)[1]
        notes = []
        if restart:
            notes.append(f"needs a restart for {', '.join(restart)}: {RESTART_HINT}")
        if self.router.name_collisions:
            notes.append(f"peer name collision: {NAME_COLLISION_FIX}")
        settings = Resource(
            SETTINGS_KEY, Kind.MESH, settings_attrs(wanted, self._secret, {}), "; ".join(notes)
        )
        return State.of(
            [
                settings,
                *(
                    Resource(target_key(t), Kind.MESH_TARGET, attrs(source="spec"))
                    for t in spec.peers
                ),
            ]
        )

    def observed(self) -> State:
        running = settings_attrs(self.router.config, self._secret, self.router.name_collisions)
        return State.of(
            [
                Resource(SETTINGS_KEY, Kind.MESH, running),
                *(
                    Resource(target_key(t), Kind.MESH_TARGET, attrs(source="spec"))
                    for t in self._targets
                ),
            ]
        )

    def converge(self, spec: Spec) -> int:
        before = self.router.config
        restart = self.router.reconfigure(self.wanted_config(spec))
        changes = int(self.router.config != before)
        if restart and restart != self.restart_needed:
            log.warning(
                "mesh settings changed that need a restart to take effect: %s (%s)",
                ", ".join(restart),
                RESTART_HINT,
            )
        self.restart_needed = restart
        wanted = tuple(spec.peers)
        if wanted == self._targets:
            return changes
        # The spec stores `host:port`; the router gets targets as Weave's are typed (no port
        # when it is the mesh's), so an inbound connection from a target's IP satisfies it.
        self.router.set_targets(target_as_given(t, spec.port) for t in wanted)
        changes += len(set(wanted) ^ set(self._targets))
        log.info("mesh targets set targets=%s", ",".join(wanted) or "none")
        self._targets = wanted
        return changes

    def problems(self) -> list[str]:
        out = []
        if self.restart_needed:
            out.append(
                f"mesh settings edited that need a restart: {', '.join(self.restart_needed)} "
                f"({RESTART_HINT})"
            )
        us = format_peer_name(self.router.us)
        for ip, nickname in self.router.name_collisions.items():
            out.append(
                f"peer name collision: {nickname!r} at {ip} uses our peer name {us}; "
                f"{NAME_COLLISION_FIX}"
            )
        return out

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
