"""Routers on loopback against remotes that misbehave: resets during the key exchange, floods of
half-open connections. (The daemon-level attacks are in tests/e2e/test_mesh_attacks.py.)"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest

from tests.integration.test_mesh_router import eventually, in_loop, mesh
from weaved.mesh.reasons import CloseReason
from weaved.mesh.status import ConnectionState

pytestmark = pytest.mark.timeout(120)


async def _resetting_remote(host: str, port: int, send: bytes) -> asyncio.Server:
    """Answers the protocol header with `send`, then hangs up with a reset (linger 0), as a
    Weave peer does when our sealed features do not open with its password."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(send)
        await writer.drain()
        await reader.read(64)
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    return await asyncio.start_server(serve, host, port)


@pytest.mark.parametrize(
    ("password", "remote_sends", "hint"),
    [
        (b"ours", b"weave\x01\x02\x01" + os.urandom(32), "password likely differs"),
        (None, b"weave\x01\x02", "peer likely requires a password"),
    ],
    ids=["other-password", "we-have-none"],
)
@in_loop
async def test_a_reset_during_the_key_exchange_names_the_password(
    password: bytes | None, remote_sends: bytes, hint: str
) -> None:
    """Issue 10.3: only "read: connection reset by peer" was shown."""
    async with mesh(discovery=False) as m:
        server = await _resetting_remote(m.host(5), m.port, remote_sends)
        try:
            r = await m.add(0, targets=[5], password=password)

            def failed() -> list[str]:
                return [
                    c.info
                    for c in r.status().connections
                    if c.state in (ConnectionState.FAILED, ConnectionState.RETRYING)
                ]

            await eventually(lambda: bool(failed()), what="attempt failed")
            status = next(c for c in r.status().connections if c.error)
            assert status.reason in (CloseReason.RESET, CloseReason.EOF)
            assert hint in failed()[0]
        finally:
            server.close()


@in_loop
async def test_half_open_flood_is_capped_and_a_real_peer_still_connects() -> None:
    """Issue 18.7 on loopback: 600 silent connections from one source; the router holds at most
    its per-source cap of them, and a real peer from another address connects meanwhile."""
    async with mesh(discovery=False, handshake_timeout=3.0) as m:
        hub = await m.add(0)
        loop = asyncio.get_running_loop()
        socks: list[socket.socket] = []
        try:
            for _ in range(600):
                s = socket.socket()
                s.setblocking(False)
                s.bind((m.host(4), 0))
                try:
                    await loop.sock_connect(s, (m.host(0), m.port))
                except OSError:
                    s.close()
                    continue
                socks.append(s)
            await asyncio.sleep(0.2)
            limits = hub.admission.limits
            assert hub.admission.pending <= limits.pending_per_source
            assert hub.admission.refused >= 600 - limits.burst_per_source
            peer = await m.add(1, targets=[0])
            await eventually(
                lambda: (
                    bool(peer.connections) and all(c.established for c in peer.connections.values())
                ),
                what="real peer established during the flood",
            )
            # The held ones are dropped at the handshake deadline.
            await eventually(lambda: hub.admission.pending == 0, timeout=6, what="deadline")
        finally:
            for s in socks:
                s.close()
