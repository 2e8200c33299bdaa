"""The local control API: a tiny HTTP/1.1 protocol on a root-only unix socket, both sides.

`Request`/`Response`/`Handler` are what a part's endpoints take and give; `ControlServer` serves
them (the daemon's control socket, and Docker's plugin socket); `Client` is the CLI's side
(blocking). Requests and answers are JSON (or text/plain for Weave-style status). Only uid 0
may connect: the socket is mode 0600 and the peer's credentials are checked as well, since the
socket's directory permissions are not ours to trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import socket
import struct
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weaved.errors import DaemonError, WeavedError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any]


@dataclass(frozen=True)
class Response:
    status: int
    body: Any  # dict/list → JSON, str → text/plain

    def encode(self) -> bytes:
        if isinstance(self.body, str):
            payload, ctype = self.body.encode(), "text/plain; charset=utf-8"
        else:
            payload, ctype = json.dumps(self.body).encode(), "application/json"
        reason = {
            200: "OK",
            400: "Bad Request",
            403: "Forbidden",
            404: "Not Found",
            409: "Conflict",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }
        head = (
            f"HTTP/1.1 {self.status} {reason.get(self.status, 'Status')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        return head.encode() + payload


Handler = Callable[[Request], Awaitable[Response]]


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class ControlServer:
    def __init__(self, path: Path, routes: dict[tuple[str, str], Handler]) -> None:
        self.path = path
        self.routes = routes
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen on `path`. The socket is bound and listening under a hidden name first and
        then renamed into place: a client that finds `path` is never refused (between a
        bind and its listen, a client that came on the path got ECONNREFUSED)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = self.path.with_name(f".{self.path.name}.new")
        fresh.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)
            try:
                sock.bind(str(fresh))
            finally:
                os.umask(old)
            sock.listen(socket.SOMAXCONN)
            os.chmod(fresh, 0o600)
            # Served before it is in place: a failure here leaves no dead socket on `path`.
            self.server = await asyncio.start_unix_server(self._serve, sock=sock)
            os.replace(fresh, self.path)
        except BaseException:
            if self.server is not None:
                self.server.close()
                self.server = None
            sock.close()
            fresh.unlink(missing_ok=True)
            raise

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None and peer_uid(sock) != 0:
                writer.write(Response(403, {"error": "the control API is for root only"}).encode())
                return
            request = await self._read(reader)
            if request is None:
                return
            handler = self.routes.get((request.method, request.path))
            if handler is None:
                response = Response(
                    404, {"error": f"no such endpoint {request.method} {request.path}"}
                )
            else:
                try:
                    response = await handler(request)
                except WeavedError as exc:
                    response = Response(409, {"error": str(exc)})
                except Exception as exc:  # a handler bug must not take the daemon down
                    log.exception("control handler failed path=%s", request.path)
                    response = Response(500, {"error": f"internal error: {exc}"})
            writer.write(response.encode())
            await writer.drain()
        except (
            ConnectionError,
            TimeoutError,  # an idle client: once a traceback each (issue 18.8)
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ) as exc:
            log.debug("control connection dropped: %r", exc)
        finally:
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> Request | None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY:
            raise ValueError("request too large")
        raw = await reader.readexactly(length) if length else b""
        path, _, qs = target.partition("?")
        query = dict(urllib.parse.parse_qsl(qs))
        body = json.loads(raw) if raw else {}
        return Request(method, path, query, body if isinstance(body, dict) else {})


# --- the client (the CLI, `weaved attach`, the CNI plugin, the lab) ----------------------
class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class Client:
    def __init__(self, socket_path: str, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def alive(self) -> bool:
        try:
            self.call("GET", "/ping", timeout=2.0)
        except DaemonError:
            return False
        return True

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        conn = _UnixConnection(self.socket_path, timeout or self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonError(
                f"cannot reach weaved daemon at {self.socket_path}: {exc}\n"
                "  hint: is `weaved daemon` running (systemctl status weaved)?"
            ) from None
        finally:
            conn.close()
        ctype = resp.getheader("Content-Type", "")
        data: Any = json.loads(raw) if ctype.startswith("application/json") else raw.decode()
        if resp.status >= 400:
            message = data.get("error") if isinstance(data, dict) else data
            raise DaemonError(f"daemon: {message}")
        return data
