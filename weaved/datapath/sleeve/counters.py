"""What a sleeve worker counts (only it writes its own; reports add them up)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

__all__ = ["Counters"]


@dataclass(slots=True)
class Counters:
    """One worker's counters (only it writes them; reports add them up)."""

    captured: int = 0  # frames read from the TAP
    captured_bytes: int = 0
    superframes: int = 0  # GSO frames among them
    datagrams_sent: int = 0
    datagrams_received: int = 0
    received_bytes: int = 0
    frames_received: int = 0
    injected: int = 0
    merged: int = 0  # segments merged into superframes (fewer TAP writes or records)
    relayed: int = 0  # frames passed on (relays and broadcast continuation)
    special: int = 0  # control-plane frames handed to the event loop
    icmp_frag_needed: int = 0
    too_big_answered: int = 0  # received DF frames over our bridge's MTU: ICMP sent back
    too_big_fragmented: int = 0  # received non-DF IPv4 frames over it: injected in fragments
    no_link: int = 0
    unknown_sender: int = 0
    decrypt_failed: int = 0  # forgeries, corruption, wrong key
    replayed: int = 0
    malformed: int = 0
    inject_errors: int = 0
    segments_sent: int = 0  # segmented datagrams (UDP GSO) to peers taking offloads
    segments_received: int = 0
    gro_runs: int = 0  # reads that held several datagrams (UDP GRO)
    gso_sends: int = 0  # sends of several Weave-format datagrams at once (UDP GSO)
    drops: Counter[str] = field(default_factory=Counter)

    def add(self, other: Counters) -> None:
        """Add another worker's counters (while it may be counting: one C-level copy)."""
        for f in fields(self):
            if f.name == "drops":
                self.drops.update(dict(other.drops))
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
