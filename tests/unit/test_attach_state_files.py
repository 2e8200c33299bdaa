"""The daemon's own files under a full disk: the write fails clearly and leaves nothing behind
(issue 18.14: a 0-byte temporary file was left in the state directory)."""

from __future__ import annotations

import asyncio
import errno
import json
import threading
from dataclasses import replace
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from weaved.attach import store
from weaved.attach.model import Attachment, Target, TargetKind
from weaved.attach.plugged_part import PluggedPart, Records
from weaved.errors import WeavedError


def test_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "attachments.json"
    target.write_text("{}")

    def full_disk(self: Path, text: str, *args: object, **kwargs: object) -> int:
        self.touch()  # the file is created, then the data does not fit
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.write_atomically(target, target.with_suffix(".tmp"), '{"attachments": []}')
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attachments.json"]
    assert target.read_text() == "{}"  # the old content stays whole


def _record(i: int, ip: str) -> Attachment:
    target = Target(TargetKind.NETNS, f"netns:c{i}", f"c{i}", None, f"/run/netns/c{i}", 10 + i)
    return Attachment(target, f"vethwepln{i:08x}", addresses=(IPv4Interface(ip),), veth_index=i)


def load(path: Path) -> dict[str, Attachment]:
    return store.load_records(path, Attachment.from_json, "lost")


def test_changes_appended_to_the_log_read_back_as_made(tmp_path: Path) -> None:
    path = tmp_path / "attachments.json"
    records = {r.key: r for r in (_record(i, f"10.32.0.{i + 1}/12") for i in range(5))}
    file = store.RecordFile(path)
    file.reset(records.values())
    snapshot = path.read_bytes()
    changed = replace(records["netns:c2"], addresses=(IPv4Interface("10.40.0.9/12"),))
    records["netns:c2"] = changed
    del records["netns:c4"]
    new = {r.key: r for r in (_record(i, f"10.32.0.{i + 1}/12") for i in (7, 8))}
    records |= new
    file.append([("netns:c2", changed), ("netns:c4", None), *new.items()])
    file.close()
    assert path.read_bytes() == snapshot  # appended, not rewritten
    assert len(store.log_path(path).read_bytes().splitlines()) == 4
    assert list(load(path).items()) == list(records.items())


def test_a_torn_line_and_lines_of_an_older_snapshot_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "attachments.json"
    one, two = _record(1, "10.32.0.1/12"), _record(2, "10.32.0.2/12")
    file = store.RecordFile(path)
    file.reset([one])
    file.append([(two.key, two)])
    older = store.log_path(path).read_bytes()
    file.reset([one])  # a new snapshot (generation): its log starts empty
    assert not store.log_path(path).exists()
    # A crash between a new snapshot and the old log's removal: the old lines are not read;
    # nor is the last line of this generation's that a crash cut short.
    generation = json.loads(path.read_text())["generation"]
    torn = b'{"generation":%d,"key":"netns:c1"' % generation
    store.log_path(path).write_bytes(older + torn)
    assert load(path) == {one.key: one}


def test_the_log_is_folded_into_a_snapshot_once_it_outgrows_it(tmp_path: Path) -> None:
    path = tmp_path / "attachments.json"
    file = store.RecordFile(path)
    record = _record(1, "10.32.0.1/12")
    file.reset([record])
    for _ in range(400):  # ~200 bytes a line: past LOG_MIN (64 kB)
        file.append([(record.key, record)])
    assert store.log_path(path).stat().st_size <= store.LOG_MIN
    assert load(path) == {record.key: record}


def test_a_file_written_by_an_older_weaved_is_read(tmp_path: Path) -> None:
    path = tmp_path / "attachments.json"
    record = _record(1, "10.32.0.1/12")
    path.write_text(json.dumps({"attachments": [record.to_json()]}, indent=1))  # no generation
    assert load(path) == {record.key: record}
    store.log_path(path).write_text('{"generation": null, "key": "netns:c1"}\n')
    assert load(path) == {record.key: record}  # no generation: no log to read


def test_a_failed_append_makes_the_next_write_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "attachments.json"
    one, two = _record(1, "10.32.0.1/12"), _record(2, "10.32.0.2/12")
    file = store.RecordFile(path)
    file.reset([one])

    def full_disk(fd: int, data: bytes) -> int:
        return len(data) // 2  # half a line went out

    monkeypatch.setattr(store.os, "write", full_disk)
    with pytest.raises(WeavedError, match="hint: check free space"):
        file.append([(two.key, two)])
    monkeypatch.undo()
    file.append([])  # nothing to write: nothing written
    three = _record(3, "10.32.0.3/12")
    file.append([(three.key, three)])
    assert not store.log_path(path).exists()  # a snapshot, no line after the torn one
    assert load(path) == {one.key: one, two.key: two, three.key: three}


def _part(tmp_path: Path) -> PluggedPart[Attachment]:
    return PluggedPart(
        None,  # type: ignore[arg-type]
        tmp_path,
        None,  # type: ignore[arg-type]
        None,
        store="attachments.json",
        from_json=Attachment.from_json,
        lost="lost",
    )


def test_a_save_on_the_loop_is_not_undone_by_a_write_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resync's `_save` (on the event loop) while `_persist`'s thread is writing: both
    changes end up in the file, in the order they were made."""
    part = _part(tmp_path)
    older, newer = _record(1, "10.32.0.1/12"), _record(2, "10.32.0.2/12")
    started, saved = threading.Event(), threading.Event()
    real = store.RecordFile.append
    calls: list[int] = []

    def slow(self: store.RecordFile, changes: Any) -> None:
        calls.append(1)
        if len(calls) == 1:  # _persist's write, its changes taken: held up a moment
            started.set()
            saved.wait(1.0)
        real(self, changes)

    monkeypatch.setattr(store.RecordFile, "append", slow)

    async def scenario() -> None:
        part.records = {}
        part._save()  # the snapshot at start
        part.records[older.key] = older
        writing = asyncio.create_task(part._persist())
        assert await asyncio.to_thread(started.wait, 5)
        part.records[newer.key] = newer
        part.records.pop(older.key)
        part._save()  # a resync's changes, written at once
        saved.set()
        await writing

    asyncio.run(scenario())
    assert load(tmp_path / "attachments.json") == {newer.key: newer}


def test_a_started_part_folds_its_log_into_the_snapshot_when_it_stops(tmp_path: Path) -> None:
    part = _part(tmp_path)
    one, two = _record(1, "10.32.0.1/12"), _record(2, "10.32.0.2/12")

    async def scenario() -> None:
        part._daemon = object()  # type: ignore[assignment]
        part.records = {one.key: one}
        part._save()
        part.records[two.key] = two
        part._save()
        assert store.log_path(tmp_path / "attachments.json").exists()
        await part.stop()

    asyncio.run(scenario())
    assert not store.log_path(tmp_path / "attachments.json").exists()
    raw = json.loads((tmp_path / "attachments.json").read_text())
    assert [a["target"]["key"] for a in raw["attachments"]] == [one.key, two.key]


def test_setting_a_record_equal_to_the_one_there_queues_nothing() -> None:
    """A resync sets every container it looked at, most as they were: nothing to write."""
    records: Records[Attachment] = Records()
    one = _record(1, "10.32.0.1/12")
    records[one.key] = one
    records[one.key] = replace(one)  # equal, another object
    moved = replace(one, veth_index=99)
    records[one.key] = moved
    assert records.take_changes() == [(one.key, one), (one.key, moved)]
