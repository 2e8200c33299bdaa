"""One TCP connection to a peer (asyncio shell around the sans-I/O handshake and framing).

Lifecycle, as Weave's LocalConnection: handshake → features checked → remote registered →
overlay prepared → connection added (duplicates and the limit decided by the router) →
overlay confirmed → read loop, writer and heartbeats until something ends it. Whatever ends
it, the socket is closed with linger 0 (RST, as Weave) and the router is told exactly once
with a typed reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from asyncio.trsock import TransportSocket
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from weaved.errors import ProtocolError
from weaved.lograte import RateLimitedLog
from weaved.mesh.framing import FramingError, MessageReader, MessageWriter
from weaved.mesh.gossip import GossipError, GossipQueue
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.handshake import (
    FeatureError,
    Handshake,
    HandshakeDone,
    HandshakeFailed,
    RemoteIdentity,
    SendBytes,
    parse_features,
)
from weaved.mesh.messages import Message, MessageError, encode_heartbeat, parse_message
from weaved.mesh.peername import format_peer_name
from weaved.mesh.reasons import Closed, CloseReason

if TYPE_CHECKING:
    from weaved.mesh.overlay import SwitchForwarder
    from weaved.mesh.topology import Peer

__all__ = [
    "Connection",
    "ConnectionHost",
    "ConnectionSettings",
    "InboundBudget",
    "set_linger_zero",
]

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log, 10.0)

READ_SIZE = 64 * 1024
"""Bytes one read takes from the stream. With STREAM_LIMIT, what a busy daemon holds of each
connection's unprocessed input (the kernel's socket buffer holds the rest): with 250 peers
sending at once, 256 kB reads and asyncio's default limit held ~30 MB in the target of
bench/memory, and the allocator kept the pages after the burst."""
STREAM_LIMIT = 32 * 1024
"""asyncio's StreamReader limit: it stops reading from the socket at twice this."""
MAX_QUEUED_BYTES = 16 * 1024 * 1024
"""Raw messages waiting for a remote that does not read; more are dropped (and counted)."""
LARGE_MESSAGE = 1024 * 1024
"""Messages longer than this are read only within the router's `InboundBudget`."""


