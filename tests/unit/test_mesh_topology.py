"""Topology payloads, merge rules, garbage collection, short IDs and the routes computed from
them: against the captured vectors, an independent BFS, and a gossip simulation in which all
peers must agree."""

from __future__ import annotations

import json
import random
from collections import Counter, deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.wire import VECTORS, load_vector, needs_wire
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.handshake import RemoteIdentity
from weaved.mesh.peername import format_peer_name, parse_peer_name
from weaved.mesh.routes import Routes, bfs, broadcast_hops, choose_neighbours, gossip_fanout
from weaved.mesh.topology import (
    ConnectionInfo,
    Peer,
    Topology,
    TopologyError,
    TopologyGossipData,
    decode_topology,
)

H1 = parse_peer_name("3e:80:e7:5a:63:a7")
H2 = parse_peer_name("2a:9f:f1:99:8a:21")
H3 = parse_peer_name("ae:c0:01:6f:34:d5")


def _bin(v: Any) -> int:
    return int(v["$bytes"], 16)


def test_decode_every_captured_topology_payload() -> None:
    data = load_vector("tcp-gossip-topology.json")
    assert data["examples"]
    for ex in data["examples"]:
        decoded = ex["decoded"]
        got = decode_topology(bytes.fromhex(ex["data_hex"]))
        assert len(got) * 2 == len(decoded)
        for (peer, conns), summary, conn_list in zip(got, decoded[::2], decoded[1::2], strict=True):
            assert peer.name == _bin(summary["NameByte"])
            assert peer.nickname == summary.get("NickName", "")
            assert peer.uid == summary.get("UID", 0)
            assert peer.version == summary.get("Version", 0)
            assert peer.short_id == summary.get("ShortID", 0)
            assert peer.has_short_id == summary.get("HasShortID", False)
            assert [(c.remote, c.address, c.outbound, c.established) for c in conns] == [
                (
                    _bin(c["NameByte"]),
                    c.get("RemoteTCPAddr", ""),
                    c.get("Outbound", False),
                    c.get("Established", False),
                )
                for c in (conn_list or [])
            ]


def test_encode_matches_go_byte_for_byte() -> None:
    for vec in load_vector("gob-weave-types.json")["vectors"]:
        if not vec["name"].startswith("topology"):
            continue
        peers = vec["value"]
        topo = Topology(PeerName(peers[0]["Name"]), "", 1, 0)
        topo.peers = {}
        for p in peers:
            topo.peers[PeerName(p["Name"])] = Peer(
                PeerName(p["Name"]),
                p["NickName"],
                p["UID"],
                p["Version"],
                p["ShortID"],
                p["HasShortID"],
                {
                    PeerName(c["Name"]): ConnectionInfo(
                        PeerName(c["Name"]), c["Addr"], c["Outbound"], c["Established"]
                    )
                    for c in p["Conns"] or []
                },
            )
        assert topo.encode([PeerName(p["Name"]) for p in peers]).hex() == vec["gob_hex"], vec[
            "name"
        ]


def test_garbage_payload_is_a_topology_error() -> None:
    for junk in (b"\x05\x00\x00", b"\xff" * 10, bytes(range(40))):
        with pytest.raises(TopologyError):
            decode_topology(junk)


def _topo(name: int, uid: int = 1, short_id: int = 0, nick: str = "") -> Topology:
    return Topology(PeerName(name), nick or f"p{name}", uid, short_id, random.Random(name))


def _payload(*peers: tuple[Peer, list[ConnectionInfo]]) -> bytes:
    t = _topo(0xFFFF)
    t.peers = {}
    for p, conns in peers:
        p.connections = {c.remote: c for c in conns}
        t.peers[p.name] = p
    return t.encode([p.name for p, _ in peers])


