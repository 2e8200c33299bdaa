"""What the daemon parts that plug containers in share (the attach part; CNI's): the records of
what they plugged in, by key, kept in a file under the state directory; a lock held while
they change; the background tasks stopped with the part; the spec in force.

The records file is rewritten whole (atomically) on every change; `_persist` lets calls that
change records at the same time share one write, so a burst of attaches is not a burst of
whole-file rewrites. `_save` (on the event loop) and `_persist`'s thread write one at a time,
each through the kept texts, and a write never replaces a file holding later changes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Generic, TypeVar

from weaved.attach.inflight import Plumbing
from weaved.attach.store import Record, RecordTexts, load_records, save_records
from weaved.dns.part import DnsPart
from weaved.ipam.part import IpamPart
from weaved.part import Component, Host
from weaved.spec.models import Spec

R = TypeVar("R", bound=Record)


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
        self.records: dict[str, R] = {}
        self._from_json = from_json
        self._lost = lost  # what an unreadable record file means, for the log
        self._daemon: Host | None = None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._changes = 0  # record changes made so far …
        self._written = 0  # … and how many of them the file holds
        self._writing = asyncio.Lock()
        self._file = threading.Lock()  # held by the one writing the file (loop or thread)
        self._texts = RecordTexts()  # used under _file only
        # Kernel work of plugs and unplugs: off the daemon's dataplane thread, so a plug never
        # waits behind a converge of the whole host.
        self._plumbing = Plumbing()

    @property
    def host(self) -> Host:
        assert self._daemon is not None, f"the {self.name} part is not started"
        return self._daemon

    def _load(self) -> dict[str, R]:
        return load_records(self.store, self._from_json, self._lost)

    def _write(self, records: list[R], upto: int) -> None:
        """Write `records`, the records as of change `upto`, unless the file holds a later
        change already: `_save` on the loop wrote while `_persist`'s thread held an older
        list (that write, landing last, lost the newer records until the next write)."""
        with self._file:
            if self._written >= upto:
                return
            save_records(self.store, records, self._texts)
            self._written = upto

    def _save(self) -> None:
        """Write the records now, on the event loop (a resync, a container's death)."""
        self._changes += 1
        self._write(list(self.records.values()), self._changes)

    async def _persist(self) -> None:
        """Write the records, with the caller's change in them, on a thread; callers that come
        while a write runs wait for it and share the next one."""
        self._changes += 1
        mine = self._changes
        async with self._writing:
            if self._written >= mine:
                return  # a write that started after our change has it
            records = list(self.records.values())
            await asyncio.to_thread(self._write, records, self._changes)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._plumbing.close()

    def spec_changed(self, spec: Spec) -> None:
        self.spec = spec
