"""Following Docker whenever it is there: the watcher's retries with backoff, recovery and log
lines (a fake connect function and clock), and the daemon part catching up on what it missed
and moving to a new `docker.socket` (a fake event source). No Docker, no root."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest

from weaved.attach import docker_follow
from weaved.attach.part import AttachPart
from weaved.attach.requests import AttachRequest
from weaved.backoff import backoff_delay
from weaved.errors import DependencyError
from weaved.integrations.docker_client import ContainerInfo, docker_time
from weaved.integrations.docker_events import (
    ContainerEvent,
    DockerEventWatcher,
    EventAction,
    missed_starts,
)
from weaved.spec.models import Spec

CID = "f7bf6a00bff857c29f95480982dacd3b586ea92448b99ce26a204c6ac613c648"
START = {"Type": "container", "Action": "start", "Actor": {"ID": CID, "Attributes": {}}}


class FakeStream:
    """Docker's event stream; iterating to the end is Docker going away."""

    def __init__(self, raw: list[dict[str, Any]]) -> None:
        self.raw = raw

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.raw)

    def close(self) -> None:
        pass


class FakeClient:
    def __init__(self, raw: list[dict[str, Any]]) -> None:
        self.api = self
        self.stream = FakeStream(raw)

    def events(self, **_kwargs: Any) -> FakeStream:
        return self.stream

    def close(self) -> None:
        pass


class FakeDocker:
    """Connection outcomes in order (None: nothing answers) and a clock that only the backoff
    moves; the watcher is told to stop once the script is played."""

    def __init__(self, script: list[list[dict[str, Any]] | None]) -> None:
        self.script = list(script)
        self.now = 1000.0
        self.delays: list[float] = []
        self.done = threading.Event()

    def connect(self, _url: str | None) -> FakeClient:
        outcome = self.script.pop(0) if self.script else None
        if outcome is None:
            raise DependencyError("Docker is not reachable at unix:///x: refused\n  hint: …")
        return FakeClient(outcome)

    def clock(self) -> float:
        return self.now

    def wait(self, delay: float) -> bool:
        self.delays.append(delay)
        self.now += delay
        if not self.script:
            self.done.set()
            return True
        return False


def test_backoff_doubles_up_to_thirty_seconds() -> None:
    delays = [backoff_delay(n, 0.5, 30.0) for n in range(10)]
    assert delays == [0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff_delay(10_000, 0.5, 30.0) == 30.0


def test_watcher_waits_for_docker_and_follows_it_again_after_a_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Not there 3 times; events (one start), Docker restarts; not there twice; back, then gone.
    docker = FakeDocker([None, None, None, [START], None, None, []])
    events: list[ContainerEvent] = []
    watcher = DockerEventWatcher(
        "unix:///x",
        events.append,
        since=900.0,
        connector=docker.connect,
        clock=docker.clock,
        wait=docker.wait,
    )
    with caplog.at_level(logging.INFO, logger="weaved.integrations.docker_events"):
        watcher.start()
        assert docker.done.wait(10)
        watcher.stop()

    assert docker.delays == [0.5, 1.0, 2.0, 0.5, 0.5, 1.0, 0.5]
    assert events == [
        ContainerEvent(EventAction.RESYNC, time=900.0),  # missed since it was asked to follow
        ContainerEvent(EventAction.START, CID),
        ContainerEvent(EventAction.RESYNC, time=1003.5),  # missed since the stream was lost
    ]
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" ")[:3] for line in lines] == [
        ["no", "Docker", "at"],  # once, not at every attempt
        ["docker", "events", "followed"],
        ["docker", "events", "lost"],  # the failed attempts after it say nothing more
        ["docker", "events", "followed"],
        ["docker", "events", "lost"],
    ]
    assert "refused" in lines[0] and "hint" not in lines[0]


