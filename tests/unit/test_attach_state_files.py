"""The daemon's own files under a full disk: the write fails clearly and leaves nothing behind
(issue 18.14: a 0-byte temporary file was left in the state directory)."""

from __future__ import annotations

import asyncio
import errno
import threading
from dataclasses import replace
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from weaved.attach import plugged_part, store
from weaved.attach.model import Attachment, Target, TargetKind
from weaved.attach.plugged_part import PluggedPart


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


def test_records_written_through_the_text_cache_read_back_as_written(tmp_path: Path) -> None:
    path, texts = tmp_path / "attachments.json", store.RecordTexts()
    records = {r.key: r for r in (_record(i, f"10.32.0.{i + 1}/12") for i in range(5))}
    store.save_records(path, records.values(), texts)
    records["netns:c2"] = replace(records["netns:c2"], addresses=(IPv4Interface("10.40.0.9/12"),))
    del records["netns:c4"]
    store.save_records(path, records.values(), texts)  # one changed, one gone: not stale
    back = store.load_records(path, Attachment.from_json, "lost")
    assert back == records
    assert back["netns:c2"].addresses == (IPv4Interface("10.40.0.9/12"),)
    records |= {r.key: r for r in (_record(i, f"10.32.0.{i + 1}/12") for i in (7, 8))}
    store.save_records(path, records.values(), texts)  # two new at once, in their places
    assert list(store.load_records(path, Attachment.from_json, "lost").items()) == list(
        records.items()
    )


def test_a_save_on_the_loop_is_not_undone_by_an_older_write_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resync's `_save` (on the event loop) while `_persist`'s thread is writing an older
    list of records: the newer records stay in the file (the older write landed last and
    dropped them until the next change)."""
    part: PluggedPart[Attachment] = PluggedPart(
        None,  # type: ignore[arg-type]
        tmp_path,
        None,  # type: ignore[arg-type]
        None,
        store="attachments.json",
        from_json=Attachment.from_json,
        lost="lost",
    )
    older, newer = _record(1, "10.32.0.1/12"), _record(2, "10.32.0.2/12")
    started, saved = threading.Event(), threading.Event()
    real = plugged_part.save_records
    calls: list[int] = []

    def slow(path: Path, records: Any, texts: Any = None) -> None:
        calls.append(1)
        if len(calls) == 1:  # _persist's write, its list taken: held up a moment
            started.set()
            saved.wait(1.0)
        real(path, records, texts)

    monkeypatch.setattr(plugged_part, "save_records", slow)

    async def scenario() -> None:
        part.records = {older.key: older}
        writing = asyncio.create_task(part._persist())
        assert await asyncio.to_thread(started.wait, 5)
        part.records[newer.key] = newer
        part._save()  # a resync's change, written at once
        saved.set()
        await writing

    asyncio.run(scenario())
    back = store.load_records(tmp_path / "attachments.json", Attachment.from_json, "lost")
    assert back == {older.key: older, newer.key: newer}
