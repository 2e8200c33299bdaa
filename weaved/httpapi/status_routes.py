"""Weave's read-only routes (prog/weaver/http.go in 2.8.1): `/status`, `/status/<section>`,
`/report`, `/metrics` — served on the API port and on the status port (6782) alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from weaved.control import Request
from weaved.httpapi.gotemplate import render
from weaved.httpapi.http import JSON, HttpRequest, HttpResponse, Route, error
from weaved.mesh.status_text import go_json

SECTIONS = ("targets", "connections", "peers", "dns", "ipam")  # Weave's templates


def status_routes(
    status_text: Callable[[], str],
    control: Callable[[str], Callable[[Request], Awaitable[Any]] | None],
    ready: Callable[[], bool],
    metrics: Callable[[], str | None],
) -> list[Route]:
    """`control(path)`: the daemon's GET handler for `path` (None if no part serves it)."""

    async def report_data() -> Any:
        handler = control("/report")
        if handler is None:
            return {}
        return (await handler(Request("GET", "/report", {}, {}))).body

    async def report_json(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        return HttpResponse(200, go_json(await report_data()), JSON)

    async def report_format(r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        formats = r.query.get("format")
        if formats is None:  # weaved's addition: plain `GET /report` (Weave: 400) is the JSON
            return await report_json(r, _v)
        if len(formats) != 1:
            return error(400, "error: must supply one format parameter")
        try:
            return HttpResponse(200, render(formats[0], await report_data()))
        except ValueError as exc:
            return error(400, str(exc))

    def code() -> int:
        return 200 if ready() else 503  # Weave: 503 until ready, with the text all the same

    async def status(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        return HttpResponse(code(), status_text())

    def section(name: str) -> Route:
        async def handler(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
            found = control(f"/status/{name}")
            if found is None:  # that part is off (no weaveDNS): Weave's template fails on nil
                return HttpResponse(500 if ready() else 503, "error during template execution\n")
            answer = await found(Request("GET", f"/status/{name}", {}, {}))
            return HttpResponse(code(), str(answer.body))

        return Route("GET", f"/status/{name}", handler)

    async def metrics_text(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        text = metrics()
        if text is None:
            return HttpResponse(404, "404 page not found\n")
        return HttpResponse(200, text, "text/plain; version=0.0.4; charset=utf-8")

    return [
        Route("GET", "/report", report_json, accept="application/json"),
        Route("GET", "/report", report_format),
        Route("GET", "/status", status),
        *(section(name) for name in SECTIONS),
        Route("GET", "/metrics", metrics_text),
    ]
