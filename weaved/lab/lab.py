"""A local multi-host lab: each host a network namespace on a shared underlay bridge, with its
own spec, state directory and `weaved daemon`. Everything is found again by name (namespaces
`wd-<lab>-…`, the directory /run/weaved-lab/<lab>) so `down` leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from weaved.errors import ApplyError, DaemonError
from weaved.lab import netns

log = logging.getLogger(__name__)

LAB_ROOT = Path(os.environ.get("WEAVED_LAB_ROOT", "/run/weaved-lab"))
UNDERLAY_PREFIX = "192.0.2"
UNDERLAY_BRIDGE = "br0"
NETNS_ETC = Path("/etc/netns")


def examples_dir() -> Path | None:
    """examples/ of a source checkout, else of an installed package."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "examples",
        Path("/usr/share/weaved/examples"),
    ):
        if candidate.is_dir():
            return candidate
    return None


def host_address(index: int) -> str:
    return f"{UNDERLAY_PREFIX}.{10 + index}"


def peer_name(index: int) -> str:
    return f"02:00:00:00:01:{index:02x}"


@dataclass
class Host:
    index: int
    name: str  # host1, host2, …
    netns: str
    address: str
    dir: str
    pid: int = 0

    @property
    def spec(self) -> Path:
        return Path(self.dir) / "weave.yaml"

    @property
    def socket(self) -> Path:
        return Path(self.dir) / "weaved.sock"

    @property
    def state_dir(self) -> Path:
        return Path(self.dir) / "state"

    @property
    def log(self) -> Path:
        return Path(self.dir) / "daemon.log"

    def env(self) -> dict[str, str]:
        return {
            "WEAVED_SPEC": str(self.spec),
            "WEAVED_SOCKET": str(self.socket),
            "WEAVED_STATE_DIR": str(self.state_dir),
            # With a cluster file as the spec, each lab host runs its own section.
            "WEAVED_HOST": self.name,
        }


@dataclass
class LabState:
    name: str
    underlay: str
    hosts: list[Host] = field(default_factory=list)
    # container (network namespace) name → the host it is attached to
    containers: dict[str, str] = field(default_factory=dict)


def generated_spec(index: int, count: int, topology: str) -> str:
    """A host spec for labs larger than the examples (or other topologies)."""
    if topology == "line":
        targets = [host_address(index - 1)] if index > 1 else []
    elif topology == "ring":
        targets = [host_address(index - 1 if index > 1 else count)] if count > 1 else []
    else:  # star: everyone dials host1; discovery completes the mesh
        targets = [host_address(1)] if index > 1 else []
    lines = [
        "version: 1",
        f'peer: {{name: "{peer_name(index)}", nickname: host{index}}}',
        f"peers: [{', '.join(targets)}]",
        "expose:",
        f"  - cidr: 10.2.1.{index}/24",
    ]
    return "\n".join(lines) + "\n"


