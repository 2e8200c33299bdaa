"""IPAM's state written off the event loop, and nothing said to anyone before it is on disk.

`FileStore.save` costs two fsyncs (~8 ms with 1 000 owned addresses), and the allocator saves
after every action that changed something: on the event loop that stalled every other part
at each allocation. `WriteBehindStore` takes the allocator's snapshot and writes it on a thread
of its own; saves made while one is being written are coalesced into the next write (only the
newest state matters). Durability is kept where it is promised:

- an allocation is acknowledged to its caller only once a write that includes it is done
  (`IpamPart` awaits `synced()` before answering);
- messages to other peers (a space donation, a ring update, a broadcast) leave only once the
  state they describe is on disk (`DurableOutbox`), as Weave persists before it sends: a peer
  that crashed must not restart owning a range it already gave away.

A write that fails is reported to whoever waits for it (`PersistError`), and the next save
tries again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

from weaved.ipam.errors import PersistError
from weaved.ipam.messages import Unicast
from weaved.ipam.persist import FileStore, PersistedState
from weaved.ipam.requests import Outbox
from weaved.mesh.gossip_api import PeerName

__all__ = ["DurableOutbox", "WriteBehindStore"]

log = logging.getLogger(__name__)


class WriteBehindStore:
    """A `Store` whose `save` returns at once; `synced()` waits until that state is on disk.
    Without a running event loop (a caller outside the daemon) it saves synchronously."""

    def __init__(self, inner: FileStore) -> None:
        self.inner = inner
        self.path = inner.path
        self._latest: PersistedState | None = None
        self._saved_gen = 0  # generations handed to save()
        self._written_gen = 0  # generations on disk
        self._writer: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.writes = 0

    def load(self) -> PersistedState | None:
        return self.inner.load()

    @property
    def clean(self) -> bool:
        """Everything saved is on disk."""
        return self._written_gen == self._saved_gen

    def save(self, state: PersistedState) -> None:
        self._saved_gen += 1
        self._latest = state
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write_now(state)
            return
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_behind(), name="ipam-persist")

    def _write_now(self, state: PersistedState) -> None:
        gen = self._saved_gen
        self.inner.save(state)  # raises PersistError to the caller, as FileStore does
        self.writes += 1
        self._written_gen = gen

    async def synced(self) -> None:
        """Returns when every state saved before this call is on disk; raises PersistError
        if the write that should have included it failed."""
        gen = self._saved_gen
        if self._written_gen >= gen:
            return
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.done():  # the last write failed: try again
            self._writer = loop.create_task(self._write_behind(), name="ipam-persist")
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((gen, future))
        await asyncio.shield(future)

    async def _write_behind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="ipam-persist"
            )
        try:
            while self._written_gen < self._saved_gen:
                gen, state = self._saved_gen, self._latest
                assert state is not None
                try:
                    await loop.run_in_executor(self._executor, self.inner.save, state)
                except PersistError as exc:
                    log.error("%s", exc)
                    self._wake(self._saved_gen, exc)
                    return  # the next save, or the next wait for one, tries again
                self.writes += 1
                self._written_gen = gen
                self._wake(gen, None)
        finally:
            self._writer = None

    def _wake(self, gen: int, error: PersistError | None) -> None:
        still = []
        for wanted, future in self._waiters:
            if wanted > gen:
                still.append((wanted, future))
            elif not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        self._waiters = still

    async def close(self, timeout: float = 10.0) -> None:
        """Finish the pending write (bounded), then let the thread go."""
        writer = self._writer
        if writer is not None:
            with_timeout = asyncio.wait_for(asyncio.shield(writer), timeout)
            try:
                await with_timeout
            except TimeoutError:
                log.error("ipam state write still running after %gs at stop", timeout)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


class DurableOutbox:
    """The allocator's `Outbox` in front of the gossiper: messages wait (in order) until
    the state they come from is on disk."""

    def __init__(self, inner: Outbox, store: WriteBehindStore) -> None:
        self.inner = inner
        self.store = store
        self._queue: list[Callable[[], None]] = []
        self._flusher: asyncio.Task[None] | None = None

    def unicast(self, dst: PeerName, message: Unicast) -> None:
        self._send(lambda: self.inner.unicast(dst, message))

    def broadcast_state(self) -> None:
        self._send(self.inner.broadcast_state)

    def _send(self, send: Callable[[], None]) -> None:
        if self.store.clean and not self._queue:
            send()
            return
        self._queue.append(send)
        if self._flusher is None or self._flusher.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._flush()  # no loop: the store saved synchronously
                return
            self._flusher = loop.create_task(self._flush_when_synced(), name="ipam-outbox")

    async def _flush_when_synced(self) -> None:
        while self._queue:
            try:
                await self.store.synced()
            except PersistError:
                # Not on disk: nothing is said that a restart could contradict; the next
                # save (every action, and the 5 s tick) retries the write.
                await asyncio.sleep(1.0)
                continue
            self._flush()

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        for send in queue:
            send()

    def cancel(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
