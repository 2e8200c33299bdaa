"""The mesh router: the asyncio shell that owns sockets, connections and timers.

All protocol decisions are made by the pure modules (handshake, topology, routes, gossip,
targets); the router wires them to the event loop. Everything runs on one loop, so
router state needs no locks. The daemon uses:

    router = Router(MeshConfig(name=..., nickname=...), overlay_factories=OVERLAYS)
    ipam_sender = router.add_channel("IPallocation", ipam_gossiper)
    await router.start()
    router.set_targets(["192.0.2.1", "host2:6783"])
    router.status(); router.peer_view()
    await router.stop()

Here: the lifecycle, live settings, status, and the gossip transport the hub sends through.
Beside it: `connections` (each connection's life as the router sees it: registration,
duplicates, the limit, establishment, message dispatch, the end), `dialer` (accepting,
dialing, resolving targets), `topology_gossip` (the topology channel, our announcements,
routes), `router_status` (connections and targets as `weaved status` shows them), `settings`
(`MeshConfig`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

from weaved.lograte import RateLimitedLog
from weaved.mesh.admission import Admission
from weaved.mesh.connection import InboundBudget
from weaved.mesh.connections import NAME_COLLISION_FIX, ConnectionRegistry
from weaved.mesh.dialer import Dialer
from weaved.mesh.gossip import GossipHub, GossipQueue
from weaved.mesh.gossip_api import Gossiper, GossipSender, PeerName, PeerView
from weaved.mesh.overlay import (
    NullOverlay,
    Overlay,
    OverlayFactory,
    OverlaySwitch,
    SwitchForwarder,
)
from weaved.mesh.peername import (
    format_peer_name,
    random_short_id,
    random_uid,
)
from weaved.mesh.reasons import Closed, CloseReason
from weaved.mesh.router_status import connection_status, target_statuses
from weaved.mesh.routes import Routes
from weaved.mesh.settings import DEFAULT_PORT, MeshConfig, split_settings
from weaved.mesh.status import (
    BroadcastRoute,
    MeshStatus,
    PeerConnectionStatus,
    PeerStatus,
    UnicastRoute,
)
from weaved.mesh.targets import ConnectionMaker, split_target
from weaved.mesh.topology import Topology
from weaved.mesh.topology_gossip import TopologyKeeper

__all__ = ["DEFAULT_PORT", "NAME_COLLISION_FIX", "MeshConfig", "Router"]

log = logging.getLogger(__name__)

INBOUND_LARGE_BYTES = 16 * 1024 * 1024
"""Large incoming messages (over 1 MiB) all connections may hold at once (connection.py)."""
LOG_INTERVAL = 10.0
"""Per-connection and per-attempt lines: one per cause in this many seconds, with a count."""


class Router:
    def __init__(
        self,
        config: MeshConfig,
        overlays: Sequence[Overlay] | None = None,
        *,
        overlay_factories: Mapping[str, OverlayFactory] | None = None,
    ) -> None:
        """`overlays`: the overlays themselves; otherwise those `config.overlays` names, made
        by `overlay_factories` (the data paths', weaved.datapath.overlays; "none" is built in)."""
        self.config = config
        self._rng = random.Random(config.seed) if config.seed is not None else random.Random()
        self.us = config.name
        self.uid = config.uid if config.uid is not None else random_uid(self._rng)
        short_id = config.short_id if config.short_id is not None else random_short_id(self._rng)
        self._trusted = tuple(ipaddress.ip_network(s, strict=False) for s in config.trusted_subnets)
        self.topology = Topology(self.us, config.nickname, self.uid, short_id, self._rng)
        self.hub = GossipHub(self.us, self, self._rng, self._now, self._call_soon)
        self.maker = ConnectionMaker(config.port, config.discovery, self._rng)
        if overlays is None:
            factories = dict(overlay_factories or {})
            overlays = [self._make_overlay(name, factories) for name in config.overlays]
        self.switch = OverlaySwitch(overlays)
        self._tasks: set[asyncio.Task[None]] = set()
        self._started_mono = 0.0
        self._started_wall_ns = 0
        self._running = False
        self.listen_port = config.port
        self.admission = Admission()
        self.inbound = InboundBudget(INBOUND_LARGE_BYTES)
        self._limited = RateLimitedLog(log, LOG_INTERVAL)
        self.dialer = Dialer(self, self._limited, self._rng, self._now)
        self.topology_keeper = TopologyKeeper(
            self.topology,
            self.hub,
            config.topology_delay,
            lambda: self._running,
            self._topology_changed,
            self._limited,
            self._call_soon,
        )
        self.registry = ConnectionRegistry(
            self, self.us, self.inbound, self._limited, self._rng, self._now
        )
        self.connections = self.registry.connections  # the same dict, never replaced
        # remote address -> nickname of a peer that uses our name with another UID
        self.name_collisions = self.registry.name_collisions

    def _make_overlay(self, name: str, factories: Mapping[str, OverlayFactory]) -> Overlay:
        if name == "none":
            return NullOverlay()
        factory = factories.get(name)
        if factory is None:
            known = ", ".join([*factories, "none"])
            raise ValueError(f"unknown overlay {name!r} (this build knows: {known})")
        return factory(self.config.host, self.config.port)

    # --- public API ------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started_mono = loop.time()
        self._started_wall_ns = time.time_ns()
        await self.switch.start(self.us, self.topology.known)
        try:
            self.listen_port = self.dialer.listen(self.config.host, self.config.port)
        except OSError:
            await self.switch.stop()
            raise
        self._running = True
        self.dialer.start()
        self.spawn(self._gossip_loop(), "mesh-gossip")
        log.info(
            "mesh router started name=%s nickname=%s uid=%d listen=%s:%d encryption=%s "
            "discovery=%s overlays=%s",
            format_peer_name(self.us),
            self.config.nickname,
            self.uid,
            self.config.host or "0.0.0.0",
            self.listen_port,
            "enabled" if self.config.password is not None else "disabled",
            self.config.discovery,
            " ".join(self.switch.names),
        )

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        lookups = self.dialer.lookups()
        for task in [*self._tasks, *lookups]:
            task.cancel()
        await asyncio.gather(*self._tasks, *lookups, return_exceptions=True)
        self.dialer.close()
        await self.registry.stop()
        self.topology_keeper.stop()
        await self.switch.stop()
        log.info("mesh router stopped name=%s", format_peer_name(self.us))

    def set_targets(self, specs: Iterable[str]) -> None:
        """Replace the spec's peers (IP, host name or host:port); live."""
        specs = list(specs)
        for spec in specs:
            split_target(spec)  # raises ValueError for a malformed address
        self.dialer.set_targets(specs)

    def forget_targets(self, specs: Iterable[str]) -> None:
        self.dialer.forget_targets(specs)

    def reconfigure(self, wanted: MeshConfig) -> tuple[str, ...]:
        """Apply the settings that can change live (weaved.mesh.settings); return the names of
        those that differ but need a restart (they keep running as they are)."""
        old = self.config
        new, restart = split_settings(old, wanted)
        if new == old:
            return restart
        self.config = new
        changed = [
            f
            for f in ("nickname", "trusted_subnets", "conn_limit", "discovery")
            if getattr(new, f) != getattr(old, f)
        ]
        if new.password != old.password:
            changed.append("password")
        log.info("mesh settings applied live changed=%s", ",".join(changed))
        if new.nickname != old.nickname:
            self.topology.ourself.nickname = new.nickname
            self.topology.ourself.version += 1
            self.topology_keeper.announce({self.us})
        self.maker.discovery = new.discovery
        self._trusted = tuple(ipaddress.ip_network(s, strict=False) for s in new.trusted_subnets)
        for conn in self.registry.all():
            if new.password != old.password:
                why = "the password changed"
            elif conn.trust_remote != self.trusts(conn.remote_addr[0]):
                why = "trusted_subnets changed"
            else:
                continue
            conn.shutdown(Closed(CloseReason.RECONFIGURED, f"reconnecting: {why}"))
        self.dialer.wake()
        return restart

    def add_channel(self, name: str, gossiper: Gossiper) -> GossipSender:
        return self.hub.add_channel(name, gossiper)

    def peer_view(self) -> PeerView:
        return self.topology_keeper.peer_view()

    def routes(self) -> Routes:
        return self.topology_keeper.routes()

    def forwarder(self, peer: PeerName) -> SwitchForwarder | None:
        """The data plane's handle on our connection to `peer` (best overlay, MTU, sending)."""
        conn = self.connections.get(peer)
        return conn.forwarder if conn is not None else None

    def overlay(self, name: str) -> Overlay | None:
        return next((o for o in self.switch.overlays if o.name == name), None)

    def on_peer_removed(self, callback: Callable[[PeerName], None]) -> None:
        """Called with each peer garbage-collected from the topology (DNS drops its names)."""
        self.topology_keeper.on_peer_removed(callback)

    def status(self) -> MeshStatus:
        routes = self.routes()
        topo = self.topology
        peers = tuple(
            PeerStatus(
                name=p.name,
                nickname=p.nickname,
                uid=p.uid,
                short_id=p.short_id,
                version=p.version,
                connections=tuple(
                    PeerConnectionStatus(
                        name=c.remote,
                        nickname=topo.peers[c.remote].nickname if c.remote in topo.peers else "",
                        address=c.address,
                        outbound=c.outbound,
                        established=c.established,
                    )
                    for c in p.connections.values()
                ),
            )
            for p in topo.peers.values()
        )
        unicast = tuple(UnicastRoute(d, v) for d, v in routes.unicast.items())
        broadcast = tuple(
            BroadcastRoute(source, tuple(routes.broadcast(source))) for source in routes.unicast
        )
        password_set = self.config.password is not None
        conns = [connection_status(c, topo, password_set) for c in self.connections.values()]
        conns += target_statuses(
            self.maker.targets, self.dialer.reasons, self._started_mono, self._started_wall_ns
        )
        return MeshStatus(
            name=self.us,
            nickname=self.config.nickname,
            port=self.config.port,
            encryption=self.config.password is not None,
            peer_discovery=self.config.discovery,
            peers=peers,
            unicast_routes=unicast,
            broadcast_routes=broadcast,
            connections=tuple(conns),
            targets=tuple(self.maker.direct),
            trusted_subnets=tuple(str(n) for n in self._trusted),
            termination_count=self.registry.termination_count,
            overlay_diagnostics=self.switch.diagnostics(),
            protocol_min_version=self.config.min_version,
        )

    # --- gossip transport (used by the hub) --------------------------------------------------

    def current_routes(self) -> Routes:
        return self.routes()

    def neighbours(self) -> Iterable[PeerName]:
        return self.topology.ourself.connections.keys()

    def gossip_queue(self, peer: PeerName) -> GossipQueue | None:
        conn = self.connections.get(peer)
        return conn.queue if conn is not None and not conn.finished else None

    def send_body(self, peer: PeerName, body: bytes) -> bool:
        conn = self.connections.get(peer)
        if conn is None or conn.finished:
            return False
        conn.send_body(body)
        return True

    def wake(self, peer: PeerName) -> None:
        conn = self.connections.get(peer)
        if conn is not None:
            conn.wake()

    def _topology_changed(self) -> None:
        # Only discovery plans from the topology; our own connections wake the dialer anyway.
        if self.maker.discovery:
            self.dialer.wake()

    def trusts(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._trusted)

    # --- internals: tasks ---------------------------------------------------------------------

    def _now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    @staticmethod
    def _call_soon(callback: Callable[[], None]) -> None:
        """Run `callback` on the loop's next turn (at once outside a running loop)."""
        try:
            asyncio.get_running_loop().call_soon(callback)
        except RuntimeError:
            callback()

    @property
    def running(self) -> bool:
        return self._running

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("mesh task failed task=%s", task.get_name(), exc_info=task.exception())

    def connection_opened(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        outbound: bool,
        direct: bool,
        source: str | None = None,
        target: str = "",
    ) -> None:
        self.registry.open(
            reader, writer, outbound=outbound, direct=direct, source=source, target=target
        )

    async def _gossip_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.gossip_interval)
            self.hub.send_all_gossip()