def test_merge_rules() -> None:
    us = _topo(1)
    us.add_local_connection(ConnectionInfo(PeerName(2), "10.0.0.2:6783", True, True))
    us.register_remote(RemoteIdentity(PeerName(2), "p2", 20, 0, 5, False, None), True)
    # Unknown peer added; a name only inside a connection list becomes a placeholder.
    res = us.apply_update(
        _payload(
            (
                Peer(PeerName(2), "p2", 20, 3, 5, True),
                [ConnectionInfo(PeerName(3), "a:1", True, False)],
            )
        )
    )
    assert res.improved == {2}
    assert us.peers[PeerName(3)].placeholder
    # Lower version ignored; equal version lower UID ignored; higher UID wins.
    assert not us.apply_update(_payload((Peer(PeerName(2), "old", 20, 2, 5, True), []))).improved
    assert not us.apply_update(_payload((Peer(PeerName(2), "x", 19, 3, 5, True), []))).improved
    assert us.apply_update(_payload((Peer(PeerName(2), "new", 21, 3, 5, True), []))).improved == {2}
    assert us.peers[PeerName(2)].nickname == "new"
    # Placeholder 3 was only reachable through 2's old connection list: collected.
    assert PeerName(3) not in us.peers
    # Same version and UID: only a newly present short ID replaces.
    assert not us.apply_update(_payload((Peer(PeerName(2), "z", 21, 3, 0, False), []))).improved
    # News about an older incarnation of ourselves: our version goes past it.
    res = us.apply_update(_payload((Peer(PeerName(1), "me", 999, 41, 0, True), [])))
    assert res.local_changed and us.ourself.version == 42 and us.ourself.uid == 1


def test_short_id_collision_lowest_name_keeps_it() -> None:
    us = _topo(5, short_id=7)
    us.add_local_connection(ConnectionInfo(PeerName(2), "x:1", True, True))
    us.register_remote(RemoteIdentity(PeerName(2), "p2", 20, 0, 7, False, None), True)
    before = us.ourself.version
    res = us.apply_update(_payload((Peer(PeerName(2), "p2", 20, 1, 7, True), [])))
    assert res.local_changed
    assert us.ourself.short_id != 7 and us.ourself.version == before + 1
    assert us.short_id_owner(7) == 2
    # A higher-named peer claiming our ID does not move us.
    them = _topo(1, short_id=9)
    them.add_local_connection(ConnectionInfo(PeerName(8), "x:1", True, True))
    res = them.apply_update(_payload((Peer(PeerName(8), "p8", 3, 1, 9, True), [])))
    assert not res.local_changed and them.ourself.short_id == 9


def test_gossip_data_merge_and_encode() -> None:
    t = _topo(1)
    a = TopologyGossipData(t, frozenset({PeerName(1)}))
    b = TopologyGossipData(t, frozenset({PeerName(1), PeerName(9)}))
    merged = a.merge(b)
    assert merged.names == {1, 9}
    (payload,) = merged.encode()  # unknown names are skipped
    assert [p.name for p, _ in decode_topology(payload)] == [1]


# --- routes ------------------------------------------------------------------------------


def independent_routes(graph: dict[int, dict[int, bool]], start: int, est: bool) -> dict[int, int]:
    """Same definition, different algorithm: distances first, then the lowest-named parent."""

    def edge(u: int, v: int) -> bool:
        if v not in graph.get(u, {}):
            return False
        return not est or (graph[u][v] and graph.get(v, {}).get(u, False))

    dist = {start: 0}
    q = deque([start])
    while q:
        u = q.popleft()
        for v in graph.get(u, {}):
            if v not in dist and edge(u, v):
                dist[v] = dist[u] + 1
                q.append(v)
    route = {start: 0}
    for v in sorted(dist, key=lambda n: dist[n]):
        if v == start:
            continue
        parent = min(u for u in dist if dist[u] == dist[v] - 1 and edge(u, v))
        route[v] = v if parent == start else route[parent]
    return route


@st.composite
def graphs(draw: st.DrawFn) -> dict[int, dict[int, bool]]:
    n = draw(st.integers(min_value=1, max_value=12))
    names = draw(st.lists(st.integers(1, 1 << 47), min_size=n, max_size=n, unique=True))
    g: dict[int, dict[int, bool]] = {x: {} for x in names}
    for u in names:
        for v in names:
            if u != v and draw(st.booleans()):
                g[u][v] = draw(st.booleans())
    return g


