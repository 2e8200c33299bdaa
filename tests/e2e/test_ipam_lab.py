"""IPAM across lab hosts: consensus on first use, unique addresses, persistence across a
restart, reclaiming a dead peer's space with rmpeer."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from weaved.lab.lab import Lab, host_address, peer_name
from weaved.spec.models import DNS_LINK_ADDRESS


def spec(index: int, targets: list[int], init: str = "{mode: consensus, peer_count: 3}") -> str:
    return (
        "version: 1\n"
        f'peer: {{name: "{peer_name(index)}", nickname: host{index}}}\n'
        f"peers: [{', '.join(host_address(t) for t in targets)}]\n"
        f"ipalloc: {{range: 10.32.0.0/12, init: {init}}}\n"
        "expose: [{cidr: 'net:default', dns_name: " + f"host{index}.weave.local." + "}]\n"
    )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    for i in (1, 2, 3):
        (spec_dir / f"host{i}.yaml").write_text(spec(i, [1] if i > 1 else []))
    lab = Lab("ipam3")
    lab.up(3, spec_dir=spec_dir, resync=2.0)
    try:
        yield lab
    finally:
        lab.down()


def exposed(lab: Lab, host: str) -> str | None:
    out = lab.exec(host, ["ip", "-4", "-o", "addr", "show", "dev", "weave"], capture=True).stdout
    for line in out.splitlines():
        # weaveDNS's link-local address is on the bridge too; the exposed one is in the range
        if "weave:wd" in line and DNS_LINK_ADDRESS not in line:
            return line.split()[3]
    return None


def ipam_report(lab: Lab, host: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(lab.exec(host, ["weaved", "report"], capture=True).stdout)
    return data["IPAM"]


def test_consensus_gives_each_host_a_unique_exposed_address(lab: Lab) -> None:
    for h in ("host1", "host2", "host3"):
        wait_for(lambda h=h: exposed(lab, h) is not None, timeout=40, interval=0.5)
    addrs = {h: exposed(lab, h) for h in ("host1", "host2", "host3")}
    assert len(set(addrs.values())) == 3
    for cidr in addrs.values():
        assert cidr is not None and ipaddress.IPv4Interface(cidr).network == ipaddress.IPv4Network(
            "10.32.0.0/12"
        )
    status = lab.exec("host1", ["weaved", "status", "ipam"], capture=True).stdout
    assert status.count("IPs (") == 3  # the ring is shared by the three peers

    # plan shows nothing pending once the allocation is in place (and the data plane has
    # learnt the peers' MACs: fastdp's FDB entries are planned objects too).
    def in_sync() -> bool:
        plan = lab.exec("host2", ["weaved", "plan", "--detailed-exitcode"], capture=True)
        return plan.returncode == 0

    wait_for(in_sync, timeout=30, interval=0.5)


def test_exposed_address_survives_a_restart(lab: Lab) -> None:
    wait_for(lambda: exposed(lab, "host2") is not None, timeout=40, interval=0.5)
    before = exposed(lab, "host2")
    assert Path(lab.host("host2").state_dir, "ipam.json").exists()
    lab.stop_host("host2")
    lab.exec("host2", ["ip", "link", "del", "weave"], capture=True)  # the bridge goes …
    assert exposed(lab, "host2") is None
    lab.start_host("host2")  # … and comes back with the same address from persisted IPAM state
    wait_for(lambda: exposed(lab, "host2") is not None, timeout=40, interval=0.5)
    assert exposed(lab, "host2") == before


def test_rmpeer_reclaims_a_dead_peers_space(lab: Lab) -> None:
    for h in ("host1", "host2", "host3"):
        wait_for(lambda h=h: exposed(lab, h) is not None, timeout=40, interval=0.5)
    refused = lab.exec("host1", ["weaved", "rmpeer", "host3"], capture=True)
    assert refused.returncode != 0 and "has an established connection" in refused.stderr
    lab.stop_host("host3")
    wait_for(
        lambda: (
            "held by unreachable peers: host3"
            in lab.exec("host1", ["weaved", "status", "ipam"], capture=True).stdout
        ),
        timeout=40,
        interval=0.5,
    )
    done = lab.exec("host1", ["weaved", "rmpeer", "host3"], capture=True)
    assert done.returncode == 0 and "IPs taken over from host3" in done.stdout
    assert "ONE host only" in done.stderr
    wait_for(
        lambda: "host3" not in lab.exec("host1", ["weaved", "status", "ipam"], capture=True).stdout,
        timeout=20,
        interval=0.5,
    )


def test_reset_hands_the_space_to_a_live_peer(lab: Lab) -> None:
    for h in ("host1", "host2", "host3"):
        wait_for(lambda h=h: exposed(lab, h) is not None, timeout=40, interval=0.5)
    out = lab.exec("host3", ["weaved", "reset"], capture=True)
    assert out.returncode == 0 and "IPAM space went to a live peer" in out.stdout
    assert (
        exposed(lab, "host3") is None
        and "weave" not in lab.exec("host3", ["ip", "-o", "link"], capture=True).stdout
    )

    def host3_owns_nothing() -> bool:
        text = lab.exec("host1", ["weaved", "status", "ipam"], capture=True).stdout
        return all("host3" not in line or " 0 IPs" in line for line in text.splitlines())

    wait_for(host3_owns_nothing, timeout=20, interval=0.5)


def test_allocation_waits_for_consensus_and_says_so(tmp_path: Path) -> None:
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    for i in (1, 2):
        # No `net:` expose: nothing asks IPAM for an address until the attach below.
        text = spec(i, [1] if i > 1 else []).split("expose:")[0]
        (spec_dir / f"host{i}.yaml").write_text(text)
    lab = Lab("ipamq")
    lab.up(2, spec_dir=spec_dir, resync=2.0)
    try:
        lab.stop_host("host2")  # host1 alone: quorum 2 of 3 cannot be reached
        subprocess.run(["ip", "netns", "add", "qc1"], check=True)
        host = lab.host("host1")
        waiting = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, sys.executable, "-m", "weaved", "attach", "qc1"],
            env={**os.environ, **host.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        status = lambda: lab.exec("host1", ["weaved", "status"], capture=True).stdout  # noqa: E731
        wait_for(
            lambda: "awaiting consensus (quorum: 2, known: 1)" in status(), timeout=20, interval=0.3
        )
        assert waiting.poll() is None  # still waiting
        lab.start_host("host2")
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err
        assert ipaddress.IPv4Address(out.strip()) in ipaddress.IPv4Network("10.32.0.0/12")
        wait_for(lambda: "Status: ready" in status(), timeout=20, interval=0.3)
    finally:
        lab.down()
        subprocess.run(["ip", "netns", "delete", "qc1"], check=False)
        shutil.rmtree("/etc/netns/qc1", ignore_errors=True)  # its weaveDNS resolv.conf
