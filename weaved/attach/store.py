"""The daemon's record files of what it plugged in (`<state>/attachments.json` for `weaved
attach`, `<state>/cni.json` for CNI): `{"attachments": [record, …]}`, read leniently (a record
that no longer parses is skipped, a file that does not is re-observed from the kernel) and
replaced atomically (a failed write leaves the old file whole and no temporary one behind).
"""

from __future__ import annotations

import json
import logging
import operator
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from weaved.errors import ApplyError

log = logging.getLogger(__name__)


class Record(Protocol):
    @property
    def key(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Record)


def load_records(path: Path, from_json: Callable[[dict[str, Any]], R], lost: str) -> dict[str, R]:
    """The records in `path` by key; none when it is missing or unreadable (logged, `lost`
    saying what that means)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("cannot read %s (%s); %s", path, exc, lost)
        return {}
    out: dict[str, R] = {}
    for item in raw.get("attachments", []):
        try:
            record = from_json(item)
        except (KeyError, ValueError, TypeError):
            continue
        out[record.key] = record
    return out


class RecordTexts:
    """Each record's JSON text, kept while the record object is the same one (records are
    immutable): rewriting the file after one attach encodes one record, not all of them
    (~50 ms with 1 000 containers). Looked up by the object's id, not its key (a property
    per record); the entry holds its record, so no other object has that id while it is
    kept. The lookups, the search for the records not kept and the join run in C (map, a set
    difference, bytes.join): ~115 µs of GIL a write with 1 000 records, ~150 as a Python loop
    over them. The file's bytes are joined once (~350 kB with 1 000: each copy more is page
    faults)."""

    def __init__(self) -> None:
        self._texts: dict[int, tuple[Record, bytes]] = {}

    def encoded(self, records: Iterable[Record]) -> bytes:
        kept = list(records)
        ids = list(map(id, kept))
        hits: list[tuple[Record, bytes] | None] = list(map(self._texts.get, ids))
        for new in set(ids).difference(self._texts):  # the records new since the last write
            at = ids.index(new)
            text = json.dumps(kept[at].to_json(), separators=(",", ":"))
            hits[at] = (kept[at], text.encode())
        known = cast(list[tuple[Record, bytes]], hits)
        self._texts = dict(zip(ids, known, strict=True))
        texts = list(map(_TEXT, known))
        if not texts:
            return _HEAD + _TAIL
        # One join, no copy of the whole after it (~300 kB with 1 000: each copy costs more).
        texts[0] = _HEAD + texts[0]
        texts[-1] += _TAIL
        return b",\n".join(texts)


_TEXT = operator.itemgetter(1)
_HEAD, _TAIL = b'{"attachments": [\n', b"\n]}\n"


def save_records(path: Path, records: Iterable[Record], texts: RecordTexts | None = None) -> None:
    """Replace `path` with `records`; ApplyError (with a hint) when it cannot be written.
    `texts`: encode through that cache (one line per record) instead of all afresh."""
    try:
        text: str | bytes
        if texts is not None:
            text = texts.encoded(records)
        else:
            text = json.dumps({"attachments": [r.to_json() for r in records]}, indent=1)
        try:
            write_atomically(path, path.with_suffix(".tmp"), text)
        except FileNotFoundError:  # the first write: the state directory is made then
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, path.with_suffix(".tmp"), text)
    except OSError as exc:
        raise ApplyError(
            f"cannot write {path}: {exc.strerror}\n"
            "  hint: check free space and permissions of the state directory"
        ) from None


def write_atomically(path: Path, tmp: Path, text: str | bytes) -> None:
    """Replace `path`; a write that fails (a full disk) leaves no temporary file behind."""
    try:
        if isinstance(text, bytes):
            tmp.write_bytes(text)
        else:
            tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
