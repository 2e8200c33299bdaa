"""The CLI's side of the control API (blocking HTTP over the daemon's unix socket)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from weaved.errors import DaemonError


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
