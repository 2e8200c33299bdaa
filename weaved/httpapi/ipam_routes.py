"""Weave's IPAM routes (ipam/http.go in 2.8.1): `/ip…`, `/ipinfo/…`, `/ring`, with its texts.
Weave's CNI plugin reads `POST /ip/<id>` as `ADDR/LEN`, so these forms are exact."""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Callable

from weaved.httpapi.alive import container_not_running
from weaved.httpapi.http import JSON, HttpRequest, HttpResponse, Route, error
from weaved.ipam.address import CIDR
from weaved.ipam.errors import CancelledError, IpamError
from weaved.ipam.part import IpamPart
from weaved.spec.models import Spec

log = logging.getLogger(__name__)

MIN_SUBNET_SIZE = 4
CANCELLED = HttpResponse(200, "cancelled")  # Weave answers a cancelled request with 200


def parse_ip(text: str) -> int:
    """Go's `address.ParseIP`, with its error text."""
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"invalid IP Address: {text}") from None


def parse_cidr(text: str) -> CIDR:
    """Go's `address.ParseCIDR` (host bits kept), with its error texts."""
    addr, sep, length = text.partition("/")
    if not sep or not length.isdigit() or int(length) > 32 or len(length) > 2:
        raise ValueError(f"invalid CIDR address: {text}")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"invalid CIDR address: {text}") from None
    if ip.version != 4:
        raise ValueError(f"invalid Non-IPv4 address not supported: {text}")
    return CIDR(int(ip), int(length))


def parse_subnet(text: str) -> CIDR:
    """Weave's `ParseCIDRSubnet` (the last complaint wins, as there)."""
    cidr = parse_cidr(text)
    problem = ""
    if not cidr.is_subnet:
        problem = f"invalid subnet - bits after network prefix are not all zero: {text}"
    if cidr.size < MIN_SUBNET_SIZE:
        problem = f"invalid subnet - smaller than minimum size {MIN_SUBNET_SIZE}: {text}"
    if problem:
        raise ValueError(problem)
    return cidr


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _bad(exc: BaseException, prefix: str = "") -> HttpResponse:
    log.warning("[allocator]: %s%s", prefix, _first_line(exc))
    return error(400, prefix + _first_line(exc))


def _addresses(cidrs: list[CIDR]) -> HttpResponse:
    return HttpResponse(200, " ".join(str(c) for c in cidrs))


def ipam_routes(ipam: IpamPart, spec: Callable[[], Spec]) -> list[Route]:
    """In Weave's registration order (it decides nothing here: the paths do not overlap)."""

    async def cancelled(r: HttpRequest, ident: str) -> bool:
        return r.value("check-alive") == "true" and await container_not_running(spec(), ident)

    async def default_subnet(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        return HttpResponse(200, str(ipam.default_subnet()))

    async def claim(r: HttpRequest, v: dict[str, str]) -> HttpResponse:
        try:
            cidr = parse_cidr(f"{v['ip']}/{v['prefixlen']}")
        except ValueError as exc:
            return _bad(exc)
        check_alive = r.value("check-alive") == "true"
        if await cancelled(r, v["id"]):
            return CANCELLED
        try:
            await ipam.claim(
                v["id"],
                cidr,
                is_container=check_alive,
                no_error_on_unknown=r.value("noErrorOnUnknown") == "true",
            )
        except CancelledError:
            return CANCELLED
        except IpamError as exc:
            return _bad(exc, "Unable to claim: ")
        return HttpResponse(204)

    async def ring(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        await ipam.prime()
        return HttpResponse(200)

    async def lookup_in(_r: HttpRequest, v: dict[str, str]) -> HttpResponse:
        try:
            subnet = parse_subnet(f"{v['ip']}/{v['prefixlen']}")
        except ValueError as exc:
            return _bad(exc)
        return _addresses(ipam.allocator.lookup(v["id"], subnet))

    async def lookup(_r: HttpRequest, v: dict[str, str]) -> HttpResponse:
        return _addresses(ipam.allocator.lookup(v["id"], ipam.default_subnet()))

    async def owned(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        listed = [
            {"containerid": ident, "addrs": [str(c) for c in cidrs]}
            for ident, cidrs in ipam.allocator.owned_addresses().items()
        ]
        body = json.dumps({"owned": listed or None}, separators=(",", ":"))
        return HttpResponse(200, body + "\n", JSON)  # Go's json.Encoder

    async def allocate(r: HttpRequest, ident: str, subnet: CIDR) -> HttpResponse:
        if await cancelled(r, ident):
            return CANCELLED
        try:
            got = await ipam.allocate(ident, subnet, is_container=r.value("check-alive") == "true")
        except CancelledError:
            return CANCELLED
        except IpamError as exc:
            return _bad(exc)
        return HttpResponse(200, f"{CIDR(got.addr, subnet.prefix_len)}")

    async def allocate_in(r: HttpRequest, v: dict[str, str]) -> HttpResponse:
        try:
            subnet = parse_subnet(f"{v['ip']}/{v['prefixlen']}")
        except ValueError as exc:
            return _bad(exc)
        return await allocate(r, v["id"], subnet)

    async def allocate_default(r: HttpRequest, v: dict[str, str]) -> HttpResponse:
        return await allocate(r, v["id"], ipam.default_subnet())

    async def free(_r: HttpRequest, v: dict[str, str]) -> HttpResponse:
        try:
            addr = parse_ip(v["ip"])
        except ValueError as exc:
            return _bad(exc)
        try:
            ipam.allocator.release_address(v["id"], addr, time.time())
        except IpamError as exc:
            return _bad(exc, "Unable to free: ")
        return HttpResponse(204)

    async def delete(_r: HttpRequest, v: dict[str, str]) -> HttpResponse:
        if not ipam.release(v["id"]):
            return _bad(ValueError(f"Delete: no addresses for {v['id']}"))
        return HttpResponse(204)

    async def tracker(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        return HttpResponse(200, "\n")  # weaved has no AWS VPC tracker (Weave: "" and a newline)

    return [
        Route("GET", "/ipinfo/defaultsubnet", default_subnet),
        Route("PUT", "/ip/{id}/{ip}/{prefixlen}", claim),
        Route("GET", "/ring", ring),
        Route("GET", "/ip/{id}/{ip}/{prefixlen}", lookup_in),
        Route("GET", "/ip/{id}", lookup),
        Route("GET", "/ip", owned),
        Route("POST", "/ip/{id}/{ip}/{prefixlen}", allocate_in),
        Route("POST", "/ip/{id}", allocate_default),
        Route("DELETE", "/ip/{id}/{ip}", free),
        Route("DELETE", "/ip/{id}", delete),
        Route("GET", "/ipinfo/tracker", tracker),
    ]
