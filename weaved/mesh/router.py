"""The mesh router: the asyncio shell that owns sockets, connections and timers.

All protocol decisions are made by the pure modules (handshake, topology, routes, gossip,
targets, sleeve); the router wires them to the event loop. Everything runs on one loop, so
router state needs no locks. The daemon uses:

    router = Router(MeshConfig(name=..., nickname=...))
    ipam_sender = router.add_channel("IPallocation", ipam_gossiper)
    await router.start()
    router.set_targets(["192.0.2.1", "host2:6783"])
    router.status(); router.peer_view()
    await router.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from weaved.backoff import RetrySchedule
from weaved.datapath.sleeve.overlay import SleeveOverlay
from weaved.errors import ProtocolError
from weaved.lograte import RateLimitedLog
from weaved.mesh.admission import Admission
from weaved.mesh.connection import Connection, InboundBudget, os_error_text, set_linger_zero
from weaved.mesh.gossip import GOSSIP_INTERVAL, GossipHub, GossipQueue
from weaved.mesh.gossip_api import GossipData, Gossiper, GossipSender, PeerName, PeerView
from weaved.mesh.handshake import RemoteIdentity, check_remote
from weaved.mesh.messages import (
    Blank,
    Gossip,
    GossipBroadcast,
    GossipUnicast,
    Heartbeat,
    LegacyControl,
    Message,
    OverlayControl,
    UnknownTag,
)
from weaved.mesh.overlay import (
    NoCommonOverlay,
    NullOverlay,
    Overlay,
    OverlayParams,
    OverlaySwitch,
    SwitchForwarder,
)
from weaved.mesh.peername import (
    format_peer_name,
    random_conn_id,
    random_short_id,
    random_uid,
)
from weaved.mesh.reasons import NEVER_RETRY, Closed, CloseReason
from weaved.mesh.routes import Routes
from weaved.mesh.settings import split_settings
from weaved.mesh.status import (
    BroadcastRoute,
    ConnectionState,
    LocalConnectionStatus,
    MeshStatus,
    PeerConnectionStatus,
    PeerStatus,
    RetryTime,
    UnicastRoute,
    go_time_string,
)
from weaved.mesh.targets import Attempt, ConnectionMaker, LiveConnection, TargetState, split_target
from weaved.mesh.topology import ConnectionInfo, Peer, Topology, TopologyGossipData, UpdateResult

__all__ = ["DEFAULT_PORT", "MeshConfig", "Router"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 6783
NAME_COLLISION_FIX = (
    "each host needs its own: set `peer.name` in one host's spec, or give a cloned machine a "
    "new /etc/machine-id, then restart weaved there"
)
INBOUND_LARGE_BYTES = 16 * 1024 * 1024
"""Large incoming messages (over 1 MiB) all connections may hold at once (connection.py)."""
LOG_INTERVAL = 10.0
"""Per-connection and per-attempt lines: one per cause in this many seconds, with a count."""


@dataclass(frozen=True)
class MeshConfig:
    name: PeerName
    nickname: str
    host: str = ""  # listen address ("" = all IPv4 addresses); also the local end of dials
    port: int = DEFAULT_PORT
    password: bytes | None = field(default=None, repr=False)
    trusted_subnets: tuple[str, ...] = ()
    conn_limit: int = 200  # 0 = unlimited
    discovery: bool = True
    overlays: tuple[str, ...] = ("sleeve",)  # preference order; "none" = control plane only
    # timing, tunable for tests and benchmarks; the defaults are Weave's
    gossip_interval: float = GOSSIP_INTERVAL
    heartbeat_interval: float = 30.0
    read_timeout: float = 60.0
    handshake_timeout: float = 10.0
    topology_delay: float = 1.0  # coalescing of our own topology updates
    dial_timeout: float = 30.0
    min_version: int = 1
    # identity overrides (tests); a fresh random UID per start otherwise
    uid: int | None = None
    short_id: int | None = None
    seed: int | None = None


class _TopologyGossiper:
    """The router's own channel."""

    def __init__(self, router: Router) -> None:
        self._router = router

    def on_gossip_unicast(self, sender: PeerName, payload: bytes) -> None:
        raise ProtocolError(f"unexpected topology gossip unicast from {format_peer_name(sender)}")

    def on_gossip_broadcast(self, sender: PeerName, payload: bytes) -> GossipData | None:
        result = self._router._apply_topology(payload)
        if not result.received:
            return None
        return TopologyGossipData(self._router.topology, result.received)

    def gossip(self) -> GossipData | None:
        topo = self._router.topology
        return TopologyGossipData(topo, frozenset(topo.peers))

    def on_gossip(self, payload: bytes) -> GossipData | None:
        result = self._router._apply_topology(payload)
        if not result.improved:
            return None
        return TopologyGossipData(self._router.topology, result.improved)


