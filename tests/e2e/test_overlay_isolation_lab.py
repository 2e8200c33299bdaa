"""A mixed mesh (issue 10.1): host1 and host2 talk over fastdp, host3 only over sleeve (as a
Weave Net peer would). A broadcast from host2's container reaches host1 over VXLAN; the bridge
of host1 must not flood it into sleeve's TAP (that sent it on to host3 as if it came from host1:
a forwarding loop, and host3 learning the MAC at the wrong peer). Both overlay ports are
isolated bridge ports, so the TAP never sees it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from weaved.lab import netns
from weaved.lab.lab import Lab, host_address, peer_name

pytestmark = pytest.mark.timeout(300)

HOSTS = (1, 2, 3)


def spec(index: int) -> str:
    targets = [host_address(1)] if index > 1 else []
    mode = "sleeve" if index == 3 else "auto"
    return (
        "version: 1\n"
        f'peer: {{name: "{peer_name(index)}", nickname: host{index}}}\n'
        f"peers: [{', '.join(targets)}]\n"
        f"datapath: {{mode: {mode}}}\n"
        "dns: {enabled: false}\n"
    )


def container(lab: Lab, index: int) -> str:
    return f"{lab.name}-c{index}"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    for i in HOSTS:
        (spec_dir / f"host{i}.yaml").write_text(spec(i))
    lab = Lab("kiso")
    lab.up(len(HOSTS), spec_dir=spec_dir, resync=5.0)
    try:
        for i in HOSTS:
            lab.add_container(f"host{i}", container(lab, i), [f"10.99.1.{i}/24"])
        yield lab
    finally:
        lab.down()


def overlay(lab: Lab, host: int, peer: int) -> str:
    out = lab.exec(f"host{host}", ["weaved", "status", "connections"], capture=True).stdout
    for line in out.splitlines():
        if f"(host{peer})" in line and "established" in line:
            words = line.split()[3:]
            return words[1] if words[0] in ("encrypted", "unencrypted") else words[0]
    return ""


def pings(lab: Lab, src: int, dst: int) -> bool:
    argv = ["ping", "-c1", "-W1", f"10.99.1.{dst}"]
    return lab.in_container(container(lab, src), argv, timeout=10).returncode == 0


def mac_of(lab: Lab, index: int) -> str:
    out = lab.in_container(container(lab, index), ["ip", "-j", "link", "show", "ethwe"]).stdout
    return str(json.loads(out)[0]["address"])


def capture(lab: Lab, host: int, ifname: str, mac: str, direction: str) -> subprocess.Popen[str]:
    argv = ["tcpdump", "-i", ifname, "-Q", direction, "-n", "-l", "ether", "src", mac]
    return subprocess.Popen(
        netns.exec_argv(lab.host(f"host{host}").netns, argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[str]) -> int:
    """Lines tcpdump printed (one per frame)."""
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return len([line for line in out.splitlines() if line.strip()])


def test_frames_from_fastdp_never_enter_the_sleeve_tap(lab: Lab) -> None:
    wait_for(
        lambda: overlay(lab, 1, 2) == "fastdp" and overlay(lab, 1, 3) == "sleeve",
        timeout=60,
        interval=0.5,
    )
    for dst in (1, 3):
        wait_for(lambda dst=dst: pings(lab, 2, dst), timeout=20, interval=0.3)
    mac = mac_of(lab, 2)
    into_tap = capture(lab, 1, "vethwe-tap", mac, "out")  # bridge → TAP → sleeve
    over_vxlan = capture(lab, 1, "vxlan-6784", mac, "in")
    time.sleep(1.0)  # tcpdump attaches
    try:
        lab.in_container(
            container(lab, 2), ["ping", "-b", "-c", "10", "-i", "0.2", "10.99.1.255"], timeout=20
        )
        time.sleep(0.5)
    finally:
        leaked, arrived = stop(into_tap), stop(over_vxlan)
    assert arrived >= 10  # the broadcasts came to host1 over VXLAN …
    assert leaked == 0  # … and the bridge did not send one of them on into sleeve
    assert pings(lab, 2, 3) and pings(lab, 2, 1)
