"""Weave's HTTP API between two lab hosts, as Weave's scripts drive it: `POST /connect` makes
the mesh, `POST /expose` gives each host an overlay address that the other pings, `POST /ip`
allocates from the shared ring, and `DELETE /peer/<name>` takes a stopped host's space over."""

from __future__ import annotations

import re

from tests.e2e.conftest import LabFactory
from tests.helpers import wait_for
from weaved.lab.lab import Lab, host_address, peer_name


def spec(index: int) -> str:
    seeds = ", ".join(f'"{peer_name(i)}"' for i in (1, 2))
    return (
        "version: 1\n"
        f'peer: {{name: "{peer_name(index)}", nickname: host{index}}}\n'
        f"ipalloc: {{range: 10.32.0.0/12, init: {{mode: seed, seeds: [{seeds}]}}}}\n"
        "http_api: {enabled: true}\n"
    )


def call(lab: Lab, host: str, method: str, path: str, *extra: str) -> tuple[int, str]:
    argv = ["curl", "-s", "-g", "-X", method, "-w", "\n%{http_code}", *extra]
    out = lab.exec(host, [*argv, f"http://127.0.0.1:6784{path}"], capture=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


def test_connect_expose_allocate_and_rmpeer_over_http(lab_factory: LabFactory) -> None:
    lab = lab_factory("htapi", {1: spec(1), 2: spec(2)})
    assert call(lab, "host1", "POST", "/connect", "-d", f"peer={host_address(2)}") == (200, "")

    def established() -> bool:
        return "established" in call(lab, "host1", "GET", "/status/connections")[1]

    wait_for(established, timeout=30, interval=0.5)
    for host, address in (("host1", "10.32.0.201"), ("host2", "10.40.0.201")):
        assert call(lab, host, "POST", f"/expose/{address}/12") == (204, "")
    for host, other in (("host1", "10.40.0.201"), ("host2", "10.32.0.201")):
        ping = lab.exec(host, ["ping", "-c", "2", "-W", "2", other], capture=True)
        assert ping.returncode == 0, (host, ping.stdout)
    code, two = call(lab, "host2", "POST", "/ip/c2")
    assert code == 200 and re.fullmatch(r"10\.\d+\.\d+\.\d+/12", two), two
    assert lab.stop_host("host2")
    code, text = call(lab, "host1", "DELETE", f"/peer/{peer_name(2)}")
    taken = re.fullmatch(rf"(\d+) IPs taken over from {peer_name(2)}\n", text)
    assert code == 200 and taken is not None and int(taken.group(1)) > 0, text
    assert call(lab, "host1", "DELETE", f"/peer/{peer_name(2)}") == (
        200,
        f"0 IPs taken over from {peer_name(2)}\n",
    )
