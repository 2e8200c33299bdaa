"""Which of our links carry relayed traffic. Pure.

Only a direct path may use the fast datapath; a relayed one (A → B → C, because A and C have
no connection) goes through sleeve, hop by hop, and sleeve can only send to a peer whose
connection it carries. So on a link that relays anything, fastdp steps down and sleeve
carries all of that link's traffic; every other link keeps fastdp. In a full mesh (the
usual case with discovery) nothing is relayed.

The mesh routes along one tree per source peer: breadth-first over connections established
at both ends, each level in ascending peer-name order (`weaved.mesh.routes`). We rebuild
those trees with parent links: the link from parent to child in source S's tree carries S's traffic
to the child's whole subtree, so it is direct-only when S is the parent and the child is a
leaf. Every source is checked, so both directions of every path are covered.
"""

from __future__ import annotations

from weaved.mesh.gossip_api import PeerName
from weaved.mesh.routes import Graph

__all__ = ["RELAY_SETTLE", "RelaySettle", "relaying_neighbours", "tree"]

RELAY_SETTLE = 3.0
"""A link must carry relayed traffic this long before fastdp stands by on it: while a peer
leaves, the others' views of the topology disagree for a moment (the leaving peer's links
still count), and a direct link must not flip to sleeve and back for that."""


def tree(graph: Graph, source: PeerName) -> dict[PeerName, PeerName]:
    """Child → parent in `source`'s routing tree (the same choices as `routes.bfs`)."""
    parent: dict[PeerName, PeerName] = {}
    seen = {source}
    level = [source]
    while level:
        level.sort()
        following: list[PeerName] = []
        for cur in level:
            for remote, established in graph.get(cur, {}).items():
                if remote in seen or not established:
                    continue
                if not graph.get(remote, {}).get(cur, False):
                    continue  # established at one end only: carries no data
                seen.add(remote)
                parent[remote] = cur
                following.append(remote)
        level = following
    return parent


def relaying_neighbours(graph: Graph, us: PeerName) -> frozenset[PeerName]:
    """Our neighbours whose link with us carries traffic between other pairs of peers too."""
    found: set[PeerName] = set()
    for source in graph:
        parent = tree(graph, source)
        has_children = set(parent.values())
        for child, par in parent.items():
            if us not in (child, par):
                continue
            other = par if child == us else child
            direct_only = par == source and child not in has_children
            if not direct_only:
                found.add(other)
    return frozenset(found)


class RelaySettle:
    """Neighbours whose link has relayed for `RELAY_SETTLE` seconds; one that stops
    relaying leaves at once."""

    def __init__(self, settle: float = RELAY_SETTLE) -> None:
        self.settle = settle
        self._since: dict[PeerName, float] = {}

    def update(self, relaying: frozenset[PeerName], now: float) -> frozenset[PeerName]:
        since = self._since
        for peer in list(since):
            if peer not in relaying:
                del since[peer]
        for peer in relaying:
            since.setdefault(peer, now)
        return frozenset(p for p, t in since.items() if now - t >= self.settle)
