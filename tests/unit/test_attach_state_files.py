"""The daemon's own files under a full disk: the write fails clearly and leaves nothing behind
(issue 18.14: a 0-byte temporary file was left in the state directory)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from weaved.attach import store


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
