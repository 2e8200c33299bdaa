"""What the daemon parts that plug containers in share (the attach part; CNI's): the records of
what they plugged in, by key, kept in a file under the state directory; a lock held while
they change; the background tasks stopped with the part; the spec in force.

Each change of the records is queued as it is made (`Records`) and appended to the records
file's log (store.RecordFile: ~2 µs, where rewriting 1 000 records cost ~1 ms an attach);
`_persist` lets calls that change records at the same time share one append. `_save` (on the
event loop) and `_persist`'s thread write one at a time and each takes every change queued so
far, in order, so a write never undoes a later one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from weaved.attach.inflight import Plumbing
from weaved.attach.store import Record, RecordFile, load_records
from weaved.dns.part import DnsPart
from weaved.errors import WeavedError
from weaved.ipam.part import IpamPart
from weaved.part import Component, Host
from weaved.spec.models import Spec

R = TypeVar("R", bound=Record)
T = TypeVar("T")

log = logging.getLogger(__name__)


class Records(dict[str, R], Generic[R]):
    """The records by key; each change made by `[key] =` (to a record not equal to the one
    there), `del` or `pop` is queued, in order, for the file (nothing else changes them)."""

    def __init__(self, records: Mapping[str, R] | None = None) -> None:
        super().__init__(records or {})
        self._lock = threading.Lock()  # the loop changes, a writer's thread takes
        self._queued: list[tuple[str, R | None]] = []

    def __setitem__(self, key: str, record: R) -> None:
        with self._lock:
            same = self.get(key) == record  # a resync re-sets what it found as it was
            super().__setitem__(key, record)
            if not same:
                self._queued.append((key, record))

    def __delitem__(self, key: str) -> None:
        with self._lock:
            super().__delitem__(key)
            self._queued.append((key, None))

    @overload
    def pop(self, key: str, /) -> R: ...

    @overload
    def pop(self, key: str, default: R | T, /) -> R | T: ...

    def pop(self, key: str, /, *default: Any) -> Any:
        with self._lock:
            had = key in self
            record = super().pop(key, *default)
            if had:
                self._queued.append((key, None))
            return record

    def take_changes(self) -> list[tuple[str, R | None]]:
        """The changes queued so far (and the queue emptied)."""
        with self._lock:
            taken, self._queued = self._queued, []
            return taken

    def take_all(self) -> list[R]:
        """Every record now (and the queue emptied: they are all in it)."""
        with self._lock:
            self._queued = []
            return list(self.values())


class PluggedPart(Component, Generic[R]):
    def __init__(
        self,
        spec: Spec,
        state_dir: Path,
        ipam: IpamPart,
        dns: DnsPart | None,
        *,
        store: str,
        from_json: Callable[[dict[str, Any]], R],
        lost: str,
    ) -> None:
        self.spec = spec
        self.ipam = ipam
        self.dns = dns
        self.store = state_dir / store
        self._records: Records[R] = Records()
        self._from_json = from_json
        self._lost = lost  # what an unreadable record file means, for the log
        self._daemon: Host | None = None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._changes = 0  # record changes made so far …
        self._written = 0  # … and how many of them the file holds
        self._writing = asyncio.Lock()
        self._file = threading.Lock()  # held by the one writing the file (loop or thread)
        self._record_file = RecordFile(self.store)  # used under _file only
        self._whole = True  # the next write is a snapshot of every record
        # Kernel work of plugs and unplugs: off the daemon's dataplane thread, so a plug never
        # waits behind a converge of the whole host.
        self._plumbing = Plumbing()

    @property
    def host(self) -> Host:
        assert self._daemon is not None, f"the {self.name} part is not started"
        return self._daemon

    @property
    def records(self) -> Records[R]:
        return self._records

    @records.setter
    def records(self, records: Mapping[str, R]) -> None:
        """All records at once (as loaded at start): the next write is a snapshot."""
        self._records = Records(records)
        self._whole = True

    def _load(self) -> dict[str, R]:
        return load_records(self.store, self._from_json, self._lost)

    def _write(self) -> None:
        """Write every change queued so far (or a snapshot of every record, when one is due)."""
        with self._file:
            if self._whole:
                self._record_file.reset(self._records.take_all())
                self._whole = False
            else:
                self._record_file.append(self._records.take_changes())

    def _save(self) -> None:
        """Write the records now, on the event loop (a resync, a container's death)."""
        self._changes += 1
        upto = self._changes
        self._write()
        self._written = max(self._written, upto)

    async def _persist(self) -> None:
        """Write the records, with the caller's change in them, on a thread; callers that come
        while a write runs wait for it and share the next one."""
        self._changes += 1
        mine = self._changes
        async with self._writing:
            if self._written >= mine:
                return  # a write that started after our change has it
            upto = self._changes
            await asyncio.to_thread(self._write)
            self._written = max(self._written, upto)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._plumbing.close()
        with self._file:  # the log folded in: an older weaved reads the snapshot only
            try:
                if self._daemon is not None:
                    self._record_file.reset(self._records.take_all())
            except WeavedError as exc:
                log.error("%s", exc)
            finally:
                self._record_file.close()

    def spec_changed(self, spec: Spec) -> None:
        self.spec = spec
