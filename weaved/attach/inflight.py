"""Attach and detach calls of different containers run at once (their kernel work only touches
that container's veth and namespace); calls for one container wait for each other. `InFlight`
is that per-container lock, and tells the periodic resync which containers have a call under
way (their records are that call's to change: a resync must not re-claim an address or a name
a detach is giving back).

`Plumbing` is the pool of threads that do the kernel work of those calls: off the daemon's
dataplane thread, so an attach never waits behind a converge of the whole host.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

from weaved.dataplane.portcalls import PORT_CALLS

T = TypeVar("T")

# Threads for attach/detach kernel work. Each call mostly waits for the kernel (netlink,
# setns, a short-lived thread per namespace), so a few more than cores keeps them all busy.
PLUMBING_THREADS = 8


class InFlight:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, int] = {}  # callers holding or waiting for each key's lock
        self._veths: dict[str, tuple[str, ...]] = {}  # each key's host veths, while held

    @asynccontextmanager
    async def hold(self, key: str, *veths: str) -> AsyncIterator[None]:
        """The container `key` (whose host veth is one of `veths`: a named netns's may take
        its second name) is ours until the block ends (waits for an earlier call). A converge
        leaves those veths' anti-spoofing elements alone meanwhile (dataplane/portcalls.py)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._holders[key] = self._holders.get(key, 0) + 1
        named = tuple(v for v in veths if v)
        try:
            async with lock:
                if named:
                    self._veths[key] = named
                with PORT_CALLS.call(*named):
                    yield
        finally:
            self._holders[key] -= 1
            if not self._holders[key]:
                del self._holders[key]
                del self._locks[key]
                self._veths.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._holders

    def veths(self) -> frozenset[str]:
        """Host veths of the containers whose calls are under way (made or removed by them:
        the periodic check does not take their coming and going for news)."""
        return frozenset(v for each in self._veths.values() for v in each)

    def __len__(self) -> int:
        return len(self._holders)


class Plumbing:
    """A small thread pool for blocking kernel work, started lazily, shut down with the part."""

    def __init__(self, threads: int = PLUMBING_THREADS) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="plumbing")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
