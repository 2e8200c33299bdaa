"""The fast datapath in the lab: three hosts running `weaved daemon` (with the fastdp part and
the `weaved-vxlan` overlay wired in), one container each (`weaved attach`).

* every pair of hosts on fastdp: ping, a full-size DF ping, iperf3 and a 10 KB DF transfer
  between the containers, carried by `vxlan-6784`; `weaved plan` empty;
* nftables in the underlay drops UDP 6784: every connection falls back to sleeve with the
  reason in `weaved status connections`, traffic keeps flowing; the rule goes: fastdp again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.integration.test_fastdp_netns import DF_CLIENT, DF_SERVER
from weaved.lab.lab import Lab, host_address, peer_name

pytestmark = pytest.mark.timeout(300)

HOSTS = (1, 2, 3)
# The daemon's defaults: heartbeats every second, a path is unhealthy after 5 s without.
FALLBACK_WITHIN = 20.0


def spec(index: int) -> str:
    targets = [host_address(1)] if index > 1 else []
    return (
        "version: 1\n"
        f'peer: {{name: "{peer_name(index)}", nickname: host{index}}}\n'
        f"peers: [{', '.join(targets)}]\n"
        "datapath: {mode: auto}\n"
        "dns: {enabled: false}\n"
    )


def container(lab: Lab, index: int) -> str:
    return f"{lab.name}-c{index}"


def address(index: int) -> str:
    return f"10.99.1.{index}"  # outside the IPAM range: recorded, no consensus needed


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    for i in HOSTS:
        (spec_dir / f"host{i}.yaml").write_text(spec(i))
    lab = Lab("fdp3")
    lab.up(len(HOSTS), spec_dir=spec_dir, resync=5.0)
    try:
        for i in HOSTS:
            lab.add_container(f"host{i}", container(lab, i), [f"{address(i)}/24"])
        yield lab
    finally:
        lab.down()


def using(lab: Lab, host: int) -> dict[str, str]:
    """Peer nickname → the overlay carrying it, from `weaved status connections`."""
    out = lab.exec(f"host{host}", ["weaved", "status", "connections"], capture=True).stdout
    found = {}
    for line in out.splitlines():
        if "established" not in line or "(" not in line:
            continue
        words = line.split()[3:]
        if words[0] in ("encrypted", "unencrypted"):
            words = words[1:]
        found[line.split("(")[1].split(")")[0]] = words[0]
    return found


def all_using(lab: Lab, how: str) -> bool:
    for i in HOSTS:
        want = {f"host{j}": how for j in HOSTS if j != i}
        if using(lab, i) != want:
            return False
    return True


def line_to(lab: Lab, host: int, peer: int) -> str:
    out = lab.exec(f"host{host}", ["weaved", "status", "connections"], capture=True).stdout
    return next(line for line in out.splitlines() if f"(host{peer})" in line)


def ping(lab: Lab, src: int, dst: int, *extra: str) -> bool:
    proc = lab.in_container(
        container(lab, src), ["ping", "-c", "3", "-i", "0.2", "-W", "2", *extra, address(dst)]
    )
    return proc.returncode == 0


def mtu(lab: Lab, index: int) -> int:
    out = lab.in_container(container(lab, index), ["ip", "-j", "link", "show", "ethwe"]).stdout
    return int(json.loads(out)[0]["mtu"])


def iperf(lab: Lab, src: int, dst: int) -> float:
    server = subprocess.Popen(
        ["ip", "netns", "exec", container(lab, dst), "iperf3", "-s", "-1", "-B", address(dst)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: ping(lab, src, dst), timeout=10, interval=0.2)
        out = lab.in_container(
            container(lab, src), ["iperf3", "-c", address(dst), "-t", "2", "-J"], timeout=60
        ).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
    finally:
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def df_transfer(lab: Lab, src: int, dst: int) -> None:
    data = os.urandom(10 * 1024)
    server = subprocess.Popen(
        ["ip", "netns", "exec", container(lab, dst), sys.executable, "-c", DF_SERVER, address(dst)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: ping(lab, src, dst), timeout=10, interval=0.2)
        sent = lab.in_container(
            container(lab, src), [sys.executable, "-c", DF_CLIENT, address(dst), data.hex()]
        )
        assert sent.returncode == 0, sent.stderr
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert out.decode().split() == [str(len(data)), hashlib.sha256(data).hexdigest()], err


def vxlan_packets(lab: Lab, host: int) -> int:
    out = lab.exec(f"host{host}", ["ip", "-s", "-j", "link", "show", "vxlan-6784"], capture=True)
    stats = json.loads(out.stdout)[0]["stats64"]
    return int(stats["rx"]["packets"]) + int(stats["tx"]["packets"])


def pairs() -> Iterator[tuple[int, int]]:
    for a in HOSTS:
        for b in HOSTS:
            if a != b:
                yield a, b


def test_containers_talk_over_fastdp_on_every_pair(lab: Lab) -> None:
    wait_for(lambda: all_using(lab, "fastdp"), timeout=60, interval=0.5)
    assert re.search(r"fastdp 02:00:00:00:01:02\(host2\) mtu=1450", line_to(lab, 1, 2))
    size = str(mtu(lab, 1) - 28)
    for a, b in pairs():
        assert ping(lab, a, b), f"host{a} → host{b}"
        assert ping(lab, a, b, "-M", "do", "-s", size), f"DF host{a} → host{b}"
        df_transfer(lab, a, b)
    for a, b in ((1, 2), (2, 3), (3, 1)):
        before = vxlan_packets(lab, a)
        bps = iperf(lab, a, b)
        assert bps > 50e6, f"host{a} → host{b}: {bps / 1e6:.0f} Mbit/s"
        assert vxlan_packets(lab, a) - before > 1000
    for i in HOSTS:
        plan = lab.exec(f"host{i}", ["weaved", "plan", "--detailed-exitcode"], capture=True)
        assert plan.returncode == 0, plan.stdout


def underlay_drops_udp_6784(lab: Lab, on: bool) -> None:
    state = lab.load()
    assert state is not None
    nft = ["ip", "netns", "exec", state.underlay, "nft"]
    if not on:
        subprocess.run([*nft, "delete", "table", "bridge", "fdptest"], check=True)
        return
    script = (
        "table bridge fdptest {\n"
        "  chain blocks {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        "    udp dport 6784 drop\n"
        "  }\n"
        "}\n"
    )
    subprocess.run([*nft, "-f", "-"], input=script, text=True, check=True)


def test_fallback_to_sleeve_with_the_reason_and_back(lab: Lab) -> None:
    wait_for(lambda: all_using(lab, "fastdp"), timeout=60, interval=0.5)
    underlay_drops_udp_6784(lab, True)
    took = wait_for(lambda: all_using(lab, "sleeve"), timeout=FALLBACK_WITHIN, interval=0.5)
    line = line_to(lab, 1, 2)
    assert "fallback=fastdp unhealthy: no heartbeats through VXLAN (UDP 6784)" in line, line
    report = json.loads(lab.exec("host1", ["weaved", "report"], capture=True).stdout)
    assert {p["Using"] for p in report["FastDP"]["Paths"]} == {"sleeve"}
    for a, b in pairs():
        wait_for(functools.partial(ping, lab, a, b), timeout=20, interval=0.5)
    df_transfer(lab, 1, 3)
    underlay_drops_udp_6784(lab, False)
    wait_for(lambda: all_using(lab, "fastdp"), timeout=30, interval=0.5)
    assert "fallback" not in line_to(lab, 1, 2)
    for a, b in pairs():
        assert ping(lab, a, b)
    before = vxlan_packets(lab, 2)
    df_transfer(lab, 2, 3)
    assert vxlan_packets(lab, 2) - before >= 10
    assert took < FALLBACK_WITHIN


def lost_seconds(proc: subprocess.Popen[str], interval: float) -> float:
    """Stop a running `ping -i interval` (SIGINT: its summary) and return the loss as time."""
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    for line in out.splitlines():
        if "packets transmitted" in line:
            return (int(line.split()[0]) - int(line.split()[3])) * interval
    raise AssertionError(f"no ping summary:\n{out[-500:]}")


def test_flows_outlive_kill_9_of_a_daemon(lab: Lab) -> None:
    """`kill -9` of host2's `weaved daemon`, restarted after 10 s, twice: the kernel keeps
    forwarding host1↔host2 (≤ 1 s lost), host1↔host3 loses nothing, and the new daemon's
    plan is empty as soon as it answers."""
    wait_for(lambda: all_using(lab, "fastdp"), timeout=60, interval=0.5)
    for a, b in pairs():
        wait_for(functools.partial(ping, lab, a, b), timeout=20, interval=0.5)
    interval = 0.05
    for _cycle in range(2):
        pingers = {
            (a, b): subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    container(lab, a),
                    "ping",
                    "-n",
                    "-i",
                    str(interval),
                    "-W",
                    "1",
                    address(b),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            for a, b in ((1, 2), (2, 1), (1, 3), (3, 1))
        }
        time.sleep(1.0)
        host2 = lab.host("host2")
        os.kill(host2.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(host2.pid, 0)
        time.sleep(10.0)
        lab.start_host("host2")
        plan = lab.exec("host2", ["weaved", "plan", "--detailed-exitcode"], capture=True)
        wait_for(lambda: all_using(lab, "fastdp"), timeout=60, interval=0.5)
        time.sleep(2.0)
        lost = {pair: lost_seconds(proc, interval) for pair, proc in pingers.items()}
        assert plan.returncode == 0, f"plan right after the restart:\n{plan.stdout}"
        assert lost[(1, 3)] == 0 and lost[(3, 1)] == 0, lost
        assert lost[(1, 2)] <= 1.0 and lost[(2, 1)] <= 1.0, lost
