"""The `nameserver` gossip channel (Weave's `nameserver.Nameserver` as a mesh Gossiper).

This is the thin shell around the pure `Zone`: it reads the clock, decodes payloads, and
broadcasts what local changes and self-corrections produce. Local operations (attach, detach,
dns-add, dns-remove, a container's death) go through it so the mesh hears about them.
"""

from __future__ import annotations

import asyncio
import logging
import string
import time
from collections.abc import Callable, Iterable

from weaved.dns.wire import decode_gossip, encode_gossip
from weaved.dns.zone import TOMBSTONE_TIMEOUT, Entry, EntryKey, Zone, ip_to_int, merge_entries
from weaved.errors import Bug
from weaved.mesh.gossip_api import GossipData, GossipSender, PeerName, PeerView, format_peer_name

log = logging.getLogger(__name__)

CHANNEL = "nameserver"


class DnsGossipData:
    """Entries on their way to a neighbour; pending data for one neighbour is merged."""

    def __init__(self, timestamp: int, entries: Iterable[Entry]) -> None:
        self.timestamp = timestamp
        self._by_key: dict[EntryKey, Entry] | None = {}
        merge_entries(self._by_key, entries)
        self._listed: list[Entry] = []
        """The entries while `_by_key` is None (a zone's state: keys known to be unique)."""
        self._queued_once = False
        """Made by `merge`: only the one queue that merged holds it, so it may grow in place."""

    @classmethod
    def of_zone(cls, timestamp: int, entries: list[Entry]) -> DnsGossipData:
        """A zone's whole state, kept as the list: no dict of key tuples until a merge needs
        one (0.5 MB for 5 000 names, in the queue of every neighbour it is sent to)."""
        data = cls(timestamp, ())
        data._by_key, data._listed = None, entries
        return data

    @property
    def entries(self) -> dict[EntryKey, Entry]:
        if self._by_key is None:
            self._by_key, self._listed = {e.key: e for e in self._listed}, []
        return self._by_key

    def _values(self) -> Iterable[Entry]:
        return self._listed if self._by_key is None else self._by_key.values()

    def encode(self) -> list[bytes]:
        return [encode_gossip(self.timestamp, self._values())]

    def merge(self, other: GossipData) -> GossipData:
        if not isinstance(other, DnsGossipData):
            raise Bug(f"nameserver gossip merged with {type(other).__name__}")
        # A broadcast's data sits in every neighbour's queue, so the first merge copies it;
        # later ones grow that copy (a fresh copy each time made a burst of k registrations
        # waiting for a busy connection cost k²/2 entry copies: 4 s of CPU for 5 000).
        merged = self
        if not self._queued_once:
            merged = DnsGossipData(self.timestamp, self._values())
            merged._queued_once = True
        merged.timestamp = max(self.timestamp, other.timestamp)
        merge_entries(merged.entries, other._values())
        return merged

    def __repr__(self) -> str:
        count = len(self._listed) if self._by_key is None else len(self._by_key)
        return f"DnsGossipData(timestamp={self.timestamp}, entries={count})"


def in_domain(hostname: str, domain: str) -> bool:
    """Is the FQDN `hostname` the domain or below it (case-insensitive, as Weave)?"""
    h, d = hostname.lower(), domain.lower()
    return h == d or h.endswith("." + d)


def fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def container_fqdn(
    domain: str,
    hostname: str | None = None,
    name: str | None = None,
    container_id: str = "",
) -> str | None:
    """The name a container is registered under: its hostname if that is inside the domain
    (`--hostname=web.weave.local`), else its name (Docker's container name, a netns name)
    qualified with the domain. Any other hostname is ignored; Docker's default one (the short
    container ID, also inside a `--domainname`) is never registered."""
    host = (hostname or "").rstrip(".")
    if host and in_domain(host + ".", domain) and not _is_default_hostname(host, container_id):
        return host + "."
    label = (name or "").lstrip("/").rstrip(".")
    if not label:
        return None
    return label + "." if in_domain(label + ".", domain) else f"{label}.{domain}"


def _is_default_hostname(hostname: str, container_id: str) -> bool:
    """Docker names a container's host after its short ID, also inside a `--domainname`."""
    short = container_id[:12].lower()
    is_docker_id = len(short) == 12 and all(c in string.hexdigits for c in short)
    return is_docker_id and hostname.split(".", 1)[0].lower() == short


