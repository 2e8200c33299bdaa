"""Kernel settings weaved's features depend on, on stock namespaces (ip_forward 0): planned,
applied, drift-repaired and restored by reset — with real traffic through an export."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Netns, netns, stop_process, wait_for

SPEC = """\
version: 1
peer: {name: "3e:80:e7:5a:63:b1"}
expose:
  - cidr: 10.2.1.1/24
services:
  export:
    - {name: web, port: 8080, to: "10.2.1.21:80"}
"""

BARE = """\
version: 1
peer: {name: "3e:80:e7:5a:63:b1"}
"""


@pytest.fixture
def hosts() -> Iterator[tuple[Netns, Netns, Netns]]:
    """host A (weaved), host B (a client on the underlay), C (a container plugged into A's
    bridge by hand, serving HTTP on 10.2.1.21:80)."""
    with netns("wdk-a") as a, netns("wdk-b") as b, netns("wdk-c") as c:
        a.ip("link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", b.name)
        a.ip("addr", "add", "192.0.2.1/24", "dev", "ul0")
        a.ip("link", "set", "ul0", "up")
        b.ip("addr", "add", "192.0.2.2/24", "dev", "ul0")
        b.ip("link", "set", "ul0", "up")
        yield a, b, c


def sysctl(ns: Netns, name: str) -> str:
    return ns.run(["cat", "/proc/sys/" + name.replace(".", "/")]).stdout.strip()


def plan(ns: Netns, spec: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(ns.weaved(spec, "plan", "--json").stdout)
    return data


def changes(data: dict[str, object]) -> dict[str, dict[str, object]]:
    items = data["changes"]
    assert isinstance(items, list)
    return {c["key"]: c for c in items}


def plug_container(a: Netns, c: Netns) -> None:
    a.ip("link", "add", "vethwdk0", "type", "veth", "peer", "name", "eth0", "netns", c.name)
    a.ip("link", "set", "vethwdk0", "master", "weave", "up")
    c.ip("addr", "add", "10.2.1.21/24", "dev", "eth0")
    c.ip("link", "set", "eth0", "up")
    c.ip("route", "add", "default", "via", "10.2.1.1")


def reaches_host_loopback(a: Netns, c: Netns, tmp_path: Path) -> bool:
    """The attack: the container routes 127/8 to the host and sends a datagram to a service
    listening on the host's 127.0.0.1:9999 only. Did it arrive?"""
    received = tmp_path / "received"
    listener = subprocess.Popen(
        ["ip", "netns", "exec", a.name, "timeout", "5", "nc", "-u", "-l", "127.0.0.1", "9999"],
        stdout=received.open("w"), stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        for route in ("127.0.0.0/8", "127.0.0.1"):
            c.ip("route", "del", "local", route, "dev", "lo", "table", "local")
        c.run(["sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"])
        c.ip("route", "add", "127.0.0.0/8", "via", "10.2.1.1")
        time.sleep(0.5)  # the listener binds
        for _ in range(3):
            c.run(["sh", "-c", "echo secret | nc -u -w1 127.0.0.1 9999"], check=False)
        listener.wait(timeout=10)
    finally:
        stop_process(listener)  # type: ignore[arg-type]
    return "secret" in received.read_text()


def curl(ns: Netns, url: str) -> subprocess.CompletedProcess[str]:
    return ns.run(["curl", "-sS", "-m", "3", url], check=False, timeout=10)


def test_export_on_a_stock_host_forwards_serves_locally_and_reset_restores(
    hosts: tuple[Netns, Netns, Netns], tmp_path: Path
) -> None:
    a, b, c = hosts
    assert sysctl(a, "net.ipv4.ip_forward") == "0"
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)

    planned = changes(plan(a, spec))
    forward = planned["sysctl/net.ipv4.ip_forward"]
    assert forward["action"] == "~" and forward["before"] == {"value": "0"}
    assert forward["after"] == {"value": "1"}
    assert "sysctl/net.ipv4.conf.weave.route_localnet" in planned
    text = a.weaved(spec, "plan").stdout
    assert "~ sysctl/net.ipv4.ip_forward  value: 0 → 1" in text

    a.weaved(spec, "apply")
    assert sysctl(a, "net.ipv4.ip_forward") == "1"
    assert sysctl(a, "net.ipv4.conf.weave.route_localnet") == "1"
    assert a.weaved(spec, "plan", "--detailed-exitcode").returncode == 0
    originals = json.loads((tmp_path / "state" / "sysctl-originals.json").read_text())
    assert originals == {"net.ipv4.ip_forward": "0", "net.ipv4.conf.weave.route_localnet": "0"}

    plug_container(a, c)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello from c\n")
    server = subprocess.Popen(
        ["ip", "netns", "exec", c.name, sys.executable, "-m", "http.server", "80",
         "--bind", "10.2.1.21", "--directory", str(tmp_path / "www")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: curl(a, "http://10.2.1.21/").returncode == 0, timeout=10)
        assert curl(b, "http://192.0.2.1:8080/").stdout == "hello from c\n"  # forwarded
        assert curl(a, "http://127.0.0.1:8080/").stdout == "hello from c\n"  # local access
        # route_localnet must not open the host's loopback to containers (CVE-2020-8558): a
        # container routing 127/8 to the host cannot reach a service bound to 127.0.0.1 there
        # (the guard rule, and the input chain's drop of container traffic to the host).
        assert not reaches_host_loopback(a, c, tmp_path)

        # Drift: turned off by hand → planned and restored.
        a.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        drift = changes(plan(a, spec))
        assert drift["sysctl/net.ipv4.ip_forward"]["action"] == "~"
        a.weaved(spec, "apply")
        assert sysctl(a, "net.ipv4.ip_forward") == "1"
        assert curl(b, "http://192.0.2.1:8080/").stdout == "hello from c\n"
    finally:
        stop_process(server)  # type: ignore[arg-type]

    a.weaved(spec, "reset")
    assert sysctl(a, "net.ipv4.ip_forward") == "0"
    assert not (tmp_path / "state" / "sysctl-originals.json").exists()


def test_no_feature_no_setting_and_a_feature_removed_restores(
    hosts: tuple[Netns, Netns, Netns], tmp_path: Path
) -> None:
    a, _b, _c = hosts
    spec = tmp_path / "weave.yaml"
    spec.write_text(BARE)
    assert not any(k.startswith("sysctl/") for k in changes(plan(a, spec)))
    a.weaved(spec, "apply")
    assert sysctl(a, "net.ipv4.ip_forward") == "0"
    assert not (tmp_path / "state" / "sysctl-originals.json").exists()

    spec.write_text(SPEC)
    a.weaved(spec, "apply")
    assert sysctl(a, "net.ipv4.ip_forward") == "1"
    spec.write_text(BARE)  # no feature needs forwarding any more: the original comes back
    restore = changes(plan(a, spec))["sysctl/net.ipv4.ip_forward"]
    assert restore["action"] == "-"
    a.weaved(spec, "apply")
    assert sysctl(a, "net.ipv4.ip_forward") == "0"
    assert a.weaved(spec, "plan", "--detailed-exitcode").returncode == 0


def test_a_setting_already_on_is_not_taken_over(
    hosts: tuple[Netns, Netns, Netns], tmp_path: Path
) -> None:
    a, _b, _c = hosts
    a.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    assert "sysctl/net.ipv4.ip_forward" not in changes(plan(a, spec))
    a.weaved(spec, "apply")
    a.weaved(spec, "reset")
    assert sysctl(a, "net.ipv4.ip_forward") == "1"  # it was not weaved's to restore
