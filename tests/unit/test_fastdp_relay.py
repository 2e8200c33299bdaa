"""Which links carry relayed traffic (fastdp steps down there, sleeve carries them)."""

from __future__ import annotations

import itertools
import random

from hypothesis import given
from hypothesis import strategies as st

from weaved.datapath.fastdp.relay import relaying_neighbours, tree
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.routes import Graph, Routes

A, B, C, D = (PeerName(n) for n in (1, 2, 3, 4))


def graph(
    *links: tuple[PeerName, PeerName], half: tuple[PeerName, PeerName] | None = None
) -> Graph:
    g: dict[PeerName, dict[PeerName, bool]] = {}
    for x, y in links:
        g.setdefault(x, {})[y] = True
        g.setdefault(y, {})[x] = True
    if half is not None:  # established at the first end only
        x, y = half
        g.setdefault(x, {})[y] = True
        g.setdefault(y, {})[x] = False
    return g


def test_full_mesh_relays_nothing() -> None:
    g = graph(*itertools.combinations([A, B, C, D], 2))
    for peer in (A, B, C, D):
        assert relaying_neighbours(g, peer) == frozenset()


def test_a_line_relays_through_the_middle() -> None:
    g = graph((A, B), (B, C))
    assert relaying_neighbours(g, A) == {B}
    assert relaying_neighbours(g, B) == {A, C}
    assert relaying_neighbours(g, C) == {B}


def test_only_the_links_on_relayed_paths() -> None:
    # A-B-C-D in a line plus A-C: A reaches D through C, so A-C and C-D relay; A-B does not
    # (B reaches C directly, D through C).
    g = graph((A, B), (B, C), (C, D), (A, C))
    assert relaying_neighbours(g, A) == {C}
    assert relaying_neighbours(g, B) == {C}  # B reaches D via C
    assert relaying_neighbours(g, D) == {C}


def test_links_established_at_one_end_carry_nothing() -> None:
    g = graph((A, B), (A, C), half=(B, C))
    assert relaying_neighbours(g, B) == {A}  # B reaches C through A
    assert tree(g, B) == {A: B, C: A}


@given(st.integers(3, 8), st.floats(0.2, 1.0), st.integers(0, 10_000))
def test_trees_are_the_mesh_routes(n: int, density: float, seed: int) -> None:
    rng = random.Random(seed)
    peers = [PeerName(i + 1) for i in range(n)]
    g = graph(*(pair for pair in itertools.combinations(peers, 2) if rng.random() < density))
    for source in g:
        parent = tree(g, source)
        routes = Routes(source, g).unicast
        assert set(parent) == set(routes) - {source}
        for dest, hop in routes.items():
            if dest == source:
                continue
            first = dest
            while parent[first] != source:
                first = parent[first]
            assert first == hop  # our tree's first hop is the mesh's next hop