@settings(max_examples=300, deadline=None)
@given(graphs(), st.booleans())
def test_routes_match_independent_bfs(g: dict[int, dict[int, bool]], est: bool) -> None:
    for start in g:
        _, got = bfs(g, PeerName(start), est)  # type: ignore[arg-type]
        assert got == independent_routes(g, start, est)


@st.composite
def connected_meshes(draw: st.DrawFn) -> list[tuple[int, int]]:
    n = draw(st.integers(min_value=2, max_value=9))
    edges = {(i, draw(st.integers(0, i - 1))) for i in range(1, n)}  # a spanning tree
    for _ in range(draw(st.integers(0, n))):
        a, b = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if a != b and (a, b) not in edges and (b, a) not in edges:
            edges.add((a, b))
    return sorted(edges)


def _converge(edges: list[tuple[int, int]], seed: int) -> list[Topology]:
    """Each peer knows only its own connections, then gossips full state until quiet."""
    rng = random.Random(seed)
    n = max(max(e) for e in edges) + 1
    names = rng.sample(range(1, 1 << 40), n)
    peers = [
        Topology(PeerName(names[i]), f"p{i}", rng.getrandbits(63) + 1, rng.randrange(4096), rng)
        for i in range(n)
    ]
    neighbours: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
        for x, y, out in ((a, b, True), (b, a, False)):
            peers[x].register_remote(
                RemoteIdentity(peers[y].us, f"p{y}", peers[y].ourself.uid, 0, None, False, None),
                True,
            )
            peers[x].add_local_connection(
                ConnectionInfo(peers[y].us, f"10.0.0.{y}:6783", out, False)
            )
            peers[x].set_local_established(peers[y].us)
    for _ in range(4 * n + 4):
        changed = False
        for i in rng.sample(range(n), n):
            payload = peers[i].encode_all()
            for j in neighbours[i]:
                changed |= bool(peers[j].apply_update(payload).improved)
        if not changed:
            break
    return peers


@settings(max_examples=60, deadline=None)
@given(connected_meshes(), st.integers(0, 1000))
def test_all_peers_agree_and_routes_are_consistent(edges: list[tuple[int, int]], seed: int) -> None:
    peers = _converge(edges, seed)
    tables = [t.graph() for t in peers]
    assert all(tab == tables[0] for tab in tables), "peers disagree on the topology"
    names = [t.us for t in peers]
    by_name = {t.us: t for t in peers}
    routes = {t.us: Routes(t.us, t.graph()) for t in peers}
    # Unicast: following each peer's own next hop reaches every destination without loops.
    for src in names:
        for dst in names:
            hop, seen = src, {src}
            while hop != dst:
                hop = routes[hop].unicast[dst]
                assert hop not in seen
                seen.add(hop)
    # Broadcast: each peer receives each peer's broadcast exactly once.
    for src in names:
        received = Counter[PeerName]()
        queue = deque([src])
        while queue:
            at = queue.popleft()
            for nxt in routes[at].broadcast(src):
                received[nxt] += 1
                queue.append(nxt)
        assert set(received) == set(names) - {src}
        assert all(c == 1 for c in received.values())
    assert all(len(t.peers) == len(peers) for t in by_name.values())


@needs_wire
def test_broadcast_routes_of_three_peer_line_match_reports() -> None:
    graph = {H1: {H2: True}, H2: {H1: True, H3: True}, H3: {H2: True}}
    wire = VECTORS.parent / "outputs" / "three-peers-line"
    for host, name in (("host1", H1), ("host2", H2), ("host3", H3)):
        report = json.loads((wire / host / "report.json").read_text())["Router"]
        for r in report["BroadcastRoutes"]:
            src = parse_peer_name(r["Source"])
            got = {format_peer_name(h) for h in broadcast_hops(graph, src, name, True)}
            assert got == set(r["Via"] or []), (host, r)


def test_gc_keeps_referenced_and_drops_unreachable() -> None:
    us = _topo(1)
    us.register_remote(RemoteIdentity(PeerName(2), "p2", 20, 0, None, False, None), True)
    us.apply_update(_payload((Peer(PeerName(9), "far", 3, 1), [])))  # unreachable, no refs
    assert PeerName(9) not in us.peers and PeerName(2) in us.peers
    us.dereference(PeerName(2))
    assert [p.name for p in us.garbage_collect()] == [2]


