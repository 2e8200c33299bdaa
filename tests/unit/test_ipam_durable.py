"""IPAM's state written off the event loop: saves coalesce, answers and messages wait for the
write (weaved/ipam/durable.py)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from weaved.ipam.address import CIDR, Range
from weaved.ipam.durable import DurableOutbox, WriteBehindStore
from weaved.ipam.errors import PersistError
from weaved.ipam.messages import SpaceRequest, Unicast
from weaved.ipam.owned import Owned
from weaved.ipam.persist import FileStore, PersistedState
from weaved.ipam.ring import Ring
from weaved.mesh.gossip_api import PeerName

H1 = PeerName(0x3E80E75A63A7)
UNIVERSE = CIDR.parse_subnet("10.32.0.0/12").range()


def state(n: int) -> PersistedState:
    ring = Ring(UNIVERSE.start, UNIVERSE.end, H1)
    owned = {f"c{i}": Owned((CIDR(UNIVERSE.start + i + 1, 12),)) for i in range(n)}
    return PersistedState(H1, ring, owned)


class GatedFileStore(FileStore):
    """A FileStore whose writes wait until the test opens the gate."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.gate = threading.Event()
        self.saved: list[int] = []

    def save(self, state: PersistedState) -> None:
        assert self.gate.wait(10)
        super().save(state)
        self.saved.append(len(state.owned))


def test_save_returns_at_once_and_synced_waits_for_the_disk(tmp_path: Path) -> None:
    async def run() -> None:
        inner = GatedFileStore(tmp_path)
        store = WriteBehindStore(inner)
        store.save(state(1))
        assert not store.clean and FileStore(tmp_path).load() is None
        waiter = asyncio.create_task(store.synced())
        await asyncio.sleep(0.05)
        assert not waiter.done()  # the gate is closed: not on disk, not answered
        inner.gate.set()
        await asyncio.wait_for(waiter, 5)
        loaded = FileStore(tmp_path).load()
        assert loaded is not None and set(loaded.owned) == {"c0"}
        await store.close()

    asyncio.run(run())


def test_saves_made_during_a_write_are_coalesced(tmp_path: Path) -> None:
    async def run() -> None:
        inner = GatedFileStore(tmp_path)
        store = WriteBehindStore(inner)
        for n in range(1, 51):
            store.save(state(n))
            await asyncio.sleep(0)
        inner.gate.set()
        await asyncio.wait_for(store.synced(), 5)
        assert inner.saved[-1] == 50 and len(inner.saved) <= 3
        loaded = FileStore(tmp_path).load()
        assert loaded is not None and len(loaded.owned) == 50
        await store.close()

    asyncio.run(run())


def test_without_a_loop_it_saves_at_once(tmp_path: Path) -> None:
    store = WriteBehindStore(FileStore(tmp_path))
    store.save(state(2))
    assert store.clean
    loaded = FileStore(tmp_path).load()
    assert loaded is not None and len(loaded.owned) == 2


class BrokenStore(FileStore):
    def save(self, state: PersistedState) -> None:
        raise PersistError("disk full")


def test_a_failed_write_fails_the_waiter_and_is_tried_again(tmp_path: Path) -> None:
    async def run() -> None:
        store = WriteBehindStore(BrokenStore(tmp_path))
        store.save(state(1))
        with pytest.raises(PersistError):
            await asyncio.wait_for(store.synced(), 5)
        store.inner = FileStore(tmp_path)  # the disk has room again
        await asyncio.wait_for(store.synced(), 5)  # retried without a new save
        assert store.clean and FileStore(tmp_path).load() is not None
        await store.close()

    asyncio.run(run())


class Sent:
    def __init__(self) -> None:
        self.log: list[str] = []

    def unicast(self, dst: PeerName, message: Unicast) -> None:
        self.log.append(f"unicast {dst}")

    def broadcast_state(self) -> None:
        self.log.append("broadcast")


def test_messages_leave_only_once_their_state_is_on_disk(tmp_path: Path) -> None:
    async def run() -> None:
        inner = GatedFileStore(tmp_path)
        store = WriteBehindStore(inner)
        sent = Sent()
        outbox = DurableOutbox(sent, store)
        store.save(state(1))  # e.g. a donation: the ring changed, then the message
        outbox.unicast(PeerName(2), SpaceRequest(Range(UNIVERSE.start, UNIVERSE.start + 8)))
        outbox.broadcast_state()
        await asyncio.sleep(0.05)
        assert sent.log == []
        inner.gate.set()
        for _ in range(100):
            if sent.log:
                break
            await asyncio.sleep(0.01)
        assert sent.log == ["unicast 2", "broadcast"]  # in order
        outbox.broadcast_state()  # nothing unwritten: sent at once
        assert sent.log[-1] == "broadcast" and len(sent.log) == 3
        await store.close()

    asyncio.run(run())
