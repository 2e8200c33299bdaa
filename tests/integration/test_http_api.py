"""Weave's HTTP API on 127.0.0.1:6784 (`http_api.enabled`), served by `weaved daemon` in a
private namespace and called with curl as Weave's scripts and CNI plugin call it: text answers
and status codes as Weave 2.8.1's (see ../shared/weave-wire/outputs/*/ for recorded ones).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Netns, netns, stop_process, wait_for

SPEC = (
    'version: 1\npeer: {name: "3e:80:e7:5a:63:b8"}\nipalloc: {range: 10.32.0.0/12}\n'
    "http_api: {enabled: true}\n"
)


def curl(ns: Netns, method: str, path: str, *extra: str) -> tuple[int, str]:
    proc = ns.run(
        [
            "curl",
            "-s",
            "-X",
            method,
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            *extra,
            f"http://127.0.0.1:6784{path}",
        ],
        check=False,
    )
    body, _, code = proc.stdout.rpartition("\n")
    return int(code or 0), body


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Netns]:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    with netns() as ns:
        ns.ip("link", "set", "lo", "up")
        proc = ns.popen_weaved(spec, "daemon", "--resync", "2", log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: curl(ns, "GET", "/status")[0] == 200, timeout=30, interval=0.2)
            yield ns
        finally:
            assert stop_process(proc) == 0, (tmp_path / "daemon.log").read_text()


def test_status_report_and_sections(api: Netns) -> None:
    code, body = curl(api, "GET", "/status")
    assert code == 200 and "Service: router" in body
    for section in ("peers", "connections", "targets", "dns", "ipam"):
        assert curl(api, "GET", f"/status/{section}")[0] == 200, section
    code, body = curl(api, "GET", "/report")
    assert code == 200 and "Router" in json.loads(body)
    assert curl(api, "GET", "/ipinfo/defaultsubnet") == (200, "10.32.0.0/12")
    assert curl(api, "GET", "/nonsense")[0] == 404
    code, body = curl(api, "GET", "/metrics")
    assert code == 200 and "weaved_spec_valid 1" in body
    # Weave's status port serves the read-only part too.
    for path in ("/status/ipam", "/status/peers"):
        code, body = curl(api, "GET", path, "--connect-to", "127.0.0.1:6784:127.0.0.1:6782")
        assert code == 200 and curl(api, "GET", path)[1] == body, path
    code, body = curl(api, "GET", "/report", "--connect-to", "::127.0.0.1:6782")
    assert code == 200 and "Router" in json.loads(body)
    assert curl(api, "PUT", "/ip/x/10.32.0.9/12", "--connect-to", "::127.0.0.1:6782")[0] == 404
    code, body = curl(api, "DELETE", "/peer/02:00:00:00:00:99")
    assert code in (200, 400), body


def test_ip_allocate_lookup_claim_free_as_weaves_cni_plugin_does(api: Netns) -> None:
    code, first = curl(api, "POST", "/ip/c1")
    assert code == 200 and first.startswith("10.") and first.endswith("/12")
    assert curl(api, "POST", "/ip/c1") == (200, first)  # the same ident: the same address
    assert curl(api, "GET", "/ip/c1") == (200, first)
    code, sub = curl(api, "POST", "/ip/c2/10.32.5.0/24")
    assert code == 200 and sub.startswith("10.32.5.") and sub.endswith("/24")
    assert curl(api, "PUT", "/ip/c3/10.32.9.9/12")[0] == 204
    code, body = curl(api, "PUT", "/ip/c4/10.32.9.9/12")
    assert code == 400 and body.startswith("Unable to claim:")
    owned = json.loads(curl(api, "GET", "/ip")[1])["owned"]
    assert {o["containerid"] for o in owned} >= {"c1", "c2", "c3"}
    assert curl(api, "DELETE", "/ip/c3/10.32.9.9")[0] == 204
    code, body = curl(api, "DELETE", "/ip/c3/10.32.9.9")
    assert code == 400 and body.startswith("Unable to free:")
    assert curl(api, "DELETE", "/ip/c1")[0] == 204
    assert curl(api, "GET", "/ip/c1") == (200, "")
    assert curl(api, "POST", "/ip/c5/not-an-ip/24")[0] == 400


def test_names_put_and_delete(api: Netns) -> None:
    assert curl(api, "GET", "/domain") == (200, "weave.local.")
    assert curl(api, "PUT", "/name/c9/10.32.0.9", "-d", "fqdn=web.weave.local")[0] == 204
    status = curl(api, "GET", "/status/dns")[1]
    assert "web" in status and "10.32.0.9" in status, status
    assert curl(api, "DELETE", "/name/c9/10.32.0.9", "-d", "fqdn=web.weave.local")[0] == 204
    assert "10.32.0.9" not in curl(api, "GET", "/status/dns")[1]


def test_delete_peer_leaves_the_network_as_weave_reset(tmp_path: Path) -> None:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    with netns() as ns:
        ns.ip("link", "set", "lo", "up")
        proc = ns.popen_weaved(spec, "daemon", log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: curl(ns, "GET", "/status")[0] == 200, timeout=30, interval=0.2)
            assert curl(ns, "DELETE", "/peer")[0] == 204
            wait_for(lambda: proc.poll() is not None, timeout=20, interval=0.2)
            assert proc.returncode == 3  # EXIT_LEFT: systemd does not bring it back
        finally:
            stop_process(proc)
