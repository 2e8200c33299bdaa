"""The attach part's control-socket routes: `weaved attach`, `detach` and `ps` asking the
daemon, and `attach/wait`, which tells a waiting `weaved attach` what IPAM waits for."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import Protocol

from weaved.attach.cli import ps_text
from weaved.attach.model import Attachment
from weaved.attach.observe import observe_attachments, observe_bridge
from weaved.attach.ps import show_addrs
from weaved.attach.requests import AttachRequest, DetachRequest, PsRequest
from weaved.control import Handler, Request, Response
from weaved.ipam.errors import IpamError
from weaved.ipam.part import IpamPart, Wait
from weaved.part import Host


class Routed(Protocol):
    """What the routes see of the attach part."""

    ipam: IpamPart
    records: dict[str, Attachment]
    waits: dict[str, Wait]  # attach request id → its place in IPAM's queue
    also_ps: Callable[[], str]

    @property
    def docker_url(self) -> str: ...

    @property
    def host(self) -> Host: ...

    async def attach(
        self, request: AttachRequest, wait: Wait | None = None
    ) -> tuple[Attachment, list[ipaddress.IPv4Interface]]: ...

    async def detach(self, request: DetachRequest) -> list[ipaddress.IPv4Interface]: ...


def attach_routes(part: Routed) -> dict[tuple[str, str], Handler]:
    waits = part.waits

    async def do_attach(req: Request) -> Response:
        request = AttachRequest.from_json(req.body)
        rid = str(req.body.get("request_id") or "")
        wait = waits[rid] = Wait()
        given = req.body.get("timeout")
        timeout = None if given is None else float(given)
        task = asyncio.ensure_future(part.attach(request, wait))
        try:
            _, addresses = await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            why = part.ipam.wait_text(wait) or "still attaching"
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise IpamError(
                f"attach {request.target}: gave up after {timeout:g} s, {why}"
            ) from None
        finally:
            waits.pop(rid, None)
        return Response(200, {"text": show_addrs(addresses)})

    async def attach_wait(req: Request) -> Response:
        wait = waits.get(str(req.body.get("id", "")))
        return Response(200, {"text": part.ipam.wait_text(wait) if wait else None})

    async def do_detach(req: Request) -> Response:
        removed = await part.detach(DetachRequest.from_json(req.body))
        return Response(200, {"text": show_addrs(removed)})

    async def do_ps(req: Request) -> Response:
        url = part.docker_url
        known = list(part.records.values())
        request = PsRequest(tuple(str(t) for t in req.body.get("targets", [])))

        def listing() -> str:
            return ps_text(request, observe_attachments(url, known), observe_bridge(), url)

        text = await part.host.on_dataplane(lambda _dp: listing())
        if not request.targets:
            text += part.also_ps()  # the Docker plugin's containers (--net=weave)
        return Response(200, {"text": text})

    return {
        ("POST", "/attach"): do_attach,
        ("POST", "/attach/wait"): attach_wait,
        ("POST", "/detach"): do_detach,
        ("POST", "/ps"): do_ps,
    }
