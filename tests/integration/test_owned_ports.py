"""Bridge ports as owned objects, against one daemon in a private namespace: sleeve's TAP stays
an isolated port (planned, repaired), containers' host-side veths come back after the bridge
or the veth itself is deleted, and reset removes what the records prove ours, nothing else."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Netns, netns, sh, stop_process, wait_for
from weaved.attach.target import netns_target

pytestmark = pytest.mark.timeout(180)

SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:c3"}\nexpose: [{cidr: 10.2.1.1/24}]\n'


def start(ns: Netns, spec: Path, resync: str) -> subprocess.Popen[bytes]:
    proc = ns.popen_weaved(spec, "daemon", "--resync", resync, log=spec.parent / "daemon.log")
    wait_for(lambda: (spec.parent / "weaved.sock").exists(), timeout=20)
    wait_for(lambda: "converged at" in ns.weaved(spec, "status", check=False).stdout, timeout=20)
    return proc


@pytest.fixture
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Netns, Path]]:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    with netns("wdk-h") as ns:
        proc = start(ns, spec, getattr(request, "param", "2"))
        try:
            yield ns, spec
        finally:
            stop_process(proc)


def port(ns: Netns, ifname: str) -> dict[str, object]:
    proc = ns.run(["bridge", "-d", "-j", "link", "show", "dev", ifname], check=False)
    data = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    return data[0] if data else {}


def plan_changes(ns: Netns, spec: Path) -> dict[str, dict[str, object]]:
    data = json.loads(ns.weaved(spec, "plan", "--json").stdout)
    return {c["key"]: c for c in data["changes"]}


def pings(ns: Netns, addr: str) -> bool:
    return ns.run(["ping", "-c1", "-W1", addr], check=False, timeout=10).returncode == 0


@pytest.mark.parametrize("daemon", ["600"], indirect=True)  # repaired by `apply` only
def test_sleeve_tap_is_an_isolated_port_planned_and_repaired(daemon: tuple[Netns, Path]) -> None:
    ns, spec = daemon
    wait_for(lambda: port(ns, "vethwe-tap").get("master") == "weave", timeout=10)
    assert port(ns, "vethwe-tap").get("isolated") is True
    assert port(ns, "vethwe-tap").get("hairpin") is False
    assert ns.weaved(spec, "plan", "--detailed-exitcode").returncode == 0

    # A converge could repair it before the plan shows it: try again if so.
    for _attempt in range(10):
        ns.run(["bridge", "link", "set", "dev", "vethwe-tap", "isolated", "off"])
        text = ns.weaved(spec, "plan").stdout
        if "port/vethwe-tap" in text:
            break
    assert "~ port/vethwe-tap  isolated: off → on  # sleeve TAP" in text
    ns.weaved(spec, "apply")
    assert port(ns, "vethwe-tap").get("isolated") is True
    assert ns.weaved(spec, "plan", "--detailed-exitcode").returncode == 0


def test_container_port_survives_bridge_and_veth_deletion(daemon: tuple[Netns, Path]) -> None:
    ns, spec = daemon
    with Netns("wdk-c") as c1:
        assert ns.weaved(spec, "attach", "10.2.1.21/24", c1.name).stdout == "10.2.1.21\n"
        veth = netns_target(c1.name).veth
        wait_for(lambda: pings(ns, "10.2.1.21"), timeout=10)
        wait_for(lambda: ns.weaved(spec, "plan", "--detailed-exitcode", check=False)
                 .returncode == 0, timeout=10)  # fmt: skip

        ns.run(["bridge", "link", "set", "dev", "vethwe-tap", "isolated", "off"])
        wait_for(lambda: port(ns, "vethwe-tap").get("isolated") is True, timeout=10)  # resync

        ns.ip("link", "del", "weave")
        seconds = wait_for(lambda: pings(ns, "10.2.1.21"), timeout=10, interval=0.2)
        assert port(ns, veth).get("master") == "weave"
        assert port(ns, "vethwe-tap").get("isolated") is True
        assert seconds < 5  # one resync (2 s) and a ping
        assert ns.weaved(spec, "plan", "--detailed-exitcode").returncode == 0

        ns.ip("link", "del", veth)  # takes the container's ethwe with it
        wait_for(lambda: pings(ns, "10.2.1.21"), timeout=20, interval=0.2)
        assert port(ns, veth).get("master") == "weave"
        assert "10.2.1.21/24" in c1.ip("-o", "addr", "show", "dev", "ethwe").stdout
        assert c1.name in ns.weaved(spec, "ps").stdout

        ns.ip("link", "del", veth)
        sh(["ip", "netns", "delete", c1.name])  # the container is gone for good: released
        wait_for(lambda: c1.name not in ns.weaved(spec, "ps").stdout, timeout=20, interval=0.2)
        assert "port/" + veth not in plan_changes(ns, spec)


def test_reset_removes_only_what_is_provably_ours(daemon: tuple[Netns, Path]) -> None:
    ns, spec = daemon
    foreign_etc = Path("/etc/netns") / f"wdk-foreign-{secrets.token_hex(3)}"
    foreign_etc.mkdir(parents=True)
    (foreign_etc / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    try:
        with Netns("wdk-c") as c1:
            ns.weaved(spec, "attach", "10.2.1.22/24", c1.name)
            ours = Path("/etc/netns") / c1.name / "resolv.conf"
            assert ours.read_text().startswith("# written by weaved")
            ns.ip("link", "add", "vethwepl777", "type", "veth", "peer", "name", "wdkpeer")
            ns.ip("link", "add", "wdkx0", "type", "veth", "peer", "name", "wdkx1")
            ns.ip("link", "set", "wdkx0", "up")
            ns.ip("route", "add", "198.51.100.0/24", "dev", "wdkx0", "proto", "87")
            assert "vethwepl777" not in ns.weaved(spec, "plan").stdout

            out = ns.weaved(spec, "reset").stdout
            assert "1 container interfaces" in out  # (other stale resolv.conf may go too)
            assert not ours.exists()
            assert ns.ip("link", "show", netns_target(c1.name).veth, check=False).returncode != 0
            assert ns.ip("link", "show", "vethwepl777", check=False).returncode == 0
            assert "198.51.100.0/24" in ns.ip("route", "show", "proto", "87").stdout
            assert ns.ip("link", "show", "weave", check=False).returncode != 0
        assert (foreign_etc / "resolv.conf").read_text() == "nameserver 192.0.2.53\n"
    finally:
        (foreign_etc / "resolv.conf").unlink(missing_ok=True)
        foreign_etc.rmdir()


def test_a_foreign_bridge_named_weave_is_reported_never_adopted(tmp_path: Path) -> None:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    with netns("wdk-f") as ns:
        ns.ip("link", "add", "weave", "type", "bridge")
        ns.ip("link", "set", "weave", "mtu", "1400", "up")
        ns.ip("route", "add", "10.2.9.0/24", "dev", "weave", "proto", "87")
        for command in ("plan", "apply"):
            proc = ns.weaved(spec, command, check=False)
            assert proc.returncode == 1
            assert 'a link named "weave" exists that weaved did not create' in proc.stderr
            assert "hint:" in proc.stderr
        info = json.loads(ns.ip("-d", "-j", "link", "show", "weave").stdout)[0]
        assert info["mtu"] == 1400 and not info.get("ifalias")
        with Netns("wdk-c") as c1:  # no container is plugged into someone else's bridge
            attach = ns.weaved(spec, "attach", "10.2.1.23/24", c1.name, check=False)
            assert attach.returncode == 1 and "not created by weaved" in attach.stderr
        out = ns.weaved(spec, "reset").stdout
        assert "Left alone: weave (a bridge with no alias" in out
        assert ns.ip("link", "show", "weave", check=False).returncode == 0
        assert "10.2.9.0/24" in ns.ip("route", "show", "proto", "87").stdout
