"""How the router's connections come to be: accepting inbound ones (admission control first),
dialing the attempts the `ConnectionMaker` plans, and resolving spec targets given by name.

The dialer owns the listening socket, the maker's wake-up event, the name lookups in flight and
the last reason each target failed (for `weaved status`); every socket it opens is handed to the
router (`DialerHost.connection_opened`), which runs the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

from weaved.backoff import RetrySchedule
from weaved.lograte import RateLimitedLog
from weaved.mesh.admission import Admission
from weaved.mesh.connection import STREAM_LIMIT, Connection, os_error_text, set_linger_zero
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.reasons import NEVER_RETRY, Closed, CloseReason
from weaved.mesh.targets import Attempt, ConnectionMaker, LiveConnection, split_target
from weaved.mesh.topology import Topology

__all__ = ["DialSettings", "Dialer", "DialerHost"]

log = logging.getLogger(__name__)


class DialSettings(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def conn_limit(self) -> int: ...

    @property
    def dial_timeout(self) -> float: ...


class DialerHost(Protocol):
    """What the dialer needs from its router."""

    us: PeerName
    maker: ConnectionMaker
    admission: Admission
    topology: Topology
    connections: dict[PeerName, Connection]

    @property
    def config(self) -> DialSettings: ...

    @property
    def running(self) -> bool: ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...

    def connection_opened(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        outbound: bool,
        direct: bool,
        source: str | None = None,
        target: str = "",
    ) -> None: ...


class Dialer:
    def __init__(
        self,
        host: DialerHost,
        limited: RateLimitedLog,
        rng: random.Random,
        now: Callable[[], float],
    ) -> None:
        self._host = host
        self._limited = limited  # the router's: one rate limit for all its connection lines
        self._rng = rng
        self._now = now
        self._wake: asyncio.Event | None = None
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._listen_sock: socket.socket | None = None
        self.reasons: dict[str, CloseReason] = {}
        """Why each target's last connection or attempt ended."""

    # --- lifecycle (by the router) ---------------------------------------------------------

    def listen(self, host: str, port: int) -> int:
        """Bind the listening socket; returns its port. Raises OSError."""
        self._wake = asyncio.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host or "0.0.0.0", port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listen_sock = sock
        return int(sock.getsockname()[1])

    def start(self) -> None:
        """Accept, make connections, and look up the spec targets not resolved yet."""
        self._host.spawn(self._accept_loop(), "mesh-accept")
        self._host.spawn(self._maker_loop(), "mesh-connection-maker")
        for spec in self._host.maker.unresolved_specs():
            self._start_resolving(spec)

    def lookups(self) -> list[asyncio.Task[None]]:
        """The name lookups in flight (the router cancels them with its own tasks)."""
        return list(self._resolving.values())

    def close(self) -> None:
        if self._listen_sock is not None:
            self._listen_sock.close()
            self._listen_sock = None

    def wake(self) -> None:
        """Something changed: let the maker plan again."""
        if self._wake is not None:
            self._wake.set()

    # --- targets ---------------------------------------------------------------------------

    def set_targets(self, specs: list[str]) -> None:
        maker = self._host.maker
        now = self._now()
        for gone in set(maker.direct) - set(specs):
            self._stop_resolving(gone)
        maker.set_direct(specs, now, replace=True)
        for spec in specs:
            self._resolve_now_or_later(spec)
        self.wake()

    def forget_targets(self, specs: Iterable[str]) -> None:
        specs = list(specs)
        for spec in specs:
            self._stop_resolving(spec)
        self._host.maker.forget_direct(specs)
        self.wake()

    def connection_ended(self, address: str, closed: Closed, now: float) -> None:
        """An outbound connection to `address` ended: retry it unless the reason forbids."""
        self.reasons[address] = closed.reason
        self._host.maker.connection_ended(
            address, True, closed.detail, now, retry=closed.reason not in NEVER_RETRY
        )

    # --- internals: accepting and dialing ----------------------------------------------------

    def _known_peer_ip(self, ip: str) -> bool:
        """A source that is one of our peers: a spec target or a current connection."""
        if any(c.remote_addr[0] == ip for c in self._host.connections.values()):
            return True
        return any(r is not None and r[0] == ip for r in self._host.maker.direct.values())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listen_sock is not None
        admission = self._host.admission
        while True:
            try:
                client, addr = await loop.sock_accept(self._listen_sock)
            except OSError as e:  # EMFILE and the like: wait, but say so once per interval
                self._limited.warning(("accept", e.errno), "mesh accept failed error=%s", e)
                await asyncio.sleep(0.1)
                continue
            source = str(addr[0])
            refused = admission.admit(source, loop.time(), self._known_peer_ip(source))
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
                reader, writer = await asyncio.open_connection(sock=client, limit=STREAM_LIMIT)
            except OSError as e:
                admission.done(source)
                self._limited.info(
                    ("setup", source), "connection setup failed addr=%s error=%s", source, e
                )
                client.close()
                continue
            self._host.connection_opened(
                reader, writer, outbound=False, direct=False, source=source
            )

    async def _maker_loop(self) -> None:
        assert self._wake is not None
        host = self._host
        # Not `while True`: Python 3.11's wait_for swallows a cancel that races the event being
        # set, and stop() then waited for this task forever (seen restarting peers in
        # bench/memory).
        while host.running:
            self._wake.clear()
            now = self._now()
            live = [
                LiveConnection(name, conn.address, conn.outbound)
                for name, conn in host.connections.items()
            ]
            # Without discovery the plan reads no topology: spare building the view.
            view = host.topology.discovery_view() if host.maker.discovery else {}
            plan = host.maker.plan(now, live, view, host.us)
            for attempt in plan.attempts:
                host.spawn(self._dial(attempt), f"mesh-dial {attempt.address}")
            timeout = None if plan.wake_at is None else max(plan.wake_at - self._now(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _dial(self, attempt: Attempt) -> None:
        address = attempt.address
        config = self._host.config
        limit = config.conn_limit
        if limit and len(self._host.connections) >= limit:
            self._attempt_failed(
                address, Closed(CloseReason.CONNECTION_LIMIT, f"Connection limit reached ({limit})")
            )
            return
        host, port = split_target(address)
        self._limited.info(
            ("attempt", address), "attempting connection addr=%s direct=%s", address, attempt.direct
        )
        local = (config.host, 0) if config.host else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port or config.port, local_addr=local, limit=STREAM_LIMIT
                ),
                config.dial_timeout,
            )
        except (OSError, TimeoutError) as e:
            text = "i/o timeout" if isinstance(e, TimeoutError) else os_error_text(e)
            detail = f"dial tcp {config.host}:0->{address}: connect: {text}"
            self._attempt_failed(address, Closed(CloseReason.DIAL_FAILED, detail))
            return
        if not self._host.running:
            writer.transport.abort()
            return
        self._host.connection_opened(
            reader, writer, outbound=True, direct=attempt.direct, target=address
        )

    def _attempt_failed(self, address: str, closed: Closed) -> None:
        self._limited.info(
            ("failed", address, closed.reason),
            "connection attempt failed addr=%s reason=%s detail=%s",
            address,
            closed.reason,
            closed.detail,
        )
        self.reasons[address] = closed.reason
        self._host.maker.attempt_failed(address, closed.detail, self._now())
        self.wake()

    # --- internals: resolving spec targets -----------------------------------------------------

    def _resolve_now_or_later(self, spec: str) -> None:
        host, port = split_target(spec)
        try:
            ip = str(ipaddress.ip_address(host))
        except ValueError:
            if self._host.maker.direct.get(spec) is None and self._host.running:
                self._start_resolving(spec)
            return
        self._host.maker.resolved(spec, ip, port, self._now())

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
        maker = self._host.maker
        loop = asyncio.get_running_loop()
        schedule = RetrySchedule()
        schedule.try_now(loop.time())
        while spec in maker.direct:
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
            maker.resolved(spec, ip, port, loop.time())
            self.wake()
            return
