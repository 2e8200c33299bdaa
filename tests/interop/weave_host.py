"""A Weave Net 2.8.1 router (`weaver`, a binary the tester built) as one more host of a weaved
lab: its own namespace on the lab's underlay, a fake Docker API, and "containers" that are
plain namespaces plugged into its `weave` bridge the way `weave attach` plugs them.

Nothing here builds or ships Weave: the tests only run the binary `WEAVE_ROUTER` names."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence

from tests.interop.fake_docker import FakeDocker
from weaved.lab import netns
from weaved.lab.lab import UNDERLAY_BRIDGE, Lab, host_address

WEAVE_ROUTER = os.environ.get("WEAVE_ROUTER", "")
HTTP = "127.0.0.1:6784"  # weaver's HTTP API inside its namespace (Weave's default)
STATUS = "127.0.0.1:6782"  # its status+metrics port


def weave_router() -> str | None:
    """Why the interop tests cannot run, or None when they can."""
    if not WEAVE_ROUTER:
        return "WEAVE_ROUTER is not set (build Weave Net 2.8.1's prog/weaver and point it there)"
    if not os.access(WEAVE_ROUTER, os.X_OK):
        return f"WEAVE_ROUTER={WEAVE_ROUTER} is not an executable file"
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    return None


class WeaveHost:
    """Host number `index` of `lab` (namespace `wd-<lab>-h<index>`, so `lab.down()` removes
    it), running weaver with `args` and dialling `peers`."""

    def __init__(
        self,
        lab: Lab,
        index: int,
        name: str,
        nickname: str,
        peers: Sequence[str],
        args: Sequence[str] = (),
    ) -> None:
        self.lab = lab
        self.index = index
        self.name = name  # peer name (MAC form)
        self.nickname = nickname
        self.peers = list(peers)
        self.args = list(args)
        self.netns = f"wd-{lab.name}-h{index}"
        self.address = host_address(index)
        self.dir = lab.dir / f"weave{index}"
        self.log = self.dir / "weaver.log"
        self.docker = FakeDocker(self.dir / "docker.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.containers: list[str] = []

    # --- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> WeaveHost:
        try:
            self._plumb()
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _plumb(self) -> None:
        underlay = f"wd-{self.lab.name}-u"
        (self.dir / "root").mkdir(parents=True, exist_ok=True)  # --host-root: no machine-id
        (self.dir / "resolv.conf").write_text("")
        netns.add_netns(self.netns)
        netns.ip(
            "link", "add", "eth0", "type", "veth", "peer", "name", f"h{self.index}",
            "netns", underlay, netns=self.netns,
        )  # fmt: skip
        netns.ip("link", "set", f"h{self.index}", "master", UNDERLAY_BRIDGE, "up", netns=underlay)
        netns.ip("addr", "add", f"{self.address}/24", "dev", "eth0", netns=self.netns)
        netns.ip("link", "set", "eth0", "up", netns=self.netns)

    def start(self) -> None:
        self.docker.__enter__()
        argv = [
            WEAVE_ROUTER,
            "--name", self.name,
            "--nickname", self.nickname,
            "--port", "6783",
            "--docker-api", self.docker.url,
            "--db-prefix", str(self.dir / "weave"),
            "--host-root", str(self.dir / "root"),
            "--http-addr", HTTP,
            "--status-addr", STATUS,
            "--no-fastdp",
            "--dns-listen-address", "127.0.0.1:53",
            "--resolv-conf", str(self.dir / "resolv.conf"),
            *self.args,
            *self.peers,
        ]  # fmt: skip
        env = {**os.environ, "CHECKPOINT_DISABLE": "1"}  # no version check from a test
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                netns.exec_argv(self.netns, argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,  # weaver writes restart.sentinel into its working directory
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"weaver exited:\n{self.log_text()[-3000:]}")
            if self.http("/status", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"weaver not answering on {HTTP}:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        self.docker.__exit__()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
        for container in self.containers:
            netns.delete_netns(container)
        netns.delete_netns(self.netns)

    # --- talking to it ----------------------------------------------------------------------
    def exec(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            netns.exec_argv(self.netns, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def http(
        self, path: str, method: str = "GET", check: bool = True, address: str = HTTP
    ) -> subprocess.CompletedProcess[str]:
        proc = self.exec(["curl", "-sS", "--fail", "-X", method, f"http://{address}{path}"])
        if check and proc.returncode != 0:
            raise AssertionError(f"weaver {method} {path}: {proc.stderr}")
        return proc

    def status(self, sub: str = "") -> str:
        """`weave status [SUB]` as Weave's CLI prints it (an empty line around the whole)."""
        body = self.http("/status" + (f"/{sub}" if sub else "")).stdout
        return body if sub else "\n" + body + "\n"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    # --- containers -------------------------------------------------------------------------
    def add_container(self, name: str, cidr: str | None = None) -> str:
        """A namespace `name` with `ethwe` on weaver's bridge, as `weave attach` makes one
        (MTU of the bridge: 65535 on a sleeve-only router); its address from Weave's IPAM
        unless `cidr` is given. Returns the address with its prefix length."""
        if cidr is None:
            cidr = self.http(f"/ip/{name}", method="POST").stdout.strip()
        netns.add_netns(name)
        self.containers.append(name)
        host_side = f"vethwepl{len(self.containers)}"
        netns.ip(
            "link", "add", host_side, "mtu", "65535", "type", "veth",
            "peer", "name", "ethwe", "mtu", "65535", "netns", name, netns=self.netns,
        )  # fmt: skip
        netns.ip("link", "set", host_side, "master", "weave", "up", netns=self.netns)
        netns.ip("addr", "add", cidr, "dev", "ethwe", netns=name)
        netns.ip("link", "set", "ethwe", "up", netns=name)
        return cidr

    # --- what its log says -----------------------------------------------------------------
    def discovered(self) -> list[tuple[str, str]]:
        """(MAC, peer) of every `Discovered remote MAC … at …` line."""
        return re.findall(r"Discovered remote MAC (\S+) at (\S+)", self.log_text())


def container_mac(name: str, dev: str) -> str:
    out = netns.ip("-o", "link", "show", dev, netns=name).stdout
    match = re.search(r"link/ether (\S+)", out)
    assert match is not None, out
    return match.group(1)


def wait_until(predicate: object, timeout: float, interval: float = 0.5) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(AssertionError):
            if predicate():
                return True
        time.sleep(interval)
    return False
