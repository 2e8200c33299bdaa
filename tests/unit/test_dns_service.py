"""DnsService: what the daemon and CLI call (no sockets: the server is never started)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from dnslib import DNSRecord

from weaved.dns.service import DnsConfig, DnsService
from weaved.dns.wire import decode_gossip
from weaved.mesh.gossip_api import GossipData, Gossiper, GossipSender, PeerName

US = PeerName(0x3E80E75A63A7)
THEM = PeerName(0x2A9FF1998A21)


class Peers:
    def our_name(self) -> PeerName:
        return US

    def known_peers(self) -> dict[PeerName, str]:
        return {US: "host1", THEM: "host2"}

    def reachable_peers(self) -> set[PeerName]:
        return {US, THEM}


class FakeMesh:
    def __init__(self) -> None:
        self.channels: dict[str, Gossiper] = {}
        self.removed: list[Callable[[PeerName], None]] = []
        self.sent: list[GossipData] = []

    def add_channel(self, name: str, gossiper: Gossiper) -> GossipSender:
        self.channels[name] = gossiper
        return self  # type: ignore[return-value]

    def on_peer_removed(self, callback: Callable[[PeerName], None]) -> None:
        self.removed.append(callback)

    def gossip_broadcast(self, data: GossipData) -> None:
        self.sent.append(data)


def service() -> tuple[DnsService, FakeMesh]:
    svc = DnsService(
        DnsConfig(listen="10.32.0.1:53", upstream=("8.8.8.8",)), Peers(), clock=lambda: 1795304244
    )
    mesh = FakeMesh()
    svc.join_mesh(mesh)
    return svc, mesh


def test_join_mesh_registers_the_nameserver_channel() -> None:
    svc, mesh = service()
    assert mesh.channels == {"nameserver": svc.gossiper}
    svc.register_container("c2", ["10.32.0.1"], name="/c2")
    assert len(mesh.sent) == 1
    [entry] = decode_gossip(mesh.sent[0].encode()[0])[1]
    assert (entry.hostname, entry.origin) == ("c2.weave.local.", US)


def test_container_lifecycle_and_dns_add_remove() -> None:
    svc, _ = service()
    assert [
        e.hostname for e in svc.register_container("abc", ["10.32.0.1", "10.32.0.2"], name="web")
    ]
    assert svc.lookup("web") in ("10.32.0.1\n10.32.0.2\n", "10.32.0.2\n10.32.0.1\n")
    svc.dns_add("db.weave.local", "abc", ["10.32.0.1"])
    svc.dns_add("ext.weave.local.", "extern", ["192.0.2.7"])
    assert svc.dns_add("x.example.com", "abc", ["10.32.0.1"]) == []
    assert svc.lookup("ext") == "192.0.2.7\n"
    assert len(svc.dns_remove(container_id="abc", addresses=["10.32.0.2"])) == 1
    assert svc.lookup("web") == "10.32.0.1\n"
    assert len(svc.dns_remove(fqdn="db.weave.local")) == 1
    assert len(svc.unregister_container("abc")) == 1
    assert svc.lookup("web") == ""
    assert svc.status_dns() == ("ext          192.0.2.7             extern 3e:80:e7:5a:63:a7\n")
    names = json.loads(svc.name_json())
    assert [(n["Hostname"], n["Tombstone"] > 0) for n in names] == [
        ("db.weave.local.", True),
        ("ext.weave.local.", False),
        ("web.weave.local.", True),
        ("web.weave.local.", True),
    ]


def test_peer_removal_drops_its_names() -> None:
    svc, mesh = service()
    svc.zone.merge(
        decode_gossip(
            bytes.fromhex(
                "33ff810301010a476f737369704461746101ff82000102010954696d657374616d700104000107"
                "456e747269657301ff8600000016ff8502010107456e747269657301ff860001ff8400005eff83"
                "03010105456e74727901ff84000106010b436f6e7461696e65724944010c0001064f726967696e"
                "0106000104416464720106000108486f73746e616d65010c00010756657273696f6e0104000109"
                "546f6d6273746f6e6501040000002fff8201fcd604567e01010102633201fa2a9ff1998a2101fc"
                "0a200001010f63322e77656176652e6c6f63616c2e0000"
            )
        )[1]
    )
    assert svc.lookup("c2") == "10.32.0.1\n"
    for callback in mesh.removed:
        callback(THEM)
    assert svc.lookup("c2") == ""


def test_a_docker_container_is_found_by_its_name_not_its_default_hostname() -> None:
    svc, _ = service()
    cid = "9e9786a1bf6d" + "0" * 52
    # `docker run --name c2 …` (hostname: the short ID), then `weaved attach c2`.
    svc.register_container(cid, ["10.32.0.5"], hostname=cid[:12], name="c2")
    assert svc.lookup("c2") == "10.32.0.5\n"
    assert svc.lookup(cid[:12]) == ""
    # `--hostname=web.weave.local` is the name Weave registers, whatever the container name.
    svc.register_container("f" * 64, ["10.32.0.6"], hostname="web.weave.local", name="c3")
    assert svc.lookup("web") == "10.32.0.6\n"
    assert svc.lookup("c3") == ""


def test_status_views() -> None:
    svc, _ = service()
    svc.register_container("c1", ["10.40.0.0"], name="c1")
    assert svc.status_summary().endswith(
        "         Domain: weave.local.\n"
        "       Upstream: 8.8.8.8\n"
        "            TTL: 1\n"
        "        Entries: 1\n"
    )
    report = svc.report()
    assert report["Address"] == "10.32.0.1:53"
    assert report["Upstream"] == ["8.8.8.8"]
    assert report["Entries"][0]["Hostname"] == "c1.weave.local."


def test_answers_come_from_the_same_zone() -> None:
    svc, _ = service()
    svc.register_container("c1", ["10.40.0.0"], hostname="c1.weave.local")
    raw = svc.answerer.respond(bytes(DNSRecord.question("c1.weave.local").pack()))
    assert raw is not None
    assert [str(rr.rdata) for rr in DNSRecord.parse(raw).rr] == ["10.40.0.0"]


def test_dns_lookup_prints_like_dig_short() -> None:
    svc = DnsService(DnsConfig(resolv_conf="/dev/null"), Peers(), clock=lambda: 1795304244)
    svc.register_container("c1", [f"10.40.0.{i}" for i in range(40)], name="c1")
    out = asyncio.run(svc.dns_lookup("c1"))
    assert sorted(out.split()) == sorted(f"10.40.0.{i}" for i in range(40))  # not cut to UDP
    assert asyncio.run(svc.dns_lookup("nope")) == ""
    assert asyncio.run(svc.dns_lookup("example.com")) == ""  # no upstream: SERVFAIL, nothing
