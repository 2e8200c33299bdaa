"""Weave's weaveDNS routes (nameserver/http.go in 2.8.1): `/domain`, `/name…`, `/dns-address…`.
Registered only when weaveDNS runs, as Weave registers them only without `--no-dns`."""

from __future__ import annotations

from collections.abc import Callable

from weaved.dns.part import DnsPart
from weaved.httpapi.alive import container_not_running
from weaved.httpapi.http import JSON, HttpRequest, HttpResponse, Route, error
from weaved.httpapi.ipam_routes import parse_ip
from weaved.spec.models import Spec


def dns_routes(dns: DnsPart, spec: Callable[[], Spec]) -> list[Route]:
    async def domain(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        return HttpResponse(200, dns.service.config.domain)

    async def put_name(r: HttpRequest, v: dict[str, str]) -> HttpResponse:
        try:
            parse_ip(v["ip"])
        except ValueError as exc:
            return error(400, str(exc))
        fqdn, container = r.value("fqdn"), v["container"]
        dns.service.dns_add(fqdn, container, [v["ip"]])
        if r.value("check-alive") == "true" and await container_not_running(spec(), container):
            dns.service.dns_remove(container, [v["ip"]], fqdn or None)
        return HttpResponse(204)

    async def delete_names(r: HttpRequest, v: dict[str, str]) -> HttpResponse:
        """`*` for what is not given; `fqdn` only from the query (Go reads no DELETE body)."""
        if "ip" in v:
            try:
                parse_ip(v["ip"])
            except ValueError as exc:
                return error(400, str(exc))
        dns.service.dns_remove(
            v.get("container"), [v["ip"]] if "ip" in v else (), r.value("fqdn") or None
        )
        return HttpResponse(204)

    async def names(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        return HttpResponse(200, dns.service.name_json(), JSON)

    def listen() -> str:
        return dns.listen or dns.service.config.listen

    async def address_port(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        return HttpResponse(200, listen())

    async def address(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        """The address containers are told to use (`weave run`'s --dns)."""
        return HttpResponse(200, dns.nameserver() or listen().rsplit(":", 1)[0])

    return [
        Route("GET", "/domain", domain),
        Route("PUT", "/name/{container}/{ip}", put_name),
        Route("DELETE", "/name/{container}/{ip}", delete_names),
        Route("DELETE", "/name/{container}", delete_names),
        Route("DELETE", "/name", delete_names),
        Route("GET", "/name", names, accept="application/json"),
        Route("GET", "/dns-address-port", address_port),
        Route("GET", "/dns-address", address),
    ]
