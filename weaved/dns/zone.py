"""The weaveDNS table: entries and Weave Net 2.8.1's add/tombstone/merge rules (FACTS.md §6).

Pure: no clock reads (`now` is Unix seconds passed in), no sockets. The same rules run on every
peer, so the table converges whatever order gossip arrives in: an entry is identified by
(Hostname, Origin, ContainerID, Addr); a higher Version wins, and on equal Versions the larger
Tombstone wins. Only the origin of an entry changes its Version, so deletions made by the
origin (tombstones) win over stale copies of the live entry still circulating in the mesh.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

from weaved.errors import ProtocolError
from weaved.mesh.gossip_api import PeerName

TOMBSTONE_TIMEOUT = 30 * 60
"""Seconds a tombstone is kept; long enough to outlive gossip propagation and clock skew."""

GOSSIP_WINDOW = TOMBSTONE_TIMEOUT // 2
"""Largest accepted |sender timestamp - our clock| in seconds (Weave's `gossipWindow`)."""

MAX_ENTRIES_PER_ORIGIN = 10_000
"""Entries (tombstones included) another peer may have in our table: a thousand containers
with a few names each fit; a fake or broken peer cannot grow the zone (our memory) without
bound. New entries beyond it are refused (not stored, not relayed); updates of entries
already held still apply."""

EntryKey = tuple[str, PeerName, str, int]
"""(Hostname, Origin, ContainerID, Addr): identity of an entry, and its order on the wire."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One name -> address record, as gossiped (Weave's `nameserver.Entry`)."""

    container_id: str
    origin: PeerName
    addr: int
    """IPv4 address as a 32-bit number (how Weave's `address.Address` travels in gob)."""
    hostname: str
    """FQDN as registered, case kept (`c2.weave.local.`)."""
    version: int = 0
    tombstone: int = 0
    """Unix seconds of the deletion; 0 = live."""

    @property
    def key(self) -> EntryKey:
        return (self.hostname, self.origin, self.container_id, self.addr)

    @property
    def live(self) -> bool:
        return self.tombstone == 0

    @property
    def address(self) -> str:
        return str(ipaddress.IPv4Address(self.addr))


def wire_order(entry: Entry) -> EntryKey:
    """Case-sensitive order Weave sorts entries in before encoding them."""
    return entry.key


def store_order(entry: Entry) -> tuple[str, PeerName, str, int, str]:
    """Case-insensitive order Weave keeps its table in (status listings, reverse lookups)."""
    return (entry.hostname.lower(), entry.origin, entry.container_id, entry.addr, entry.hostname)


def supersedes(new: Entry, old: Entry) -> bool:
    """Weave's merge rule for two copies of the same entry."""
    return new.version > old.version or (
        new.version == old.version and new.tombstone > old.tombstone
    )


def merge_entries(into: dict[EntryKey, Entry], incoming: Iterable[Entry]) -> list[Entry]:
    """Merge `incoming` into the mapping `into` in place; return the entries that changed it."""
    changed: list[Entry] = []
    for entry in incoming:
        old = into.get(entry.key)
        if old is None or supersedes(entry, old):
            into[entry.key] = entry
            changed.append(entry)
    return changed


def ip_to_int(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


class Received(NamedTuple):
    """What merging one received GossipData did."""

    new: list[Entry]
    """Entries that changed our table (forwarded after periodic gossip)."""
    relay: list[Entry]
    """The received entries after filtering and self-correction (forwarded after a broadcast)."""
    overridden: list[Entry]
    """Entries claiming to be ours that we corrected; to be broadcast by us."""


class Zone:
    """Every peer's DNS entries, merged; one instance per daemon.

    Mutations return the entries the caller must broadcast. Listeners registered with
    `subscribe` run after every change (the DNS answer cache uses this to drop stale answers).
    """

    def __init__(self, our_name: PeerName, max_per_origin: int = MAX_ENTRIES_PER_ORIGIN) -> None:
        self.our_name = our_name
        self.max_per_origin = max_per_origin
        self.refused = 0
        """New entries refused because their origin had `max_per_origin` already."""
        self._per_origin: dict[PeerName, int] = {}
        # The one index: lowercased hostname -> its entry, or its entries by key when it has
        # several. Most names have one, and that costs a dict slot and nothing more (no key
        # tuple, no group dict), which is most of what a name costs (bench/dns/memory.py).
        self._by_name: dict[str, Entry | dict[EntryKey, Entry]] = {}
        self._count = 0
        self._by_addr: dict[int, str] | None = None
        """Address -> hostname for reverse lookups; built when asked, dropped on change."""
        self._listeners: list[Callable[[], None]] = []
        self.generation = 0
        """Bumped on every change."""

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def _all(self) -> Iterator[Entry]:
        for group in self._by_name.values():
            if isinstance(group, Entry):
                yield group
            else:
                yield from group.values()

    def entries(self) -> list[Entry]:
        """All entries, tombstones included, in Weave's table order."""
        return sorted(self._all(), key=store_order)

    def get(self, key: EntryKey) -> Entry | None:
        group = self._by_name.get(key[0].lower())
        if group is None:
            return None
        if isinstance(group, Entry):
            return group if group.key == key else None
        return group.get(key)

    def lookup(self, hostname: str) -> list[int]:
        """Live addresses of `hostname` (an FQDN, any case), in table order."""
        group = self._by_name.get(hostname.lower())
        if group is None:
            return []
        if isinstance(group, Entry):
            return [group.addr] if group.live else []
        return [e.addr for e in sorted(group.values(), key=store_order) if e.live]

    def reverse_lookup(self, addr: int) -> str | None:
        """Hostname of the first live entry holding `addr`, in table order (as Weave)."""
        if self._by_addr is None:
            # Built at the first reverse lookup after a change: a scan of the table for each
            # (5.6 ms at 50 000 names) let PTR queries for outside addresses, which are all
            # forwarded and never cached, take a core.
            first: dict[int, Entry] = {}
            for e in self._all():
                if e.live:
                    held = first.get(e.addr)
                    if held is None or store_order(e) < store_order(held):
                        first[e.addr] = e
            self._by_addr = {a: e.hostname for a, e in first.items()}
        return self._by_addr.get(addr)

    # -- change notification ---------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _put(self, entry: Entry) -> None:
        name = entry.hostname
        lname = name.lower()
        if lname == name:
            lname = name  # one string for both (the usual case)
        group = self._by_name.get(lname)
        if group is None:
            self._by_name[lname] = entry
        elif isinstance(group, Entry):
            if group.key == entry.key:
                self._by_name[lname] = entry
                return
            self._by_name[lname] = {group.key: group, entry.key: entry}
        else:
            key = entry.key
            replaced = key in group
            group[key] = entry
            if replaced:
                return
        self._count += 1
        self._per_origin[entry.origin] = self._per_origin.get(entry.origin, 0) + 1

    def _drop(self, entry: Entry) -> None:
        lname = entry.hostname.lower()
        group = self._by_name[lname]
        if isinstance(group, Entry):
            del self._by_name[lname]
        else:
            del group[entry.key]
            if len(group) == 1:
                self._by_name[lname] = next(iter(group.values()))
        self._count -= 1
        left = self._per_origin[entry.origin] - 1
        if left:
            self._per_origin[entry.origin] = left
        else:
            del self._per_origin[entry.origin]

    def _drop_all(self, gone: list[Entry]) -> int:
        for e in gone:
            self._drop(e)
        if gone:
            self._changed()
        return len(gone)

    def _changed(self) -> None:
        self._by_addr = None
        self.generation += 1
        for listener in self._listeners:
            listener()

    # -- local operations ------------------------------------------------------------------

    def add(self, hostname: str, container_id: str, origin: PeerName, addr: int) -> Entry:
        """Register a name; re-adding a tombstoned entry revives it with Version + 1.

        Returns the entry to broadcast (Weave broadcasts it even when nothing changed).
        """
        old = self.get((hostname, origin, container_id, addr))
        if old is None:
            entry = Entry(container_id, origin, addr, hostname)
        elif not old.live:
            entry = replace(old, tombstone=0, version=old.version + 1)
        else:
            return old
        self._put(entry)
        self._changed()
        return entry

    def tombstone(self, now: int, match: Callable[[Entry], bool]) -> list[Entry]:
        """Tombstone our own live entries that `match`; return them for broadcasting."""
        done: list[Entry] = []
        for e in [e for e in self._all() if e.origin == self.our_name and e.live]:
            if match(e):
                dead = replace(e, tombstone=now, version=e.version + 1)
                self._put(dead)
                done.append(dead)
        if done:
            self._changed()
        return sorted(done, key=store_order)

    def delete(
        self,
        now: int,
        hostname: str | None = None,
        container_id: str | None = None,
        addr: int | None = None,
    ) -> list[Entry]:
        """Weave's `Delete`: None means any (Weave's "*"); the hostname compares exactly."""

        def match(e: Entry) -> bool:
            return (
                (hostname is None or e.hostname == hostname)
                and (container_id is None or e.container_id == container_id)
                and (addr is None or e.addr == addr)
            )

        return self.tombstone(now, match)

    def container_died(self, now: int, container_id: str) -> list[Entry]:
        return self.tombstone(now, lambda e: e.container_id == container_id)

    def peer_gone(self, peer: PeerName) -> int:
        """Forget every entry of a peer that left the topology; returns how many."""
        return self._drop_all([e for e in self._all() if e.origin == peer])

    def retain_origins(self, known: Callable[[PeerName], bool]) -> int:
        """Drop entries whose origin is no longer known (peer_gone for every departed peer)."""
        return self._drop_all([e for e in self._all() if not known(e.origin)])

    def purge_tombstones(self, now: int) -> int:
        """Drop tombstones older than 30 minutes; returns how many."""
        return self._drop_all(
            [e for e in self._all() if not e.live and now - e.tombstone > TOMBSTONE_TIMEOUT]
        )

    # -- gossip ----------------------------------------------------------------------------

    def merge(self, incoming: Iterable[Entry]) -> list[Entry]:
        """Merge entries; return those that changed the table ("what is new to us")."""
        changed: list[Entry] = []
        for entry in incoming:
            old = self.get(entry.key)
            if old is None:
                if (
                    entry.origin != self.our_name
                    and self._per_origin.get(entry.origin, 0) >= self.max_per_origin
                ):
                    self.refused += 1
                    continue
            elif not supersedes(entry, old):
                continue
            self._put(entry)
            changed.append(entry)
        if changed:
            self._changed()
        return changed

    def count_of(self, origin: PeerName) -> int:
        """Entries of `origin` in the table, tombstones included."""
        return self._per_origin.get(origin, 0)

    def receive(
        self,
        timestamp: int,
        entries: Iterable[Entry],
        now: int,
        is_known_peer: Callable[[PeerName], bool],
    ) -> Received:
        """Apply received gossip as Weave's `receiveGossip` does.

        Raises ProtocolError (the mesh then drops the connection) on too much clock skew.
        """
        delta = timestamp - now
        if delta > GOSSIP_WINDOW or delta < -GOSSIP_WINDOW:
            raise ProtocolError(
                f"nameserver gossip rejected: host clock skew of {delta}s exceeds "
                f"{GOSSIP_WINDOW}s limit"
            )
        relay: list[Entry] = []
        overridden: list[Entry] = []
        for e in entries:
            if not is_known_peer(e.origin):
                continue
            if e.origin == self.our_name:
                ours = self.get(e.key)
                if ours is not None:
                    if ours.version < e.version or (
                        ours.version == e.version and ours.tombstone != e.tombstone
                    ):
                        # Our table is the truth for our entries: outbid the stale copy.
                        e = replace(ours, version=e.version + 1)
                        overridden.append(e)
                elif e.live:
                    # A leftover from before we restarted: kill it everywhere.
                    e = replace(e, tombstone=now, version=e.version + 1)
                    overridden.append(e)
            relay.append(e)
        new = self.merge(relay)
        if self.refused:  # what we refused to hold we do not pass on either
            relay = [e for e in relay if self.get(e.key) is not None]
        return Received(new, relay, overridden)
