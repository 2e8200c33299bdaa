"""The addresses we own, split into allocated and free — Weave's `space.Space`.

Both sets are kept as sorted boundary lists: even positions start a run, odd positions end it
(exclusive), adjacent runs are coalesced. That keeps a /12 with a handful of allocations down to
a few integers and makes "lowest free address in a range" a short walk.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from weaved.ipam.address import Range, biggest_cidr_range, format_ip


class SpaceError(ValueError):
    """An address operation that does not fit the current space (caller checks first)."""


def _add(bounds: list[int], start: int, end: int) -> list[int]:
    return _add_sub(bounds, start, end, 0)


def _subtract(bounds: list[int], start: int, end: int) -> list[int]:
    return _add_sub(bounds, start, end, 1)


def _add_sub(bounds: list[int], start: int, end: int, sense: int) -> list[int]:
    """Union (sense 0) or difference (sense 1) of a boundary list with `[start, end)`."""
    if start >= end:
        return bounds
    lo = bisect.bisect_left(bounds, start)
    hi = bisect.bisect_right(bounds, end, lo)
    # A new boundary is needed where `start`/`end` fall outside (union) or inside (difference)
    # an existing run; the parity of the insertion point says which.
    middle = []
    if lo & 1 == sense:
        middle.append(start)
    if hi & 1 == sense:
        middle.append(end)
    return bounds[:lo] + middle + bounds[hi:]


def _contains(bounds: list[int], addr: int) -> bool:
    return bisect.bisect_right(bounds, addr) & 1 == 1


def _runs(bounds: list[int]) -> Iterator[Range]:
    for i in range(0, len(bounds), 2):
        yield Range(bounds[i], bounds[i + 1])


class Space:
    """Everything this peer owns: `allocated` addresses plus `free` ones."""

    def __init__(self) -> None:
        self._allocated: list[int] = []
        self._free: list[int] = []

    def clear(self) -> None:
        self._allocated = []
        self._free = []

    def add(self, r: Range) -> None:
        """Add `r` as free space."""
        self._free = _add(self._free, r.start, r.end)

    def _walk_free(self, r: Range) -> Iterator[Range]:
        """Free runs clipped to `r`, lowest first."""
        if r.start >= r.end:
            return
        for chunk in _runs(self._free):
            if chunk.end <= r.start:
                continue
            if chunk.start >= r.end:
                break
            yield Range(max(chunk.start, r.start), min(chunk.end, r.end))

    def allocate(self, r: Range) -> int | None:
        """Take the lowest free address inside `r`, or None when there is none."""
        for chunk in self._walk_free(r):
            addr = chunk.start
            self._take(addr)
            return addr
        return None

    def _take(self, addr: int) -> None:
        self._allocated = _add(self._allocated, addr, addr + 1)
        self._free = _subtract(self._free, addr, addr + 1)

    def claim(self, addr: int) -> None:
        """Mark a specific free address as allocated."""
        if not _contains(self._free, addr):
            raise SpaceError(f"Address {format_ip(addr)} is not free to claim")
        self._take(addr)

    def free(self, addr: int) -> None:
        """Return an allocated address to the free set."""
        if not _contains(self._allocated, addr):
            raise SpaceError(f"Address {format_ip(addr)} is not ours")
        self._allocated = _subtract(self._allocated, addr, addr + 1)
        self._free = _add(self._free, addr, addr + 1)

    def is_allocated(self, addr: int) -> bool:
        return _contains(self._allocated, addr)

    def is_free(self, addr: int) -> bool:
        return _contains(self._free, addr)

    def num_allocated(self) -> int:
        return sum(r.size for r in _runs(self._allocated))

    def num_free(self) -> int:
        return sum(r.size for r in _runs(self._free))

    def num_free_in_range(self, r: Range) -> int:
        return sum(chunk.size for chunk in self._walk_free(r))

    def has_allocations_in(self, ranges: Iterable[Range]) -> bool:
        for r in ranges:
            i = bisect.bisect_right(self._allocated, r.start)
            # Inside an allocated run at r.start, or a run starts before r.end.
            if i & 1 or (i < len(self._allocated) and self._allocated[i] < r.end):
                return True
        return False

    def donate(self, r: Range, usable: Range | None = None) -> Range | None:
        """Give away part of our free space in `r`: Weave's rule, for byte-equal rings.

        Take the biggest CIDR-aligned free block (the last of equal-sized candidates); if it is
        more than half of our free addresses in `r`, keep its lower half and give the upper.

        `usable` (the requester's host range) is our addition: free runs that hold no usable
        address are not offered, and a useless upper half is replaced by the whole block.
        Weave would hand a lone broadcast address from peer to peer forever once a subnet
        is full; donations that include a usable address are exactly Weave's.
        """
        biggest: Range | None = None
        for chunk in self._walk_free(r):
            if usable is not None and not chunk.overlaps(usable):
                continue
            if biggest is None or chunk.size >= biggest.size:
                block = biggest_cidr_range(chunk)
                if biggest is None or block.size >= biggest.size:
                    biggest = block
        if biggest is None or biggest.size == 0:
            return None
        if biggest.size > self.num_free_in_range(r) // 2:
            upper = Range(biggest.start + biggest.size // 2, biggest.end)
            if usable is None or upper.overlaps(usable):
                biggest = upper
        self._allocated = _subtract(self._allocated, biggest.start, biggest.end)
        self._free = _subtract(self._free, biggest.start, biggest.end)
        return biggest

    def owned_ranges(self) -> list[Range]:
        """Everything we own, allocated or free, as coalesced runs."""
        bounds = list(self._allocated)
        for chunk in _runs(self._free):
            bounds = _add(bounds, chunk.start, chunk.end)
        return list(_runs(bounds))

    def allocated_ranges(self) -> list[Range]:
        return list(_runs(self._allocated))

    def set_owned(self, ranges: Iterable[Range]) -> None:
        """Make our space exactly `ranges`: new parts become free, lost parts are dropped.

        Weave only ever adds here; we also drop free space the ring no longer gives us (a merge
        may hand an empty range of ours to someone else), so space and ring never disagree.
        Allocated addresses outside `ranges` stay: the ring merge refuses to take those away.
        """
        wanted: list[int] = []
        for r in ranges:
            wanted = _add(wanted, r.start, r.end)
        new_free = list(wanted)
        for chunk in _runs(self._allocated):
            new_free = _subtract(new_free, chunk.start, chunk.end)
        self._free = new_free

    def __repr__(self) -> str:
        def show(bounds: list[int]) -> str:
            return " ".join(f"{format_ip(r.start)}+{r.size}" for r in _runs(bounds))

        return f"Space(allocated: {show(self._allocated)}; free: {show(self._free)})"