def test_neighbour_choice_fanout_and_weights() -> None:
    assert [gossip_fanout(n) for n in (1, 2, 3, 4, 8, 100)] == [0, 2, 3, 4, 6, 13]
    unicast = {
        PeerName(0): PeerName(0),
        PeerName(1): PeerName(1),
        PeerName(2): PeerName(1),
        PeerName(3): PeerName(1),
        PeerName(4): PeerName(4),
    }
    rng = random.Random(3)
    counts = Counter(tuple(choose_neighbours(unicast, PeerName(4), rng)) for _ in range(200))
    assert set(counts) == {(1,)}  # 4 excluded; fanout min(4, 1 hop left)
    firsts = Counter(
        choose_neighbours({**unicast, PeerName(5): PeerName(5)}, PeerName(0), rng)[0]
        for _ in range(2000)
    )
    assert firsts[PeerName(1)] > firsts[PeerName(4)]  # weighted by destinations behind the hop


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 1 << 47),
            st.text(max_size=8),
            st.integers(0, (1 << 64) - 1),
            st.integers(0, 1 << 40),
            st.integers(0, 4095),
            st.booleans(),
            st.lists(
                st.tuples(
                    st.integers(1, 1 << 47), st.text(max_size=21), st.booleans(), st.booleans()
                ),
                max_size=4,
            ),
        ),
        max_size=6,
        unique_by=lambda t: t[0],
    )
)
def test_memoised_encoding_equals_plain_gob(rows: list[Any]) -> None:
    from weaved.mesh import gob
    from weaved.mesh.gob.weave_types import CONNECTION_SUMMARY_LIST, PEER_SUMMARY

    topo = _topo(0xFFFF)
    topo.peers = {}
    enc = gob.Encoder()
    expected = b""
    for name, nick, uid, version, sid, has, conns in rows:
        peer = Peer(PeerName(name), nick, uid, version, sid, has)
        peer.connections = {
            PeerName(r): ConnectionInfo(PeerName(r), a, o, e) for r, a, o, e in conns
        }
        topo.peers[peer.name] = peer
        expected += enc.encode(
            PEER_SUMMARY,
            {
                "NameByte": name.to_bytes(6, "big"),
                "NickName": nick,
                "UID": uid,
                "Version": version,
                "ShortID": sid,
                "HasShortID": has,
            },
        )
        expected += enc.encode(
            CONNECTION_SUMMARY_LIST,
            [
                {
                    "NameByte": c.remote.to_bytes(6, "big"),
                    "RemoteTCPAddr": c.address,
                    "Outbound": c.outbound,
                    "Established": c.established,
                }
                for c in peer.connections.values()
            ],
        )
    payload = topo.encode([PeerName(r[0]) for r in rows])
    assert payload == expected
    assert payload == topo.encode([PeerName(r[0]) for r in rows])  # from the cache
    decoded = decode_topology(payload) if payload else []
    assert [(p.name, p.version, len(c)) for p, c in decoded] == [
        (r[0], r[3], len({x[0] for x in r[6]})) for r in rows
    ]


def test_empty_payload_is_no_peers() -> None:
    """Go's decoder reads zero records from an empty stream; ours raised IndexError (a peer
    all of whose queued names were collected before sending produced one)."""
    assert decode_topology(b"") == []
    res = _topo(1).apply_update(b"")
    assert not res.received and not res.improved and not res.removed


def test_collection_deferred_to_settle() -> None:
    us = _topo(1)
    res = us.apply_update(_payload((Peer(PeerName(9), "far", 3, 1), [])), collect=False)
    assert res.improved == {9} and not res.removed and not us.settled
    assert PeerName(9) in us.peers
    assert [p.name for p in us.settle()] == [9] and us.settled and PeerName(9) not in us.peers
    assert us.settle() == []


def test_gossip_data_of_collected_peers_sends_nothing() -> None:
    t = _topo(1)
    assert TopologyGossipData(t, frozenset({PeerName(9)})).encode() == []
