"""Weave's HTTP API, pure parts: gorilla/mux's routing answers, Go's form rules, Go's parse
error texts (what Weave's scripts and CNI plugin see)."""

from __future__ import annotations

import asyncio

import pytest

from weaved.httpapi.gotemplate import render as render_format
from weaved.httpapi.http import (
    HttpRequest,
    HttpResponse,
    Route,
    clean_path,
    dispatch,
    parse_head,
    read_request,
)
from weaved.httpapi.ipam_routes import parse_cidr, parse_ip, parse_subnet
from weaved.httpapi.router_routes import _parse_bool, split_host_port


async def _ok(_r: HttpRequest, v: dict[str, str]) -> HttpResponse:
    return HttpResponse(200, repr(sorted(v.items())))


ROUTES = [
    Route("DELETE", "/name", _ok),
    Route("GET", "/name", _ok, accept="application/json"),
    Route("GET", "/ip/{id}", _ok),
    Route("POST", "/ip/{id}/{ip}/{prefixlen}", _ok),
]


def answer(method: str, path: str, accept: str = "") -> HttpResponse:
    return asyncio.run(dispatch(ROUTES, HttpRequest(method, path, accept=accept)))


def test_routing_answers_as_gorilla_mux() -> None:
    assert answer("GET", "/ip/c1") == HttpResponse(200, "[('id', 'c1')]")
    assert answer("POST", "/ip/c1/10.32.0.0/24").body == (
        "[('id', 'c1'), ('ip', '10.32.0.0'), ('prefixlen', '24')]"
    )
    assert answer("GET", "/nonsense") == HttpResponse(404, "404 page not found\n")
    assert answer("PUT", "/ip/c1") == HttpResponse(405)  # known path, other method: empty 405
    # GET /name wants `Accept: application/json`; without it only DELETE's path matches: 405
    assert answer("GET", "/name", "application/json").status == 200
    assert answer("GET", "/name") == HttpResponse(405)
    assert answer("GET", "/ip/c1/") == HttpResponse(404, "404 page not found\n")
    moved = answer("GET", "/ip/../ip/c1")
    assert (moved.status, moved.location) == (301, "/ip/c1")


def test_clean_path_as_gorilla() -> None:
    assert clean_path("/status/") == "/status/"
    assert clean_path("//status") == "/status"
    assert clean_path("/a/./b/../c") == "/a/c"
    assert clean_path("") == "/"


def test_form_as_go_parse_form() -> None:
    form = b"peer=192.0.2.1&peer=host2%3A6783&replace=true"
    head = (
        b"POST /connect?peer=q HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Accept: application/json"
    )
    request = parse_head(head, form)
    assert request.form["peer"] == ["192.0.2.1", "host2:6783", "q"]  # body first, then query
    assert request.value("replace") == "true" and request.value("absent") == ""
    assert request.query == {"peer": ["q"]} and request.accept == "application/json"
    # Go reads no form body for DELETE: only the query counts
    deleted = parse_head(
        b"DELETE /name/c1 HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
        b"fqdn=a.weave.local",
    )
    assert deleted.value("fqdn") == ""
    with pytest.raises(ValueError):
        parse_head(b"GARBAGE")


def test_204_has_no_body_headers_and_errors_end_in_a_newline() -> None:
    assert b"Content-Length" not in HttpResponse(204).encode()
    assert HttpResponse(200, "10.32.0.1/12").encode().endswith(b"\r\n\r\n10.32.0.1/12")


def test_parse_texts_are_gos() -> None:
    assert parse_ip("10.32.0.1") == 0x0A200001
    with pytest.raises(ValueError, match=r"^invalid IP Address: nope$"):
        parse_ip("nope")
    assert str(parse_cidr("10.32.0.9/12")) == "10.32.0.9/12"  # host bits kept
    for bad in ("10.32.0.9", "10.32.0.9/33", "x/12", "10.32.0.9/-1"):
        with pytest.raises(ValueError, match=r"^invalid CIDR address: "):
            parse_cidr(bad)
    with pytest.raises(ValueError, match=r"not all zero: 10\.32\.0\.9/12$"):
        parse_subnet("10.32.0.9/12")
    with pytest.raises(ValueError, match=r"smaller than minimum size 4: 10\.32\.0\.0/31$"):
        parse_subnet("10.32.0.0/31")


def test_peer_and_bool_forms_as_mesh_and_strconv() -> None:
    assert split_host_port("192.0.2.1:6783") == ("192.0.2.1", "6783")
    assert split_host_port("host2") == ("host2", "0")
    assert split_host_port("[::1]:6783") == ("::1", "6783")
    assert split_host_port("a:b:c") == ("a:b:c", "0")
    assert _parse_bool("True") is True and _parse_bool("0") is False
    with pytest.raises(ValueError, match=r'^strconv.ParseBool: parsing "yes": invalid syntax$'):
        _parse_bool("yes")


def test_report_format_templates() -> None:
    data = {"Router": {"Name": "3e:80:e7:5a:63:a7", "Encryption": False}, "IPAM": {"Range": "r"}}
    assert render_format("{{.Router.Name}} {{.Router.Encryption}}", data) == (
        "3e:80:e7:5a:63:a7 false"
    )
    assert render_format("{{json .IPAM}}", data) == '{"Range":"r"}'
    with pytest.raises(ValueError, match="can't evaluate field"):
        render_format("{{.Router.Nope}}", data)
    with pytest.raises(ValueError, match="unsupported action"):
        render_format("{{printf .Router}}", data)
    entries = {"DNS": {"Entries": [{"Hostname": "a."}, {"Hostname": "b."}], "None": None}}
    assert render_format("{{range .DNS.Entries}}{{.Hostname}} {{end}}", entries) == "a. b. "
    assert render_format("{{ if .DNS.None }}x{{ else }}y{{ end }}", entries) == "y"
    assert render_format("{{range .DNS.None}}x{{else}}none{{end}}", entries) == "none"
    assert render_format("a  {{- .DNS.None -}}  b", entries) == "a<nil>b"
    assert render_format("{{range .DNS.Entries}}{{json .}}{{end}}", entries) == (
        '{"Hostname":"a."}{"Hostname":"b."}'
    )
    for broken in ("{{range .DNS}}", "{{end}}", "{{if .DNS}}{{else}}"):
        with pytest.raises(ValueError, match="template: format:1"):
            render_format(broken, entries)


def test_bodies_by_length_and_chunked() -> None:
    async def read(raw: bytes) -> HttpRequest:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_request(reader)

    form = "Content-Type: application/x-www-form-urlencoded\r\n"
    plain = f"POST /connect HTTP/1.1\r\n{form}Content-Length: 11\r\n\r\npeer=host2x"
    assert asyncio.run(read(plain.encode())).form == {"peer": ["host2x"]}
    chunked = (
        f"POST /connect HTTP/1.1\r\n{form}Transfer-Encoding: chunked\r\n\r\n"
        "5\r\npeer=\r\n5;x=y\r\nhost2\r\n0\r\n\r\n"
    )
    assert asyncio.run(read(chunked.encode())).form == {"peer": ["host2"]}
    too_big = f"POST /x HTTP/1.1\r\nContent-Length: {1 << 20}\r\n\r\n"
    with pytest.raises(ValueError, match="too large"):
        asyncio.run(read(too_big.encode()))
