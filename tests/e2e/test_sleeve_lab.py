"""The sleeve data path in the lab: three hosts running `weaved daemon` with the sleeve part
(`datapath: {mode: sleeve}`), one container each (`weaved attach`), a second one on host1.

* every pair of hosts, plain and encrypted: ping, a 10 000-byte ping, iperf3 and a 10 KB DF
  transfer between the containers; Weave's report keys (Interface, CaptureStats, MACs);
* a line host1 - host2 - host3 without discovery (host1 and host3 not connected): the same
  traffic relayed by host2; an ARP broadcast and the multicast group 239.1.2.3 delivered to
  members on every host;
* the TAP deleted under a running daemon comes back, and `weaved plan` stays empty.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import LabFactory
from tests.helpers import wait_for
from tests.integration.test_sleeve_netns import (
    MCAST_RECEIVER,
    MCAST_SENDER,
    TCP_CLIENT,
    TCP_SERVER,
)
from weaved.lab import netns
from weaved.lab.lab import Lab, host_address, peer_name

pytestmark = pytest.mark.timeout(600)

HOSTS = (1, 2, 3)
PAIRS = [(1, 2), (2, 3), (1, 3), (2, 1), (3, 2), (3, 1)]


def spec(index: int, targets: list[int], **extra: str) -> str:
    lines = [
        "version: 1",
        f'peer: {{name: "{peer_name(index)}", nickname: host{index}}}',
        f"peers: [{', '.join(host_address(t) for t in targets)}]",
        "datapath: {mode: sleeve}",
        "dns: {enabled: false}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def container(lab: Lab, index: int, n: int = 1) -> str:
    return f"{lab.name}-c{index}" + ("" if n == 1 else f"x{n}")


def address(index: int, n: int = 1) -> str:
    return f"10.99.0.{index * 10 + n}"  # outside the IPAM range: no allocator needed


def report(lab: Lab, host: int) -> dict[str, Any]:
    proc = lab.exec(f"host{host}", ["weaved", "report"], capture=True)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def established(lab: Lab, host: int) -> set[str]:
    router = report(lab, host)["Router"]
    return {
        c["Info"].split("(")[-1].rstrip(")")
        for c in router.get("Connections") or []
        if c["State"] == "established"
    }


@pytest.fixture
def sleeve_lab(lab_factory: LabFactory) -> LabFactory:
    """A lab with a container on every host and a second one on host1."""

    def make(name: str, specs: dict[int, str]) -> Lab:
        lab = lab_factory(name, specs, resync=5.0)
        for i in specs:
            lab.add_container(f"host{i}", container(lab, i), [f"{address(i)}/24"])
        lab.add_container("host1", container(lab, 1, 2), [f"{address(1, 2)}/24"])
        return lab

    return make


def password_file(tmp_path: Path) -> str:
    path = tmp_path / "password"
    path.write_text("sleeve lab password\n")
    path.chmod(0o600)
    return str(path)


def run(lab: Lab, name: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return lab.in_container(name, list(argv), timeout=timeout)


def ping(lab: Lab, src: str, dst: str, *extra: str) -> bool:
    proc = run(lab, src, "ping", "-c", "2", "-i", "0.3", "-W", "3", *extra, dst)
    return proc.returncode == 0


def wait_ping(lab: Lab, src: str, dst: str, timeout: float = 30) -> None:
    wait_for(lambda: ping(lab, src, dst), timeout=timeout, interval=0.5)


def transfer(lab: Lab, src: str, dst: str, dst_addr: str, size: int = 10_000) -> None:
    server = subprocess.Popen(
        netns.exec_argv(dst, [sys.executable, "-c", TCP_SERVER, dst_addr]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        out = run(lab, src, sys.executable, "-c", TCP_CLIENT, dst_addr, str(size))
        assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-500:]
    finally:
        server.wait(30)


def iperf(lab: Lab, src: str, dst: str, dst_addr: str) -> float:
    server = subprocess.Popen(
        netns.exec_argv(dst, ["iperf3", "-s", "-1"]), stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(0.5)
        out = run(lab, src, "iperf3", "-c", dst_addr, "-t", "2", "-J", timeout=60)
        return float(json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"])
    finally:
        server.wait(30)


def every_pair(lab: Lab) -> None:
    for a, b in PAIRS:
        src, dst = container(lab, a), container(lab, b)
        wait_ping(lab, src, address(b))
        assert ping(lab, src, address(b), "-s", "10000"), f"10 000-byte ping host{a} → host{b}"
        transfer(lab, src, dst, address(b))
    for a, b in [(1, 2), (3, 1)]:
        assert iperf(lab, container(lab, a), container(lab, b), address(b)) > 10e6


def multicast(lab: Lab, sender: str, sender_addr: str, members: list[tuple[str, str]]) -> None:
    group = "239.1.2.3"
    procs = [
        subprocess.Popen(
            netns.exec_argv(name, [sys.executable, "-c", MCAST_RECEIVER, group, addr, "5"]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, addr in members
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "joined"
        time.sleep(1.5)
        out = run(lab, sender, sys.executable, "-c", MCAST_SENDER, group, sender_addr, "10")
        assert out.returncode == 0, out.stderr
        for (name, _), p in zip(members, procs, strict=True):
            text, _err = p.communicate(timeout=30)
            got = set(text.split("\n")[-2].split()) if text.strip() else set()
            assert len(got) >= 8, f"{name} got {sorted(got)}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_every_pair_over_sleeve(sleeve_lab: LabFactory, tmp_path: Path, encrypted: bool) -> None:
    extra = {"password_file": password_file(tmp_path)} if encrypted else {}
    lab = sleeve_lab(
        "slv3e" if encrypted else "slv3",
        {i: spec(i, [1] if i > 1 else [], **extra) for i in HOSTS},
    )
    for i in HOSTS:
        wait_for(lambda h=i: len(established(lab, h)) == 2, timeout=40, interval=0.5)
    every_pair(lab)
    for i in HOSTS:
        router = report(lab, i)["Router"]
        assert router.get("Interface") == "vethwe-tap (via tap)", "sleeve report keys wired in"
        assert router["CaptureStats"]["PacketsReceived"] > 0
        macs = {m["Mac"] for m in router.get("MACs") or []}
        assert len(macs) >= 4  # the containers, from every host
        if encrypted:
            info = [c["Info"] for c in router["Connections"] if c["State"] == "established"]
            assert all(x.startswith("encrypted") for x in info)
        sleeve = report(lab, i).get("Sleeve", {})
        assert sleeve.get("TapReady") and sleeve["Counters"]["decrypt_failed"] == 0
    status = lab.exec("host1", ["weaved", "status"], capture=True).stdout
    assert "Service: sleeve" in status
    for i in HOSTS:
        plan = lab.exec(f"host{i}", ["weaved", "plan", "--detailed-exitcode"], capture=True)
        assert plan.returncode == 0, plan.stdout


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_line_relays_broadcast_and_multicast(
    sleeve_lab: LabFactory, tmp_path: Path, encrypted: bool
) -> None:
    extra = {"discovery": "false"}
    if encrypted:
        extra["password_file"] = password_file(tmp_path)
    lab = sleeve_lab(
        "slvle" if encrypted else "slvl",
        {1: spec(1, [2], **extra), 2: spec(2, [], **extra), 3: spec(3, [2], **extra)},
    )
    wait_for(lambda: established(lab, 2) == {"host1", "host3"}, timeout=40, interval=0.5)
    assert established(lab, 1) == {"host2"} and established(lab, 3) == {"host2"}
    a, a2, b, c = container(lab, 1), container(lab, 1, 2), container(lab, 2), container(lab, 3)
    run(lab, a, "ip", "neigh", "flush", "all")
    wait_ping(lab, a, address(3))  # ARP request broadcast across host2, reply relayed back
    assert "lladdr" in run(lab, a, "ip", "neigh", "show", address(3)).stdout
    assert ping(lab, c, address(1), "-s", "10000")
    transfer(lab, a, c, address(3))
    transfer(lab, c, a, address(1), 1_000_000)
    assert iperf(lab, a, c, address(3)) > 10e6
    assert report(lab, 2)["Sleeve"]["Counters"]["relayed"] > 0
    multicast(lab, a, address(1), [(a2, address(1, 2)), (b, address(2)), (c, address(3))])
    multicast(lab, c, address(3), [(a, address(1)), (a2, address(1, 2)), (b, address(2))])


def test_deleted_tap_comes_back(sleeve_lab: LabFactory) -> None:
    lab = sleeve_lab("slvt", {i: spec(i, [1] if i > 1 else []) for i in (1, 2)})
    wait_ping(lab, container(lab, 1), address(2))
    lab.exec("host1", ["ip", "link", "del", "vethwe-tap"], capture=True)
    wait_for(
        lambda: (
            report(lab, 1)["Sleeve"]["TapCreated"] >= 2 and report(lab, 1)["Sleeve"]["TapReady"]
        ),
        timeout=20,
        interval=0.5,
    )
    wait_ping(lab, container(lab, 1), address(2))
    plan = lab.exec("host1", ["weaved", "plan", "--detailed-exitcode"], capture=True)
    assert plan.returncode == 0, plan.stdout
