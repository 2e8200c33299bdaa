"""Retained forwarding entries (fastdp/retain.py): grouped by peer IP, never overriding what
the mesh asks for now, gone when the path is decided or the time is up."""

from __future__ import annotations

from weaved.datapath.fastdp.fdb import Device, PeerPath, desired_state
from weaved.datapath.fastdp.retain import RETAIN_FOR, Retention, adopt, merge, settle
from weaved.mesh.gossip_api import PeerName

H2, H3 = PeerName(0x020000000102), PeerName(0x020000000103)
C = "02:42:0a:28:00:02"


def test_groups_follow_the_peer_ip_and_a_moved_mac_is_not_kept() -> None:
    old = desired_state(Device(), [PeerPath(H2, "host2", "192.0.2.12", 6784, True, frozenset({C}))])
    (kept,) = adopt(old, 0.0)
    assert kept.ip == "192.0.2.12" and f"fdb/weave/{C}" in kept.resources
    assert kept.until == RETAIN_FOR
    # now host3 has that MAC: the current entries win, host2's MAC entries are not kept
    now = desired_state(Device(), [PeerPath(H3, "host3", "192.0.2.13", 6784, True, frozenset({C}))])
    merged = merge(now, [kept])
    assert f"fdb/vxlan-6784/{C}/192.0.2.12" not in merged.resources
    assert f"fdb/vxlan-6784/{C}/192.0.2.13" in merged.resources
    assert "fdb/vxlan-6784/00:00:00:00:00:00/192.0.2.12" in merged.resources
    assert set(now.resources) <= set(merged.resources)


def test_settle_drops_decided_and_expired() -> None:
    old = desired_state(Device(), [PeerPath(H2, "host2", "192.0.2.12", 6784, True)])
    kept = adopt(old, 0.0)
    assert settle(kept, set(), 1.0) == kept
    assert settle(kept, {"192.0.2.12"}, 1.0) == []
    assert settle(kept, set(), RETAIN_FOR) == []


def test_retention_keeps_a_lost_served_peer_and_nothing_without_a_device() -> None:
    served = desired_state(Device(), [PeerPath(H2, "host2", "192.0.2.12", 6784, True)])
    retention = Retention()
    retention.converged(served, {"192.0.2.12"})
    assert retention.lose(set(), set(), 5.0) == {"192.0.2.12"}
    bare = desired_state(Device(), [])
    assert set(retention.desired(bare, set(), 6.0).resources) == set(served.resources)
    assert retention.expired(5.0 + RETAIN_FOR)
    off = desired_state(None, [])
    assert retention.desired(off, set(), 6.0).resources == {} and retention.kept == []
