"""Routers in one event loop on loopback: real TCP and sleeve UDP between 127.0.0.x addresses.

Each router listens on its own 127.0.0.x address and the same port, as real peers do (so
discovery's `<ip>:<our port>` targets work). Every test stops every router it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace

import pytest

from weaved.datapath.overlays import OVERLAYS
from weaved.datapath.sleeve.overlay import SleeveForwarder, SleeveOverlay
from weaved.datapath.sleeve.wire import SleeveFrame
from weaved.mesh.gossip_api import GossipData, PeerName
from weaved.mesh.peername import format_peer_name
from weaved.mesh.reasons import CloseReason
from weaved.mesh.router import MeshConfig, Router
from weaved.mesh.status import ConnectionState
from weaved.mesh.status_text import render_connections, render_peers, render_status_router

pytestmark = pytest.mark.timeout(120)


def in_loop(fn: Callable[..., Coroutine[object, object, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (no asyncio pytest plugin needed)."""

    @functools.wraps(fn)
    def run(*args: object, **kwargs: object) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout=100))

    return run


BASE = 40  # 127.0.0.40 ...


def free_port(hosts: Sequence[str]) -> int:
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 40000)
        ok = True
        for host in hosts:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, kind)
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                finally:
                    s.close()
        if ok:
            return port
    raise RuntimeError("no free port")


@dataclass
class Mesh:
    port: int
    base: MeshConfig
    routers: list[Router] = field(default_factory=list)

    def host(self, i: int) -> str:
        return f"127.0.0.{BASE + i}"

    async def add(self, i: int, targets: Sequence[int] = (), **overrides: object) -> Router:
        cfg = replace(
            self.base,
            name=PeerName(0x0200_0000_0000 + i + 1),
            nickname=f"r{i}",
            host=self.host(i),
            **overrides,  # type: ignore[arg-type]
        )
        router = Router(cfg, overlay_factories=OVERLAYS)
        await router.start()
        router.set_targets([self.host(t) for t in targets])
        self.routers.append(router)
        return router


@contextlib.asynccontextmanager
async def mesh(n_hosts: int = 6, **overrides: object) -> AsyncIterator[Mesh]:
    port = free_port([f"127.0.0.{BASE + i}" for i in range(n_hosts)])
    base = MeshConfig(
        name=PeerName(1),
        nickname="",
        port=port,
        topology_delay=0.05,
        gossip_interval=2.0,
        **overrides,  # type: ignore[arg-type]
    )
    m = Mesh(port, base)
    try:
        yield m
    finally:
        await asyncio.gather(*(r.stop() for r in m.routers), return_exceptions=True)


