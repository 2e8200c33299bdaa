"""Shared test helpers: private network namespaces and running weaved inside them."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]


def sh(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} → {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


class Netns:
    """A network namespace of the test's own, deleted on exit with everything inside it."""

    def __init__(self, prefix: str = "wdt") -> None:
        self.name = f"{prefix}-{secrets.token_hex(3)}"

    def __enter__(self) -> Netns:
        sh(["ip", "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")
        return self

    def __exit__(self, *_exc: object) -> None:
        sh(["ip", "netns", "delete", self.name], check=False)

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return sh(["ip", "netns", "exec", self.name, *argv], check=check, timeout=timeout, env=env)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(["ip", "-n", self.name, *args], check=check)

    def nft(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["nft", *args], check=check)

    def weaved_argv(self, spec: Path, *args: str) -> list[str]:
        """`weaved` with this spec and, beside it, its own state directory and socket."""
        return [
            sys.executable,
            "-m",
            "weaved",
            "-f",
            str(spec),
            "--state-dir",
            str(spec.parent / "state"),
            "--socket",
            str(spec.parent / "weaved.sock"),
            *args,
        ]

    def weaved(
        self, spec: Path, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.run(self.weaved_argv(spec, *args), check=check, timeout=timeout)

    def popen_weaved(self, spec: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
        argv = ["ip", "netns", "exec", self.name, *self.weaved_argv(spec, *args)]
        with open(log, "ab") as fh:
            return subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )


@contextmanager
def netns(prefix: str = "wdt") -> Iterator[Netns]:
    with Netns(prefix) as ns:
        yield ns


@contextmanager
def bare_namespaces(prefix: str, count: int) -> Iterator[list[str]]:
    """`count` named network namespaces with nothing in them (containers to attach), deleted
    afterwards."""
    with named_namespaces([Netns(prefix).name for _ in range(count)]) as names:
        yield names


@contextmanager
def named_namespaces(names: Sequence[str]) -> Iterator[list[str]]:
    """Empty network namespaces with these names, deleted afterwards."""
    made = list(names)
    for name in made:
        sh(["ip", "netns", "add", name])
    try:
        yield made
    finally:
        for name in made:
            sh(["ip", "netns", "delete", name], check=False)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> float:
    """Seconds until `predicate()` held; AssertionError after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@contextmanager
def converged_daemon(tmp_path: Path, spec_text: str, prefix: str) -> Iterator[tuple[Netns, Path]]:
    """A daemon (resync every 600 s) in a namespace of its own with this spec, once it has
    converged; stopped afterwards. Yields the namespace and the spec's path."""
    spec = tmp_path / "weave.yaml"
    spec.write_text(spec_text)
    with Netns(prefix) as ns:
        proc = ns.popen_weaved(spec, "daemon", "--resync", "600", log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: "converged at" in ns.weaved(spec, "status", check=False).stdout, 20)
            yield ns, spec
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    return proc.returncode


class Named(Protocol):
    """A network namespace by name: a `Netns`, or a lab host's namespace."""

    @property
    def name(self) -> str: ...


class Dockerd:
    """A private dockerd inside a test namespace (nsenter keeps the host's cgroup mounts, which
    `ip netns exec` would hide). Docker's bridge uses a 10/8 address of the test's own."""

    def __init__(self, ns: Named, bip: str = "10.99.0.1/24") -> None:
        self.ns = ns
        # Short: containerd's socket path must fit in a sockaddr_un.
        self.root = Path("/run") / f"{ns.name}-docker"
        self.bip = bip
        self.sock = self.root / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Dockerd:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            "nsenter",
            f"--net=/run/netns/{self.ns.name}",
            "dockerd",
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "-H",
            f"unix://{self.sock}",
            "--pidfile",
            str(self.root / "docker.pid"),
            "--bip",
            self.bip,
            "--storage-driver",
            "vfs",
        ]
        with open(self.root / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._ready, timeout=60, interval=0.2)
        return self

    def restart(self) -> None:
        """Stop dockerd and start it again on the same data: containers with a restart policy
        come back (as after a `systemctl restart docker`)."""
        if self.proc is not None:
            stop_process(self.proc, timeout=30)
        self.__enter__()

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                "dockerd exited:\n" + (self.root / "dockerd.log").read_text()[-3000:]
            )
        return sh(["docker", "-H", f"unix://{self.sock}", "info"], check=False).returncode == 0

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=20)
        # dockerd bind-mounts its data root; a crashed one leaves that mount behind.
        for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = line.split()[1]
            if target.startswith(str(self.root)):
                sh(["umount", "-l", target], check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return sh(["docker", "-H", f"unix://{self.sock}", *args], check=check, timeout=timeout)


def saved_records(path: Path) -> list[dict[str, Any]]:
    """The records a daemon's records file holds now (`attachments.json` or `cni.json`, with
    the log of changes since its snapshot), as JSON objects."""
    from weaved.attach import store
    from weaved.attach.model import Attachment
    from weaved.cni.records import CniRecord

    kind = CniRecord if path.name.startswith("cni") else Attachment
    return [r.to_json() for r in store.load_records(path, kind.from_json, "lost").values()]


def saved_text(path: Path) -> str:
    """`saved_records` as one text (for "this container is or is not recorded")."""
    return json.dumps(saved_records(path))
