"""Where each MAC address lives: ours (local containers) or behind a remote peer (FACTS.md §7.4).

Pure: the clock is an argument. Peers and MACs are raw 6-byte strings, as they appear in
frames and sleeve headers, so the data path never converts. Semantics follow Weave's cache:

* `add` (a frame captured from our bridge) keeps an existing entry that names another peer
  and reports the conflict — such a frame is dropped; it is most likely one we injected;
* `add_forced` (a frame received from a peer) moves the MAC to that peer;
* both refresh the entry's last-seen time; `lookup` does not;
* entries not seen for `max_age` (10 minutes) are expired, and all of a peer's entries go
  when the peer leaves the topology.

Single dictionary operations only, so the capture and receive threads may share one cache.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAC_MAX_AGE", "MacCache", "MacEntry"]

MAC_MAX_AGE = 600.0


@dataclass(slots=True)
class MacEntry:
    peer: bytes
    last_seen: float


class MacCache:
    def __init__(self, max_age: float = MAC_MAX_AGE) -> None:
        self.max_age = max_age
        self.table: dict[bytes, MacEntry] = {}

    def __len__(self) -> int:
        return len(self.table)

    def add(self, mac: bytes, peer: bytes, now: float) -> tuple[bool, bytes | None]:
        """(new entry, conflicting peer). A conflicting entry is left as it is."""
        entry = self.table.get(mac)
        if entry is None:
            self.table[mac] = MacEntry(peer, now)
            return True, None
        if entry.peer != peer:
            return False, entry.peer
        entry.last_seen = now
        return False, None

    def add_forced(self, mac: bytes, peer: bytes, now: float) -> tuple[bool, bytes | None]:
        """(new entry, previous peer if the MAC moved)."""
        entry = self.table.get(mac)
        if entry is None:
            self.table[mac] = MacEntry(peer, now)
            return True, None
        entry.last_seen = now
        if entry.peer != peer:
            old, entry.peer = entry.peer, peer
            return False, old
        return False, None

    def lookup(self, mac: bytes) -> bytes | None:
        entry = self.table.get(mac)
        return entry.peer if entry is not None else None

    def expire(self, now: float) -> list[tuple[bytes, bytes]]:
        """Remove entries older than max_age; returns (mac, peer) of each."""
        cutoff = now - self.max_age
        gone = [(mac, e.peer) for mac, e in list(self.table.items()) if e.last_seen < cutoff]
        for mac, _ in gone:
            self.table.pop(mac, None)
        return gone

    def delete_peer(self, peer: bytes) -> int:
        """Forget every MAC at `peer` (the peer left the topology)."""
        macs = [mac for mac, e in list(self.table.items()) if e.peer == peer]
        for mac in macs:
            self.table.pop(mac, None)
        return len(macs)

    def entries(self) -> list[tuple[bytes, MacEntry]]:
        return sorted(self.table.items())
