"""IPAM state on disk: atomic round trips, refusing corrupt files, discarding foreign state."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from weaved.ipam.address import CIDR
from weaved.ipam.allocator import Allocator, AllocatorConfig, ConsensusStart, SeedStart
from weaved.ipam.errors import PersistError
from weaved.ipam.owned import Owned
from weaved.ipam.persist import (
    FileStore,
    OwnedTexts,
    PersistedState,
    document_bytes,
    load_persisted_peer_name,
    to_document,
)
from weaved.ipam.ring import Entry, Ring
from weaved.mesh.gossip_api import PeerName

H1 = PeerName(0x3E80E75A63A7)
H2 = PeerName(0x2A9FF1998A21)
UNIVERSE = CIDR.parse_subnet("10.32.0.0/12")


class NoPeers:
    def our_name(self) -> PeerName:
        return H1

    def known_peers(self) -> dict[PeerName, str]:
        return {}

    def reachable_peers(self) -> set[PeerName]:
        return {H1}


def state() -> PersistedState:
    r = UNIVERSE.range()
    ring = Ring(
        r.start,
        r.end,
        H1,
        [Entry(r.start, H2, 3, 10), Entry(r.start + (1 << 19), H1, 7, 5)],
        (H2, H1),
    )
    owned = {
        "c1": Owned((CIDR.parse("10.40.0.0/12"), CIDR.parse("10.40.0.9/24"))),
        "weave:expose": Owned((CIDR.parse("10.40.0.1/12"),), is_container=False),
    }
    return PersistedState(H1, ring, owned)


def allocator(store: FileStore, universe: CIDR = UNIVERSE, name: PeerName = H1) -> Allocator:
    config = AllocatorConfig(name, 7, "host1", universe, SeedStart((H1,)))
    return Allocator(config, peers=NoPeers(), store=store)


def test_round_trip(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state")
    assert store.load() is None
    store.save(state())
    loaded = store.load()
    assert loaded == state()
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["ipam.json"]  # no temp left
    assert load_persisted_peer_name(tmp_path / "state") == H1
    assert load_persisted_peer_name(tmp_path / "nothing") is None


def test_owner_texts_kept_between_saves_give_the_same_bytes(tmp_path: Path) -> None:
    """The file's bytes come from each owner's text kept between saves: through additions,
    changes and removals they are json's compact, sorted encoding of the whole document."""
    texts = OwnedTexts()
    base = state()
    owned = dict(base.owned)
    for step in range(6):
        if step == 1:
            owned['c0 "é"'] = Owned((CIDR.parse("10.40.0.3/12"),))  # escaped, sorts first
        if step == 2:
            owned["c1"] = Owned((*owned["c1"].cidrs, CIDR.parse("10.40.0.7/12")))
        if step == 3:
            del owned["weave:expose"]
        if step == 4:
            owned["weave:expose"] = Owned(owned["c1"].cidrs, is_container=False)
        now = PersistedState(base.peer_name, base.ring, dict(owned))
        expected = json.dumps(to_document(now), sort_keys=True, separators=(",", ":"))
        assert document_bytes(now, texts) == expected.encode() + b"\n"
        assert document_bytes(now) == expected.encode() + b"\n"
    store = FileStore(tmp_path)
    store.save(now)
    store.save(now)  # its texts kept: the same file
    assert store.load() == now


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b'{"format": "other"}',
        b'{"format": "weaved-ipam/1", "peer_name": "3e:80:e7:5a:63:a7"}',
    ],
)
def test_corrupt_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "ipam.json").write_bytes(content)
    with pytest.raises(PersistError, match=r"ipam.json is corrupt") as info:
        FileStore(tmp_path).load()
    assert "hint" in str(info.value)


def test_invalid_ring_is_corruption(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.save(state())
    doc = json.loads((tmp_path / "ipam.json").read_text())
    doc["ring"]["entries"].reverse()
    (tmp_path / "ipam.json").write_text(json.dumps(doc))
    with pytest.raises(PersistError, match="not sorted"):
        store.load()


def test_corrupt_file_stops_the_allocator_and_is_kept(tmp_path: Path) -> None:
    (tmp_path / "ipam.json").write_text("{truncated")
    with pytest.raises(PersistError):
        allocator(FileStore(tmp_path)).start(0.0)
    assert (tmp_path / "ipam.json").read_text() == "{truncated"


def test_allocator_persists_and_restores(tmp_path: Path) -> None:
    a = allocator(FileStore(tmp_path))
    a.start(0.0)
    got = a.allocate("c1", UNIVERSE, 1.0)
    b = allocator(FileStore(tmp_path))
    b.start(2.0)
    assert b.lookup("c1") == [got.cidr]  # type: ignore[union-attr]
    assert b.ring.entries == a.ring.entries
    assert b.space.is_allocated(got.cidr.addr)  # type: ignore[union-attr]


def test_changed_range_discards_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = allocator(FileStore(tmp_path))
    a.start(0.0)
    a.allocate("c1", UNIVERSE, 1.0)
    other = CIDR.parse_subnet("10.0.0.0/16")
    b = allocator(FileStore(tmp_path), universe=other)
    with caplog.at_level(logging.WARNING):
        b.start(2.0)
    assert "deleting persisted data for IPAM range 10.32.0.0/12" in caplog.text
    assert b.lookup("c1") == []
    loaded = FileStore(tmp_path).load()
    assert loaded is not None and loaded.ring.range == other.range()


def test_other_peer_name_discards_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    FileStore(tmp_path).save(PersistedState(H2, state().ring, state().owned))
    a = allocator(FileStore(tmp_path))
    with caplog.at_level(logging.WARNING):
        a.start(0.0)
    assert "deleting persisted data for peer name 2a:9f:f1:99:8a:21" in caplog.text
    assert a.owned == {}


def test_persisted_ring_wins_over_seed(tmp_path: Path) -> None:
    r = UNIVERSE.range()
    ring = Ring(r.start, r.end, H1, [Entry(r.start, H2, 0, 1 << 20)], (H2,))
    FileStore(tmp_path).save(PersistedState(H1, ring))
    a = allocator(FileStore(tmp_path))
    a.start(0.0)
    assert a.ring.seeds == (H2,)


def test_consensus_start_persists_nothing_until_needed(tmp_path: Path) -> None:
    config = AllocatorConfig(H1, 7, "host1", UNIVERSE, ConsensusStart(2))
    a = Allocator(config, peers=NoPeers(), store=FileStore(tmp_path))
    a.start(0.0)
    loaded = FileStore(tmp_path).load()
    assert loaded is not None and loaded.ring.empty()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PersistError, match="cannot write IPAM state"):
            FileStore(tmp_path).save(state())
    finally:
        tmp_path.chmod(0o700)
