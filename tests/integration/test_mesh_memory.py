"""What an idle connection keeps: nothing of the last message it read or wrote.

A connection's read and write loops wait for the next chunk or the next item most of their
life; locals left from the last one stayed referenced meanwhile. With 250 connections that was
~35 MB of the daemon's RSS in bench/memory (the last read chunk, up to 256 kB, and the last
gossip message sent, a full topology of ~75 kB, per connection).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from tests.integration.test_mesh_router import (
    Collector,
    Note,
    established_everywhere,
    eventually,
    in_loop,
    mesh,
)
from weaved.mesh.router import Router

BIG = 300_000


def _largest_local(router: Router) -> int:
    """The largest bytes-like local of any connection loop of `router`, while they wait."""
    largest = 0
    for conn in router.connections.values():
        for task in conn._tasks:
            frame = task.get_coro().cr_frame  # type: ignore[union-attr]
            if frame is None:
                continue
            for value in frame.f_locals.values():
                if isinstance(value, bytes | bytearray | memoryview):
                    largest = max(largest, len(value))
    return largest


@in_loop
async def test_idle_connection_loops_keep_no_message() -> None:
    async with mesh(discovery=False) as m:
        m.base = replace(m.base, gossip_interval=600.0)
        collectors = [Collector(), Collector()]
        r0 = await m.add(0)
        s0 = r0.add_channel("test", collectors[0])
        r1 = await m.add(1, targets=[0])
        r1.add_channel("test", collectors[1])
        await eventually(lambda: established_everywhere(m.routers), what="established")
        await asyncio.sleep(0.5)  # topology announcements done: the broadcast is the last word
        s0.gossip_broadcast(Note(frozenset({b"x" * BIG})))
        await eventually(lambda: len(collectors[1].broadcasts) == 1, what="broadcast")
        await asyncio.sleep(0.2)  # both loops back to waiting
        assert _largest_local(r0) < 4096, "the writer keeps the last message it sent"
        assert _largest_local(r1) < 4096, "the reader keeps the last chunk or message it read"
