"""Weave's router and peer routes (router/http.go, prog/weaver/discovery.go in 2.8.1):
`/connect`, `/forget`, `/expose/<ip>/<len>`, `DELETE /peer[/<name>]`.

weaved is declarative, so `/connect`, `/forget` and `/expose` edit the spec file as `weaved
connect`/`forget`/`expose` do (comments kept) and the daemon converges to it: what a script
asked for survives a restart, and `weaved plan` shows it."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from weaved.errors import WeavedError
from weaved.httpapi.http import HttpRequest, HttpResponse, Route, error
from weaved.httpapi.ipam_routes import parse_cidr
from weaved.ipam.errors import IpamError
from weaved.ipam.part import IpamPart
from weaved.spec import edit
from weaved.spec.models import Spec

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 5.0
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def split_host_port(peer: str) -> tuple[str, str]:
    """Go's `net.SplitHostPort` as mesh's `InitiateConnections` uses it: no port → "0"."""
    if peer.startswith("["):
        host, sep, rest = peer[1:].partition("]")
        if sep and rest.startswith(":") and ":" not in rest[1:]:
            return host, rest[1:]
        return peer, "0"
    host, sep, port = peer.rpartition(":")
    if not sep or ":" in host:
        return peer, "0"
    return host, port


def _resolve(host: str, port: str) -> str | None:
    """Go's `net.ResolveTCPAddr` failure text, or None when the peer resolves."""
    try:
        socket.getaddrinfo(host, port if port != "0" else None, socket.AF_INET, socket.SOCK_STREAM)
    except UnicodeError:
        return f"lookup {host}: no such host"
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_SERVICE:
            return f"address tcp/{port}: unknown port"
        return f"lookup {host}: no such host"
    return None


async def check_peers(peers: Sequence[str]) -> tuple[list[str], list[str]]:
    """(valid peers, Weave's error lines) — mesh's checks: `host[:port]`, port alphanumeric,
    the name resolves."""
    valid: list[str] = []
    errors: list[str] = []
    for peer in peers:
        host, port = split_host_port(peer)
        if not host or not all(c.isalnum() for c in port):
            errors.append(f'invalid peer name "{peer}", should be host[:port]')
            continue
        try:
            problem = await asyncio.wait_for(
                asyncio.to_thread(_resolve, host, port), RESOLVE_TIMEOUT
            )
        except TimeoutError:
            problem = f"lookup {host}: i/o timeout"
        if problem:
            errors.append(problem)
        else:
            valid.append(peer)
    return valid, errors


def _parse_bool(text: str) -> bool:
    """Go's `strconv.ParseBool`, with its error text."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def router_routes(
    spec_path: Callable[[], Path | None],
    changed: Callable[[str], None],
    ipam: IpamPart,
    leave: Callable[[], Awaitable[None]],
    applied: Callable[[Callable[[Spec], bool]], Awaitable[str | None]],
) -> list[Route]:
    """`applied(wanted)`: waits until a spec for which `wanted` holds has been converged; None,
    or why not."""

    async def edit_spec(what: str, fn: Callable[[Path], object]) -> str | None:
        """The spec edited (then the daemon converges); the refusal's first line if refused."""
        path = spec_path()
        if path is None:
            return "no spec file to edit"
        try:
            await asyncio.to_thread(fn, path)
        except (WeavedError, OSError, ValueError) as exc:
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.info("http api: %s (spec edited)", what)
        changed(f"http api {what}")
        return None

    async def connect(r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        peers = r.form.get("peer", [])
        valid, errors = await check_peers(peers)
        replace = r.value("replace") == "true"
        if valid or replace:  # as Weave: the good ones are kept even when others are not
            refused = await edit_spec(
                f"connect {' '.join(valid)}", lambda p: edit.connect(p, valid, replace=replace)
            )
            if refused:
                errors.append(refused)
        return error(400, "\n".join(errors)) if errors else HttpResponse(200)

    async def forget(r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        peers = r.form.get("peer", [])
        if peers:
            refused = await edit_spec(f"forget {' '.join(peers)}", lambda p: edit.forget(p, peers))
            if refused:  # Weave's forget cannot fail; ours fails only on an unusable spec file
                log.warning("http api: forget refused: %s", refused)
        return HttpResponse(200)

    async def expose(r: HttpRequest, v: dict[str, str]) -> HttpResponse:
        try:
            cidr = parse_cidr(f"{v['ip']}/{v['prefixlen']}")
        except ValueError as exc:
            return error(400, f"unable to parse ip addr: {exc}")
        answer = HttpResponse(204)
        if r.value("skipNAT"):
            try:
                if _parse_bool(r.value("skipNAT")):
                    log.warning("http api: expose skipNAT=true: weaved applies its own NAT")
            except ValueError as exc:  # Weave answers 400 here and exposes all the same
                answer = error(400, f"unable to parse skipNAT option: {exc}")
        refused = await edit_spec(f"expose {cidr}", lambda p: edit.expose(p, [str(cidr)]))
        # Weave answers once the address is on the bridge (its CNI plugin routes via it next)
        refused = refused or await applied(lambda s: any(e.cidr == str(cidr) for e in s.expose))
        if refused:
            return error(500, f"unable to expose: {refused}")
        return answer

    async def reset(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        await leave()
        return HttpResponse(204)

    async def rmpeer(_r: HttpRequest, v: dict[str, str]) -> HttpResponse:
        """Weave's `AdminTakeoverRanges`: unknown names and ourselves take over nothing."""
        try:
            taken = ipam.allocator.rmpeer(v["id"], time.time())
        except IpamError as exc:
            log.warning("http api: rmpeer %s: %s", v["id"], str(exc).splitlines()[0])
            taken = 0
        return HttpResponse(200, f"{taken} IPs taken over from {v['id']}\n")

    return [
        Route("POST", "/connect", connect),
        Route("POST", "/forget", forget),
        Route("POST", "/expose/{ip}/{prefixlen}", expose),
        Route("DELETE", "/peer", reset),
        Route("DELETE", "/peer/{id}", rmpeer),
    ]