async def eventually(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


def knows_all(routers: Sequence[Router], names: set[PeerName]) -> bool:
    return all(set(r.topology.peers) == names for r in routers)


def established_everywhere(routers: Sequence[Router]) -> bool:
    return all(
        r.connections and all(c.established for c in r.connections.values()) for r in routers
    )


def agree(routers: Sequence[Router]) -> bool:
    graphs = [
        {n: dict(sorted(c.items())) for n, c in sorted(r.topology.graph().items())} for r in routers
    ]
    return all(g == graphs[0] for g in graphs)


@dataclass(frozen=True)
class Note:
    items: frozenset[bytes]

    def encode(self) -> list[bytes]:
        return sorted(self.items)

    def merge(self, other: GossipData) -> GossipData:
        assert isinstance(other, Note)
        return Note(self.items | other.items)


class Collector:
    """A test channel: records what arrives, relays broadcasts as received."""

    def __init__(self) -> None:
        self.unicasts: list[tuple[PeerName, bytes]] = []
        self.broadcasts: list[tuple[PeerName, bytes]] = []

    def on_gossip_unicast(self, sender: PeerName, payload: bytes) -> None:
        self.unicasts.append((sender, payload))

    def on_gossip_broadcast(self, sender: PeerName, payload: bytes) -> GossipData | None:
        self.broadcasts.append((sender, payload))
        return Note(frozenset({payload}))

    def gossip(self) -> GossipData | None:
        return None

    def on_gossip(self, payload: bytes) -> GossipData | None:
        return None


@in_loop
async def test_line_converges_and_relays_gossip() -> None:
    async with mesh(discovery=False) as m:
        collectors = [Collector() for _ in range(4)]
        senders = []
        for i in range(4):
            r = await m.add(i, targets=[i - 1] if i else [])
            senders.append(r.add_channel("test", collectors[i]))
        names = {r.us for r in m.routers}
        await eventually(lambda: knows_all(m.routers, names), what="full topology")
        await eventually(lambda: established_everywhere(m.routers), what="established")
        await eventually(lambda: agree(m.routers), what="agreement")
        r0, r3 = m.routers[0], m.routers[3]
        assert r0.routes().unicast[r3.us] == m.routers[1].us
        # Unicast across three hops; broadcast reaches each other peer exactly once.
        senders[0].gossip_unicast(r3.us, b"hello")
        senders[3].gossip_broadcast(Note(frozenset({b"news"})))
        await eventually(lambda: collectors[3].unicasts == [(r0.us, b"hello")], what="unicast")
        await eventually(
            lambda: all(c.broadcasts == [(r3.us, b"news")] for c in collectors[:3]),
            what="broadcast",
        )
        await asyncio.sleep(0.3)
        assert all(len(c.broadcasts) == 1 for c in collectors[:3])
        # Status in Weave's layout.
        st = m.routers[1].status()
        text = render_connections(st)
        assert text.count("established sleeve") == 2 and "mtu=" in text
        assert "Peers: 4 (with 6 established connections)" in render_status_router(st)
        assert render_peers(st).count("\n") == 4 + 6
        assert m.routers[1].peer_view().reachable_peers() == names


@in_loop
async def test_ring_converges_and_all_peers_agree() -> None:
    n = 5
    async with mesh(discovery=False) as m:
        for i in range(n):
            await m.add(i, targets=[(i + 1) % n])
        names = {r.us for r in m.routers}
        await eventually(lambda: knows_all(m.routers, names), what="full topology")
        await eventually(lambda: established_everywhere(m.routers), what="established")
        await eventually(lambda: agree(m.routers), what="agreement")
        for r in m.routers:
            assert len(r.connections) == 2
            assert set(r.routes().unicast) == names
        # Each ring neighbour pair has exactly one connection (duplicates resolved).
        for r in m.routers:
            for c in r.status().connections:
                assert c.state == ConnectionState.ESTABLISHED


@in_loop
async def test_kill_middle_with_discovery_reroutes() -> None:
    async with mesh(discovery=True) as m:
        a = await m.add(0)
        b = await m.add(1, targets=[0])
        c = await m.add(2, targets=[1])
        names = {a.us, b.us, c.us}
        await eventually(lambda: knows_all([a, b, c], names), what="topology")
        # Discovery: a and c connect directly although neither targets the other.
        await eventually(lambda: c.us in a.connections and a.us in c.connections, what="a-c")
        await eventually(lambda: established_everywhere([a, b, c]), what="established")
        await b.stop()
        m.routers.remove(b)
        await eventually(lambda: b.us not in a.topology.peers, what="b collected")
        await eventually(lambda: a.routes().unicast.get(c.us) == c.us, what="direct route")
        assert c.routes().unicast.get(a.us) == a.us


@in_loop
async def test_kill_middle_without_discovery_partitions() -> None:
    async with mesh(discovery=False) as m:
        a = await m.add(0)
        b = await m.add(1, targets=[0])
        c = await m.add(2, targets=[1])
        await eventually(lambda: knows_all([a, b, c], {a.us, b.us, c.us}), what="topology")
        await eventually(lambda: established_everywhere([a, b, c]), what="established")
        assert c.us not in a.connections
        await b.stop()
        m.routers.remove(b)
        await eventually(lambda: set(a.topology.peers) == {a.us}, what="a alone")
        await eventually(lambda: set(c.topology.peers) == {c.us}, what="c alone")
        # c keeps retrying its target and says why it failed.
        await eventually(
            lambda: any(x.state == ConnectionState.FAILED for x in c.status().connections),
            what="failed target",
        )
        failed = next(x for x in c.status().connections if x.state == ConnectionState.FAILED)
        assert failed.reason == CloseReason.RESET or failed.reason == CloseReason.DIAL_FAILED
        assert "retry: " in failed.info


@in_loop
async def test_wrong_password_refused_with_reason() -> None:
    async with mesh(discovery=False) as m:
        a = await m.add(0, password=b"right")
        b = await m.add(1, targets=[0], password=b"wrong")
        plain = await m.add(2, targets=[0])

        def failed(r: Router) -> list[str]:
            return [x.info for x in r.status().connections if x.state == ConnectionState.FAILED]

        await eventually(lambda: bool(failed(b)), what="b refused")
        await eventually(lambda: bool(failed(plain)), what="plain refused")
        assert "Unable to decrypt TCP msg" in failed(b)[0]
        b_status = next(x for x in b.status().connections if x.state == ConnectionState.FAILED)
        assert b_status.reason == CloseReason.DECRYPT_FAILED
        p_status = next(x for x in plain.status().connections if x.state == ConnectionState.FAILED)
        assert p_status.reason == CloseReason.EXPECTED_NO_ENCRYPTION
        assert "no password specified, but peer requested an encrypted connection" in p_status.info
        assert not a.connections and not b.connections and not plain.connections


@in_loop
async def test_connection_limit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="weaved.mesh")
    async with mesh(discovery=False) as m:
        hub = await m.add(0, conn_limit=1)
        await m.add(1, targets=[0])
        await eventually(lambda: len(hub.connections) == 1, what="first connection")
        late = await m.add(2, targets=[0])
        # The hub refuses the second peer after the handshake; the peer sees the RST.
        await eventually(
            lambda: any(x.state == ConnectionState.FAILED for x in late.status().connections),
            what="late peer refused",
        )
        assert "Connection limit reached (1)" in caplog.text
        assert len(hub.connections) == 1
        # A router at its limit does not even dial.
        greedy = await m.add(3, targets=[1, 2], conn_limit=1)
        await eventually(
            lambda: any(
                "Connection limit reached (1)" in x.info for x in greedy.status().connections
            ),
            what="dial refused locally",
        )
        assert len(greedy.connections) == 1


