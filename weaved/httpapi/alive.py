"""`check-alive=true` as Weave's router answers it: one look at Docker before the allocation
(or after a name is added); without a Docker to ask, the flag changes nothing (Weave started
without a Docker client ignores it too)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import docker
import docker.errors

from weaved.integrations.docker_client import docker_url
from weaved.spec.models import Spec

log = logging.getLogger(__name__)

INSPECT_TIMEOUT = 5


def docker_url_of(spec: Spec) -> str:
    explicit = "socket" in spec.docker.model_fields_set
    return docker_url(spec.docker.socket if explicit else None)


def _not_running(url: str, ident: str) -> bool:
    """Weave's `IsContainerNotRunning`: stopped, restarting or unknown to Docker → True; any
    other answer (or no Docker at all) → False."""
    try:
        client = docker.DockerClient(base_url=url, version="auto", timeout=INSPECT_TIMEOUT)
    except (docker.errors.DockerException, OSError):
        return False  # no Docker client: Weave's `dockerCli == nil`
    try:
        attrs: dict[str, Any] = client.api.inspect_container(ident)
    except docker.errors.NotFound:
        return True
    except (docker.errors.DockerException, OSError) as exc:
        log.warning("could not check container status: %s", str(exc).splitlines()[0][:200])
        return False
    finally:
        client.close()
    state = attrs.get("State") or {}
    return not state.get("Running") or bool(state.get("Restarting"))


async def container_not_running(spec: Spec, ident: str) -> bool:
    return await asyncio.to_thread(_not_running, docker_url_of(spec), ident)
