"""The spec watch: only the spec's own name triggers a reload (inotify in a temporary directory,
no root). The daemon's log may live next to the spec; writing it must not trigger anything."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from watchfiles import Change

from weaved.daemon.watch import file_key, name_filter, poll_file, watch_file

SPEC = "version: 1\n"


def test_filter_matches_the_spec_name_in_its_directory_only(tmp_path: Path) -> None:
    wanted = name_filter(tmp_path / "weave.yaml")
    assert wanted(Change.modified, str(tmp_path / "weave.yaml"))
    assert wanted(Change.added, str(tmp_path / "weave.yaml"))  # renamed into place
    assert not wanted(Change.modified, str(tmp_path / "daemon.log"))
    assert not wanted(Change.added, str(tmp_path / ".weave.yaml.swp"))
    assert not wanted(Change.modified, str(tmp_path / "sub" / "weave.yaml"))


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "no reload within the timeout"
        await asyncio.sleep(0.05)


def test_only_edits_of_the_spec_trigger_reloads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = tmp_path / "weave.yaml"
    spec.write_text(SPEC)
    calls: list[int] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watch_file(spec, lambda: calls.append(1), stop))
        # The watch is in place once an edit is seen (it starts on the task's first step).
        while not calls:
            spec.write_text(SPEC)
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)
        calls.clear()

        log = tmp_path / "daemon.log"
        for i in range(20):  # a chatty log next to the spec, editors' scratch files
            with log.open("a") as fh:
                fh.write(f"line {i}\n")
            await asyncio.sleep(0.01)
        (tmp_path / ".weave.yaml.swp").write_text("x")
        (tmp_path / "other.yaml").write_text(SPEC)
        await asyncio.sleep(0.6)
        assert calls == []

        spec.write_text(SPEC + "# edited in place\n")
        await _until(lambda: len(calls) == 1)

        # Editors that write a new file and rename it over the spec (a new inode).
        scratch = tmp_path / ".weave.yaml.tmp"
        scratch.write_text(SPEC + "# replaced\n")
        os.replace(scratch, spec)
        await _until(lambda: len(calls) == 2)

        stop.set()
        await asyncio.wait_for(task, 5)

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert [r for r in caplog.records if r.name.startswith("watchfiles")] == []


def test_a_fix_made_before_the_poll_starts_is_not_missed(tmp_path: Path) -> None:
    """The password file: read (world-readable) with the spec, fixed before anything watches
    it. A watch set up afterwards would never fire; a comparison with what was read does."""
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    password.chmod(0o644)
    seen = file_key(password)
    password.chmod(0o600)  # the fix, before the poll exists
    calls: list[float] = []

    async def scenario() -> None:
        task = asyncio.create_task(poll_file(password, lambda: calls.append(1.0), seen, 0.01))
        for _ in range(200):
            if calls:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # and nothing more while the file stays as it is
        task.cancel()

    asyncio.run(scenario())
    assert calls == [1.0]
    assert file_key(tmp_path / "absent") is None