@in_loop
async def test_encrypted_mesh() -> None:
    async with mesh(discovery=True, password=b"s3cret-test-password") as m:
        routers = [await m.add(i, targets=[0] if i else []) for i in range(3)]
        names = {r.us for r in routers}
        await eventually(lambda: knows_all(routers, names), what="topology")
        await eventually(lambda: established_everywhere(routers), what="established")
        for r in routers:
            st = r.status()
            assert "Encryption: enabled" in render_status_router(st)
            # (A discovered target may still be dialling: only connections carry this info.)
            for c in (c for c in st.connections if c.state == ConnectionState.ESTABLISHED):
                assert c.info.startswith("encrypted   sleeve ")
                assert c.attrs is not None and c.attrs["encrypted"] is True


@in_loop
async def test_trusted_subnet_runs_data_plane_unencrypted() -> None:
    async with mesh(discovery=False, password=b"pw", trusted_subnets=("127.0.0.0/8",)) as m:
        a = await m.add(0)
        b = await m.add(1, targets=[0])
        await eventually(lambda: established_everywhere([a, b]), what="established")
        conn = next(iter(b.status().connections))
        assert conn.info.startswith("unencrypted sleeve ")
        assert conn.attrs is not None and "encrypted" not in conn.attrs


@in_loop
async def test_restarted_peer_replaces_old_incarnation() -> None:
    async with mesh(discovery=False) as m:
        a = await m.add(0)
        b = await m.add(1, targets=[0])
        await eventually(lambda: established_everywhere([a, b]), what="established")
        old_uid = b.uid
        await b.stop()
        m.routers.remove(b)
        b2 = await m.add(1, targets=[0])
        assert b2.uid != old_uid
        await eventually(
            lambda: b2.us in a.topology.peers and a.topology.peers[b2.us].uid == b2.uid,
            what="new incarnation known",
        )
        await eventually(lambda: established_everywhere([a, b2]), what="re-established")


@in_loop
async def test_simultaneous_dials_leave_one_connection() -> None:
    async with mesh(discovery=False) as m:
        a = await m.add(0)
        b = await m.add(1)
        a.set_targets([m.host(1)])
        b.set_targets([m.host(0)])
        await eventually(lambda: established_everywhere([a, b]), what="established")
        await asyncio.sleep(0.5)
        assert len(a.connections) == 1 and len(b.connections) == 1
        assert a.connections[b.us].uid == b.connections[a.us].uid


