"""weaveDNS gossip over the real mesh router: two routers on loopback, control plane only.

Names added on one peer resolve through the other peer's DNS server; removals follow; when a
peer leaves the topology its names go.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
from dnslib import RCODE, DNSRecord

from weaved.dns.service import DnsConfig, DnsService
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.router import MeshConfig, Router

pytestmark = pytest.mark.timeout(60)

A, B = PeerName(0x3E80E75A63A7), PeerName(0x2A9FF1998A21)
HOST_A, HOST_B = "127.0.0.81", "127.0.0.82"
MESH_PORT = random.randrange(20000, 40000)  # both peers share it; random avoids clashes


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def ask(host: str, port: int, name: str) -> DNSRecord:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not reply.done():
                reply.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(host, port))
    try:
        transport.sendto(bytes(DNSRecord.question(name).pack()))
        return DNSRecord.parse(await asyncio.wait_for(reply, 3))
    finally:
        transport.close()


async def with_two_peers(body: Callable[[DnsService, DnsService, Router], Awaitable[None]]) -> None:
    routers, services = [], []
    for name, host, nick in ((A, HOST_A, "host1"), (B, HOST_B, "host2")):
        router = Router(
            MeshConfig(name=name, nickname=nick, host=host, port=MESH_PORT, overlays=("none",))
        )
        svc = DnsService(DnsConfig(listen=f"{host}:0", resolv_conf="/dev/null"), router.peer_view())
        svc.join_mesh(router)
        routers.append(router)
        services.append(svc)
    try:
        for router in routers:
            await router.start()
        for svc in services:
            await svc.server.start()
        routers[0].set_targets([f"{HOST_B}:{MESH_PORT}"])
        await eventually(
            lambda: all(len(r.peer_view().known_peers()) == 2 for r in routers), "the mesh"
        )
        await body(services[0], services[1], routers[1])
    finally:
        for svc in services:
            await svc.server.stop()
        for router in routers:
            await router.stop()


def test_names_travel_over_the_mesh() -> None:
    async def body(a: DnsService, b: DnsService, router_b: Router) -> None:
        a.register_container("c1", ["10.40.0.0"], name="c1")
        b.register_container("c2", ["10.32.0.1"], hostname="c2.weave.local")
        await eventually(lambda: b.lookup("c1") == "10.40.0.0\n", "c1 at B")
        await eventually(lambda: a.lookup("c2") == "10.32.0.1\n", "c2 at A")
        host, port = b.server.host, b.server.port
        r = await ask(host, port, "c1.weave.local")
        assert [str(rr.rdata) for rr in r.rr] == ["10.40.0.0"]
        a.unregister_container("c1")
        await eventually(lambda: b.lookup("c1") == "", "c1 removed at B")
        assert (await ask(host, port, "c1.weave.local")).header.rcode == RCODE.NXDOMAIN
        assert "c2 " in a.status_dns() and "c1 " not in b.status_dns()
        # B leaves: once A's topology forgets it, its names go too.
        await router_b.stop()
        await eventually(lambda: a.lookup("c2") == "", "c2 dropped at A", timeout=20)

    asyncio.run(with_two_peers(body))
