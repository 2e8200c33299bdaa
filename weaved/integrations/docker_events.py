"""Docker's container events (start, die, destroy) as typed values, from a background thread.

The daemon uses them as triggers only (reconcile on state, not on events): a `start` may lead
to an auto-attach, a `die`/`destroy` to releasing the container's addresses. Because events can
be missed while Docker is unreachable, every (re)connection first yields a RESYNC event: the
consumer should then re-list the running containers (`docker_client.running_containers`) and
compare with what it knows.

    watcher = DockerEventWatcher(url, on_event)   # on_event runs on the watcher's thread
    watcher.start(); …; watcher.stop()

    async for event in watch_docker_events(url):  # the same, on the asyncio side
        …
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from weaved.integrations.docker_client import connect

log = logging.getLogger(__name__)

WATCHED = ("start", "die", "destroy")


class EventAction(StrEnum):
    START = "start"
    DIE = "die"
    DESTROY = "destroy"
    RESYNC = "resync"  # (re)connected: events may have been missed, look at the whole state


@dataclass(frozen=True)
class ContainerEvent:
    action: EventAction
    container_id: str = ""  # the full ID ("" for RESYNC)
    name: str = ""
    time: float = 0.0  # Docker's timestamp (seconds)
    exit_code: int | None = None  # for DIE


def parse_event(raw: dict[str, Any]) -> ContainerEvent | None:
    """A Docker event message (API ≥ 1.22 and the old flat form) → ContainerEvent, or None for
    anything that is not a container start/die/destroy."""
    kind = raw.get("Type", "container")
    action = str(raw.get("Action") or raw.get("status") or "")
    if kind != "container" or action not in WATCHED:
        return None
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    container_id = str(actor.get("ID") or raw.get("id") or "")
    if not container_id:
        return None
    if raw.get("timeNano"):
        stamp = int(raw["timeNano"]) / 1e9
    else:
        stamp = float(raw.get("time") or 0)
    code = attributes.get("exitCode")
    return ContainerEvent(
        EventAction(action),
        container_id,
        str(attributes.get("name") or ""),
        stamp,
        int(code) if code is not None and str(code).lstrip("-").isdigit() else None,
    )


class DockerEventWatcher:
    """Follows Docker's event stream on a thread, reconnecting with backoff, until stop()."""

    def __init__(
        self,
        url: str | None,
        on_event: Callable[[ContainerEvent], None],
        *,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        self.url = url
        self.on_event = on_event
        self.retry_min = retry_min
        self.retry_max = retry_max
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            stream, client = self._stream, self._client
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        delay = self.retry_min
        while not self._stopping.is_set():
            try:
                self._follow()
                delay = self.retry_min  # a clean end (Docker restarted): reconnect at once
            except Exception as exc:  # the SDK raises many kinds; all mean "reconnect"
                if self._stopping.is_set():
                    break
                log.warning("docker events interrupted url=%s error=%s", self.url, exc)
            finally:
                self.connected.clear()
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, self.retry_max)

    def _follow(self) -> None:
        client = connect(self.url)
        with self._lock:
            self._client = client
        try:
            stream = client.api.events(
                decode=True, filters={"type": "container", "event": list(WATCHED)}
            )
            with self._lock:
                self._stream = stream
            if self._stopping.is_set():
                return
            self.connected.set()
            self.on_event(ContainerEvent(EventAction.RESYNC))
            for raw in stream:
                if self._stopping.is_set():
                    return
                event = parse_event(raw) if isinstance(raw, dict) else None
                if event is not None:
                    self.on_event(event)
        finally:
            with self._lock:
                self._stream = None
                self._client = None
            with contextlib.suppress(Exception):
                client.close()


async def watch_docker_events(url: str | None) -> AsyncIterator[ContainerEvent]:
    """The watcher as an async generator; closing the generator stops the thread."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[ContainerEvent] = asyncio.Queue()

    def deliver(event: ContainerEvent) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody listens
            loop.call_soon_threadsafe(queue.put_nowait, event)

    watcher = DockerEventWatcher(url, deliver)
    watcher.start()
    try:
        while True:
            yield await queue.get()
    finally:
        await asyncio.get_running_loop().run_in_executor(None, watcher.stop)
