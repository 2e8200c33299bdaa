"""A minimal HTTP/1.1 reader for Weave's API on TCP: one request per connection, query string
and form body merged as Go's `FormValue` does. Answers are `control.Response` (text or JSON).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass

MAX_BODY = 1 << 16
READ_TIMEOUT = 10.0


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    form: dict[str, str]
    accept: str = ""


async def read_request(reader: asyncio.StreamReader) -> HttpRequest:
    """ValueError on anything that is not a small well-formed request."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=READ_TIMEOUT)
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or "0")
    if length < 0 or length > MAX_BODY:
        raise ValueError("request body too large")
    body = await reader.readexactly(length) if length else b""
    path, _, query = target.partition("?")
    form = dict(urllib.parse.parse_qsl(query))
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form.update(urllib.parse.parse_qsl(body.decode("latin-1")))
    return HttpRequest(method, urllib.parse.unquote(path), form, headers.get("accept", ""))


def match(pattern: str, path: str) -> dict[str, str] | None:
    """`/ip/{id}/{ip}` against `/ip/c1/10.32.0.1` → {"id": "c1", "ip": "10.32.0.1"}."""
    want, got = pattern.strip("/").split("/"), path.strip("/").split("/")
    if len(want) != len(got):
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
