"""The lab as users get it: `weaved lab up/exec/down`, leaving nothing behind."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import sh
from weaved.lab.lab import Lab


def weaved(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh([sys.executable, "-m", "weaved", *args], check=check, timeout=180)


def lab_leftovers(name: str) -> list[str]:
    netns = [n for n in sh(["ip", "netns", "list"]).stdout.split() if n.startswith(f"wd-{name}-")]
    return netns


def test_three_host_lab_converges_and_tears_down_clean() -> None:
    name = "e2e3"
    try:
        up = weaved("lab", "--name", name, "up", "--hosts", "3").stdout
        assert up.count("pid=") == 3
        assert Lab(name).wait_mesh() and Lab(name).wait_in_sync()
        for host in ("host1", "host2", "host3"):
            status = weaved("lab", "--name", name, "exec", host, "weaved", "status").stdout
            assert "Service: reconciler" in status and "converged at" in status
            plan = weaved(
                "lab", "--name", name, "exec", host, "weaved", "plan", "--detailed-exitcode"
            )
            assert plan.returncode == 0 and "No changes" in plan.stdout
        # The hosts reach each other over the underlay.
        ping = weaved("lab", "--name", name, "exec", "host2", "ping", "-c1", "-W2", "192.0.2.11")
        assert ping.returncode == 0
        spec = weaved(
            "lab", "--name", name, "exec", "host1", "cat", "/run/weaved-lab/e2e3/host1/weave.yaml"
        )
        assert "host1" in spec.stdout  # converged from examples/lab/host1.yaml
    finally:
        down = weaved("lab", "--name", name, "down").stdout
    assert "removed process" in down
    assert lab_leftovers(name) == []
    assert sh(["ls", "/run/weaved-lab"], check=False).stdout.split().count(name) == 0


def test_generated_line_topology_for_larger_labs() -> None:
    name = "e2e5"
    try:
        weaved("lab", "--name", name, "up", "--hosts", "5", "--topology", "line")
        spec = sh(["cat", f"/run/weaved-lab/{name}/host5/weave.yaml"]).stdout
        assert "peers: [192.0.2.14]" in spec
    finally:
        weaved("lab", "--name", name, "down")
    assert lab_leftovers(name) == []


def test_lab_down_is_idempotent() -> None:
    assert weaved("lab", "--name", "never-up", "down").returncode == 0
