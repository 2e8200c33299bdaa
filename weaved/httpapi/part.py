"""Weave's HTTP API on 127.0.0.1:6784 (`http_api`, off by default): what scripts, monitoring
and Weave's own CNI plugin call on Weave's router, with Weave 2.8.1's text forms and status
codes. Any local user can reach it (as with Weave), hence opt-in.

Served: GET /status, /status/<section>, /report, /ip, /ip/<id>[/<ip>/<len>], /ipinfo/defaultsubnet,
/domain, /dns-address, /metrics; POST /ip/<id>[/<ip>/<len>]; PUT /ip/<id>/<ip>/<len>; DELETE
/ip/<id>[/<ip>]; PUT /name/<id>/<ip>; DELETE /name[/<id>[/<ip>]]; DELETE /peer/<name> (rmpeer),
DELETE /peer (reset). Not served: /connect, /forget, /expose (targets and exposed addresses
come from the spec).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable

from weaved.control import Request, Response
from weaved.dns.part import DnsPart
from weaved.errors import WeavedError
from weaved.httpapi.http import HttpRequest, match, read_request
from weaved.ipam.address import CIDR
from weaved.ipam.errors import CancelledError, IpamError
from weaved.ipam.part import IpamPart
from weaved.metrics.part import MetricsPart
from weaved.metrics.text import render_metrics
from weaved.part import Component, Host
from weaved.spec.models import DNS_LINK_ADDRESS, Spec

log = logging.getLogger(__name__)

Route = Callable[[HttpRequest, dict[str, str]], Awaitable[Response]]


def _bad(text: str) -> Response:
    return Response(400, text + "\n")  # Go's http.Error adds the newline


def _cidr(text: str, subnet: bool) -> CIDR:
    return CIDR.parse_subnet(text) if subnet else CIDR.parse(text)


class HttpApiPart(Component):
    name = "http-api"

    def __init__(self, spec: Spec, ipam: IpamPart, dns: DnsPart | None) -> None:
        self.spec = spec
        self.ipam = ipam
        self.dns = dns
        self._daemon: Host | None = None
        self._server: asyncio.AbstractServer | None = None
        self._table: list[tuple[str, str, Route]] = [
            ("GET", "/status", self._status),
            ("GET", "/status/{section}", self._status_section),
            ("GET", "/report", self._report),
            ("GET", "/ip", self._ip_all),
            ("GET", "/ip/{id}", self._ip_lookup),
            ("GET", "/ip/{id}/{ip}/{len}", self._ip_lookup),
            ("POST", "/ip/{id}", self._ip_allocate),
            ("POST", "/ip/{id}/{ip}/{len}", self._ip_allocate),
            ("PUT", "/ip/{id}/{ip}/{len}", self._ip_claim),
            ("DELETE", "/ip/{id}", self._ip_delete),
            ("DELETE", "/ip/{id}/{ip}", self._ip_free),
            ("GET", "/ipinfo/defaultsubnet", self._default_subnet),
            ("GET", "/domain", self._domain),
            ("GET", "/dns-address", self._dns_address),
            ("PUT", "/name/{container}/{ip}", self._name_put),
            ("DELETE", "/name/{container}/{ip}", self._name_delete),
            ("DELETE", "/name/{container}", self._name_delete),
            ("DELETE", "/name", self._name_delete),
            ("DELETE", "/peer/{name}", self._rmpeer),
            ("DELETE", "/peer", self._leave),
            ("GET", "/metrics", self._metrics),
        ]
        self.metrics: MetricsPart | None = None  # /metrics as on the status port

    async def start(self, daemon: Host) -> None:
        self._daemon = daemon
        if not self.spec.http_api.enabled:
            return
        host, port = self.spec.http_api.listen.rsplit(":", 1)
        self._server = await asyncio.start_server(self._serve, host, int(port))
        log.info("weave http api listening address=%s", self.spec.http_api.listen)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def spec_changed(self, spec: Spec) -> None:
        if spec.http_api != self.spec.http_api and self._daemon is not None:
            log.warning("http_api changes take effect when the daemon restarts")
            spec = spec.model_copy(update={"http_api": self.spec.http_api})
        self.spec = spec

    async def read_only(self, path: str) -> Response | None:
        """The status port's share of this API (GET /status/<section>, /report); None else."""
        if not (path.startswith("/status/") or path == "/report"):
            return None
        return await self.answer(HttpRequest("GET", path, {}))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
            writer.write((await self.answer(request)).encode())
            await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            log.debug("http api connection dropped: %r", exc)
        except asyncio.LimitOverrunError:
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def answer(self, request: HttpRequest) -> Response:
        allowed = False
        for method, pattern, route in self._table:
            found = match(pattern, request.path)
            if found is None:
                continue
            allowed = True
            if method == request.method:
                try:
                    return await route(request, found)
                except (ValueError, IpamError) as exc:
                    return _bad(str(exc).splitlines()[0])
        return Response(405 if allowed else 404, "404 page not found\n" if not allowed else "")

    # --- status and report ----------------------------------------------------------------
    async def _status(self, _r: HttpRequest, _v: dict[str, str]) -> Response:
        assert self._daemon is not None
        return Response(200, self._daemon.status_text())

    async def _status_section(self, _r: HttpRequest, v: dict[str, str]) -> Response:
        assert self._daemon is not None
        handler = self._daemon.control_routes().get(("GET", f"/status/{v['section']}"))
        if handler is None:
            return Response(404, "404 page not found\n")
        return await handler(Request("GET", f"/status/{v['section']}", {}, {}))

    async def _report(self, r: HttpRequest, _v: dict[str, str]) -> Response:
        assert self._daemon is not None
        handler = self._daemon.control_routes()[("GET", "/report")]
        report = await handler(Request("GET", "/report", {}, {}))
        return Response(200, json.dumps(report.body, indent=4) + "\n")

    async def _metrics(self, _r: HttpRequest, _v: dict[str, str]) -> Response:
        if self.metrics is None:
            return Response(404, "404 page not found\n")
        return Response(200, render_metrics(self.metrics.registry.collect()))

    async def _rmpeer(self, _r: HttpRequest, v: dict[str, str]) -> Response:
        """Weave's `rmpeer`: take over a dead peer's ranges; "N IPs taken over from NAME"."""
        assert self._daemon is not None
        handler = self._daemon.control_routes()[("POST", "/ipam/rmpeer")]
        try:
            answer = await handler(Request("POST", "/ipam/rmpeer", {}, {"peer": v["name"]}))
        except WeavedError as exc:
            return _bad(str(exc).splitlines()[0])
        return Response(200, str(answer.body["text"]))

    async def _leave(self, _r: HttpRequest, _v: dict[str, str]) -> Response:
        """Weave's `reset`: hand our space to a live peer; the daemon then stops for good, as
        `weaved reset` does (Weave's reset stopped its container right after)."""
        assert self._daemon is not None
        handler = self._daemon.control_routes()[("POST", "/shutdown")]
        await handler(Request("POST", "/shutdown", {}, {"leave": True}))
        return Response(204, "")

    # --- IPAM -----------------------------------------------------------------------------
    def _default(self) -> CIDR:
        return self.ipam.default_subnet()

    async def _ip_all(self, _r: HttpRequest, _v: dict[str, str]) -> Response:
        owned = self.ipam.allocator.owned_addresses()
        return Response(
            200,
            {
                "owned": [
                    {"containerid": ident, "addrs": [str(c) for c in cidrs]}
                    for ident, cidrs in owned.items()
                ]
                or None
            },
        )

    async def _ip_lookup(self, _r: HttpRequest, v: dict[str, str]) -> Response:
        subnet = _cidr(f"{v['ip']}/{v['len']}", True) if "ip" in v else self._default()
        cidrs = self.ipam.allocator.lookup(v["id"], subnet)
        return Response(200, " ".join(str(c) for c in cidrs))

    async def _ip_allocate(self, _r: HttpRequest, v: dict[str, str]) -> Response:
        subnet = _cidr(f"{v['ip']}/{v['len']}", True) if "ip" in v else self._default()
        try:
            got = await self.ipam.allocate(v["id"], subnet)
        except CancelledError:
            return Response(200, "cancelled")
        return Response(200, f"{CIDR(got.addr, subnet.prefix_len)}")

    async def _ip_claim(self, r: HttpRequest, v: dict[str, str]) -> Response:
        cidr = _cidr(f"{v['ip']}/{v['len']}", False)
        try:
            await self.ipam.claim(
                v["id"], cidr, no_error_on_unknown=r.form.get("noErrorOnUnknown") == "true"
            )
        except CancelledError:
            return Response(200, "cancelled")
        except IpamError as exc:
            return _bad(f"Unable to claim: {str(exc).splitlines()[0]}")
        return Response(204, "")

    async def _ip_delete(self, _r: HttpRequest, v: dict[str, str]) -> Response:
        self.ipam.release(v["id"])
        return Response(204, "")

    async def _ip_free(self, _r: HttpRequest, v: dict[str, str]) -> Response:
        addr = int(ipaddress.IPv4Address(v["ip"]))
        try:
            self.ipam.allocator.release_address(v["id"], addr, time.time())
        except IpamError as exc:
            return _bad(f"Unable to free: {str(exc).splitlines()[0]}")
        return Response(204, "")

    async def _default_subnet(self, _r: HttpRequest, _v: dict[str, str]) -> Response:
        return Response(200, str(self._default()))

    # --- weaveDNS -------------------------------------------------------------------------
    async def _domain(self, _r: HttpRequest, _v: dict[str, str]) -> Response:
        return Response(200, self.spec.dns.domain if self.dns is not None else "")

    async def _dns_address(self, _r: HttpRequest, _v: dict[str, str]) -> Response:
        return Response(200, DNS_LINK_ADDRESS if self.dns is not None else "")

    async def _name_put(self, r: HttpRequest, v: dict[str, str]) -> Response:
        ipaddress.IPv4Address(v["ip"])
        if self.dns is not None:
            self.dns.service.dns_add(r.form.get("fqdn", ""), v["container"], [v["ip"]])
        return Response(204, "")

    async def _name_delete(self, r: HttpRequest, v: dict[str, str]) -> Response:
        if "ip" in v:
            ipaddress.IPv4Address(v["ip"])
        if self.dns is not None:
            self.dns.service.dns_remove(
                v.get("container"), [v["ip"]] if "ip" in v else (), r.form.get("fqdn") or None
            )
        return Response(204, "")
