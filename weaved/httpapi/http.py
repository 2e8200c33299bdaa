"""A minimal HTTP/1.1 server side for Weave's API on TCP: one request per connection, the form
read as Go's `ParseForm` reads it, routes matched as gorilla/mux 1.6.1 (Weave's router) does.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_BODY = 1 << 16
READ_TIMEOUT = 10.0
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
NOT_FOUND_TEXT = "404 page not found\n"  # Go's http.NotFound

_REASONS = {
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    form: dict[str, list[str]] = field(default_factory=dict)  # Go's r.Form: body, then query
    query: dict[str, list[str]] = field(default_factory=dict)  # Go's r.URL.Query()
    accept: str = ""
    raw_query: str = ""

    def value(self, key: str) -> str:
        """Go's `FormValue`: the first value, "" when absent."""
        values = self.form.get(key)
        return values[0] if values else ""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: str = ""
    content_type: str = TEXT
    location: str = ""

    def encode(self) -> bytes:
        payload = self.body.encode()
        head = f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Status')}\r\n"
        if self.location:
            head += f"Location: {self.location}\r\n"
        if self.status != 204:
            head += f"Content-Type: {self.content_type}\r\nContent-Length: {len(payload)}\r\n"
        return (head + "Connection: close\r\n\r\n").encode() + payload


def error(status: int, text: str) -> HttpResponse:
    """Go's `http.Error`: the text and a newline."""
    return HttpResponse(status, text + "\n")


def _parse(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        out.setdefault(key, []).append(value)
    return out


def parse_head(head: bytes, body: bytes = b"") -> HttpRequest:
    """The request line and headers (and the body, if any); ValueError when malformed."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = _headers(lines[1:])
    path, _, raw_query = target.partition("?")
    query = _parse(raw_query)
    form: dict[str, list[str]] = {}
    # Go reads a form body for POST, PUT and PATCH only; body values come first in r.Form.
    if method in ("POST", "PUT", "PATCH") and headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        form = _parse(body.decode("latin-1"))
    for key, values in query.items():
        form.setdefault(key, []).extend(values)
    return HttpRequest(
        method, urllib.parse.unquote(path), form, query, headers.get("accept", ""), raw_query
    )


def _headers(lines: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return headers


async def read_request(reader: asyncio.StreamReader) -> HttpRequest:
    """ValueError on anything that is not a small well-formed request."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=READ_TIMEOUT)
    headers = _headers(head.decode("latin-1").split("\r\n")[1:])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await asyncio.wait_for(_read_chunked(reader), READ_TIMEOUT)
    else:
        length = int(headers.get("content-length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("request body too large")
        body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT) if length else b""
    return parse_head(head.rstrip(b"\r\n"), body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body (trailers ignored), at most MAX_BODY bytes."""
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"x", 16)
        if size < 0 or len(body) + size > MAX_BODY:
            raise ValueError("request body too large")
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return body
        body += (await reader.readexactly(size + 2))[:size]


def match(pattern: str, path: str) -> dict[str, str] | None:
    """`/ip/{id}/{ip}` against `/ip/c1/10.32.0.1` → {"id": "c1", "ip": "10.32.0.1"}."""
    want, got = pattern.strip("/").split("/"), path.strip("/").split("/")
    if len(want) != len(got) or path.endswith("/") != pattern.endswith("/"):
        return None
    out: dict[str, str] = {}
    for w, g in zip(want, got, strict=True):
        if w.startswith("{") and w.endswith("}"):
            if not g:
                return None
            out[w[1:-1]] = g
        elif w != g:
            return None
    return out


def clean_path(path: str) -> str:
    """gorilla/mux's cleanPath: a path that differs is redirected there (301)."""
    if not path:
        return "/"
    if path[0] != "/":
        path = "/" + path
    cleaned = posixpath.normpath(path)
    cleaned = "/" + cleaned.lstrip("/")  # normpath keeps a leading "//"
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


async def _unless_gone(
    work: Coroutine[Any, Any, HttpResponse], reader: asyncio.StreamReader
) -> HttpResponse | None:
    """The answer, or None when the client hung up first: the work is cancelled then (a
    pending allocation is withdrawn, as Weave's request context cancels it)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(reader.read(1))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and gone.done() and (gone.exception() or gone.result() == b""):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            log.info("http api: client went away, request withdrawn")
            return None
        return await task
    finally:
        gone.cancel()


Handler = Callable[[HttpRequest, dict[str, str]], Awaitable[HttpResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Handler
    accept: str | None = None  # gorilla's Headers("Accept", …): an exact value


async def dispatch(routes: Sequence[Route], request: HttpRequest) -> HttpResponse:
    """gorilla/mux 1.6.1: the first route matching method, path and headers; 405 (empty) when
    some route matched all but the method; else Go's 404 text."""
    cleaned = clean_path(request.path)
    if cleaned != request.path:
        target = cleaned + (f"?{request.raw_query}" if request.raw_query else "")
        return HttpResponse(301, "", location=target)
    method_mismatch = False
    for route in routes:
        found = match(route.pattern, request.path)
        if found is None or (route.accept is not None and request.accept != route.accept):
            continue
        if route.method != request.method:
            method_mismatch = True
            continue
        return await route.handler(request, found)
    return HttpResponse(405) if method_mismatch else HttpResponse(404, NOT_FOUND_TEXT)


async def serve_connection(
    routes: Sequence[Route], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One request, one answer, then close (as Weave's clients use it)."""
    try:
        request = await read_request(reader)
        answer = await _unless_gone(dispatch(routes, request), reader)
        if answer is None:
            return
        writer.write(answer.encode())
        await writer.drain()
    except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        log.debug("http api connection dropped: %r", exc)
    except asyncio.LimitOverrunError:
        pass
    finally:
        writer.close()
