"""Two routers in two network namespaces joined by a veth pair on 192.0.2.0/24.

Each router is its own process (`ip netns exec`), so sleeve's raw DF socket, the kernel's
EMSGSIZE and path MTU are real. A veth whose far end has a smaller MTU silently drops
bigger packets, like trace d's firewall: the probe search must find the MTU that passes.
Namespaces and processes are created per test and removed by name / PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]

RUNNER = r"""
import asyncio, json, sys
from weaved.mesh.router import MeshConfig, Router
from weaved.mesh.peername import parse_peer_name
from weaved.datapath.overlays import OVERLAYS

cfg = json.loads(sys.argv[1])

async def main():
    router = Router(MeshConfig(
        name=parse_peer_name(cfg["name"]), nickname=cfg["nick"], host=cfg["host"],
        password=cfg["password"].encode() if cfg["password"] else None,
        topology_delay=0.1,
    ), overlay_factories=OVERLAYS)
    await router.start()
    router.set_targets(cfg["targets"])
    try:
        while True:
            st = router.status()
            print(json.dumps({"connections": [
                {"state": c.state.value, "info": c.info, "attrs": dict(c.attrs or {})}
                for c in st.connections
            ], "peers": len(st.peers)}), flush=True)
            await asyncio.sleep(0.2)
    finally:
        await router.stop()

try:
    asyncio.run(main())
except KeyboardInterrupt:
    pass
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@contextmanager
def two_namespaces(mtu_a: int, mtu_b: int) -> Iterator[tuple[str, str]]:
    tag = f"wdm{os.getpid() % 100000}"
    a, b = f"{tag}a", f"{tag}b"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh(
            "ip",
            "link",
            "add",
            f"{tag}va",
            "netns",
            a,
            "type",
            "veth",
            "peer",
            f"{tag}vb",
            "netns",
            b,
        )
        for ns, dev, addr, mtu in (
            (a, f"{tag}va", "192.0.2.201/24", mtu_a),
            (b, f"{tag}vb", "192.0.2.202/24", mtu_b),
        ):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "mtu", str(mtu), "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextmanager
def router_in(ns: str, **cfg: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", RUNNER, json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_status(proc: subprocess.Popen[str], check: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        last = json.loads(line)
        if check(last):
            return last
    raise AssertionError(f"condition not reached; last status {last}")


def _mtus(st: dict[str, Any]) -> list[int]:
    return [c["attrs"].get("mtu") for c in st["connections"] if c["state"] == "established"]


@pytest.mark.parametrize(
    ("password", "mtu_b", "expected", "expected_a"),
    [
        (None, 1500, 1438, 1438),  # plain: 1500 - 62, as in every trace
        ("s3cret", 1500, 1414, 1414),  # encrypted: 1500 - 86 (trace c / e)
        # b's veth drops what exceeds its MTU (+4 bytes of VLAN slack the kernel allows):
        # a only learns that by the probe search, as in trace d.
        (None, 1300, 1238, 1242),
    ],
)
def test_sleeve_establishes_and_finds_path_mtu(
    password: str | None, mtu_b: int, expected: int, expected_a: int
) -> None:
    with two_namespaces(1500, mtu_b) as (ns_a, ns_b):
        common = {"password": password}
        with (
            router_in(
                ns_a, name="3e:80:e7:5a:63:a7", nick="host1", host="", targets=[], **common
            ) as a,
            router_in(
                ns_b,
                name="2a:9f:f1:99:8a:21",
                nick="host2",
                host="",
                targets=["192.0.2.201"],
                **common,
            ) as b,
        ):
            # b's own link has the small MTU: the kernel tells it at once. a's packets are
            # dropped silently beyond b's MTU: a finds it by probing.
            st_b = wait_status(b, lambda s: _mtus(s) == [expected], timeout=90)
            st_a = wait_status(a, lambda s: _mtus(s) == [expected_a], timeout=90)
            assert st_b["peers"] == 2 and st_a["peers"] == 2
            info = st_b["connections"][0]["info"]
            assert info.startswith("encrypted   sleeve " if password else "sleeve ")
