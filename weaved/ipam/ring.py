"""Weave's IPAM ring: a CRDT saying which peer owns which part of the allocation range.

Facts (FACTS.md §5.2): the ring is a sorted list of tokens inside `[start, end)`; an entry owns
`[token, next token)` and the last one wraps round to the first. Only an entry's owner changes
it, always bumping `version`; `free` is the owner's count of free addresses there. Merging takes
tokens one side lacks and, per token, the higher version — with the checks below that stop a
peer from silently losing addresses it has handed out.

Pure: no clock, no I/O. `Ring` is mutated in place by its owner, like Weave's; use `copy()` to
keep a snapshot.
Entries and errors are in `ring_entry`, the merge of a received ring in `ring_merge`.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from weaved.errors import Bug
from weaved.ipam.address import Range, format_ip
from weaved.ipam.ring_entry import (
    DifferentRangeError,
    DifferentSeedsError,
    Entry,
    HasAllocations,
    OwnershipConflictError,
    RangeInfo,
    RingError,
    RingInvariantError,
)
from weaved.ipam.ring_merge import merge_entries
from weaved.mesh.gossip_api import UNKNOWN_PEER, PeerName, format_peer_name

__all__ = [
    "TRANSFER_VERSION_BUMP",
    "DifferentRangeError",
    "DifferentSeedsError",
    "Entry",
    "HasAllocations",
    "OwnershipConflictError",
    "RangeInfo",
    "Ring",
    "RingError",
    "RingInvariantError",
    "normalize_peers",
]

TRANSFER_VERSION_BUMP = 100
"""Hand-off and rmpeer jump versions by 100 so they win over concurrent ordinary updates."""


class Ring:
    """One peer's copy of the ring. `peer` is the peer holding this copy (us)."""

    def __init__(
        self,
        start: int,
        end: int,
        peer: PeerName,
        entries: Iterable[Entry] = (),
        seeds: Sequence[PeerName] = (),
    ) -> None:
        if not start < end:
            raise Bug(f"ring range must not be empty: [{start}, {end})")
        self.start = start
        self.end = end
        self.peer = peer
        self.entries: list[Entry] = list(entries)
        self.seeds: tuple[PeerName, ...] = tuple(seeds)

    # ---- basics ---------------------------------------------------------------------------

    def copy(self, peer: PeerName | None = None) -> Ring:
        """A snapshot (entries are immutable, so a shallow list copy is enough)."""
        return Ring(
            self.start, self.end, self.peer if peer is None else peer, self.entries, self.seeds
        )

    @property
    def range(self) -> Range:
        return Range(self.start, self.end)

    def empty(self) -> bool:
        return not self.entries

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ring):
            return NotImplemented
        return (self.start, self.end, self.peer, self.entries, self.seeds) == (
            other.start,
            other.end,
            other.peer,
            other.entries,
            other.seeds,
        )

    def __hash__(self) -> int:
        return hash((self.start, self.end, self.peer, tuple(self.entries), self.seeds))

    def __repr__(self) -> str:
        body = "".join(f"\n  {e}" for e in self.entries)
        return f"Ring [{format_ip(self.start)}, {format_ip(self.end)}){body}"

    def _at(self, i: int, entries: Sequence[Entry] | None = None) -> Entry:
        """Entry `i` with wrap-round, as Weave's `entries.entry(i)`."""
        es = self.entries if entries is None else entries
        return es[i % len(es)]

    def distance(self, start: int, end: int) -> int:
        """Addresses from `start` up to `end`, going round the end of the ring if needed."""
        if end > start:
            return end - start
        return (self.end - start) + (end - self.start)

    def _index_after(self, addr: int) -> int:
        """Index of the first entry whose token is greater than `addr`."""
        return bisect.bisect_right([e.token for e in self.entries], addr)

    # ---- invariants -----------------------------------------------------------------------

    def check_entries(self, entries: Sequence[Entry]) -> None:
        """Raise `RingInvariantError` unless `entries` form a valid ring over our range."""
        for a, b in itertools.pairwise(entries):
            if a.token > b.token:
                raise RingInvariantError("Ring not sorted")
            if a.token == b.token:
                raise RingInvariantError(f"Token appears twice in ring: {format_ip(a.token)}")
        if not entries:
            return
        if entries[0].token < self.start or entries[-1].token >= self.end:
            raise RingInvariantError(
                f"Token is out of range [{format_ip(self.start)}, {format_ip(self.end)})"
            )
        for i, e in enumerate(entries):
            nxt = self._at(i + 1, entries)
            size = self.distance(e.token, nxt.token)
            if e.free > size:
                raise RingInvariantError(
                    f"Entry {format_ip(e.token)}-{format_ip(nxt.token)} reporting too much free "
                    f"space: {e.free} > {size}"
                )

    def check_invariants(self) -> None:
        self.check_entries(self.entries)

    def _assert_invariants(self) -> None:
        """Our own ring must always be valid; if not, it is our bug, not the peer's."""
        try:
            self.check_invariants()
        except RingInvariantError as e:
            raise Bug(f"own IPAM ring is corrupt: {e}") from e

    # ---- creation -------------------------------------------------------------------------

    def claim_for_peers(self, peers: Iterable[PeerName]) -> None:
        """Create the ring from a peer list (seed or consensus result); only on an empty ring.

        Names are sorted and de-duplicated, then the range is split recursively: the first
        half of the peers share the lower half. With an odd size the upper part starts one
        address later, so the lower part's last range holds one address more than its free
        count — Weave's quirk, kept so every peer builds identical rings.
        """
        if self.entries:
            raise Bug("claim_for_peers on a ring that already has entries")
        names = normalize_peers(peers)
        if not names:
            raise Bug("claim_for_peers needs at least one peer")
        self._subdivide(self.start, self.end, names)
        self.seeds = tuple(names)
        self._assert_invariants()

    def _subdivide(self, start: int, end: int, peers: Sequence[PeerName]) -> None:
        share = end - start
        if share == 0:
            return
        if share == 1 or len(peers) == 1:
            self._insert(Entry(start, peers[0], 0, share))
            return
        mid = start + share // 2
        half = len(peers) // 2
        self._subdivide(start, mid, peers[:half])
        self._subdivide(mid + share % 2, end, peers[half:])

    def _insert(self, entry: Entry) -> int:
        tokens = [e.token for e in self.entries]
        i = bisect.bisect_left(tokens, entry.token)
        if i < len(tokens) and tokens[i] == entry.token:
            raise Bug(f"inserting existing token {format_ip(entry.token)}")
        self.entries.insert(i, entry)
        return i

    # ---- owner operations -----------------------------------------------------------------

    def grant_range_to_host(self, start: int, end: int, peer: PeerName) -> None:
        """Give `[start, end)`, which we own, to `peer`; may insert up to two tokens.

        Every entry touched bumps its version. The granted entry's free count is the span up to
        the next token (at most the grant); our remaining entries get their full span as free
        until the allocator reports real counts (seen in trace b: v2 free 786432, then v3
        786431).
        """
        self._assert_invariants()
        if not (start < end and self.start <= start < self.end and self.start < end <= self.end):
            raise Bug(f"bad grant [{format_ip(start)}, {format_ip(end)})")
        if not self.entries:
            raise Bug("grant on an empty ring")
        pos = self._index_after(start) - 1
        # Everything up to `end` must be ours; granting someone else's space is a bug.
        p = pos
        while p < len(self.entries) and self._at(p).token < end:
            if self._at(p).peer != self.peer:
                raise Bug(f"granting {format_ip(start)} which we do not own")
            p += 1

        start_free = min(self.distance(start, self._at(pos + 1).token), self.distance(start, end))
        prev = self._at(pos)
        if prev.token == start:
            self._set(pos, _updated(prev, peer, start_free))
        else:
            self._insert(Entry(start, peer, 0, start_free))
            # `pos` may be -1 (the wrapping last entry); recompute where prev now lives.
            prev_index = self.entries.index(prev)
            self._set(prev_index, _updated(prev, self.peer, self.distance(prev.token, start)))
            pos = self.entries.index(self._entry_at_token(start))

        i = pos + 1
        while i < len(self.entries) and self.entries[i].token < end:
            e = self.entries[i]
            self.entries[i] = _updated(e, peer, min(e.free, self.distance(e.token, end)))
            i += 1

        # The end of the ring is exclusive, so a grant reaching it ends at the first token.
        if end == self.end:
            end = self.start
        if self._find(end) is not None:
            self._assert_invariants()
            return
        end_free = self.distance(end, self._at(i).token)
        self._insert(Entry(end, self.peer, 0, end_free))
        self._assert_invariants()

    def _set(self, index: int, entry: Entry) -> None:
        self.entries[index % len(self.entries)] = entry

    def _find(self, token: int) -> int | None:
        tokens = [e.token for e in self.entries]
        i = bisect.bisect_left(tokens, token)
        if i < len(tokens) and tokens[i] == token:
            return i
        return None

    def _entry_at_token(self, token: int) -> Entry:
        i = self._find(token)
        if i is None:
            raise Bug(f"no token {format_ip(token)}")
        return self.entries[i]

    def report_free(self, freespace: dict[int, int]) -> bool:
        """Record free counts per owned range start; a change bumps the entry's version.

        `freespace` is keyed by the starts of `owned_ranges()`; a range split at the wrap point
        is folded back into the last entry.
        """
        self._assert_invariants()
        if not self.entries:
            raise Bug("report_free on an empty ring")
        free = dict(freespace)
        if self.start in free and self.entries[0].token != self.start:
            last = self.entries[-1].token
            if last not in free:
                raise Bug("report_free: wrapped range without its last entry")
            free[last] += free.pop(self.start)
        updated = False
        for start, count in free.items():
            i = self._find(start)
            if i is None or self.entries[i].peer != self.peer:
                raise Bug(f"report_free for {format_ip(start)}, which we do not own")
            e = self.entries[i]
            if count > self.distance(e.token, self._at(i + 1).token):
                raise Bug(f"report_free: {count} free exceeds range at {format_ip(start)}")
            if e.free == count:
                continue
            self.entries[i] = replace(e, free=count, version=e.version + 1)
            updated = True
        return updated

    def transfer(self, from_peer: PeerName, to_peer: PeerName) -> list[Range]:
        """Mark every entry of `from_peer` as `to_peer`'s with version + 100.

        Used for our shutdown hand-off (from us to an heir) and for rmpeer (from a dead peer to
        us). Returns the ranges that changed hands.
        """
        self._assert_invariants()
        moved: list[Range] = []
        for i, e in enumerate(self.entries):
            if e.peer == from_peer:
                self.entries[i] = replace(
                    e, peer=to_peer, version=e.version + TRANSFER_VERSION_BUMP
                )
                moved.append(Range(e.token, self._at(i + 1).token))
        self._assert_invariants()
        return self._split_over_zero(moved)

    # ---- merge ----------------------------------------------------------------------------

    def merge(self, other: Ring, has_allocations: HasAllocations) -> bool:
        """Merge a received ring into ours; True if ours changed.

        Raises a `RingError` (and leaves ours untouched) when the rings are incompatible or the
        other one would take addresses we have allocated.
        """
        self._assert_invariants()
        try:
            other.check_invariants()
        except RingInvariantError as err:
            raise RingInvariantError(f"Received ring is invalid: {err}") from err
        if other.seeds and self.seeds and other.seeds != self.seeds:
            raise DifferentSeedsError(
                "IP allocation was seeded by different peers (received: "
                f"{_names(other.seeds)}, ours: {_names(self.seeds)})"
            )
        if (other.start, other.end) != (self.start, self.end):
            raise DifferentRangeError(
                "Incompatible IP allocation ranges (received: "
                f"{other.range.as_cidr_string()}, ours: {self.range.as_cidr_string()})"
            )
        result, updated = merge_entries(
            self.entries, other.entries, self.peer, self._make_ranges, has_allocations
        )
        # A range of ours that someone split while it had no allocations can now report more
        # free addresses than it holds; clip rather than reject.
        for i, entry in enumerate(result):
            size = self.distance(entry.token, self._at(i + 1, result).token)
            if entry.peer == self.peer and entry.free > size:
                result[i] = replace(entry, free=size)
        try:
            self.check_entries(result)
        except RingInvariantError as err:
            raise RingInvariantError(f"Merge of incoming data causes: {err}") from err
        if not self.seeds and other.seeds:
            self.seeds = other.seeds
            updated = True
        self.entries = result
        return updated

    # ---- queries --------------------------------------------------------------------------

    def _make_ranges(self, start: int, end: int) -> list[Range]:
        return self._split_over_zero([Range(start, end)])

    def _split_over_zero(self, ranges: list[Range]) -> list[Range]:
        """Fix up a list whose last range may wrap round the end of the ring."""
        if not ranges:
            return ranges
        last = ranges[-1]
        if last.end == self.start:
            return [*ranges[:-1], Range(last.start, self.end)]
        if last.end <= last.start:
            return [Range(self.start, last.end), *ranges[:-1], Range(last.start, self.end)]
        return ranges

    def owned_ranges(self, peer: PeerName | None = None) -> list[Range]:
        """Ranges owned by `peer` (default: us), sorted, split at the wrap point."""
        who = self.peer if peer is None else peer
        ranges = [
            Range(e.token, self._at(i + 1).token)
            for i, e in enumerate(self.entries)
            if e.peer == who
        ]
        return self._split_over_zero(ranges)

    def all_range_info(self) -> list[RangeInfo]:
        out: list[RangeInfo] = []
        for i, e in enumerate(self.entries):
            for r in self._make_ranges(e.token, self._at(i + 1).token):
                out.append(RangeInfo(e.peer, r, e.version))
        return out

    def owner(self, addr: int) -> PeerName:
        """Who owns `addr` (UNKNOWN_PEER on an empty ring)."""
        if not self.contains(addr):
            raise Bug(f"owner() of {format_ip(addr)} outside the ring")
        if not self.entries:
            return UNKNOWN_PEER
        return self._at(self._index_after(addr) - 1).peer

    def peer_names(self) -> set[PeerName]:
        return {e.peer for e in self.entries}

    def choose_peers_to_ask_for_space(
        self, start: int, end: int, rng: random.Random
    ) -> list[PeerName]:
        """Peers with free space overlapping `[start, end)`, in free-weighted random order."""
        totals: dict[PeerName, int] = {}
        for i, e in enumerate(self.entries):
            if i + 1 < len(self.entries) and self.entries[i + 1].token - 1 < start:
                continue
            if e.token >= end:
                break
            if e.free == 0 or e.peer == self.peer:
                continue
            totals[e.peer] = totals.get(e.peer, 0) + e.free
        weighted = sorted(
            ((space * rng.random(), name) for name, space in sorted(totals.items())),
            key=lambda w: -w[0],
        )
        return [name for _, name in weighted]

    def pick_peer_for_transfer(self, is_valid: Callable[[PeerName], bool]) -> PeerName:
        """The first other peer in ring order that passes `is_valid`, else UNKNOWN_PEER."""
        for e in self.entries:
            if e.peer != self.peer and is_valid(e.peer):
                return e.peer
        return UNKNOWN_PEER


def normalize_peers(peers: Iterable[PeerName]) -> list[PeerName]:
    """Sorted, de-duplicated peer names (consensus values arrive in any order)."""
    return sorted(set(peers))


def _updated(e: Entry, peer: PeerName, free: int) -> Entry:
    """Weave's `entry.update`: new owner and free count, version + 1."""
    return replace(e, peer=peer, free=free, version=e.version + 1)


def _names(names: Iterable[PeerName]) -> str:
    return "[" + " ".join(format_peer_name(n) for n in names) + "]"