@in_loop
async def test_connect_to_self_is_never_retried() -> None:
    async with mesh(discovery=False) as m:
        a = await m.add(0)
        a.set_targets([m.host(0)])
        await eventually(
            lambda: any("never" in x.info for x in a.status().connections), what="never"
        )
        st = next(iter(a.status().connections))
        assert st.reason == CloseReason.CONNECT_TO_SELF and st.retry_never
        assert "Cannot connect to ourself, retry: never" in st.info


@in_loop
async def test_set_targets_live_and_forget() -> None:
    async with mesh(discovery=False) as m:
        a = await m.add(0)
        b = await m.add(1)
        c = await m.add(2)
        a.set_targets([m.host(1)])
        await eventually(lambda: b.us in a.connections, what="a-b")
        a.set_targets([m.host(1), f"{m.host(2)}:{m.port}"])
        await eventually(lambda: c.us in a.connections, what="a-c")
        assert a.status().targets == (m.host(1), f"{m.host(2)}:{m.port}")
        a.forget_targets([m.host(1)])
        assert a.status().targets == (f"{m.host(2)}:{m.port}",)


@in_loop
async def test_hostname_target_resolves() -> None:
    async with mesh(discovery=False) as m:
        a = await m.add(0)
        b = await m.add(1)
        b.set_targets([f"localhost:{m.port}"])  # 127.0.0.1: nobody listens there
        a.set_targets([m.host(1)])
        await eventually(lambda: b.us in a.connections, what="a-b")
        await eventually(
            lambda: any(
                x.address == f"127.0.0.1:{m.port}" and x.state == ConnectionState.FAILED
                for x in b.status().connections
            ),
            what="resolved target tried",
        )
        assert format_peer_name(a.us) in render_peers(b.status())


@pytest.mark.parametrize("password", [None, b"pw"], ids=["plain", "encrypted"])
@in_loop
async def test_sleeve_carries_data_frames_to_the_plugged_consumer(password: bytes | None) -> None:
    async with mesh(discovery=False, password=password) as m:
        a = await m.add(0)
        b = await m.add(1, targets=[0])
        await eventually(lambda: established_everywhere([a, b]), what="established")
        got: list[tuple[PeerName, SleeveFrame]] = []
        overlay_b = b.overlay("sleeve")
        assert isinstance(overlay_b, SleeveOverlay)
        overlay_b.on_frame = lambda peer, frame, addr: got.append((peer, frame))
        switch = a.forwarder(b.us)
        assert switch is not None
        sleeve = switch.forwarder("sleeve")
        assert isinstance(sleeve, SleeveForwarder)
        eth = bytes.fromhex("0e00000000020e00000000010800") + b"payload"
        sleeve.send_frames([SleeveFrame(a.us, b.us, eth)], df=False)
        sleeve.send_frames([SleeveFrame(a.us, b.us, eth), SleeveFrame(a.us, b.us, eth)], df=True)
        await eventually(lambda: len(got) == 3, what="frames delivered")
        assert all(peer == a.us and frame.data == eth for peer, frame in got)
        # Without a consumer, frames are counted and dropped.
        overlay_b.on_frame = None
        dropped = overlay_b.stats.frames_dropped
        sleeve.send_frames([SleeveFrame(a.us, b.us, eth)], df=False)
        await eventually(lambda: overlay_b.stats.frames_dropped == dropped + 1, what="drop count")


@in_loop
async def test_read_timeout_ends_a_silent_connection_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No data for read_timeout ends a connection (Weave's read deadline); a peer that keeps
    sending (heartbeats) keeps its connection however long it lasts."""
    caplog.set_level(logging.INFO, logger="weaved.mesh")
    async with mesh(discovery=False) as m:
        hub = await m.add(0, read_timeout=1.0, gossip_interval=60.0)
        chatty = await m.add(1, targets=[0], heartbeat_interval=0.2, gossip_interval=60.0)
        silent = await m.add(2, targets=[0], heartbeat_interval=60.0, gossip_interval=60.0)
        await eventually(lambda: len(hub.connections) == 2, what="both connected")
        first = hub.connections[silent.us]
        await eventually(lambda: first.finished, timeout=10.0, what="silent peer timed out")
        assert "reason=read-timeout" in caplog.text
        kept = hub.connections[chatty.us]
        await asyncio.sleep(2.5)
        assert hub.connections.get(chatty.us) is kept and not kept.finished
