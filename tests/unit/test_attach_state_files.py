"""The daemon's own files under a full disk: the write fails clearly and leaves nothing behind
(issue 18.14: a 0-byte temporary file was left in the state directory)."""

from __future__ import annotations

import errno
from dataclasses import replace
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from weaved.attach import store
from weaved.attach.model import Attachment, Target, TargetKind


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
