"""Merging a received ring into ours, token by token, as Weave does (FACTS.md §5.2). Pure.

Per token the higher version wins; tokens one side lacks are taken. The merge refuses
(`OwnershipConflictError`) when the other ring would take addresses we own and have handed out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from weaved.ipam.address import Range, format_ip
from weaved.ipam.ring_entry import Entry, HasAllocations, OwnershipConflictError
from weaved.mesh.gossip_api import PeerName, format_peer_name

__all__ = ["merge_entries"]


def merge_entries(
    mine_all: Sequence[Entry],
    theirs_all: Sequence[Entry],
    us: PeerName,
    ranges: Callable[[int, int], list[Range]],
    has_allocations: HasAllocations,
) -> tuple[list[Entry], bool]:
    """Weave's token-by-token merge of our entries with received ones (both sorted), including
    when it refuses; `ranges(start, end)` splits a span at the ring's wrap point."""
    result: list[Entry] = []
    updated = False
    # Owner of the last range copied from our side; taking theirs resets it, as in Weave,
    # so only splits directly after one of our own entries are checked.
    previous_owner: PeerName | None = None
    i = j = 0
    while i < len(mine_all) and j < len(theirs_all):
        mine, theirs = mine_all[i], theirs_all[j]
        if mine.token < theirs.token:
            result.append(mine)
            previous_owner = mine.peer
            i += 1
        elif mine.token > theirs.token:
            if (
                previous_owner == us
                and theirs.peer != us
                and has_allocations(ranges(theirs.token, mine.token))
            ):
                raise OwnershipConflictError(_entry_in_my_range(theirs))
            result.append(theirs)
            updated = True
            previous_owner = None
            j += 1
        else:
            next_token = mine_all[(i + 1) % len(mine_all)].token
            if mine.version > theirs.version or (
                mine.version == theirs.version and mine.same_claim(theirs)
            ):
                result.append(mine)
                previous_owner = mine.peer
            elif mine.version == theirs.version:
                if mine.peer == us and has_allocations(ranges(mine.token, next_token)):
                    raise OwnershipConflictError(
                        f"Inconsistent entries for {format_ip(mine.token)}: owned by "
                        f"{format_peer_name(mine.peer)} but incoming message says "
                        f"{format_peer_name(theirs.peer)}"
                    )
                # Same version, different content: the larger free count wins.
                if mine.free >= theirs.free:
                    result.append(mine)
                    previous_owner = mine.peer
                else:
                    result.append(theirs)
                    updated = True
                    previous_owner = None
            elif mine.peer != us:
                result.append(theirs)
                updated = True
                previous_owner = None
            elif theirs.peer != us and not has_allocations(ranges(mine.token, next_token)):
                # Someone gave away a range of ours that holds nothing: accept (repair).
                result.append(theirs)
                updated = True
                previous_owner = None
            elif theirs.peer == us:
                # An older incarnation of us wrote a newer version: re-assert ours above it.
                # Weave does not flag this as an update; we do, so it gets persisted and
                # gossiped promptly.
                result.append(replace(mine, version=theirs.version + 1))
                updated = True
            else:
                raise OwnershipConflictError(
                    f"Received update for IP range I own at {format_ip(mine.token)} "
                    f"v{mine.version}: incoming message says owner "
                    f"{format_peer_name(theirs.peer)} v{theirs.version}"
                )
            i += 1
            j += 1
    result.extend(mine_all[i:])
    for theirs in theirs_all[j:]:
        # Weave refuses here even without allocations; FACTS §5.2 (and the in-loop rule)
        # only refuse when we have allocations there, which is what we do.
        if (
            previous_owner == us
            and theirs.peer != us
            and has_allocations(ranges(theirs.token, mine_all[0].token))
        ):
            raise OwnershipConflictError(_entry_in_my_range(theirs))
        result.append(theirs)
        updated = True
        previous_owner = None
    return result, updated


def _entry_in_my_range(theirs: Entry) -> str:
    return (
        f"Peer {format_peer_name(theirs.peer)} says it owns the IP range from "
        f"{format_ip(theirs.token)}, which I think I own"
    )
