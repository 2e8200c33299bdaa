"""Fast datapath: the VXLAN device and forwarding entries wanted from the mesh state."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from weaved.datapath.fastdp.fdb import (
    Device,
    FdbRow,
    LinkRow,
    PeerPath,
    desired_state,
    local_macs,
    observed_state,
)
from weaved.mesh.gossip_api import PeerName
from weaved.model.resources import Kind, State
from weaved.plan.changes import Action, make_plan

DEV = Device(port=6784, mtu=1450)
H2 = PeerName(0x020000000102)
H3 = PeerName(0x020000000103)
C2 = "02:42:0a:28:00:02"  # a container on host2
C3 = "02:42:0a:28:00:03"


def path(peer: PeerName, ip: str, served: bool, macs: set[str], at: float = 1.0) -> PeerPath:
    return PeerPath(peer, f"host{peer & 0xF}", ip, 6784, served, frozenset(macs), at)


def test_nothing_when_off() -> None:
    assert desired_state(None, [path(H2, "192.0.2.12", True, {C2})]) == State()


def test_served_peer_gets_flooding_and_its_macs() -> None:
    state = desired_state(
        DEV,
        [
            path(H2, "192.0.2.12", True, {C2, "ff:ff:ff:ff:ff:ff"}),
            path(H3, "192.0.2.13", False, {C3}),
        ],
    )
    assert sorted(state.resources) == [
        "fdb/vxlan-6784/00:00:00:00:00:00/192.0.2.12",
        "fdb/vxlan-6784/02:00:00:00:01:02/192.0.2.12",  # heartbeats, and host2's own bridge
        "fdb/vxlan-6784/02:00:00:00:01:03/192.0.2.13",  # heartbeats only: host3 is on sleeve
        f"fdb/vxlan-6784/{C2}/192.0.2.12",
        "fdb/weave/02:00:00:00:01:02",
        f"fdb/weave/{C2}",
        "link/vxlan-6784",
    ]
    link = state.resources["link/vxlan-6784"]
    assert link.kind is Kind.LINK
    assert dict(link.attrs) == {
        "type": "vxlan",
        "vni": "6784",
        "dstport": "6784",
        "learning": "off",
        "df": "set",
        "master": "weave",
        "state": "up",
        "mtu": "1450",
        "port_learning": "off",
        "isolated": "on",
    }
    entry = state.resources[f"fdb/vxlan-6784/{C2}/192.0.2.12"]
    assert dict(entry.attrs) == {"table": "vxlan", "dst": "192.0.2.12", "port": "6784"}
    assert entry.note == "MAC at host2"
    bridge = state.resources[f"fdb/weave/{C2}"]
    assert dict(bridge.attrs) == {
        "table": "bridge",
        "port": "vxlan-6784",
        "state": "static",
        "sticky": "on",  # never moved by the bridge's learning elsewhere
    }
    assert state.resources["fdb/vxlan-6784/02:00:00:00:01:03/192.0.2.13"].note == (
        "heartbeats to host3"
    )


def test_a_moved_mac_belongs_to_the_latest_announcement_and_local_wins() -> None:
    paths = [
        path(H2, "192.0.2.12", True, {C2}, at=5.0),
        path(H3, "192.0.2.13", True, {C2, C3}, at=3.0),  # stale claim on C2
    ]
    state = desired_state(DEV, paths)
    assert f"fdb/vxlan-6784/{C2}/192.0.2.12" in state
    assert f"fdb/vxlan-6784/{C2}/192.0.2.13" not in state
    local = desired_state(DEV, paths, local=frozenset({C3}))
    assert f"fdb/vxlan-6784/{C3}/192.0.2.13" not in local and f"fdb/weave/{C3}" not in local


def test_no_peer_may_claim_another_peers_name() -> None:
    state = desired_state(
        DEV,
        [
            path(H2, "192.0.2.12", True, {"02:00:00:00:01:03"}, at=9.0),
            path(H3, "192.0.2.13", True, set()),
        ],
    )
    assert "fdb/vxlan-6784/02:00:00:00:01:03/192.0.2.12" not in state
    assert "fdb/vxlan-6784/02:00:00:00:01:03/192.0.2.13" in state


def test_a_peer_falling_back_loses_everything_but_heartbeats() -> None:
    healthy = desired_state(DEV, [path(H2, "192.0.2.12", True, {C2})])
    failed = desired_state(DEV, [path(H2, "192.0.2.12", False, {C2})])
    plan = make_plan(failed, healthy)
    assert {(c.action, c.key) for c in plan.changes} == {
        (Action.DELETE, "fdb/vxlan-6784/00:00:00:00:00:00/192.0.2.12"),
        (Action.DELETE, f"fdb/vxlan-6784/{C2}/192.0.2.12"),
        (Action.DELETE, f"fdb/weave/{C2}"),
        (Action.DELETE, "fdb/weave/02:00:00:00:01:02"),
    }
    again = make_plan(healthy, failed)
    assert again.count(Action.CREATE) == 4
    # entries come after their device; deletions run first
    fresh = make_plan(healthy, State())
    assert fresh.changes[0].key == "link/vxlan-6784"


def _kernel_view(state: State) -> tuple[LinkRow | None, list[FdbRow]]:
    """What netlink would report after applying `state`."""
    link = state.resources.get("link/vxlan-6784")
    if link is None:
        return None, []
    row = LinkRow(
        kind="vxlan",
        vni=int(link.get("vni")),
        dstport=int(link.get("dstport")),
        learning=False,
        df="set",
        master="weave",
        up=True,
        mtu=int(link.get("mtu")),
        port_learning=False,
        isolated=True,
    )
    rows = [
        FdbRow("aa:aa:aa:aa:aa:aa", "vxlan-6784", True, "permanent"),  # the port's own MAC
        FdbRow("02:42:99:99:99:99", "vethwepl1", True, "dynamic"),  # someone else's entry
    ]
    for key, res in state.resources.items():
        parts = key.split("/")
        if parts[0] != "fdb":
            continue
        if res.get("table") == "vxlan":
            port = int(res.get("port"))
            rows.append(FdbRow(parts[2], "vxlan-6784", False, "permanent", res.get("dst"), port))
        else:
            rows.append(FdbRow(parts[2], "vxlan-6784", True, "static", sticky=True))
    return row, rows


macs = st.sets(
    st.sampled_from([C2, C3, "02:42:0a:28:00:04", "02:42:0a:28:00:05", "01:00:5e:00:00:01"]),
    max_size=4,
)


@given(
    st.lists(
        st.tuples(st.sampled_from([H2, H3, PeerName(0x020000000104)]), st.booleans(), macs),
        max_size=3,
        unique_by=lambda t: t[0],
    ),
    st.sampled_from([1376, 1450, 8950]),
)
def test_planning_the_applied_state_again_is_empty(
    peers: list[tuple[PeerName, bool, set[str]]], mtu: int
) -> None:
    dev = Device(port=6784, mtu=mtu)
    paths = [
        path(p, f"192.0.2.{p & 0xFF}", served, m, at=i) for i, (p, served, m) in enumerate(peers)
    ]
    want = desired_state(dev, paths)
    link, rows = _kernel_view(want)
    assert make_plan(want, observed_state(dev, link, rows)).empty


def test_a_bridge_entry_that_is_not_sticky_is_made_sticky() -> None:
    """One an older weaved left (or anyone): the bridge would move it to any port its MAC
    shows up on, so the plan makes it sticky (fdb.py)."""
    want = desired_state(DEV, [path(H2, "192.0.2.12", True, {C2})])
    link, rows = _kernel_view(want)
    rows = [FdbRow(r.mac, r.port, r.master, r.state, sticky=False) if r.master else r for r in rows]
    plan = make_plan(want, observed_state(DEV, link, rows))
    assert {(c.action, c.key) for c in plan.changes} == {
        (Action.UPDATE, f"fdb/weave/{C2}"),
        (Action.UPDATE, "fdb/weave/02:00:00:00:01:02"),
    }


def test_observed_link_drift_is_seen() -> None:
    want = desired_state(DEV, [])
    link, rows = _kernel_view(want)
    assert link is not None
    detached = LinkRow(**{**link.__dict__, "master": "", "port_learning": None, "isolated": None})
    plan = make_plan(want, observed_state(DEV, detached, rows))
    assert [(c.action, c.key) for c in plan.changes] == [(Action.REPLACE, "link/vxlan-6784")]
    smaller = LinkRow(**{**link.__dict__, "mtu": 1400})
    plan = make_plan(want, observed_state(DEV, smaller, rows))
    assert [(c.action, c.fields) for c in plan.changes] == [(Action.UPDATE, ("mtu",))]


def test_local_macs_are_what_the_bridge_learnt_on_local_ports() -> None:
    rows = [
        FdbRow("02:00:00:00:01:01", "weave", True, "permanent"),  # the bridge itself
        FdbRow("33:33:00:00:00:01", "weave", False, "permanent"),  # its multicast (self)
        FdbRow("02:42:0a:28:00:01", "vethwepl123", True, "dynamic"),  # a container
        FdbRow("5e:11:22:33:44:55", "vethwepl123", True, "permanent"),  # the veth's own MAC
        FdbRow(C2, "vethwe-tap", True, "dynamic"),  # learnt behind sleeve: remote
        FdbRow(C3, "vxlan-6784", True, "static"),  # put there for fastdp: remote
        FdbRow("02:42:0A:28:00:09", "eth1", True, "dynamic"),
    ]
    assert local_macs(rows, "weave", ("vxlan-6784", "vethwe-tap")) == {
        "02:00:00:00:01:01",
        "02:42:0a:28:00:01",
        "02:42:0a:28:00:09",
    }