def test_missed_starts_are_the_ones_since_the_gap() -> None:
    def c(name: str, started: float) -> ContainerInfo:
        return ContainerInfo(name, name, 1, True, started_at=started)

    running = [c("late", 1005.0), c("before", 900.0), c("at", 1000.0), c("early", 1001.0)]
    assert [x.name for x in missed_starts(running, 1000.0)] == ["at", "early", "late"]
    assert docker_time("2026-01-02T03:04:05.123456789Z") == pytest.approx(1767323045.123456)
    assert docker_time("0001-01-01T00:00:00Z") == 0.0
    assert docker_time("") == 0.0


# --- the daemon part ------------------------------------------------------------------------


class FakeAllocator:
    def __init__(self) -> None:
        self.started: list[str] = []

    def container_started(self, ident: str) -> None:
        self.started.append(ident)


class FakeIpam:
    def __init__(self) -> None:
        self.allocator = FakeAllocator()


class FakeEvents:
    """An event source per URL that hands out what the test puts in and records closes."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, float]] = []
        self.closed: list[str] = []
        self.queues: dict[str, asyncio.Queue[ContainerEvent]] = {}

    async def __call__(self, url: str, since: float) -> AsyncGenerator[ContainerEvent, None]:
        self.opened.append((url, since))
        queue = self.queues.setdefault(url, asyncio.Queue())
        try:
            while True:
                yield await queue.get()
        finally:
            self.closed.append(url)


class RecordingPart(AttachPart):
    """The real event handling; attach and the kernel's view replaced by records."""

    def __init__(self, spec: Spec, state_dir: Path, events: FakeEvents) -> None:
        super().__init__(spec, state_dir, FakeIpam(), None, events)  # type: ignore[arg-type]
        self.attached: list[str] = []
        self.resyncs = 0

    async def resync(self) -> None:
        self.resyncs += 1

    async def attach(self, request: AttachRequest) -> Any:
        self.attached.append(request.target)


def spec(socket: str, auto_attach: bool = True) -> Spec:
    docker = {"socket": socket, "auto_attach": auto_attach}
    return Spec.model_validate({"version": 1, "docker": docker})


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within the timeout")


def test_part_catches_up_on_starts_it_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    since = 1000.0
    running = [
        ContainerInfo("a" * 64, "old", 11, True, started_at=since - 5),  # before the daemon
        ContainerInfo("b" * 64, "missed", 12, True, started_at=since + 5),
    ]
    monkeypatch.setattr(docker_follow, "running", lambda _url: running)
    events = FakeEvents()
    part = RecordingPart(spec("unix:///run/a.sock"), tmp_path, events)

    async def scenario() -> None:
        task = asyncio.create_task(part.docker.run())
        await _until(lambda: events.opened)
        events.queues["unix:///run/a.sock"].put_nowait(
            ContainerEvent(EventAction.RESYNC, time=since)
        )
        await _until(lambda: part.attached)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert part.resyncs == 1
    assert part.attached == ["b" * 64]  # only the start it would have heard of
    assert part.ipam.allocator.started == ["b" * 64]  # type: ignore[attr-defined]


def test_part_follows_a_new_docker_socket(tmp_path: Path) -> None:
    events = FakeEvents()
    part = RecordingPart(spec("unix:///run/a.sock"), tmp_path, events)

    async def scenario() -> None:
        task = asyncio.create_task(part.docker.run())
        await _until(lambda: len(events.opened) == 1)
        part.spec_changed(spec("unix:///run/a.sock", auto_attach=False))  # same Docker
        await asyncio.sleep(0.1)
        assert len(events.opened) == 1 and events.closed == []
        part.spec_changed(spec("unix:///run/b.sock"))
        await _until(lambda: len(events.opened) == 2)
        assert events.closed == ["unix:///run/a.sock"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert [url for url, _ in events.opened] == ["unix:///run/a.sock", "unix:///run/b.sock"]
    assert events.closed == ["unix:///run/a.sock", "unix:///run/b.sock"]
