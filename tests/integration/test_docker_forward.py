"""weaved on a host where Docker set iptables' FORWARD policy to DROP."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import Dockerd, Netns, netns

pytestmark = pytest.mark.skipif(shutil.which("dockerd") is None, reason="dockerd not installed")

SPEC = 'version: 1\npeer: {name: "3e:80:e7:5a:63:a7"}\nexpose: [{cidr: 10.2.1.1/24}]\n'


def plug(host: Netns, peer: Netns, host_if: str, peer_addr: str, *, bridge: bool) -> None:
    host.ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", peer.name)
    if bridge:
        host.ip("link", "set", host_if, "master", "weave")
    host.ip("link", "set", host_if, "up")
    peer.ip("addr", "add", peer_addr, "dev", "eth0")
    peer.ip("link", "set", "eth0", "up")


def ping(ns: Netns, addr: str) -> bool:
    return ns.run(["ping", "-c", "1", "-W", "1", addr], check=False).returncode == 0


def test_forwarding_survives_dockers_drop_policy(tmp_path: Path) -> None:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    with netns() as host, netns() as c1, netns() as c2, netns() as outside, Dockerd(host):
        assert "-P FORWARD DROP" in host.run(["iptables", "-S", "FORWARD"]).stdout
        plan = host.weaved(spec, "plan").stdout
        assert "+ ipt/filter/FORWARD/weave-in" in plan and "+ ipt/filter/FORWARD/weave-out" in plan
        host.weaved(spec, "apply")
        plug(host, c1, "vethtc1", "10.2.1.21/24", bridge=True)  # not weaved's prefix: no attach
        plug(host, c2, "vethtc2", "10.2.1.22/24", bridge=True)
        plug(host, outside, "out0", "203.0.113.2/24", bridge=False)
        host.ip("addr", "add", "203.0.113.1/24", "dev", "out0")
        outside.ip("route", "add", "10.2.1.0/24", "via", "203.0.113.1")
        c1.ip("route", "add", "default", "via", "10.2.1.1")
        host.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # Bridged (br_netfilter hands bridged frames to iptables) and routed traffic both pass.
        assert (
            host.run(["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"]).stdout.strip() == "1"
        )
        assert ping(c1, "10.2.1.22")
        assert ping(outside, "10.2.1.21")
        # Without weaved's two rules Docker's policy drops both; plan sees exactly that drift.
        for flag in ("-i", "-o"):
            host.run(
                [
                    "iptables",
                    "-D",
                    "FORWARD",
                    flag,
                    "weave",
                    "-m",
                    "comment",
                    "--comment",
                    "weaved",
                    "-j",
                    "ACCEPT",
                ]
            )
        assert not ping(c1, "10.2.1.22") and not ping(outside, "10.2.1.21")
        drift = host.weaved(spec, "plan").stdout
        assert drift.count("+ ipt/filter/FORWARD/") == 2 and "Plan: 2 to add" in drift
        host.weaved(spec, "apply")
        assert ping(c1, "10.2.1.22") and ping(outside, "10.2.1.21")
        # Docker's own rules are untouched, and reset removes only ours.
        host.weaved(spec, "reset")
        rules = host.run(["iptables", "-S", "FORWARD"]).stdout
        assert "weaved" not in rules and "-A FORWARD -j DOCKER-USER" in rules
