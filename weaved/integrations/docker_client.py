"""Docker through its API (the `docker` SDK): which socket, and what a container is right now.

Transport failures surface from the SDK as `requests` exceptions, which are OSErrors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import docker
import docker.errors

from weaved.errors import DependencyError, WeavedError

log = logging.getLogger(__name__)

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
API_TIMEOUT = 10.0


def plugin_name(socket_path: str) -> str:
    """`/run/docker/plugins/weavemesh.sock` → `weavemesh` (Docker's own rule)."""
    return PurePosixPath(socket_path).name.removesuffix(".sock")


class ContainerError(WeavedError):
    """The named container does not exist or is not running: the user must name a running one."""


@dataclass(frozen=True)
class ContainerInfo:
    id: str  # the full 64-hex ID
    name: str  # without Docker's leading "/"
    pid: int  # 0 when not running
    running: bool
    hostname: str = ""
    domainname: str = ""
    network_mode: str = ""
    started_at: float = 0.0  # wall clock seconds of the last start (0: never started)
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    hosts_path: str = ""  # the host's file Docker bind-mounts as the container's /etc/hosts


def docker_url(spec_socket: str | None = None) -> str:
    """The Docker endpoint: the spec's `docker.socket` if set, else DOCKER_HOST, else Docker's
    default socket."""
    return spec_socket or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL


def connect(url: str | None = None, timeout: float = API_TIMEOUT) -> docker.DockerClient:
    """A client for `url`; DependencyError when nothing answers there."""
    base = url or docker_url()
    try:
        return docker.DockerClient(base_url=base, version="auto", timeout=int(timeout))
    except (docker.errors.DockerException, OSError) as exc:
        raise DependencyError(
            f"Docker is not reachable at {base}: {_short(exc)}\n"
            "  hint: start dockerd, or point `docker.socket` in the spec (or DOCKER_HOST) at it"
        ) from None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def info_of(attrs: dict[str, Any]) -> ContainerInfo:
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    host_config = attrs.get("HostConfig") or {}
    return ContainerInfo(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        pid=int(state.get("Pid") or 0),
        running=bool(state.get("Running")),
        hostname=str(config.get("Hostname") or ""),
        domainname=str(config.get("Domainname") or ""),
        network_mode=str(host_config.get("NetworkMode") or ""),
        started_at=docker_time(str(state.get("StartedAt") or "")),
        labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
        hosts_path=str(attrs.get("HostsPath") or ""),
    )


def docker_time(text: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, `Z`) → seconds; 0 for none or Docker's zero
    time (`0001-01-01T00:00:00Z`, a container never started)."""
    try:
        seconds = datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0
    return max(seconds, 0.0)


def inspect_container(client: docker.DockerClient, name_or_id: str) -> ContainerInfo:
    """Docker's view of one container (by name, full ID or unique ID prefix)."""
    try:
        attrs: dict[str, Any] = client.api.inspect_container(name_or_id)
    except docker.errors.NotFound:
        raise ContainerError(f"Error: No such container: {name_or_id}") from None
    except docker.errors.APIError as exc:
        raise ContainerError(f"Docker refused to inspect {name_or_id}: {_short(exc)}") from None
    except OSError as exc:
        raise DependencyError(f"Docker stopped answering: {_short(exc)}") from None
    return info_of(attrs)


def running_containers(client: docker.DockerClient) -> list[ContainerInfo]:
    """Every running container with its PID (one inspect each: `list` does not carry PIDs)."""
    try:
        summaries: list[dict[str, Any]] = client.api.containers()
    except (docker.errors.APIError, OSError) as exc:
        raise DependencyError(f"Docker did not list its containers: {_short(exc)}") from None
    out = []
    for summary in summaries:
        try:
            out.append(inspect_container(client, str(summary["Id"])))
        except ContainerError:
            continue  # it went away between the list and the inspect
    return [c for c in out if c.running and c.pid]


def containers_by_pid(url: str | None) -> dict[int, ContainerInfo]:
    """PID → running container, or {} when Docker is not there (a host may run without it)."""
    try:
        client = connect(url, timeout=5)
    except DependencyError as exc:
        log.debug("no docker for container lookup: %s", exc)
        return {}
    try:
        return {c.pid: c for c in running_containers(client)}
    except DependencyError as exc:
        log.debug("docker lookup failed: %s", exc)
        return {}
    finally:
        client.close()
