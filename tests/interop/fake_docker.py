"""A tiny stand-in for the Docker Engine API on a unix socket, enough for Weave's `weaver`.

weaver asks Docker for its version at start, lists running containers, and keeps an event
stream open (`/events`); without an answering Docker API it falls back to reading
`/proc/1/ns/net`, which is unreadable here. This answers with no containers and an event
stream that stays open (chunked, no events) until the server is closed.
"""

from __future__ import annotations

import json
import re
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

API_VERSION = "1.41"
# Docker clients prefix paths with the API version they speak (`/v1.41/version`).
_VERSIONED = re.compile(r"^/v[0-9.]+(/.*)$")

_ANSWERS: dict[str, Any] = {
    "/version": {
        "Version": "20.10.24",
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.12",
        "Os": "linux",
        "Arch": "amd64",
    },
    "/info": {"ID": "fake", "Containers": 0, "Name": "fake-docker", "ServerVersion": "20.10.24"},
    "/containers/json": [],
    "/networks": [],
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        self.server.requests.append(self.requestline)

    def address_string(self) -> str:  # a unix socket's client has no (host, port)
        return "unix"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if match := _VERSIONED.match(path):
            path = match.group(1)
        if path == "/_ping":
            self._send(200, b"OK", "text/plain")
        elif path == "/events":
            self._events()
        elif path in _ANSWERS:
            self._send(200, json.dumps(_ANSWERS[path]).encode(), "application/json")
        elif path.startswith("/containers/") and path.endswith("/json"):
            self._send(404, b'{"message": "No such container"}', "application/json")
        else:
            self._send(404, b'{"message": "page not found"}', "application/json")

    def do_HEAD(self) -> None:
        self._send(200, b"", "text/plain")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        # No events ever come; hold the stream open until the server closes.
        self.server.closing.wait()
        self.close_connection = True


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.requests: list[str] = []
        self.closing = threading.Event()
        super().__init__(path, _Handler)


class FakeDocker:
    """`with FakeDocker(path) as docker:` serves on `path`; `docker.url` is for `--docker-api`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    @property
    def requests(self) -> list[str]:
        return list(self._server.requests) if self._server else []

    def __enter__(self) -> FakeDocker:
        self.path.unlink(missing_ok=True)
        self._server = _Server(str(self.path))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.closing.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.path.unlink(missing_ok=True)