class _PeerView:
    def __init__(self, router: Router) -> None:
        self._router = router

    def our_name(self) -> PeerName:
        return self._router.us

    def known_peers(self) -> dict[PeerName, str]:
        return self._router.topology.nicknames()

    def reachable_peers(self) -> set[PeerName]:
        return set(self._router.routes().unicast_all)


class Router:
    def __init__(self, config: MeshConfig, overlays: Sequence[Overlay] | None = None) -> None:
        self.config = config
        self._rng = random.Random(config.seed) if config.seed is not None else random.Random()
        self.us = config.name
        self.uid = config.uid if config.uid is not None else random_uid(self._rng)
        short_id = config.short_id if config.short_id is not None else random_short_id(self._rng)
        self._trusted = tuple(ipaddress.ip_network(s, strict=False) for s in config.trusted_subnets)
        self.topology = Topology(self.us, config.nickname, self.uid, short_id, self._rng)
        self.hub = GossipHub(self.us, self, self._rng, self._now)
        self._topology_channel = self.hub.add_channel("topology", _TopologyGossiper(self))
        self.maker = ConnectionMaker(config.port, config.discovery, self._rng)
        if overlays is None:
            overlays = [self._make_overlay(name) for name in config.overlays]
        self.switch = OverlaySwitch(overlays)
        self.connections: dict[PeerName, Connection] = {}
        self._all: set[Connection] = set()
        self._routes: Routes | None = None
        self._pending_topology: set[PeerName] = set()
        self._topology_timer: asyncio.TimerHandle | None = None
        self._maker_wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._listen_sock: socket.socket | None = None
        self._peer_removed: list[Callable[[PeerName], None]] = []
        self._target_reasons: dict[str, CloseReason] = {}
        self._started_mono = 0.0
        self._started_wall_ns = 0
        self._running = False
        self.termination_count = 0
        self.listen_port = config.port
        self.admission = Admission()
        self.inbound = InboundBudget(INBOUND_LARGE_BYTES)
        self._limited = RateLimitedLog(log, LOG_INTERVAL)
        # remote address -> nickname of a peer that uses our name with another UID
        self.name_collisions: dict[str, str] = {}

    def _make_overlay(self, name: str) -> Overlay:
        if name == "sleeve":
            return SleeveOverlay(self.config.host, self.config.port)
        if name == "none":
            return NullOverlay()
        if name == "weaved-vxlan":
            # The fast datapath (kernel VXLAN on port+1); only weaved peers know its name.
            from weaved.datapath.fastdp.overlay import FastdpOverlay

            return FastdpOverlay(self.config.host, self.config.port + 1)
        raise ValueError(f"unknown overlay {name!r} (this build knows: weaved-vxlan, sleeve, none)")

    # --- public API ------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started_mono = loop.time()
        self._started_wall_ns = time.time_ns()
        self._maker_wake = asyncio.Event()
        await self.switch.start(self.us, self.topology.known)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.config.host or "0.0.0.0", self.config.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            await self.switch.stop()
            raise
        self._listen_sock = sock
        self.listen_port = sock.getsockname()[1]
        self._running = True
        self._spawn(self._accept_loop(), "mesh-accept")
        self._spawn(self._maker_loop(), "mesh-connection-maker")
        self._spawn(self._gossip_loop(), "mesh-gossip")
        for spec in self.maker.unresolved_specs():
            self._start_resolving(spec)
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
        for task in [*self._tasks, *self._resolving.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._resolving.values(), return_exceptions=True)
        if self._listen_sock is not None:
            self._listen_sock.close()
            self._listen_sock = None
        for conn in list(self._all):
            conn.shutdown(Closed(CloseReason.SHUTDOWN, "router stopping"))
        if self._conn_tasks:
            _, pending = await asyncio.wait(set(self._conn_tasks), timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._topology_timer is not None:
            self._topology_timer.cancel()
            self._topology_timer = None
        await self.switch.stop()
        log.info("mesh router stopped name=%s", format_peer_name(self.us))

    def set_targets(self, specs: Iterable[str]) -> None:
        """Replace the spec's peers (IP, host name or host:port); live."""
        specs = list(specs)
        for spec in specs:
            split_target(spec)  # raises ValueError for a malformed address
        now = self._now()
        for gone in set(self.maker.direct) - set(specs):
            self._stop_resolving(gone)
        self.maker.set_direct(specs, now, replace=True)
        for spec in specs:
            self._resolve_now_or_later(spec)
        self._wake_maker()

    def forget_targets(self, specs: Iterable[str]) -> None:
        specs = list(specs)
        for spec in specs:
            self._stop_resolving(spec)
        self.maker.forget_direct(specs)
        self._wake_maker()

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
            self._announce({self.us})
        self.maker.discovery = new.discovery
        self._trusted = tuple(ipaddress.ip_network(s, strict=False) for s in new.trusted_subnets)
        for conn in list(self._all):
            if new.password != old.password:
                why = "the password changed"
            elif conn.trust_remote != self._trusts(conn.remote_addr[0]):
                why = "trusted_subnets changed"
            else:
                continue
            conn.shutdown(Closed(CloseReason.RECONFIGURED, f"reconnecting: {why}"))
        self._wake_maker()
        return restart

    def add_channel(self, name: str, gossiper: Gossiper) -> GossipSender:
        return self.hub.add_channel(name, gossiper)

    def peer_view(self) -> PeerView:
        return _PeerView(self)

    def routes(self) -> Routes:
        if self._routes is None:
            self._routes = Routes(self.us, self.topology.graph())
        return self._routes

    def forwarder(self, peer: PeerName) -> SwitchForwarder | None:
        """The data plane's handle on our connection to `peer` (best overlay, MTU, sending)."""
        conn = self.connections.get(peer)
        return conn.forwarder if conn is not None else None

    def overlay(self, name: str) -> Overlay | None:
        return next((o for o in self.switch.overlays if o.name == name), None)

    def on_peer_removed(self, callback: Callable[[PeerName], None]) -> None:
        """Called with each peer garbage-collected from the topology (DNS drops its names)."""
        self._peer_removed.append(callback)

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
        conns = [self._connection_status(c) for c in self.connections.values()]
        conns += self._target_statuses()
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
            termination_count=self.termination_count,
            overlay_diagnostics=self.switch.diagnostics(),
            protocol_min_version=self.config.min_version,
        )

    # --- status helpers ----------------------------------------------------------------------

    def _peer_str(self, peer: Peer | None, fallback: PeerName | None = None) -> str:
        if peer is None:
            return format_peer_name(fallback or PeerName(0))
        return f"{format_peer_name(peer.name)}({peer.nickname})"

    def _connection_status(self, conn: Connection) -> LocalConnectionStatus:
        attrs = dict(conn.forwarder.attrs() or {}) if conn.forwarder is not None else {}
        name = str(attrs.get("name", "none"))
        remote = self.topology.peers.get(conn.remote.name) if conn.remote else None
        info = f"{name:<6} {self._peer_str(remote or conn.remote)}"
        if self.config.password is not None:
            if conn.untrusted:
                info = f"{'encrypted':<11} {info}"
                if attrs:
                    attrs["encrypted"] = True
            else:
                info = f"{'unencrypted':<11} {info}"
        return LocalConnectionStatus(
            address=conn.address,
            outbound=conn.outbound,
            state=ConnectionState.ESTABLISHED if conn.established else ConnectionState.PENDING,
            info=info,
            attrs=attrs or None,
            peer=conn.remote.name if conn.remote else None,
            nickname=remote.nickname if remote else "",
        )

    def _retry_time(self, due: float) -> RetryTime:
        since_start_ns = round((due - self._started_mono) * 1e9)
        return RetryTime(
            wall_ns=self._started_wall_ns + since_start_ns, monotonic_ns=since_start_ns
        )

    def _target_statuses(self) -> list[LocalConnectionStatus]:
        out: list[LocalConnectionStatus] = []
        for address, target in self.maker.targets.items():
            reason = self._target_reasons.get(address)
            if target.state == TargetState.WAITING:
                due = target.schedule.try_after
                retry = self._retry_time(due) if due is not None else None
                until = go_time_string(retry) if retry is not None else "never"
                if target.last_error is None:
                    state, info = ConnectionState.WAITING, f"until: {until}"
                else:
                    state, info = ConnectionState.FAILED, f"{target.last_error}, retry: {until}"
                out.append(
                    LocalConnectionStatus(
                        address=address,
                        outbound=True,
                        state=state,
                        info=info,
                        reason=reason,
                        error=target.last_error,
                        retry=retry,
                        retry_never=due is None,
                    )
                )
            elif target.state == TargetState.ATTEMPTING:
                if target.last_error is None:
                    out.append(LocalConnectionStatus(address, True, ConnectionState.CONNECTING, ""))
                else:
                    out.append(
                        LocalConnectionStatus(
                            address,
                            True,
                            ConnectionState.RETRYING,
                            target.last_error,
                            reason=reason,
                            error=target.last_error,
                        )
                    )
        return out

    # --- gossip transport (used by the hub) --------------------------------------------------

    def current_routes(self) -> Routes:
        return self.routes()

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

    # --- connection host (used by connections) -----------------------------------------------

    def timeouts(self) -> MeshConfig:
        return self.config

    def password(self) -> bytes | None:
        return self.config.password

    def intro_features(self, conn: Connection) -> dict[str, str]:
        conn.trust_remote = self._trusts(conn.remote_addr[0])
        features = {
            "PeerNameFlavour": "mac",
            "Name": format_peer_name(self.us),
            "NickName": self.config.nickname,
            "ShortID": str(self.topology.ourself.short_id),
            "UID": str(self.uid),
            "ConnID": str(conn.conn_id),
            "Trusted": "true" if conn.trust_remote else "false",
        }
        features.update(self.switch.features())
        return features

    def register(self, conn: Connection, remote: RemoteIdentity) -> Closed | None:
        self._introduced(conn)
        closed = check_remote(remote, self.us, self.uid)
        if closed is not None:
            if closed.reason is CloseReason.NAME_COLLISION:
                self._name_collision(conn, remote)
            return closed
        self.name_collisions.pop(conn.remote_addr[0], None)
        accept_new = conn.direct or not conn.outbound
        known = self.topology.peers.get(remote.name)
        peer = self.topology.register_remote(remote, accept_new)
        if peer is None:
            return Closed(
                CloseReason.UNKNOWN_PEER,
                f"Found unknown remote name: {format_peer_name(remote.name)} at {conn.address}",
            )
        conn.remote = peer
        conn.restarted = known is not None and not known.placeholder and known.uid != remote.uid
        return None

    def prepare_overlay(self, conn: Connection) -> Closed | None:
        assert conn.remote is not None and conn.identity is not None
        params = OverlayParams(
            remote=conn.remote.name,
            remote_nickname=conn.identity.nickname,
            local_addr=conn.local_addr,
            remote_addr=conn.remote_addr,
            outbound=conn.outbound,
            conn_uid=conn.uid,
            session_key=conn.session_key if conn.untrusted else None,
            features=conn.features,
        )
        try:
            conn.forwarder = self.switch.prepare(
                params,
                conn.send_body,
                lambda: self._connection_established(conn),
                lambda reason: conn.shutdown(Closed(CloseReason.OVERLAY_FAILED, reason)),
            )
        except NoCommonOverlay as e:
            return Closed(CloseReason.NO_OVERLAY, str(e))
        return None

    def add_connection(self, conn: Connection) -> Closed | None:
        assert conn.remote is not None
        name = conn.remote.name
        existing = self.connections.get(name)
        if existing is not None and existing is not conn:
            dup = (
                f"Multiple connections to {self._peer_str(conn.remote)} added to "
                f"{self._peer_str(self.topology.ourself)}"
            )
            if conn.uid < existing.uid:
                existing.shutdown(Closed(CloseReason.DUPLICATE, dup))
                self._delete_connection(existing)
            elif existing.uid < conn.uid:
                return Closed(CloseReason.DUPLICATE, dup)
            else:
                existing.shutdown(Closed(CloseReason.DUPLICATE, dup))
                self._delete_connection(existing)
                return Closed(CloseReason.DUPLICATE, dup)
        limit = self.config.conn_limit
        if limit and len(self.connections) >= limit:
            return Closed(CloseReason.CONNECTION_LIMIT, f"Connection limit reached ({limit})")
        new_peer = name not in self.routes().unicast or conn.restarted
        self.connections[name] = conn
        conn.added = True
        self.topology.add_local_connection(
            ConnectionInfo(name, conn.address, conn.outbound, established=False)
        )
        self._routes = None
        self._limited.info(
            ("added", conn.remote_addr[0]),
            "connection added%s conn=%s",
            " (new peer)" if new_peer else "",
            conn.log_name(),
        )
        if new_peer:
            self.hub.send_all_gossip_down(name)
        if conn.outbound:
            self.maker.connection_created(conn.target_address, True)
        self._announce({name, self.us})
        self._wake_maker()
        return None

    def handle_message(self, conn: Connection, msg: Message) -> None:
        """Raises `GossipError`/`ProtocolError` to close the connection."""
        if isinstance(msg, Gossip | GossipUnicast | GossipBroadcast):
            self.hub.deliver(msg)
        elif isinstance(msg, Heartbeat):
            return
        elif isinstance(msg, OverlayControl):
            if conn.forwarder is not None and not conn.forwarder.legacy:
                conn.forwarder.control_message(msg.index, msg.subtag, msg.body)
        elif isinstance(msg, LegacyControl):
            if conn.forwarder is not None and conn.forwarder.legacy:
                conn.forwarder.control_message(0, msg.tag, msg.body)
        elif isinstance(msg, Blank):
            self._limited.info(
                ("blank", conn.remote_addr[0]), "ignoring blank msg conn=%s", conn.log_name()
            )
        elif isinstance(msg, UnknownTag):
            self._limited.info(
                ("tag", conn.remote_addr[0]),
                "ignoring unknown protocol tag conn=%s tag=%d",
                conn.log_name(),
                msg.tag,
            )

    def connection_ended(self, conn: Connection, closed: Closed) -> None:
        self._introduced(conn)
        self._all.discard(conn)
        now = self._now()
        # Drop our reference before deleting, so garbage collection can take the peer.
        if conn.remote is not None:
            self.topology.dereference(conn.remote.name)
        if conn.added:
            self.termination_count += 1
            self._delete_connection(conn)
        if conn.forwarder is not None:
            conn.forwarder.stop()
        if conn.outbound:
            address = conn.target_address
            self._target_reasons[address] = closed.reason
            self.maker.connection_ended(
                address, True, closed.detail, now, retry=closed.reason not in NEVER_RETRY
            )
        self._limited.info(
            ("ended", conn.remote_addr[0], closed.reason),
            "connection shutting down conn=%s reason=%s detail=%s",
            conn.log_name(),
            closed.reason,
            closed.detail,
        )
        self._wake_maker()

    def _name_collision(self, conn: Connection, remote: RemoteIdentity) -> None:
        ip = conn.remote_addr[0]
        self.name_collisions[ip] = remote.nickname
        while len(self.name_collisions) > 16:
            self.name_collisions.pop(next(iter(self.name_collisions)))
        self._limited.error(
            ("collision", ip),
            "peer name collision: %r at %s uses our peer name %s; %s",
            remote.nickname,
            ip,
            format_peer_name(self.us),
            NAME_COLLISION_FIX,
        )

    def _introduced(self, conn: Connection) -> None:
        if conn.pending_source is not None:
            self.admission.done(conn.pending_source)
            conn.pending_source = None

    def _known_peer_ip(self, ip: str) -> bool:
        """A source that is one of our peers: a spec target or a current connection."""
        if any(c.remote_addr[0] == ip for c in self.connections.values()):
            return True
        return any(r is not None and r[0] == ip for r in self.maker.direct.values())

    # --- internals: connections ---------------------------------------------------------------

    def _connection_established(self, conn: Connection) -> None:
        if conn.remote is None or self.connections.get(conn.remote.name) is not conn:
            conn.shutdown(
                Closed(CloseReason.PROTOCOL_ERROR, "Cannot set unknown connection active")
            )
            return
        conn.established = True
        self.topology.set_local_established(conn.remote.name)
        self._routes = None
        self._limited.info(
            ("established", conn.remote_addr[0]),
            "connection fully established conn=%s",
            conn.log_name(),
        )
        self._announce({self.us})

    def _delete_connection(self, conn: Connection) -> None:
        if conn.remote is None:
            return
        name = conn.remote.name
        if self.connections.get(name) is not conn:
            return
        del self.connections[name]
        self.topology.delete_local_connection(name)
        self._limited.info(
            ("deleted", conn.remote_addr[0]), "connection deleted conn=%s", conn.log_name()
        )
        # Collect first, so we never gossip unreachable peers (that can loop).
        self._removed(self.topology.garbage_collect())
        self.topology.reassign_short_id_if_lost()
        self._routes = None
        self._announce({self.us})

    def _removed(self, peers: list[Peer]) -> None:
        for peer in peers:
            self._limited.info(
                ("removed",), "Removed unreachable peer peer=%s", self._peer_str(peer)
            )
            for callback in self._peer_removed:
                try:
                    callback(peer.name)
                except Exception:
                    log.exception("peer-removed listener failed")

    def _apply_topology(self, payload: bytes) -> UpdateResult:
        result = self.topology.apply_update(payload)
        self._removed(list(result.removed))
        if result.improved or result.removed:
            self._routes = None
            self._wake_maker()
        if result.local_changed:
            self._announce({self.us})
        return result

    def _announce(self, names: set[PeerName]) -> None:
        """Our topology changed: tell random neighbours, coalescing for `topology_delay`."""
        self._pending_topology |= names
        if self._topology_timer is None and self._running:
            loop = asyncio.get_running_loop()
            self._topology_timer = loop.call_later(self.config.topology_delay, self._flush_topology)

    def _flush_topology(self) -> None:
        self._topology_timer = None
        names, self._pending_topology = frozenset(self._pending_topology), set()
        if names and self._running:
            self._topology_channel.gossip_neighbours(TopologyGossipData(self.topology, names))

    def _trusts(self, ip: str) -> bool:
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

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("mesh task failed task=%s", task.get_name(), exc_info=task.exception())

    def _wake_maker(self) -> None:
        if self._maker_wake is not None:
            self._maker_wake.set()

    def _run_connection(self, conn: Connection) -> None:
        self._all.add(conn)
        task = asyncio.create_task(self._connection_task(conn), name=f"mesh-conn {conn.address}")
        self._conn_tasks.add(task)
        task.add_done_callback(self._conn_tasks.discard)

    @staticmethod
    async def _connection_task(conn: Connection) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await conn.run()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listen_sock is not None
        while True:
            try:
                client, addr = await loop.sock_accept(self._listen_sock)
            except OSError as e:  # EMFILE and the like: wait, but say so once per interval
                self._limited.warning(("accept", e.errno), "mesh accept failed error=%s", e)
                await asyncio.sleep(0.1)
                continue
            source = str(addr[0])
            refused = self.admission.admit(source, loop.time(), self._known_peer_ip(source))
            if refused is not None:
                set_linger_zero(client)
                client.close()
                self._limited.warning(
                    ("refused", source),
                    "connection refused addr=%s reason=%s",
                    source,
                    refused,
                )
                continue
            self._limited.info(("accepted", source), "connection accepted addr=%s:%d", *addr[:2])
            try:
                reader, writer = await asyncio.open_connection(sock=client)
            except OSError as e:
                self.admission.done(source)
                self._limited.info(
                    ("setup", source), "connection setup failed addr=%s error=%s", source, e
                )
                client.close()
                continue
            conn = Connection(
                self,
                reader,
                writer,
                outbound=False,
                direct=False,
                conn_id=random_conn_id(self._rng),
            )
            conn.pending_source = source
            self._run_connection(conn)

    async def _maker_loop(self) -> None:
        assert self._maker_wake is not None
        # Not `while True`: Python 3.11's wait_for swallows a cancel that races the event being
        # set, and stop() then waited for this task forever (seen restarting peers in
        # bench/memory).
        while self._running:
            self._maker_wake.clear()
            now = self._now()
            live = [
                LiveConnection(name, conn.address, conn.outbound)
                for name, conn in self.connections.items()
            ]
            plan = self.maker.plan(now, live, self.topology.discovery_view(), self.us)
            for attempt in plan.attempts:
                self._spawn(self._dial(attempt), f"mesh-dial {attempt.address}")
            timeout = None if plan.wake_at is None else max(plan.wake_at - self._now(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._maker_wake.wait(), timeout)

    async def _dial(self, attempt: Attempt) -> None:
        address = attempt.address
        limit = self.config.conn_limit
        if limit and len(self.connections) >= limit:
            self._attempt_failed(
                address, Closed(CloseReason.CONNECTION_LIMIT, f"Connection limit reached ({limit})")
            )
            return
        host, port = split_target(address)
        self._limited.info(
            ("attempt", address), "attempting connection addr=%s direct=%s", address, attempt.direct
        )
        local = (self.config.host, 0) if self.config.host else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port or self.config.port, local_addr=local),
                self.config.dial_timeout,
            )
        except (OSError, TimeoutError) as e:
            text = "i/o timeout" if isinstance(e, TimeoutError) else os_error_text(e)
            detail = f"dial tcp {self.config.host}:0->{address}: connect: {text}"
            self._attempt_failed(address, Closed(CloseReason.DIAL_FAILED, detail))
            return
        if not self._running:
            writer.transport.abort()
            return
        conn = Connection(
            self,
            reader,
            writer,
            outbound=True,
            direct=attempt.direct,
            conn_id=random_conn_id(self._rng),
        )
        conn.target_address = address
        self._run_connection(conn)

    def _attempt_failed(self, address: str, closed: Closed) -> None:
        self._limited.info(
            ("failed", address, closed.reason),
            "connection attempt failed addr=%s reason=%s detail=%s",
            address,
            closed.reason,
            closed.detail,
        )
        self._target_reasons[address] = closed.reason
        self.maker.attempt_failed(address, closed.detail, self._now())
        self._wake_maker()

    async def _gossip_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.gossip_interval)
            self.hub.send_all_gossip()

    # --- internals: resolving spec targets ------------------------------------------------------

    def _resolve_now_or_later(self, spec: str) -> None:
        host, port = split_target(spec)
        try:
            ip = str(ipaddress.ip_address(host))
        except ValueError:
            if self.maker.direct.get(spec) is None and self._running:
                self._start_resolving(spec)
            return
        self.maker.resolved(spec, ip, port, self._now())

    def _start_resolving(self, spec: str) -> None:
        if spec in self._resolving:
            return
        host, _ = split_target(spec)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            task = asyncio.create_task(self._resolve(spec), name=f"mesh-resolve {spec}")
            self._resolving[spec] = task
            task.add_done_callback(lambda _t, s=spec: self._resolving.pop(s, None))  # type: ignore[misc]
        else:
            self._resolve_now_or_later(spec)

    def _stop_resolving(self, spec: str) -> None:
        task = self._resolving.pop(spec, None)
        if task is not None:
            task.cancel()

    async def _resolve(self, spec: str) -> None:
        host, port = split_target(spec)
        loop = asyncio.get_running_loop()
        schedule = RetrySchedule()
        schedule.try_now(loop.time())
        while spec in self.maker.direct:
            try:
                infos = await loop.getaddrinfo(
                    host, None, family=socket.AF_INET, type=socket.SOCK_STREAM
                )
            except OSError as e:
                schedule.try_later(loop.time(), self._rng)
                due = schedule.try_after or loop.time()
                log.info("peer address lookup failed target=%s error=%s", spec, e)
                await asyncio.sleep(max(due - loop.time(), 0.0))
                continue
            ip = str(infos[0][4][0])
            log.info("peer address resolved target=%s ip=%s", spec, ip)
            self.maker.resolved(spec, ip, port, loop.time())
            self._wake_maker()
            return
