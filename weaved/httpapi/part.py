"""Weave's HTTP API on 127.0.0.1:6784 (`http_api`, off by default): what scripts, monitoring
and Weave's own CNI plugin call on Weave's router, with Weave 2.8.1's paths, form fields, text
forms and status codes. Any local user can reach it (as with Weave), hence opt-in.

The routes are in `ipam_routes`, `dns_routes`, `router_routes` and `status_routes`, in Weave's
registration order; `http` matches them as gorilla/mux does (405 for a known path with another
method, Go's 404 text otherwise). The read-only ones are also on the status port (6782,
`metrics.enabled`), whatever `http_api` says, as Weave serves them there: this part listens on
both, with the one small server in `http`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weaved.control import Request
from weaved.dns.part import DnsPart
from weaved.dns.service import split_listen
from weaved.httpapi.dns_routes import dns_routes
from weaved.httpapi.http import Route, serve_connection
from weaved.httpapi.ipam_routes import ipam_routes
from weaved.httpapi.router_routes import router_routes
from weaved.httpapi.status_routes import status_routes
from weaved.ipam.part import IpamPart
from weaved.metrics.part import MetricsPart
from weaved.part import Component, Host
from weaved.spec.models import Spec

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

APPLY_WAIT = 15.0  # /expose answers once the daemon applied it, as Weave's does


class HttpApiPart(Component):
    name = "http-api"

    def __init__(self, spec: Spec, ipam: IpamPart, dns: DnsPart | None) -> None:
        self.spec = spec
        self.ipam = ipam
        self.dns = dns
        self.metrics: MetricsPart | None = None  # /metrics as on the status port (wiring)
        self.spec_path: Path | None = None  # what /connect, /forget, /expose edit (wiring)
        self._daemon: Host | None = None
        self._server: asyncio.AbstractServer | None = None
        self._status_server: asyncio.AbstractServer | None = None
        status = status_routes(self._status_text, self._control, self._ready, self._metrics)
        self.read_only_routes: list[Route] = status
        self.routes_table: list[Route] = [
            *ipam_routes(ipam, lambda: self.spec),
            *(dns_routes(dns, lambda: self.spec) if dns is not None else []),
            *router_routes(lambda: self.spec_path, self._changed, ipam, self._leave, self._applied),
            *status,
        ]

    async def start(self, daemon: Host) -> None:
        self._daemon = daemon
        if self.spec.metrics.enabled:
            await self._listen_status_port()
        if not self.spec.http_api.enabled:
            return
        host, port = self.spec.http_api.listen.rsplit(":", 1)
        self._server = await asyncio.start_server(
            lambda r, w: serve_connection(self.routes_table, r, w), host, int(port)
        )
        log.info("weave http api listening address=%s", self.spec.http_api.listen)

    async def _listen_status_port(self) -> None:
        """Weave's status port (`metrics.listen`, 6782): the read-only routes (/metrics, /status,
        /report) on the same small server as the API, whatever `http_api` says."""
        host, port = split_listen(self.spec.metrics.listen, 6782)
        try:
            self._status_server = await asyncio.start_server(
                lambda r, w: serve_connection(self.read_only_routes, r, w), host, port
            )
        except OSError as exc:
            log.error("metrics: cannot listen on %s: %s", self.spec.metrics.listen, exc.strerror)
            return
        log.info("metrics and status on http://%s:%d/metrics", host, port)

    async def stop(self) -> None:
        for server in (self._server, self._status_server):
            if server is not None:
                server.close()
                await server.wait_closed()

    def spec_changed(self, spec: Spec) -> None:
        if spec.http_api != self.spec.http_api and self._daemon is not None:
            log.warning("http_api changes take effect when the daemon restarts")
            spec = spec.model_copy(update={"http_api": self.spec.http_api})
        self.spec = spec

    # --- what the routes see of the daemon --------------------------------------------------
    def _status_text(self) -> str:
        return self._daemon.status_text() if self._daemon is not None else ""

    def _ready(self) -> bool:
        return self._daemon is not None and self._daemon.state.converges > 0

    def _control(self, path: str) -> Callable[[Request], Awaitable[Any]] | None:
        if self._daemon is None:
            return None
        return self._daemon.control_routes().get(("GET", path))

    def _metrics(self) -> str | None:
        return self.metrics.text() if self.metrics else None

    def _changed(self, reason: str) -> None:
        if self._daemon is not None:
            self._daemon.mark_dirty(reason)

    async def _applied(self, wanted: Callable[[Spec], bool]) -> str | None:
        """Wait for a converge of a spec where `wanted` holds (the edit's); None, or why not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + APPLY_WAIT
        seen_at: int | None = None
        while self._daemon is not None and loop.time() < deadline:
            state = self._daemon.state
            if seen_at is None and wanted(self.spec):
                seen_at = state.converges
                self._daemon.mark_dirty("http api: apply the edited spec")
            elif seen_at is not None and state.converges > seen_at:
                error = state.last.error if state.last is not None else None
                return error.splitlines()[0] if error else None
            elif seen_at is None and state.spec_error:
                return state.spec_error.splitlines()[0]
            await asyncio.sleep(0.05)
        return f"the edited spec was not applied within {APPLY_WAIT:.0f}s (see weaved status)"

    async def _leave(self) -> None:
        """Weave's `reset` (`DELETE /peer`): hand our space to a live peer; the daemon then
        stops for good, as `weaved reset` does (Weave's reset stopped its container)."""
        if self._daemon is not None:
            handler = self._daemon.control_routes()[("POST", "/shutdown")]
            await handler(Request("POST", "/shutdown", {}, {"leave": True}))
