"""TARGET → the network namespace to plug into.

A TARGET is a Docker container (name or ID, through the Docker API), a named network namespace
(`/run/netns/NAME`, as `ip netns add` makes them) or a process (`/proc/PID/ns/net`). A bare word
is tried in that order of certainty: all digits and a live process → the PID; a name under
/run/netns → that namespace; anything else → Docker. `docker:`, `netns:` and `pid:` force one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import docker

from weaved.attach.model import Target, TargetKind
from weaved.attach.netns import current_netns_inode, inode_of
from weaved.errors import DependencyError, WeavedError
from weaved.integrations.docker_client import ContainerInfo, connect, inspect_container

NETNS_DIR = Path("/run/netns")
PROC = Path("/proc")
_NETNS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


class TargetError(WeavedError):
    """The TARGET names nothing attachable (unknown, stopped, or the host itself): the user
    must name a running container, a named netns or a live process."""


def _checked(target: Target, what: str) -> Target:
    try:
        inode = inode_of(target.netns_path)
    except OSError:
        raise TargetError(f"{what} has no network namespace (did it just exit?)") from None
    if inode == current_netns_inode():
        raise TargetError(
            f"{what} is running in the host network namespace, and therefore cannot be\n"
            "connected to weave - perhaps the container was started with --net=host"
        )
    return Target(target.kind, target.key, target.name, target.pid, target.netns_path, inode)


def pid_target(pid: int) -> Target:
    path = PROC / str(pid) / "ns" / "net"
    if pid <= 0 or not (PROC / str(pid)).is_dir():
        raise TargetError(f"no process {pid}")
    return _checked(
        Target(TargetKind.PID, f"pid:{pid}", str(pid), pid, str(path)), f"process {pid}"
    )


def netns_target(name: str) -> Target:
    if not _NETNS_NAME.match(name) or name in (".", ".."):
        raise TargetError(f"{name!r} is not a network namespace name")
    path = NETNS_DIR / name
    if not path.exists():
        raise TargetError(f"no network namespace {name!r} (no {path})")
    return _checked(Target(TargetKind.NETNS, f"netns:{name}", name, None, str(path)), name)


def docker_target(info: ContainerInfo, asked: str | None = None) -> Target:
    shown = asked or info.name or info.id[:12]
    if not info.running or info.pid == 0:
        raise TargetError(f"Container {shown} is not running.")
    path = PROC / str(info.pid) / "ns" / "net"
    target = Target(TargetKind.DOCKER, info.id, info.name, info.pid, str(path))
    return _checked(target, f"Container {shown}")


def resolve_docker(name_or_id: str, url: str | None = None) -> Target:
    client: docker.DockerClient = connect(url)
    try:
        info = inspect_container(client, name_or_id)
    finally:
        client.close()
    return docker_target(info, name_or_id)


def resolve_target(text: str, docker_url: str | None = None) -> Target:
    """Resolve a TARGET as the user typed it; TargetError (or DependencyError when Docker is
    needed but not reachable) otherwise."""
    kind, sep, rest = text.partition(":")
    if sep and kind in ("docker", "netns", "pid"):
        if not rest:
            raise TargetError(f"{text!r}: nothing after '{kind}:'")
        if kind == "pid":
            if not rest.isdigit():
                raise TargetError(f"{text!r}: a PID is a number")
            return pid_target(int(rest))
        if kind == "netns":
            return netns_target(rest)
        return resolve_docker(rest, docker_url)
    if not text:
        raise TargetError("empty TARGET")
    if text.isdigit() and (PROC / text).is_dir():
        return pid_target(int(text))
    if _NETNS_NAME.match(text) and text not in (".", "..") and (NETNS_DIR / text).exists():
        return netns_target(text)
    try:
        return resolve_docker(text, docker_url)
    except DependencyError as exc:
        raise DependencyError(
            f"{text!r} is neither a process nor a namespace under {NETNS_DIR}, and {exc}"
        ) from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
