"""Following Docker's events for the attach part: a container that dies is released, one that
starts is attached when the spec says so (`docker.auto_attach`, WEAVE_CIDR as Weave's proxy),
and the starts missed while Docker was not followed are caught up on at each (re)connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

from weaved.attach.cidr_env import container_addresses
from weaved.attach.model import Attachment
from weaved.attach.requests import AttachRequest
from weaved.errors import DependencyError, WeavedError
from weaved.integrations.docker_client import (
    ContainerInfo,
    connect,
    plugin_name,
    running_containers,
)
from weaved.integrations.docker_events import ContainerEvent, EventAction, missed_starts
from weaved.ipam.part import IpamPart
from weaved.spec.models import Spec

log = logging.getLogger(__name__)

# Docker's events at a URL, each (re)connection first announced by a RESYNC (see docker_events).
EventSource = Callable[[str, float], AsyncGenerator[ContainerEvent, None]]


class Followed(Protocol):
    """What the follower sees of the attach part."""

    spec: Spec
    ipam: IpamPart
    records: dict[str, Attachment]

    @property
    def docker_url(self) -> str: ...

    async def resync(self) -> None: ...

    async def attach(self, request: AttachRequest) -> object: ...

    async def container_died(self, key: str) -> None: ...


class DockerFollower:
    def __init__(self, part: Followed, events: EventSource) -> None:
        self.part = part
        self._events = events
        self.moved = asyncio.Event()  # `docker.socket` changed: follow the new one
        self._started_at = time.time()  # starts from then on are ours to follow

    async def run(self) -> None:
        """Follow the Docker the spec names, whenever it answers; a new `docker.socket` in the
        spec replaces the watch."""
        while True:
            self.moved.clear()
            follower = asyncio.create_task(
                self._follow(self.part.docker_url), name="attach-docker-follow"
            )
            try:
                await self.moved.wait()
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            log.info("docker.socket changed: following %s", self.part.docker_url)

    async def _follow(self, url: str) -> None:
        # Starts since this daemon started and not heard of are caught up on (re)connection;
        # containers that were running before it started are left alone, as always.
        async with contextlib.aclosing(self._events(url, self._started_at)) as events:
            async for event in events:
                try:
                    await self._on_event(event)
                except WeavedError as exc:
                    log.error("docker event %s %s: %s", event.action.value, event.name, exc)

    async def _on_event(self, event: ContainerEvent) -> None:
        part = self.part
        if event.action is EventAction.RESYNC:
            try:
                await part.resync()
            except WeavedError as exc:  # the periodic resync tries again; catch up anyway
                log.error("attachment resync failed: %s", exc)
            await self._catch_up(event.time)
        elif event.action in (EventAction.DIE, EventAction.DESTROY):
            await part.container_died(event.container_id)
        elif event.action is EventAction.START:
            part.ipam.allocator.container_started(event.container_id)
            if part.spec.docker.auto_attach:
                # WEAVE_CIDR / works.weave.cidr as Weave's proxy: addresses, or `none`.
                plugin = part.spec.docker.plugin
                driver = plugin_name(plugin.socket) if plugin.enabled else None
                wanted = await asyncio.to_thread(
                    container_addresses, part.docker_url, event.container_id, driver
                )
                if wanted is not None:
                    await part.attach(AttachRequest(event.container_id, wanted))

    async def _catch_up(self, since: float) -> None:
        """Do what the `start` events missed while Docker was not followed would have done.
        (Deaths meanwhile need no events: `resync` finds their veths gone or orphaned.)"""
        url = self.part.docker_url
        for info in missed_starts(await asyncio.to_thread(running, url), since):
            known = self.part.records.get(info.id)
            if known is not None and known.target.pid == info.pid:
                continue  # attached already (by hand, or from an event after all)
            log.info("start missed while Docker was not followed container=%s", info.name)
            start = ContainerEvent(EventAction.START, info.id, info.name, info.started_at)
            try:
                await self._on_event(start)
            except WeavedError as exc:
                log.error("missed start of %s: %s", info.name, exc)


def running(url: str) -> list[ContainerInfo]:
    """Docker's running containers, or none if it went away again (its next RESYNC retries)."""
    try:
        client = connect(url, 5)
    except DependencyError as exc:
        log.debug("no docker for catching up: %s", exc)
        return []
    try:
        return running_containers(client)
    except DependencyError as exc:
        log.debug("docker did not list its containers: %s", exc)
        return []
    finally:
        client.close()
