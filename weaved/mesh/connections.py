"""The router's connections: each one's life as the router sees it (the `ConnectionHost` a
`Connection` calls back): our introduction, registering the remote (name collisions, unknown
peers), preparing its overlay, adding it (duplicates, the limit), establishment, message
dispatch, and its end (topology, routes, the dialer's retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Protocol

from weaved.lograte import RateLimitedLog
from weaved.mesh.admission import Admission
from weaved.mesh.connection import Connection, InboundBudget
from weaved.mesh.dialer import Dialer
from weaved.mesh.gossip import GossipHub
from weaved.mesh.gossip_api import PeerName
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
from weaved.mesh.overlay import NoCommonOverlay, OverlayParams, OverlaySwitch
from weaved.mesh.peername import format_peer_name, random_conn_id
from weaved.mesh.reasons import Closed, CloseReason
from weaved.mesh.router_status import peer_label
from weaved.mesh.routes import Routes
from weaved.mesh.settings import MeshConfig
from weaved.mesh.targets import ConnectionMaker
from weaved.mesh.topology import ConnectionInfo, Topology
from weaved.mesh.topology_gossip import TopologyKeeper

__all__ = ["NAME_COLLISION_FIX", "ConnectionRegistry", "RegistryHost"]

log = logging.getLogger(__name__)

NAME_COLLISION_FIX = (
    "each host needs its own: set `peer.name` in one host's spec, or give a cloned machine a "
    "new /etc/machine-id, then restart weaved there"
)


class RegistryHost(Protocol):
    """What the registry needs from its router."""

    uid: int
    topology: Topology
    topology_keeper: TopologyKeeper
    switch: OverlaySwitch
    maker: ConnectionMaker
    dialer: Dialer
    hub: GossipHub
    admission: Admission

    @property
    def config(self) -> MeshConfig: ...

    def routes(self) -> Routes: ...

    def trusts(self, ip: str) -> bool: ...


class ConnectionRegistry:
    """Every connection of one router, from its socket to its end."""

    def __init__(
        self,
        router: RegistryHost,
        us: PeerName,
        inbound: InboundBudget,
        limited: RateLimitedLog,
        rng: random.Random,
        now: Callable[[], float],
    ) -> None:
        self._router = router
        self.us = us
        self.inbound = inbound
        self._limited = limited
        self._rng = rng
        self._now = now
        self.connections: dict[PeerName, Connection] = {}
        """Added connections by remote peer (at most one each)."""
        self._all: set[Connection] = set()
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self.termination_count = 0
        # remote address -> nickname of a peer that uses our name with another UID
        self.name_collisions: dict[str, str] = {}

    def all(self) -> list[Connection]:
        """Every running connection, added or still being introduced."""
        return list(self._all)

    def open(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        outbound: bool,
        direct: bool,
        source: str | None = None,
        target: str = "",
    ) -> None:
        """Run a connection on a socket the dialer accepted (from `source`, admitted) or dialed
        (to `target`)."""
        conn = Connection(
            self,
            reader,
            writer,
            outbound=outbound,
            direct=direct,
            conn_id=random_conn_id(self._rng),
        )
        conn.pending_source = source
        if outbound:
            conn.target_address = target
        self._all.add(conn)
        task = asyncio.create_task(self._connection_task(conn), name=f"mesh-conn {conn.address}")
        self._conn_tasks.add(task)
        task.add_done_callback(self._conn_tasks.discard)

    @staticmethod
    async def _connection_task(conn: Connection) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await conn.run()

    async def stop(self) -> None:
        """Close every connection and give them a second to finish."""
        for conn in list(self._all):
            conn.shutdown(Closed(CloseReason.SHUTDOWN, "router stopping"))
        if self._conn_tasks:
            _, pending = await asyncio.wait(set(self._conn_tasks), timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # --- connection host (used by connections) -----------------------------------------------

    def timeouts(self) -> MeshConfig:
        return self._router.config

    def password(self) -> bytes | None:
        return self._router.config.password

    def intro_features(self, conn: Connection) -> dict[str, str]:
        conn.trust_remote = self._router.trusts(conn.remote_addr[0])
        features = {
            "PeerNameFlavour": "mac",
            "Name": format_peer_name(self.us),
            "NickName": self._router.config.nickname,
            "ShortID": str(self._router.topology.ourself.short_id),
            "UID": str(self._router.uid),
            "ConnID": str(conn.conn_id),
            "Trusted": "true" if conn.trust_remote else "false",
        }
        features.update(self._router.switch.features())
        return features

    def register(self, conn: Connection, remote: RemoteIdentity) -> Closed | None:
        self._introduced(conn)
        closed = check_remote(remote, self.us, self._router.uid)
        if closed is not None:
            if closed.reason is CloseReason.NAME_COLLISION:
                self._name_collision(conn, remote)
            return closed
        self.name_collisions.pop(conn.remote_addr[0], None)
        accept_new = conn.direct or not conn.outbound
        known = self._router.topology.peers.get(remote.name)
        peer = self._router.topology.register_remote(remote, accept_new)
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
            conn.forwarder = self._router.switch.prepare(
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
                f"Multiple connections to {peer_label(conn.remote)} added to "
                f"{peer_label(self._router.topology.ourself)}"
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
        limit = self._router.config.conn_limit
        if limit and len(self.connections) >= limit:
            return Closed(CloseReason.CONNECTION_LIMIT, f"Connection limit reached ({limit})")
        new_peer = name not in self._router.routes().unicast or conn.restarted
        self.connections[name] = conn
        conn.added = True
        self._router.topology.add_local_connection(
            ConnectionInfo(name, conn.address, conn.outbound, established=False)
        )
        self._router.topology_keeper.routes_changed()
        self._limited.info(
            ("added", conn.remote_addr[0]),
            "connection added%s conn=%s",
            " (new peer)" if new_peer else "",
            conn.log_name(),
        )
        if new_peer:
            self._router.hub.send_all_gossip_down(name)
        if conn.outbound:
            self._router.maker.connection_created(conn.target_address, True)
        self._router.topology_keeper.announce({name, self.us})
        self._router.dialer.wake()
        return None

    def handle_message(self, conn: Connection, msg: Message) -> None:
        """Raises `GossipError`/`ProtocolError` to close the connection."""
        if isinstance(msg, Gossip | GossipUnicast | GossipBroadcast):
            self._router.hub.deliver(msg)
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
            self._router.topology.dereference(conn.remote.name)
        if conn.added:
            self.termination_count += 1
            self._delete_connection(conn)
        if conn.forwarder is not None:
            conn.forwarder.stop()
        if conn.outbound:
            self._router.dialer.connection_ended(conn.target_address, closed, now)
        self._limited.info(
            ("ended", conn.remote_addr[0], closed.reason),
            "connection shutting down conn=%s reason=%s detail=%s",
            conn.log_name(),
            closed.reason,
            closed.detail,
        )
        self._router.dialer.wake()

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
            self._router.admission.done(conn.pending_source)
            conn.pending_source = None

    # --- internals: connections ---------------------------------------------------------------

    def _connection_established(self, conn: Connection) -> None:
        if conn.remote is None or self.connections.get(conn.remote.name) is not conn:
            conn.shutdown(
                Closed(CloseReason.PROTOCOL_ERROR, "Cannot set unknown connection active")
            )
            return
        conn.established = True
        self._router.topology.set_local_established(conn.remote.name)
        self._router.topology_keeper.routes_changed()
        self._limited.info(
            ("established", conn.remote_addr[0]),
            "connection fully established conn=%s",
            conn.log_name(),
        )
        self._router.topology_keeper.announce({self.us})

    def _delete_connection(self, conn: Connection) -> None:
        if conn.remote is None:
            return
        name = conn.remote.name
        if self.connections.get(name) is not conn:
            return
        del self.connections[name]
        self._router.topology.delete_local_connection(name)
        self._limited.info(
            ("deleted", conn.remote_addr[0]), "connection deleted conn=%s", conn.log_name()
        )
        # Collect first, so we never gossip unreachable peers (that can loop).
        self._router.topology_keeper.removed(self._router.topology.garbage_collect())
        self._router.topology.reassign_short_id_if_lost()
        self._router.topology_keeper.routes_changed()
        self._router.topology_keeper.announce({self.us})