class DnsGossiper:
    """Owns the zone's gossip: implements `weaved.mesh.gossip_api.Gossiper`."""

    def __init__(
        self,
        zone: Zone,
        peers: PeerView,
        domain: str = "weave.local.",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.zone = zone
        self.peers = peers
        self.domain = fqdn(domain)
        self._clock = clock
        self.sender: GossipSender | None = None

    def set_sender(self, sender: GossipSender) -> None:
        """Called by the mesh once the channel is registered."""
        self.sender = sender

    def _now(self) -> int:
        return int(self._clock())

    def _broadcast(self, entries: list[Entry]) -> None:
        if self.sender is not None and entries:
            self.sender.gossip_broadcast(DnsGossipData(self._now(), entries))

    def _known(self) -> Callable[[PeerName], bool]:
        """Membership in the topology as it is now: asked once per payload, not per entry
        (the mesh builds its peer list at each call: 250 peers x 5 000 entries was 60-90 ms
        of CPU for every payload received)."""
        known = set(self.peers.known_peers())
        known.add(self.zone.our_name)
        return known.__contains__

    # -- local operations ------------------------------------------------------------------

    def add(self, hostname: str, container_id: str, addr: int | str) -> Entry | None:
        """Register `hostname` (made an FQDN) for `addr`; names outside the domain are ignored
        (None), as Weave does."""
        name = fqdn(hostname)
        if not in_domain(name, self.domain):
            log.info(
                "ignoring registration name=%s container=%s (not in %s)",
                name,
                container_id,
                self.domain,
            )
            return None
        address = ip_to_int(addr) if isinstance(addr, str) else addr
        entry = self.zone.add(name, container_id, self.zone.our_name, address)
        log.info("dns entry added name=%s container=%s addr=%s", name, container_id, entry.address)
        self._broadcast([entry])
        return entry

    def delete(
        self,
        hostname: str | None = None,
        container_id: str | None = None,
        addr: int | str | None = None,
    ) -> list[Entry]:
        """Tombstone our entries matching every given field (None = any); `dns-remove`."""
        address = ip_to_int(addr) if isinstance(addr, str) else addr
        name = fqdn(hostname) if hostname else None
        dead = self.zone.delete(self._now(), name, container_id, address)
        for e in dead:
            log.info("dns entry tombstoned name=%s container=%s", e.hostname, e.container_id)
        self._broadcast(dead)
        return dead

    def container_died(self, container_id: str) -> list[Entry]:
        """A container detached or died: tombstone all its names."""
        dead = self.zone.container_died(self._now(), container_id)
        self._broadcast(dead)
        return dead

    def peer_gone(self, peer: PeerName) -> int:
        """A peer was removed from the topology: forget its entries (no tombstones)."""
        n = self.zone.peer_gone(peer)
        log.info("peer gone peer=%s entries_dropped=%d", format_peer_name(peer), n)
        return n

    def sync_peers(self) -> int:
        """Forget entries of every origin the topology no longer knows (call after changes)."""
        return self.zone.retain_origins(self._known())

    def purge_tombstones(self) -> int:
        return self.zone.purge_tombstones(self._now())

    async def sweep(self, interval: float = TOMBSTONE_TIMEOUT) -> None:
        """Purge old tombstones every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.purge_tombstones()

    # -- Gossiper --------------------------------------------------------------------------

    def _receive(self, payload: bytes) -> tuple[int, list[Entry], list[Entry]]:
        timestamp, entries = decode_gossip(payload)
        received = self.zone.receive(timestamp, entries, self._now(), self._known())
        self._broadcast(received.overridden)
        return timestamp, received.new, received.relay

    def on_gossip_unicast(self, sender: PeerName, payload: bytes) -> None:
        """Weave's nameserver never sends unicasts; ignore them."""

    def on_gossip_broadcast(self, sender: PeerName, payload: bytes) -> GossipData | None:
        timestamp, _, relay = self._receive(payload)
        return DnsGossipData(timestamp, relay) if relay else None

    def gossip(self) -> GossipData | None:
        return DnsGossipData.of_zone(self._now(), self.zone.entries())

    def on_gossip(self, payload: bytes) -> GossipData | None:
        _, new, _ = self._receive(payload)
        return DnsGossipData(self._now(), new) if new else None
