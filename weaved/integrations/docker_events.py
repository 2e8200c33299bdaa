"""Docker's container events (start, die, destroy) as typed values, from a background thread.

The daemon uses them as triggers only (reconcile on state, not on events): a `start` may lead
to an auto-attach, a `die`/`destroy` to releasing the container's addresses. Because events can
be missed while Docker is unreachable (not started yet, restarting), every (re)connection first
yields a RESYNC event: the consumer should then re-list the running containers
(`docker_client.running_containers`), compare with what it knows and treat
`missed_starts(running, resync.time)` as the starts it did not hear of.

    watcher = DockerEventWatcher(url, on_event)   # on_event runs on the watcher's thread
    watcher.start(); …; watcher.stop()

    async for event in watch_docker_events(url, since):  # the same, on the asyncio side
        …
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from weaved.backoff import backoff_delay
from weaved.integrations.docker_client import ContainerInfo, connect

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
    time: float = 0.0  # Docker's timestamp (seconds); RESYNC: since when events may be missed
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


def missed_starts(running: Iterable[ContainerInfo], since: float) -> list[ContainerInfo]:
    """The running containers whose `start` event came while nobody followed the events (started
    at or after `since`), oldest first: what those events would have been."""
    return sorted((c for c in running if c.started_at >= since), key=lambda c: c.started_at)


class DockerEventWatcher:
    """Follows Docker's event stream on a thread, reconnecting with backoff, until stop().

    Docker may come later, go and come back: that is said once each way in the log, not at every
    attempt. Each RESYNC carries (as `time`) the moment since which events may have been missed:
    `since` (default: now) for the first, the loss of the stream for the next ones."""

    def __init__(
        self,
        url: str | None,
        on_event: Callable[[ContainerEvent], None],
        *,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        since: float | None = None,
        connector: Callable[[str | None], Any] = connect,
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.url = url
        self.on_event = on_event
        self.retry_min = retry_min
        self.retry_max = retry_max
        self._connect = connector
        self._clock = clock
        self._since = clock() if since is None else since
        self._stopping = threading.Event()
        # Sleeps between attempts; True means "stop". Tests inject a fake clock here.
        self._wait = wait or self._stopping.wait
        self._lock = threading.Lock()
        self._stream: Any = None
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._absence_told = False  # "Docker is not there" was logged since the last session
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
        failures = 0
        while not self._stopping.is_set():
            failures = 0 if self._attempt() else failures + 1
            if self._stopping.is_set():
                break
            if self._wait(backoff_delay(failures, self.retry_min, self.retry_max)):
                break

    def _attempt(self) -> bool:
        """One connection; True if events were followed (until Docker went away)."""
        error = "the event stream ended"
        try:
            self._follow()
        except Exception as exc:  # the SDK raises many kinds; all mean "try again later"
            error = _first_line(exc)
        followed = self.connected.is_set()
        self.connected.clear()
        if self._stopping.is_set():
            return followed
        if followed:
            self._since = self._clock()
            self._absence_told = True
            log.warning("docker events lost url=%s error=%s: reconnecting", self.url, error)
        elif not self._absence_told:
            self._absence_told = True
            log.info(
                "no Docker at %s (%s): container events not followed until it answers",
                self.url,
                error,
            )
        return followed

    def _follow(self) -> None:
        client = self._connect(self.url)
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
            self._absence_told = False
            log.info("docker events followed url=%s", self.url)
            self.on_event(ContainerEvent(EventAction.RESYNC, time=self._since))
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def watch_docker_events(
    url: str | None, since: float | None = None
) -> AsyncGenerator[ContainerEvent, None]:
    """The watcher as an async generator; closing the generator stops the thread."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[ContainerEvent] = asyncio.Queue()

    def deliver(event: ContainerEvent) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody listens
            loop.call_soon_threadsafe(queue.put_nowait, event)

    watcher = DockerEventWatcher(url, deliver, since=since)
    watcher.start()
    try:
        while True:
            yield await queue.get()
    finally:
        await asyncio.get_running_loop().run_in_executor(None, watcher.stop)
