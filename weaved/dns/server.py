"""The weaveDNS server: UDP and TCP on the configured address, answers from `Answerer`, the
rest forwarded to upstream resolvers.

UDP is served without asyncio's datagram transport: the socket is registered with
`loop.add_reader` and each wake-up reads up to 64 datagrams with one system call and sends
their answers (prepared bytes for names in the domain) with one more (`batch.py`): that is
what puts one Python thread's CPU per query under dnsmasq's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from weaved.dns.answers import (
    MAX_MESSAGE,
    RCODE_SERVFAIL,
    Answerer,
    error_reply,
    truncated_reply,
    udp_limit,
)
from weaved.dns.batch import Address, UdpBatcher, udp_batcher

log = logging.getLogger(__name__)

DEFAULT_PORT = 53
DEFAULT_TIMEOUT = 5.0
"""Seconds to wait for one upstream server (Weave's DefaultClientTimeout)."""
RESOLV_CONF = "/etc/resolv.conf"

_MAX_FORWARDS = 1024
_TCP_IDLE = 10.0
_MAX_TCP_CLIENTS = 128  # each holds a descriptor for up to _TCP_IDLE; a new one evicts the oldest
_RCVBUF = 4 << 20
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


@dataclass(frozen=True)
class Server:
    """One upstream resolver."""

    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        if self.port == DEFAULT_PORT:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(text: str) -> Server:
    """`ADDR`, `ADDR:PORT` or `[V6]:PORT`."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return Server(host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT)
    if text.count(":") == 1:
        host, port = text.split(":")
        return Server(host, int(port))
    return Server(text)


def parse_resolv_conf(text: str) -> list[str]:
    """Nameserver addresses of a resolv.conf, in order (zone ids and junk skipped)."""
    servers = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            addr = fields[1].split("%")[0]
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                continue
            servers.append(addr)
    return servers


class Upstreams:
    """Where forwarded queries go: the spec's list, or the host's resolv.conf.

    The file is re-read when it changes (checked at most every 5 s, as Weave does); our own
    listening address is never used, so a host that points at us cannot make us loop.
    """

    def __init__(
        self,
        fixed: Sequence[str] = (),
        resolv_conf: str = RESOLV_CONF,
        exclude: Sequence[Server] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fixed = [parse_server(s) for s in fixed]
        self._path = resolv_conf
        self._exclude = set(exclude)
        self._clock = clock
        self._checked = -1e9
        self._mtime: float | None = None
        self._cached: list[Server] = []

    def set_fixed(self, fixed: Sequence[str]) -> None:
        """A new list from the spec (empty: back to resolv.conf); takes effect at once."""
        self._fixed = [parse_server(s) for s in fixed]
        self._mtime = None
        self._checked = -1e9

    def exclude(self, server: Server) -> None:
        self._exclude.add(server)
        self._mtime = None
        self._checked = -1e9

    def servers(self) -> list[Server]:
        if self._fixed:
            return [s for s in self._fixed if s not in self._exclude]
        now = self._clock()
        if now - self._checked >= 5.0:
            self._checked = now
            try:
                mtime = os.stat(self._path).st_mtime
                if mtime != self._mtime:
                    with open(self._path, encoding="utf-8", errors="replace") as f:
                        hosts = parse_resolv_conf(f.read())
                    self._cached = [s for s in (Server(h) for h in hosts) if s not in self._exclude]
                    self._mtime = mtime
            except OSError as e:
                log.warning("cannot read upstream resolvers path=%s error=%s", self._path, e)
        return list(self._cached)

    def display(self) -> list[str]:
        """For `status`: `8.8.8.8`, or `ADDR:PORT` when not on port 53."""
        return [str(s) for s in self.servers()]


class Forwarder:
    """Sends a query to the upstreams in turn: over UDP, then over TCP when truncated."""

    def __init__(self, upstreams: Upstreams, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.upstreams = upstreams
        self.timeout = timeout

    async def forward(self, query: bytes, tcp: bool) -> bytes:
        """The upstream answer (with the client's id), or SERVFAIL if no upstream answered."""
        for server in self.upstreams.servers():
            copy = random.getrandbits(16).to_bytes(2, "big") + query[2:]
            try:
                async with asyncio.timeout(self.timeout):
                    answer = await _exchange_udp(copy, server)
                if answer[2] & 0x02 and tcp:
                    async with asyncio.timeout(self.timeout):
                        answer = await _exchange_tcp(copy, server)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                log.debug("upstream failed server=%s error=%r", server, e)
                continue
            answer = query[:2] + answer[2:]
            if not tcp and len(answer) > udp_limit(query):
                return truncated_reply(answer, query)
            return answer
        return error_reply(query, RCODE_SERVFAIL)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def _exchange_udp(query: bytes, server: Server) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(_family(server.host), socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, (server.host, server.port))
        await loop.sock_sendall(sock, query)
        while True:
            answer = await loop.sock_recv(sock, MAX_MESSAGE)
            # Only the reply to this query: same id, QR set (a connected socket already
            # filters out other senders).
            if len(answer) >= 12 and answer[:2] == query[:2] and answer[2] & 0x80:
                return answer


async def _exchange_tcp(query: bytes, server: Server) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(len(query).to_bytes(2, "big") + query)
        await writer.drain()
        size = int.from_bytes(await reader.readexactly(2), "big")
        return await reader.readexactly(size)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _bind(kind: socket.SocketKind, host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), kind)
    try:
        if kind == socket.SOCK_STREAM:
            # Restart without waiting for TIME_WAIT; not for UDP, where it would let a second
            # server bind the same port and silently take half of the queries.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Lets us start before the bridge has the address containers are told to use.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
        if kind == socket.SOCK_DGRAM:
            # Room for bursts; FORCE passes net.core.rmem_max when we are root.
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class DnsServer:
    """weaveDNS on `host:port`, UDP and TCP. `start` binds (raising OSError if it cannot)."""

    def __init__(
        self,
        answerer: Answerer,
        forwarder: Forwarder,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
    ) -> None:
        self.answerer = answerer
        self.forwarder = forwarder
        self.host = host
        self.port = port
        self._udp: socket.socket | None = None
        self._udp_io: UdpBatcher | None = None
        self._tcp: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._tcp_clients: dict[asyncio.StreamWriter, None] = {}  # oldest first
        self.queries = 0
        """UDP queries answered locally or forwarded (a cheap counter for metrics)."""

    @property
    def address(self) -> str:
        """`ADDR:PORT` actually bound (the port is known after `start` when 0 was asked)."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        udp = _bind(socket.SOCK_DGRAM, self.host, self.port)
        try:
            if self.port == 0:
                self.port = udp.getsockname()[1]
            tcp = _bind(socket.SOCK_STREAM, self.host, self.port)
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)
        except BaseException:
            udp.close()
            raise
        self._udp = udp
        self._udp_io = udp_batcher(udp)
        self._loop.add_reader(udp.fileno(), self._on_udp)
        for server in _own_servers(self.host, self.port):
            self.forwarder.upstreams.exclude(server)
        log.info("dns listening address=%s", self.address)

    async def stop(self) -> None:
        if self._udp is not None and self._loop is not None:
            udp, self._udp = self._udp, None
            self._udp_io = None
            self._loop.remove_reader(udp.fileno())
            udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
            self._tcp = None
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def run(self) -> None:
        """Serve until cancelled (for a TaskGroup)."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # -- UDP -------------------------------------------------------------------------------

    def _on_udp(self) -> None:
        if self._udp_io is None:
            return
        n, forwards = self._udp_io.exchange(self.answerer.respond)
        self.queries += n
        for query, client in forwards:
            self._spawn_forward(query, client)

    def _spawn_forward(self, query: bytes, client: Address) -> None:
        if len(self._pending) >= _MAX_FORWARDS:
            return  # overloaded: the client will retry
        task = asyncio.ensure_future(self._forward_udp(query, client))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _forward_udp(self, query: bytes, client: Address) -> None:
        answer = await self.forwarder.forward(query, tcp=False)
        if self._udp is not None and answer:
            with contextlib.suppress(OSError):
                self._udp.sendto(answer, socket.MSG_DONTWAIT, client)

    # -- TCP -------------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tcp_clients) >= _MAX_TCP_CLIENTS:
            oldest = next(iter(self._tcp_clients))
            del self._tcp_clients[oldest]
            oldest.transport.abort()
        self._tcp_clients[writer] = None
        try:
            while True:
                async with asyncio.timeout(_TCP_IDLE):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    query = await reader.readexactly(size)
                answer = self.answerer.respond(query, tcp=True)
                if answer is None:
                    answer = await self.forwarder.forward(query, tcp=True)
                if not answer:
                    break
                writer.write(len(answer).to_bytes(2, "big") + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("dns tcp connection failed (a weaved bug)")
        finally:
            self._tcp_clients.pop(writer, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _own_servers(host: str, port: int) -> list[Server]:
    """Addresses that reach this server (a wildcard bind also answers on loopback)."""
    own = [Server(host, port)]
    if host in ("0.0.0.0", "::"):
        own += [Server("127.0.0.1", port), Server("::1", port)]
    return own
