"""weaveDNS inside the daemon: the `nameserver` channel from the start, the server on the
address containers are told to use as soon as that address exists on the bridge."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from weaved.compile.dns import uses_link_address
from weaved.control import Handler, Request, Response
from weaved.dns.server import DnsServer
from weaved.dns.service import DnsConfig, DnsService, split_listen
from weaved.errors import UsageError
from weaved.ipam.part import EXPOSE_IDENT, IpamPart
from weaved.mesh.part import MeshPart
from weaved.model.addresses import ipv4_interface
from weaved.part import Component, Host
from weaved.spec.models import DNS_LINK_ADDRESS, Spec

log = logging.getLogger(__name__)


def listen_address(spec: Spec, allocations: dict[int, str]) -> str | None:
    """The spec's dns.listen, else weaveDNS's link address on the bridge (port 53), which
    every attached container reaches whatever its subnet (see compile/dns.py)."""
    if spec.dns.listen:
        return spec.dns.listen
    return f"{DNS_LINK_ADDRESS}:53"


def nameserver(spec: Spec) -> str:
    """The address containers are told to use (resolv.conf, `dns-args`)."""
    if uses_link_address(spec) or not spec.dns.listen:
        return DNS_LINK_ADDRESS
    return spec.dns.listen.rsplit(":", 1)[0]


class DnsPart(Component):
    name = "dns"

    def __init__(self, spec: Spec, mesh: MeshPart, ipam: IpamPart | None) -> None:
        self.spec = spec
        self.ipam = ipam
        config = DnsConfig.from_spec(spec.dns, default_listen="127.0.0.1:53")
        self.service = DnsService(config, mesh.router.peer_view())
        self.service.join_mesh(mesh.router)
        self.listen: str | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.error: str | None = None
        self._exposed: set[tuple[str, str]] = set()  # (fqdn, ip) registered for `expose` entries
        # Container as the user names it → the identity records are kept under (attach sets it).
        self.container_key: Callable[[str], str] = lambda text: text

    async def start(self, daemon: Host) -> None:
        self._sweeper = asyncio.create_task(self.service.gossiper.sweep(), name="dns-sweep")

    async def stop(self) -> None:
        for task in (self._server_task, self._sweeper):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def spec_changed(self, spec: Spec) -> None:
        if spec.dns.upstream != self.spec.dns.upstream:
            self.service.upstreams.set_fixed(spec.dns.upstream)
            log.info("dns upstreams now %s", ", ".join(spec.dns.upstream) or "from resolv.conf")
        self.spec = spec

    def nameserver(self) -> str | None:
        """What containers are told to use, once the server listens (None before)."""
        return nameserver(self.spec) if self.listen else None

    def converge(self, spec: Spec) -> int:
        """After each kernel converge: (re)start the server where it should listen."""
        allocations = dict(self.ipam.facts_allocations()) if self.ipam else {}
        self._sync_exposed(spec, allocations)
        want = listen_address(spec, allocations)
        if want == self.listen and self._server_task is not None and not self._server_task.done():
            return 0
        if want is None:
            self.error = "no address to listen on: expose an address or set dns.listen"
            return 0
        if self._server_task is not None:
            self._server_task.cancel()
        self.listen = want
        self._server_task = asyncio.create_task(self._serve(want), name="dns-server")
        return 1

    async def _serve(self, listen: str) -> None:
        host, port = split_listen(listen)
        server = DnsServer(self.service.answerer, self.service.server.forwarder, host, port)
        self.service.server = server
        try:
            await server.start()
        except OSError as exc:
            self.error = f"cannot listen on {listen}: {exc.strerror}"
            log.error("dns server: %s", self.error)
            return
        self.error = None
        log.info("dns server listening on %s domain=%s", listen, self.spec.dns.domain)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    def _sync_exposed(self, spec: Spec, allocations: dict[int, str]) -> None:
        """The names of `expose` entries follow the spec: a new name is registered at
        once, one that went (hide, or a changed name) is removed; nothing else is re-sent."""
        wanted: set[tuple[str, str]] = set()
        for index, entry in enumerate(spec.expose):
            cidr = allocations.get(index) if entry.cidr.startswith("net:") else entry.cidr
            if cidr:
                ip = str(ipv4_interface(cidr).ip)  # remembered: every converge asks again
                wanted.update((name, ip) for name in entry.dns_names)
        for name, ip in sorted(self._exposed - wanted):
            self.service.dns_remove(EXPOSE_IDENT, [ip], name)
        for name, ip in sorted(wanted - self._exposed):
            self.service.dns_add(name, EXPOSE_IDENT, [ip])
        self._exposed = wanted

    # --- views and API ------------------------------------------------------------------
    def status_section(self) -> str:
        text = self.service.status_summary().strip("\n")
        if self.error:
            text += f"\n          Error: {self.error}"
        return text

    def report(self) -> tuple[str, Any]:
        return "DNS", self.service.report()

    def routes(self) -> dict[tuple[str, str], Handler]:
        async def status_dns(_r: Request) -> Response:
            return Response(200, self.service.status_dns())

        async def lookup(req: Request) -> Response:
            name = str(req.body.get("name", ""))
            if not name:
                raise UsageError("dns-lookup needs a name")
            return Response(200, {"text": await self.service.dns_lookup(name)})

        async def add(req: Request) -> Response:
            fqdn = str(req.body.get("fqdn", ""))
            cid = self.container_key(str(req.body.get("container", "")))
            addresses = [str(a) for a in req.body.get("addresses", [])]
            if not fqdn:  # Weave: the container's own name
                fqdn = f"{str(req.body.get('container', '')).lstrip('/')}.{self.spec.dns.domain}"
            added = self.service.dns_add(fqdn, cid, addresses)
            return Response(200, {"added": len(added)})

        async def remove(req: Request) -> Response:
            container = req.body.get("container")
            removed = self.service.dns_remove(
                self.container_key(str(container)) if container else None,
                [str(a) for a in req.body.get("addresses", [])],
                req.body.get("fqdn") or None,
            )
            return Response(200, {"removed": len(removed)})

        async def address(_r: Request) -> Response:
            return Response(200, {"listen": self.listen, "nameserver": self.nameserver()})

        return {
            ("GET", "/dns/address"): address,
            ("GET", "/status/dns"): status_dns,
            ("POST", "/dns/lookup"): lookup,
            ("POST", "/dns/add"): add,
            ("POST", "/dns/remove"): remove,
        }
