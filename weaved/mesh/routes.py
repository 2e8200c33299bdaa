"""Route computation over the topology (FACTS.md §3.3). Pure.

Breadth-first search from a start peer, each level processed in ascending peer-name order,
so every peer that holds the same topology computes the same trees. Two variants: over
connections that both ends report as established ("established"), or over any gossiped
connection ("all").
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from weaved.mesh.gossip_api import UNKNOWN_PEER, PeerName

__all__ = [
    "Graph",
    "Routes",
    "all_neighbours",
    "bfs",
    "broadcast_hops",
    "choose_neighbours",
    "gossip_fanout",
    "unicast_routes",
]

Graph = Mapping[PeerName, Mapping[PeerName, bool]]
"""peer -> {remote peer -> does `peer` report that connection as established}."""


def _connected(
    graph: Graph, peer: PeerName, established: bool, exclude: Mapping[PeerName, PeerName]
) -> Iterator[PeerName]:
    for remote, est in graph.get(peer, {}).items():
        if remote in exclude:
            continue
        # Only symmetric, established-at-both-ends connections carry data.
        if established and (not est or not graph.get(remote, {}).get(peer, False)):
            continue
        yield remote


def bfs(
    graph: Graph, start: PeerName, established: bool, stop_at: PeerName | None = None
) -> tuple[bool, dict[PeerName, PeerName]]:
    """Next hops from `start` (start maps to UNKNOWN_PEER). With `stop_at`, stop when that
    peer's turn comes and report whether it was reached; the map then holds what was reached
    so far, which is exactly what broadcast hop selection needs."""
    routes: dict[PeerName, PeerName] = {start: UNKNOWN_PEER}
    level = [start]
    none: Mapping[PeerName, bool] = {}
    while level:  # _connected inlined: this runs at every topology change
        level.sort()
        following: list[PeerName] = []
        for cur in level:
            if cur == stop_at:
                return True, routes
            for remote, est in graph.get(cur, none).items():
                if remote in routes:
                    continue
                if established and (not est or not graph.get(remote, none).get(cur, False)):
                    continue
                following.append(remote)
                routes[remote] = remote if cur == start else routes[cur]
        level = following
    return False, routes


def unicast_routes(graph: Graph, us: PeerName, established: bool) -> dict[PeerName, PeerName]:
    return bfs(graph, us, established)[1]


def broadcast_hops(
    graph: Graph, source: PeerName, us: PeerName, established: bool
) -> list[PeerName]:
    """Where we pass on a broadcast from `source`: our neighbours that `source`'s tree had not
    reached when it reached us. Weave's order here is Go map order; ours is sorted."""
    if source not in graph:
        return []
    found, reached = bfs(graph, source, established, stop_at=us)
    if not found:
        return []
    return sorted(_connected(graph, us, established, reached))


def gossip_fanout(reachable: int) -> int:
    """floor(2 * log2(reachable peers, ourselves included))."""
    if reachable <= 1:
        return 0
    return int(2 * math.log2(reachable))


def choose_neighbours(
    unicast_all: Mapping[PeerName, PeerName], except_: PeerName, rng: random.Random
) -> list[PeerName]:
    """A random subset of next hops, each weighted by the number of destinations behind it."""
    weights = Counter(hop for hop in unicast_all.values() if hop not in (UNKNOWN_PEER, except_))
    count = min(gossip_fanout(len(unicast_all)), len(weights))
    chosen: list[PeerName] = []
    pool = dict(weights)
    for _ in range(count):
        total = sum(pool.values())
        pick = rng.random() * total
        for hop in sorted(pool):
            pick -= pool[hop]
            if pick < 0:
                break
        chosen.append(hop)
        del pool[hop]
    return chosen


@dataclass
class Routes:
    """The routing tables of one topology snapshot; broadcast trees computed on demand."""

    us: PeerName
    graph: Graph
    _broadcast: dict[tuple[PeerName, bool], list[PeerName]] = field(
        init=False, default_factory=dict
    )

    # Computed when first asked for: gossip needs only `unicast_all`, and a busy mesh
    # replaces its Routes at every topology change.
    @cached_property
    def unicast(self) -> dict[PeerName, PeerName]:
        return unicast_routes(self.graph, self.us, established=True)

    @cached_property
    def unicast_all(self) -> dict[PeerName, PeerName]:
        return unicast_routes(self.graph, self.us, established=False)

    def broadcast(self, source: PeerName) -> list[PeerName]:
        return self._hops(source, True)

    def broadcast_all(self, source: PeerName) -> list[PeerName]:
        return self._hops(source, False)

    def _hops(self, source: PeerName, established: bool) -> list[PeerName]:
        key = (source, established)
        if key not in self._broadcast:
            self._broadcast[key] = broadcast_hops(self.graph, source, self.us, established)
        return self._broadcast[key]

    def random_neighbours(self, except_: PeerName, rng: random.Random) -> list[PeerName]:
        hops = all_neighbours(self.us, self.graph.get(self.us, {}), except_)
        return hops if hops is not None else choose_neighbours(self.unicast_all, except_, rng)


def all_neighbours(
    us: PeerName, ours: Iterable[PeerName], except_: PeerName
) -> list[PeerName] | None:
    """`choose_neighbours`' answer without the routes when it is every neighbour but
    `except_`, else None. `ours`: the peers our own record connects to.

    They are exactly the next hops of `unicast_all` (the search's first level), and at least
    as many peers are reachable: when the fan-out covers every hop, the weights (a search of
    the whole graph) cannot change the choice. Gossip relays once per turn of a busy loop,
    mostly in that case."""
    mine = [r for r in ours if r != us and r != UNKNOWN_PEER]
    hops = [r for r in mine if r != except_]
    return sorted(hops) if len(hops) <= gossip_fanout(len(mine) + 1) else None