class InboundBudget:
    """Bytes of large incoming messages all connections may hold at once.

    A 10 MiB message costs about four times that while it is framed, parsed and decoded;
    without a shared bound, every connection of a hostile peer could hold one. A connection
    announced a large message waits (reading nothing, so TCP pushes back) until the budget has
    room; one message is always allowed, so nothing larger than the budget starves."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def reserve(self, n: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.used and self.used + n > self.total:
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, deadline - loop.time())
            except TimeoutError:
                return False
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        self.used += n
        return True

    def release(self, n: int) -> None:
        self.used -= n
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class ConnectionSettings(Protocol):
    @property
    def handshake_timeout(self) -> float: ...

    @property
    def min_version(self) -> int: ...

    @property
    def read_timeout(self) -> float: ...

    @property
    def heartbeat_interval(self) -> float: ...


class ConnectionHost(Protocol):
    """What a connection needs from its router."""

    us: PeerName
    inbound: InboundBudget

    def timeouts(self) -> ConnectionSettings: ...

    def intro_features(self, conn: Connection) -> dict[str, str]: ...

    def password(self) -> bytes | None: ...

    def register(self, conn: Connection, remote: RemoteIdentity) -> Closed | None: ...

    def prepare_overlay(self, conn: Connection) -> Closed | None: ...

    def add_connection(self, conn: Connection) -> Closed | None: ...

    def handle_message(self, conn: Connection, msg: Message) -> None: ...

    def connection_ended(self, conn: Connection, closed: Closed) -> None: ...


def set_linger_zero(sock: socket.socket | TransportSocket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _addr_str(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = str(addr[0]), int(addr[1])
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(addr)


class Connection:
    def __init__(
        self,
        host: ConnectionHost,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        outbound: bool,
        direct: bool,
        conn_id: int,
    ) -> None:
        self._host = host
        self._reader = reader
        self._writer = writer
        self.outbound = outbound
        self.direct = direct  # a spec target (or inbound): may introduce an unknown peer
        self.conn_id = conn_id  # our half of the connection UID
        sock = writer.get_extra_info("socket")  # an asyncio TransportSocket
        if sock is not None:
            set_linger_zero(sock)
        local = writer.get_extra_info("sockname")
        remote = writer.get_extra_info("peername")
        self.local_addr: tuple[str, int] = (str(local[0]), int(local[1]))
        self.remote_addr: tuple[str, int] = (str(remote[0]), int(remote[1]))
        self.address = _addr_str(self.remote_addr)
        self.target_address = self.address  # the connection maker's key (outbound)
        self.restarted = False  # the remote is a new incarnation of a peer we knew
        self.identity: RemoteIdentity | None = None
        self.remote: Peer | None = None
        self.features: Mapping[str, str] = {}
        self.uid = 0  # conn_id XOR the remote's: the same at both ends
        self.session_key: bytes | None = None
        self.trust_remote = False
        self.trusted_by_remote = False
        self.forwarder: SwitchForwarder | None = None
        self.established = False
        self.added = False
        self.pending_source: str | None = None  # counted by the router's admission until introduced
        self.queue = GossipQueue(host.us)
        self._raw: deque[bytes] = deque()
        self._raw_bytes = 0
        self.dropped = 0  # messages not queued because the remote was not reading
        self._reserved = 0  # of the host's InboundBudget, for the large message being read
        self._reading_since: float | None = None  # loop time the read under way began
        self._watchdog: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._msg_writer = MessageWriter()
        self._msg_reader = MessageReader()
        self._done: asyncio.Future[Closed] = asyncio.get_running_loop().create_future()
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"Connection({self.log_name()})"

    def log_name(self) -> str:
        arrow = "->" if self.outbound else "<-"
        if self.identity is None:
            return f"{arrow}[{self.address}]"
        who = f"{format_peer_name(self.identity.name)}({self.identity.nickname})"
        return f"{arrow}[{self.address}|{who}]"

    @property
    def untrusted(self) -> bool:
        return not (self.trust_remote and self.trusted_by_remote)

    # --- used by the router -------------------------------------------------------------

    def send_body(self, body: bytes) -> None:
        if self._done.done():
            return
        if self._raw_bytes + len(body) > MAX_QUEUED_BYTES:  # the remote is not reading
            self.dropped += 1
            _limited.warning(
                ("queue-full", self.address),
                "connection send queue full, dropping messages conn=%s queued_bytes=%d",
                self.log_name(),
                self._raw_bytes,
            )
            return
        self._raw.append(body)
        self._raw_bytes += len(body)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def shutdown(self, closed: Closed) -> None:
        """Ask the connection to end (duplicate, overlay failure, router stopping)."""
        if not self._done.done():
            self._done.set_result(closed)

    @property
    def finished(self) -> bool:
        return self._done.done()

    # --- the connection's life ----------------------------------------------------------

    async def run(self) -> Closed:
        closed: Closed
        try:
            closed = await self._run()
        except asyncio.CancelledError:
            closed = Closed(CloseReason.SHUTDOWN, "router stopping")
            self._finish(closed)
            raise
        except Exception as e:  # a weaved bug: log it, end this connection only
            log.exception("connection failed unexpectedly conn=%s", self.log_name())
            closed = Closed(CloseReason.PROTOCOL_ERROR, f"internal error: {e}")
        self._finish(closed)
        return closed

    def _finish(self, closed: Closed) -> None:
        if not self._done.done():
            self._done.set_result(closed)
        for task in self._tasks:
            task.cancel()
        if self._reserved:
            self._host.inbound.release(self._reserved)
            self._reserved = 0
        self._writer.transport.abort()  # linger 0: RST, no goodbye (as Weave)
        self._host.connection_ended(self, closed)

    async def _run(self) -> Closed:
        timeouts = self._host.timeouts()
        hs = Handshake(
            outbound=self.outbound,
            features=self._host.intro_features(self),
            password=self._host.password(),
            min_version=timeouts.min_version,
        )
        self._writer.write(hs.start())
        loop = asyncio.get_running_loop()
        # The whole introduction, not each read, is bounded: a peer dripping a byte at a time
        # must not hold a socket (and a file descriptor) for longer than this.
        deadline = loop.time() + timeouts.handshake_timeout
        done: HandshakeDone | None = None
        while done is None:
            header_phase = not hs.header_received
            limit = deadline - loop.time()
            try:
                data = await asyncio.wait_for(self._reader.read(READ_SIZE), max(limit, 0.0))
            except TimeoutError:
                what = "protocol header" if header_phase else "handshake"
                return Closed(CloseReason.HEADER_TIMEOUT, f"{what}: i/o timeout")
            except OSError as e:
                io_closed = _io_closed(e)
                return Closed(io_closed.reason, io_closed.detail + hs.closed_early_hint())
            if not data:
                return hs.eof().closed
            for event in hs.receive_data(data):
                if isinstance(event, SendBytes):
                    self._writer.write(event.data)
                elif isinstance(event, HandshakeFailed):
                    return event.closed
                elif isinstance(event, HandshakeDone):
                    done = event
        self._msg_reader = done.reader
        self._msg_writer = done.writer
        self.session_key = done.session_key
        self.features = done.features
        try:
            identity = parse_features(done.features)
        except FeatureError as e:
            return e.closed
        self.identity = identity
        self.uid = self.conn_id ^ identity.conn_id
        self.trusted_by_remote = identity.trusted_by_remote

        closed = self._host.register(self, identity)
        if closed is not None:
            return closed
        _limited.info(
            ("ready", self.remote_addr[0]),
            "connection ready conn=%s protocol_version=%d",
            self.log_name(),
            done.version,
        )
        closed = self._host.prepare_overlay(self)
        if closed is not None:
            return closed
        closed = self._host.add_connection(self)
        if closed is not None:
            return closed
        if self.forwarder is not None:
            self.forwarder.confirm()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"mesh-read {self.address}"),
            asyncio.create_task(self._write_loop(), name=f"mesh-write {self.address}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"mesh-heartbeat {self.address}"),
        ]
        self._wake.set()
        return await self._done

    async def _read_loop(self) -> None:
        read_timeout = self._host.timeouts().read_timeout
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(read_timeout, self._read_watchdog, read_timeout)
        # Bytes after the features message arrived with the handshake.
        pending = self._msg_reader.take_buffered()
        try:
            while True:
                if pending:
                    data, pending = pending, b""
                else:
                    if not await self._reserve_for_large_message(read_timeout):
                        return
                    # One timer watches every read (wait_for per read made a task and a timer
                    # for each: a busy mesh reads thousands of times a second).
                    self._reading_since = loop.time()
                    data = await self._reader.read(READ_SIZE)
                    self._reading_since = None
                    if not data:
                        self.shutdown(Closed(CloseReason.EOF, "EOF"))
                        return
                for body in self._msg_reader.messages(data):
                    if self._reserved:  # the large message is complete
                        self._host.inbound.release(self._reserved)
                        self._reserved = 0
                    self._host.handle_message(self, parse_message(body))
                    if self._done.done():
                        return
                # Keep nothing of this read while waiting for the next: with hundreds of
                # connections the last chunk and message of each were tens of MB.
                data = body = b""
        except FramingError as e:
            reason = (
                CloseReason.DECRYPT_FAILED if "decrypt" in str(e).lower() else CloseReason.FRAMING
            )
            self.shutdown(Closed(reason, str(e)))
        except MessageError as e:
            self.shutdown(Closed(CloseReason.PROTOCOL_ERROR, str(e)))
        except GossipError as e:
            self.shutdown(Closed(CloseReason.GOSSIP_ERROR, str(e)))
        except ProtocolError as e:
            self.shutdown(Closed(CloseReason.PROTOCOL_ERROR, str(e)))
        except OSError as e:
            self.shutdown(_io_closed(e))
        finally:
            self._reading_since = None
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None

    def _read_watchdog(self, read_timeout: float) -> None:
        """A read waiting `read_timeout` for data ends the connection (Weave's read deadline);
        otherwise look again when the read under way would reach it."""
        self._watchdog = None
        if self._done.done():
            return
        since = self._reading_since
        loop = asyncio.get_running_loop()
        left = read_timeout if since is None else since + read_timeout - loop.time()
        if left <= 0:
            why = "read tcp: i/o timeout (no data for 60s)"
            self.shutdown(Closed(CloseReason.READ_TIMEOUT, why))
            return
        self._watchdog = loop.call_later(left, self._read_watchdog, read_timeout)

    async def _reserve_for_large_message(self, timeout: float) -> bool:
        need = self._msg_reader.pending_length
        if need <= LARGE_MESSAGE or self._reserved:
            return True
        if await self._host.inbound.reserve(need, timeout):
            self._reserved = need
            return True
        self.shutdown(
            Closed(CloseReason.READ_TIMEOUT, "too many large messages in flight from peers")
        )
        return False

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._raw or self.queue:
                    if self._raw:
                        body = self._raw.popleft()
                        self._raw_bytes -= len(body)
                        self._writer.write(self._msg_writer.frame(body))
                    else:
                        item = self.queue.pop()
                        if item is None:
                            break
                        for body in item.bodies():
                            self._writer.write(self._msg_writer.frame(body))
                        item = None
                    body = b""  # the transport has its own copy; keep none while waiting
                    await self._writer.drain()
        except FramingError as e:
            self.shutdown(Closed(CloseReason.FRAMING, str(e)))
        except OSError as e:
            self.shutdown(_io_closed(e))

    async def _heartbeat_loop(self) -> None:
        interval = self._host.timeouts().heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            self.send_body(encode_heartbeat())


def _io_closed(e: OSError) -> Closed:
    if isinstance(e, ConnectionResetError):
        return Closed(CloseReason.RESET, "read: connection reset by peer")
    if isinstance(e, BrokenPipeError):
        return Closed(CloseReason.RESET, "write: broken pipe")
    return Closed(CloseReason.IO_ERROR, os_error_text(e))


def os_error_text(e: OSError) -> str:
    """Go-like lower-case error text: `connection refused`, `network is unreachable`."""
    if e.errno:
        return os.strerror(e.errno).lower()
    return (e.strerror or str(e)).lower()
