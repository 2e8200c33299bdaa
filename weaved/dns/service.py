"""weaveDNS wired together for the daemon: zone, gossip channel, answers, server, views."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dnslib import DNSRecord

from weaved.dns import status
from weaved.dns.answers import Answerer
from weaved.dns.gossiper import CHANNEL, DnsGossiper, container_fqdn
from weaved.dns.server import (
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    RESOLV_CONF,
    DnsServer,
    Forwarder,
    Upstreams,
)
from weaved.dns.zone import Entry, Zone
from weaved.mesh.gossip_api import Gossiper, GossipSender, PeerName, PeerView


class Mesh(Protocol):
    """What `DnsService.join_mesh` needs from `weaved.mesh.router.Router`."""

    def add_channel(self, name: str, gossiper: Gossiper) -> GossipSender: ...

    def on_peer_removed(self, callback: Callable[[PeerName], None]) -> None: ...


def split_listen(listen: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """`ADDR[:PORT]` -> (ADDR, PORT)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        return listen, default_port
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class DnsConfig:
    """Settings from the spec's `dns:` section (plus the listen default the daemon computes)."""

    domain: str = "weave.local."
    ttl: int = 1
    listen: str = "0.0.0.0:53"
    upstream: Sequence[str] = ()
    """ADDR[:PORT] list; empty = the host's resolv.conf."""
    resolv_conf: str = RESOLV_CONF
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_spec(cls, dns: Any, default_listen: str) -> DnsConfig:
        """From a `weaved.spec.models.DnsSpec`; `default_listen` = the address containers
        are told to use (`ADDR` or `ADDR:PORT`), used when the spec gives none."""
        listen = dns.listen or default_listen
        host, port = split_listen(listen)
        return cls(
            domain=dns.domain,
            ttl=dns.ttl,
            listen=f"{host}:{port}",
            upstream=tuple(dns.upstream),
        )


class DnsService:
    """One per daemon. Register `gossiper` on the mesh as channel `CHANNEL`, run `run()`."""

    channel = CHANNEL

    def __init__(
        self, config: DnsConfig, peers: PeerView, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.zone = Zone(peers.our_name())
        self.gossiper = DnsGossiper(self.zone, peers, config.domain, clock)
        self.answerer = Answerer(self.zone, config.domain, config.ttl)
        self.upstreams = Upstreams(config.upstream, config.resolv_conf)
        host, port = split_listen(config.listen)
        self.server = DnsServer(
            self.answerer, Forwarder(self.upstreams, config.timeout), host, port
        )

    def join_mesh(self, mesh: Mesh) -> None:
        """Gossip on the `nameserver` channel; forget a peer's names when it is collected."""
        self.gossiper.set_sender(mesh.add_channel(CHANNEL, self.gossiper))
        mesh.on_peer_removed(self._peer_removed)

    def _peer_removed(self, peer: PeerName) -> None:
        self.gossiper.peer_gone(peer)

    async def run(self) -> None:
        """Serve DNS and sweep tombstones until cancelled; OSError if the port cannot be bound."""
        await self.server.start()
        try:
            await self.gossiper.sweep()
        finally:
            await self.server.stop()

    # -- what attach/detach and the CLI change --------------------------------------------

    def register_container(
        self,
        container_id: str,
        addresses: Sequence[str],
        hostname: str | None = None,
        name: str | None = None,
    ) -> list[Entry]:
        """An attached container, under one name for every address it holds: its hostname if
        that is inside the domain, else its (container or netns) name qualified with the domain;
        nothing without either (a bare PID)."""
        fq = container_fqdn(self.config.domain, hostname, name, container_id)
        if fq is None:
            return []
        added = (self.gossiper.add(fq, container_id, a) for a in addresses)
        return [e for e in added if e is not None]

    def unregister_container(self, container_id: str) -> list[Entry]:
        """A container detached or died: its names go (tombstoned across the mesh)."""
        return self.gossiper.container_died(container_id)

    def dns_add(self, fqdn: str, container_id: str, addresses: Sequence[str]) -> list[Entry]:
        """`weaved dns-add`: an extra name (or an external one: any container id will do)."""
        added = (self.gossiper.add(fqdn, container_id, a) for a in addresses)
        return [e for e in added if e is not None]

    def dns_remove(
        self,
        container_id: str | None = None,
        addresses: Sequence[str] = (),
        fqdn: str | None = None,
    ) -> list[Entry]:
        """`weaved dns-remove`: tombstone our entries matching all given parts (None = any)."""
        if not addresses:
            return self.gossiper.delete(fqdn, container_id, None)
        return [e for a in addresses for e in self.gossiper.delete(fqdn, container_id, a)]

    # -- views for the control API and CLI -------------------------------------------------

    def status_dns(self) -> str:
        """`GET /status/dns` body."""
        return status.render_status_dns(self.zone.entries(), self.config.domain)

    def status_summary(self) -> str:
        """The DNS block of `GET /status` (leading blank line included)."""
        return status.render_status_summary(
            self.config.domain, self.upstreams.display(), self.config.ttl, self.zone.entries()
        )

    def report(self) -> dict[str, Any]:
        """The `DNS` member of `GET /report`."""
        return status.report(
            self.config.domain,
            self.upstreams.display(),
            self.server.address,
            self.config.ttl,
            self.zone.entries(),
        )

    def name_json(self) -> str:
        """`GET /name` (Accept: application/json) body."""
        return status.render_name_json(self.zone.entries())

    def lookup(self, name: str) -> str:
        """Addresses of a name in the domain from our table, one a line (no forwarding)."""
        return status.render_lookup(self.answerer.lookup(name))

    async def dns_lookup(self, name: str) -> str:
        """`weaved dns-lookup NAME`: what `dig @weaveDNS +short NAME` prints (Weave's command),
        so names outside the domain are resolved through the upstreams."""
        query = bytes(DNSRecord.question(name, "A").pack())
        answer = self.answerer.respond(query)
        if answer is None:
            answer = await self.server.forwarder.forward(query, tcp=True)
        elif DNSRecord.parse(answer).header.tc:
            answer = self.answerer.respond(query, tcp=True) or answer
        if not answer:
            return ""
        return "".join(f"{rr.rdata}\n" for rr in DNSRecord.parse(answer).rr)