class Lab:
    def __init__(self, name: str = "lab") -> None:
        self.name = name
        self.dir = LAB_ROOT / name
        self.state_file = self.dir / "lab.json"
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # daemons this process started

    # --- persistence --------------------------------------------------------------------
    def load(self) -> LabState | None:
        try:
            raw = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        hosts = [Host(**h) for h in raw["hosts"]]
        return LabState(raw["name"], raw["underlay"], hosts, dict(raw.get("containers", {})))

    def save(self, state: LabState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    def host(self, which: str) -> Host:
        state = self.load()
        if state is None:
            raise DaemonError(f"lab {self.name!r} is not up\n  hint: weaved lab up")
        for h in state.hosts:
            if which in (h.name, str(h.index), h.netns):
                return h
        raise DaemonError(
            f"lab {self.name!r} has no host {which!r}"
            f" (hosts: {', '.join(h.name for h in state.hosts)})"
        )

    # --- up -----------------------------------------------------------------------------
    def up(
        self,
        hosts: int = 3,
        spec_dir: Path | None = None,
        topology: str = "star",
        resync: float = 5.0,
        wait: float = 30.0,
    ) -> LabState:
        if self.load() is not None:
            raise DaemonError(f"lab {self.name!r} is already up\n  hint: weaved lab down first")
        if spec_dir is None and topology == "star":
            found = examples_dir()
            spec_dir = found / "lab" if found else None
        state = LabState(self.name, f"wd-{self.name}-u")
        self.save(state)  # saved first so a failed `up` can still be torn down
        try:
            netns.add_netns(state.underlay)
            netns.ip("link", "add", UNDERLAY_BRIDGE, "type", "bridge", netns=state.underlay)
            netns.ip("link", "set", UNDERLAY_BRIDGE, "up", netns=state.underlay)
            for index in range(1, hosts + 1):
                state.hosts.append(self._add_host(state, index, hosts, spec_dir, topology))
                self.save(state)
            for host in state.hosts:
                host.pid = self._start_daemon(host, resync)
                self.save(state)
            for host in state.hosts:
                self.wait_ready(host, wait)
        except Exception:
            self.down()
            raise
        return state

    def _add_host(
        self, state: LabState, index: int, count: int, spec_dir: Path | None, topology: str
    ) -> Host:
        ns = f"wd-{self.name}-h{index}"
        host = Host(index, f"host{index}", ns, host_address(index), str(self.dir / f"host{index}"))
        netns.add_netns(ns)
        # `ip netns exec` mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf: lab hosts
        # get no upstream resolver, so nothing a lab daemon forwards leaves the lab.
        etc = NETNS_ETC / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("# weaved lab host: no upstream resolver\n")
        # Both ends are created straight inside their namespaces: nothing in the root namespace.
        netns.ip(
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            f"h{index}",
            "netns",
            state.underlay,
            netns=ns,
        )
        netns.ip("link", "set", f"h{index}", "master", UNDERLAY_BRIDGE, "up", netns=state.underlay)
        netns.ip("addr", "add", f"{host.address}/24", "dev", "eth0", netns=ns)
        netns.ip("link", "set", "eth0", "up", netns=ns)
        Path(host.dir).mkdir(parents=True, exist_ok=True)
        host.state_dir.mkdir(exist_ok=True)
        example = spec_dir / f"host{index}.yaml" if spec_dir else None
        if example is not None and example.is_file():
            shutil.copyfile(example, host.spec)
        else:
            host.spec.write_text(generated_spec(index, count, topology))
        return host

    def _start_daemon(self, host: Host, resync: float) -> int:
        argv = netns.exec_argv(
            host.netns,
            [
                sys.executable,
                "-m",
                "weaved",
                "-f",
                str(host.spec),
                "--state-dir",
                str(host.state_dir),
                "--socket",
                str(host.socket),
                "daemon",
                "--resync",
                str(resync),
            ],
        )
        with open(host.log, "ab") as logfile:
            proc = subprocess.Popen(
                argv,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "WEAVED_HOST": host.name},
            )
        self._children[proc.pid] = proc
        return proc.pid

    def wait_ready(self, host: Host, timeout: float = 30.0) -> None:
        from weaved.control import Client

        client = Client(str(host.socket), timeout=5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            child = self._children.get(host.pid)
            # Our own child: its exit status is certain; otherwise look the PID up.
            exited = child.poll() is not None if child is not None else not _alive(host.pid)
            if host.pid and exited:
                raise ApplyError(f"{host.name}: weaved daemon exited; log:\n{_tail(host.log)}")
            try:
                status = client.call("GET", "/status", timeout=2)
                if status.get("converges", 0) > 0:
                    return
            except DaemonError:
                pass
            time.sleep(0.1)
        raise ApplyError(
            f"{host.name}: daemon not ready after {timeout:.0f}s; log:\n{_tail(host.log)}"
        )

    def wait_mesh(self, timeout: float = 30.0) -> bool:
        """Until every host's daemon knows every host and DNS has all the exposed names."""
        state = self.load()
        if state is None:
            return False
        want = {h.name for h in state.hosts}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._knows(h, want) for h in state.hosts):
                return True
            time.sleep(0.3)
        return False

    def wait_in_sync(self, timeout: float = 30.0) -> bool:
        """Until `weaved plan` is empty on every host (the data plane's FDB entries follow the
        mesh, so they settle a moment after the peers know each other)."""
        state = self.load()
        deadline = time.monotonic() + timeout
        pending = [h.name for h in state.hosts] if state else []
        while pending and time.monotonic() < deadline:
            pending = [
                h
                for h in pending
                if self.exec(h, ["weaved", "plan", "--detailed-exitcode"], capture=True).returncode
            ]
            if pending:
                time.sleep(0.5)
        return not pending

    def _knows(self, host: Host, want: set[str]) -> bool:
        proc = self.exec(host.name, ["weaved", "report"], capture=True, timeout=20)
        if proc.returncode != 0:
            return False
        report = json.loads(proc.stdout)
        peers = {p.get("NickName") for p in (report.get("Router", {}).get("Peers") or [])}
        return peers >= want

    # --- containers (network namespaces attached through a host's daemon) ----------------
    def add_container(
        self, which: str, name: str, addresses: list[str] | None = None, hostname: str | None = None
    ) -> str:
        """A namespace `name` attached on host `which`; returns what `weaved attach` printed."""
        state = self.load()
        host = self.host(which)
        if state is None:
            raise DaemonError(f"lab {self.name!r} is not up")
        if name in netns.list_netns():
            raise DaemonError(f"a network namespace named {name!r} exists already")
        netns.add_netns(name)
        state.containers[name] = host.name
        self.save(state)
        proc = self.exec(host.name, ["weaved", "attach", *(addresses or []), name], capture=True)
        if proc.returncode != 0:
            raise ApplyError(f"attach {name} on {host.name}: {proc.stderr.strip()}")
        if hostname:  # like `docker run --hostname`: the name weaveDNS gives the container
            ips = [line.split("/")[0] for line in proc.stdout.split()]
            self.exec(host.name, ["weaved", "dns-add", *ips, name, "-h", hostname], capture=True)
        return proc.stdout.strip()

    def remove_container(self, name: str) -> None:
        state = self.load()
        if state is None or name not in state.containers:
            raise DaemonError(f"lab {self.name!r} has no container {name!r}")
        self.exec(state.containers.pop(name), ["weaved", "detach", name], capture=True)
        netns.delete_netns(name)
        self.save(state)

    def in_container(
        self, name: str, argv: list[str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run in the container's namespace; /etc/netns/NAME/resolv.conf (weaveDNS) applies."""
        return subprocess.run(
            netns.exec_argv(name, argv),
            text=True,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def stop_host(self, which: str) -> bool:
        """Stop one host's daemon (SIGTERM, like systemctl stop); its namespace stays."""
        state = self.load()
        host = self.host(which)
        stopped = bool(host.pid) and _stop(host.pid)
        if state is not None:
            for h in state.hosts:
                if h.name == host.name:
                    h.pid = 0
            self.save(state)
        return stopped

    def start_host(self, which: str, resync: float = 5.0, wait: float = 30.0) -> Host:
        state = self.load()
        host = self.host(which)
        if host.pid and _alive(host.pid):
            return host
        host.pid = self._start_daemon(host, resync)
        if state is not None:
            for h in state.hosts:
                if h.name == host.name:
                    h.pid = host.pid
            self.save(state)
        self.wait_ready(host, wait)
        return host

    # --- down ---------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop daemons by PID, delete every namespace of this lab by name, remove its files."""
        removed: list[str] = []
        state = self.load()
        for host in state.hosts if state else []:
            if host.pid and _stop(host.pid):
                removed.append(f"process {host.pid}")
        for container in state.containers if state else []:
            netns.delete_netns(container)
            shutil.rmtree(NETNS_ETC / container, ignore_errors=True)
            removed.append(f"netns {container} (container)")
        prefix = f"wd-{self.name}-"
        # Containers and hosts before the underlay, so no veth dangles half-way.
        for ns in sorted(netns.list_netns(), key=lambda n: (n.endswith("-u"), -len(n))):
            if ns.startswith(prefix):
                netns.delete_netns(ns)
                removed.append(f"netns {ns}")
        for etc in NETNS_ETC.glob(f"{prefix}*") if NETNS_ETC.is_dir() else []:
            shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        return removed

    # --- exec ---------------------------------------------------------------------------
    def exec(
        self, which: str, argv: list[str], *, capture: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        host = self.host(which)
        if argv and argv[0] == "weaved":
            argv = [sys.executable, "-m", "weaved", *argv[1:]]
        env = {**os.environ, **host.env()}
        return subprocess.run(
            netns.exec_argv(host.netns, argv),
            env=env,
            text=True,
            capture_output=capture,
            timeout=timeout,
            check=False,
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "weaved" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _stop(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL; only if the PID is still a weaved process (PIDs get reused)."""
    if not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
