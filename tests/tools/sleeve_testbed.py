"""Hosts and containers in network namespaces for exercising the sleeve data path (root).

Host i is namespace `<tag>-h<i>` with `eth0` = 192.0.2.(10+i)/24 on an underlay bridge (in
namespace `<tag>-u`), a `weave` bridge made by `weaved apply` from a one-line spec, and one
standalone peer process (router + data path, `tests.tools.sleeve_peer`).
Container j of host i is namespace `<tag>-c<i>x<j>` with `ethwe` = 10.40.i.j/16 (MAC
0e:00:00:00:0i:0j) plugged into the host's bridge by a veth `vethtc<i>x<j>`, and a
route for 224.0.0.0/4, as `weaved attach` would (not named `vethwepl…`: a port with weaved's
prefix that no attach let through sends nothing, see compile/antispoof.py). Everything is found again by name and
removed on exit; processes are stopped by PID (their own session).

Used by tests/integration/test_sleeve_*.py and bench/datapath/run.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.tools import python_env

__all__ = ["Container", "Host", "Testbed"]

UNDERLAY = "192.0.2"
OVERLAY_PREFIX = 16


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 60, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=input_text,
        env=python_env(),  # `python -m weaved` of this repository, from any directory
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} → {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _ns_exec(ns: str) -> list[str]:
    return ["ip", "netns", "exec", ns]


@dataclass
class Container:
    host: int
    index: int
    netns: str
    address: str  # without prefix length
    mac: str

    def argv(self, *argv: str) -> list[str]:
        return [*_ns_exec(self.netns), *argv]


@dataclass
class Host:
    index: int
    netns: str
    address: str
    name: str  # peer name
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    containers: list[Container] = field(default_factory=list)

    @property
    def status_file(self) -> Path:
        return self.dir / "status.json"

    @property
    def log_file(self) -> Path:
        return self.dir / "peer.log"


class Testbed:
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        tag: str,
        hosts: int,
        workdir: Path,
        *,
        containers: int = 1,
        bridge_mtu: int | None = None,
        container_tx_offload: bool = True,
        unreachable: Sequence[tuple[int, int]] = (),
    ) -> None:
        """`unreachable`: host pairs (1-based) whose underlay addresses cannot reach each
        other (an `unreachable` route both ways), for relaying tests."""
        if len(tag) > 8:
            raise ValueError("tag must be at most 8 characters (interface names)")
        self.tag = tag
        self.workdir = workdir
        self.bridge_mtu = bridge_mtu
        self.container_tx_offload = container_tx_offload
        self.unreachable = list(unreachable)
        self.underlay = f"{tag}-u"
        self.hosts = [
            Host(
                i,
                f"{tag}-h{i}",
                f"{UNDERLAY}.{10 + i}",
                f"02:00:00:00:00:{i:02x}",
                workdir / f"host{i}",
            )
            for i in range(1, hosts + 1)
        ]
        self._containers_per_host = containers

    # --- set-up ------------------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _build(self) -> None:
        self._remove_namespaces()  # an interrupted earlier run of the same tag
        _run(["ip", "netns", "add", self.underlay])
        _run(["ip", "-n", self.underlay, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.underlay, "link", "set", "br0", "up"])
        for host in self.hosts:
            self._add_host(host)
        for a, b in self.unreachable:
            ha, hb = self.hosts[a - 1], self.hosts[b - 1]
            _run(["ip", "-n", ha.netns, "route", "add", "unreachable", f"{hb.address}/32"])
            _run(["ip", "-n", hb.netns, "route", "add", "unreachable", f"{ha.address}/32"])
        for host in self.hosts:
            for j in range(1, self._containers_per_host + 1):
                self.add_container(host.index, j)

    def _add_host(self, host: Host) -> None:
        ns = host.netns
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        peer = f"{self.tag}-e{host.index}"
        _run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer])
        _run(["ip", "-n", ns, "link", "set", peer, "netns", self.underlay])
        _run(["ip", "-n", self.underlay, "link", "set", peer, "master", "br0", "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        host.dir.mkdir(parents=True, exist_ok=True)
        spec = host.dir / "weave.yaml"
        lines = ["version: 1", f'peer: {{name: "{host.name}", nickname: host{host.index}}}']
        if self.bridge_mtu is not None:
            lines.append(f"datapath: {{mtu: {self.bridge_mtu}}}")
        spec.write_text("\n".join(lines) + "\n")
        _run(
            [
                *_ns_exec(ns),
                sys.executable,
                "-m",
                "weaved",
                "-f",
                str(spec),
                "--state-dir",
                str(host.dir / "state"),
                "--socket",
                str(host.dir / "weaved.sock"),
                "apply",
            ],
            timeout=120,
        )

    def add_container(self, host_index: int, j: int) -> Container:
        host = self.hosts[host_index - 1]
        name = f"{self.tag}-c{host_index}x{j}"
        c = Container(
            host_index, j, name, f"10.40.{host_index}.{j}", f"0e:00:00:00:{host_index:02x}:{j:02x}"
        )
        _run(["ip", "netns", "add", name])
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        veth = f"vethtc{host_index}x{j}"
        mtu = self.bridge_mtu_of(host)
        peer = ["peer", "name", "ethwe", "mtu", str(mtu), "netns", name]
        _run(["ip", "-n", host.netns, "link", "add", veth, "mtu", str(mtu), "type", "veth", *peer])
        _run(["ip", "-n", host.netns, "link", "set", veth, "master", "weave", "up"])
        _run(["ip", "-n", name, "link", "set", "ethwe", "address", c.mac, "up"])
        _run(["ip", "-n", name, "addr", "add", f"{c.address}/{OVERLAY_PREFIX}", "dev", "ethwe"])
        _run(["ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "ethwe"])
        if not self.container_tx_offload:
            _run([*c.argv("ethtool", "-K", "ethwe", "tx", "off")])
        host.containers.append(c)
        return c

    def bridge_mtu_of(self, host: Host) -> int:
        out = _run(["ip", "-n", host.netns, "-j", "link", "show", "weave"]).stdout
        return int(json.loads(out)[0]["mtu"])

    # --- peers -------------------------------------------------------------------------------

    def start_peer(
        self,
        index: int,
        targets: Sequence[int] = (),
        *,
        password: str | None = None,
        offload: bool = True,
        discovery: bool = False,
        workers: int = 1,
        log_level: str = "INFO",
    ) -> Host:
        host = self.hosts[index - 1]
        self.stop_peer(index)
        with contextlib.suppress(FileNotFoundError):
            host.status_file.unlink()
        config = {
            "name": host.name,
            "nickname": f"host{index}",
            "host": host.address,
            "password": password,
            "targets": [self.hosts[t - 1].address for t in targets],
            "discovery": discovery,
            "offload": offload,
            "workers": workers,
            "status_file": str(host.status_file),
            "log_level": log_level,
        }
        argv = [
            *_ns_exec(host.netns),
            sys.executable,
            "-m",
            "tests.tools.sleeve_peer",
            json.dumps(config),
        ]
        with open(host.log_file, "ab") as log:
            host.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=python_env()
            )
        return host

    def stop_peer(self, index: int, timeout: float = 10.0) -> None:
        host = self.hosts[index - 1]
        proc, host.proc = host.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def status(self, index: int) -> dict[str, Any]:
        host = self.hosts[index - 1]
        if host.proc is not None and host.proc.poll() is not None:
            raise RuntimeError(f"host{index} peer exited:\n{self.log_tail(index)}")
        try:
            data: dict[str, Any] = json.loads(host.status_file.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def log_tail(self, index: int, lines: int = 30) -> str:
        try:
            text = self.hosts[index - 1].log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def established_links(self, index: int) -> dict[str, dict[str, Any]]:
        """Peer name → link report, for links whose connection is established."""
        st = self.status(index)
        links = {link["Peer"]: link for link in st.get("datapath", {}).get("Links", [])}
        states = [c["state"] for c in st.get("connections", [])]
        return links if "established" in states else {}

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate():
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {timeout:.0f}s")

    def wait_routes(self, pairs: Sequence[tuple[int, int]], timeout: float = 45.0) -> None:
        """Wait until host a has an established unicast route to host b for every pair."""

        def ready() -> bool:
            for a, b in pairs:
                dest = self.hosts[b - 1].name.replace(":", "")
                if dest not in self.status(a).get("unicast", {}):
                    return False
                if not self.status(a).get("datapath", {}).get("TapReady"):
                    return False
            return True

        self.wait(f"routes {pairs}", ready, timeout)

    # --- traffic -----------------------------------------------------------------------------

    def container(self, host: int, index: int = 1) -> Container:
        return self.hosts[host - 1].containers[index - 1]

    def run_in(
        self, c: Container, *argv: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return _run(c.argv(*argv), check=check, timeout=timeout)

    def ping(self, src: Container, dst: Container, *extra: str, count: int = 3) -> bool:
        proc = self.run_in(
            src, "ping", "-c", str(count), "-i", "0.2", "-W", "2", *extra, dst.address, timeout=30
        )
        return proc.returncode == 0

    # --- tear-down ---------------------------------------------------------------------------

    def close(self) -> None:
        for host in self.hosts:
            self.stop_peer(host.index)
        for host in self.hosts:
            for c in host.containers:
                _run(["ip", "netns", "delete", c.netns], check=False)
            _run(["ip", "netns", "delete", host.netns], check=False)
        _run(["ip", "netns", "delete", self.underlay], check=False)
        self._remove_namespaces()

    def _remove_namespaces(self) -> None:
        """Every namespace named `<tag>-…` (ours by name)."""
        listing = _run(["ip", "netns", "list"], check=False).stdout.split()
        for name in listing:
            if name.startswith(f"{self.tag}-"):
                _run(["ip", "netns", "delete", name], check=False)

    def cleanup_dir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
