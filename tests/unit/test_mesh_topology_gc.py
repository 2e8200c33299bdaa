"""Garbage collection that searches on only from what grew (issue 16): after any sequence of
updates, lost connections, references and local connections, the table holds exactly what a
search of the whole graph keeps, and collects the same peers."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from weaved.mesh.gossip_api import PeerName
from weaved.mesh.handshake import RemoteIdentity
from weaved.mesh.topology import ConnectionInfo, Peer, Topology

US = PeerName(1)
NAMES = [PeerName(n) for n in range(2, 10)]


def _payload(records: list[tuple[PeerName, int, list[PeerName]]]) -> bytes:
    t = Topology(PeerName(0xFFFF), "enc", 1, 0, random.Random(0))
    t.peers = {}
    for name, version, remotes in records:
        conns = {r: ConnectionInfo(r, "10.0.0.1:6783", True, True) for r in remotes}
        t.peers[name] = Peer(name, f"h{name}", 100 + name, version, 0, False, conns)
    return t.encode([name for name, _, _ in records])


_record = st.tuples(
    st.sampled_from(NAMES), st.integers(1, 6), st.lists(st.sampled_from([US, *NAMES]), max_size=3)
)
_op = st.one_of(
    st.tuples(st.just("update"), st.lists(_record, min_size=1, max_size=3)),
    st.tuples(st.just("connect"), st.sampled_from(NAMES)),
    st.tuples(st.just("disconnect"), st.sampled_from(NAMES)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=25))
def test_incremental_collection_equals_a_full_search(ops: list[tuple[str, object]]) -> None:
    incremental = Topology(US, "us", 1, 0, random.Random(1))
    full = Topology(US, "us", 1, 0, random.Random(1))
    for kind, arg in ops:
        removed = []
        for topo in (incremental, full):
            if kind == "update":
                assert isinstance(arg, list)
                topo.apply_update(_payload(arg), collect=False)
            elif kind == "connect" and isinstance(arg, int):
                name = PeerName(arg)
                if name not in topo.ourself.connections:
                    ident = RemoteIdentity(name, f"h{name}", 100 + name, 0, None, False, None)
                    if topo.register_remote(ident, True) is not None:
                        topo.add_local_connection(ConnectionInfo(name, "x:1", True, True))
            elif isinstance(arg, int):
                name = PeerName(arg)
                if name in topo.ourself.connections:
                    topo.delete_local_connection(name)
                    topo.dereference(name)
            if topo is full:
                topo._reached = None  # the whole graph, every time
            removed.append(sorted(p.name for p in topo.settle()))
        assert removed[0] == removed[1]
        assert incremental.peers.keys() == full.peers.keys()
