"""Two lab hosts whose specs expose nothing: every container still has weaveDNS (the link
address on its own host's bridge), and a forged source address does not cross hosts."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.conftest import LabFactory
from tests.helpers import wait_for
from tests.probes import LISTEN, SPOOF
from weaved.lab.lab import Lab, host_address, peer_name
from weaved.lab.netns import exec_argv

SEEDS = f'["{peer_name(1)}", "{peer_name(2)}"]'


def spec(index: int) -> str:
    peers = f"[{host_address(1)}]" if index > 1 else "[]"
    return (
        "version: 1\n"
        f'peer: {{name: "{peer_name(index)}", nickname: host{index}}}\n'
        f"peers: {peers}\n"
        "ipalloc:\n"
        "  range: 10.32.0.0/12\n"
        "  default_subnet: 10.32.0.0/16\n"
        f"  init: {{mode: seed, seeds: {SEEDS}}}\n"
    )


def first_address(attach_output: str) -> str:
    return attach_output.split()[0].split("/")[0]


def dig(lab: Lab, container: str, name: str) -> list[str]:
    proc = lab.in_container(container, ["dig", "+short", "+time=2", "+tries=2", name])
    return proc.stdout.split()


def test_dns_without_expose_and_no_spoofing_across_hosts(lab_factory: LabFactory) -> None:
    lab = lab_factory("pol2", {1: spec(1), 2: spec(2)})
    assert lab.wait_mesh()
    a = first_address(lab.add_container("host1", "pol-a"))
    b = first_address(lab.add_container("host2", "pol-b"))
    assert a.startswith("10.32.") and b.startswith("10.32.")
    # IPAM addresses, no expose anywhere: names resolve from both sides, across the hosts.
    wait_for(lambda: dig(lab, "pol-a", "pol-b.weave.local") == [b], timeout=30, interval=0.5)
    assert dig(lab, "pol-b", "pol-a") == [a]  # the search path, too

    victim = first_address(lab.add_container("host2", "pol-v", ["net:10.33.0.0/16"]))
    honest = first_address(lab.add_container("host1", "pol-h", ["net:10.33.0.0/16"]))
    # The attacker routes the other subnet itself; only the source address is forged.
    subprocess.run(
        exec_argv("pol-a", ["ip", "route", "add", "10.33.0.0/16", "dev", "ethwe"]), check=True
    )
    listener = subprocess.Popen(
        exec_argv("pol-v", [sys.executable, "-c", LISTEN, "8"]), stdout=subprocess.PIPE, text=True
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        for sender, source, text in (("pol-a", "10.33.0.250", "spoofed"), ("pol-h", honest, "ok")):
            argv = exec_argv(sender, [sys.executable, "-c", SPOOF, source, victim, text])
            subprocess.run(argv, check=True, timeout=30)
        out, _ = listener.communicate(timeout=30)
    finally:
        listener.kill()
    assert f"{honest} ok" in out and "spoofed" not in out
