"""Weave's read-only routes (prog/weaver/http.go in 2.8.1): `/status`, `/status/<section>`,
`/report`, `/metrics` — served on the API port and on the status port (6782) alike."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from weaved.control import Request
from weaved.httpapi.http import JSON, HttpRequest, HttpResponse, Route, error
from weaved.mesh.status_text import go_json

SECTIONS = ("targets", "connections", "peers", "dns", "ipam")  # Weave's templates
_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)
_PATH = re.compile(r"^\.(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)?$")


def _go_value(value: Any) -> str:
    """How Go's templates print a value: strings bare, booleans lower case, nil as <nil>."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _lookup(data: Any, path: str) -> Any:
    for key in [k for k in path.split(".") if k]:
        if not isinstance(data, dict) or key not in data:
            raise KeyError(path)
        data = data[key]
    return data


def render_format(template: str, data: Any) -> str:
    """`GET /report?format=…`: the part of Go's text/template Weave's users use — field paths
    (`{{.Router.Name}}`) and `{{json .IPAM}}`; ValueError (400) for anything else."""
    out: list[str] = []
    last = 0
    for action in _ACTION.finditer(template):
        out.append(template[last : action.start()])
        last = action.end()
        words = action.group(1).split()
        if len(words) == 2 and words[0] == "json" and _PATH.match(words[1]):
            try:
                out.append(json.dumps(_lookup(data, words[1]), separators=(",", ":")))
            except KeyError:
                out.append("null")
        elif len(words) == 1 and _PATH.match(words[0]):
            try:
                out.append(_go_value(_lookup(data, words[0])))
            except KeyError:
                raise ValueError(f"template: format:1: can't evaluate field {words[0]}") from None
        else:
            raise ValueError(
                f"template: format:1: unsupported action {action.group(0)!r}"
                " (weaved serves field paths and json)"
            )
    out.append(template[last:])
    return "".join(out)


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
            return HttpResponse(200, render_format(formats[0], await report_data()))
        except ValueError as exc:
            return error(400, str(exc))

    def code() -> int:
        return 200 if ready() else 503  # Weave: 503 until ready, with the text all the same

    async def status(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
        return HttpResponse(code(), status_text())

    def section(name: str) -> Route:
        async def handler(_r: HttpRequest, _v: dict[str, str]) -> HttpResponse:
            found = control(f"/status/{name}")
            if found is None:  # that part is off (e.g. no weaveDNS): Weave's empty template
                return HttpResponse(code(), "")
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
