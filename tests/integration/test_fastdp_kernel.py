"""The fast datapath's kernel objects through netlink, in a fresh namespace: created from a
plan, observed back equal (the plan is then empty), drift repaired, removed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyroute2 import NetNS

from tests.helpers import Netns
from weaved.datapath.fastdp.fdb import Device, PeerPath, desired_state, observed_state
from weaved.datapath.fastdp.netlink import FastdpKernel, remove_fastdp
from weaved.mesh.gossip_api import PeerName
from weaved.model.resources import State
from weaved.plan.changes import Action, make_plan

pytestmark = pytest.mark.timeout(60)

DEV = Device(port=6784, mtu=1450)
H2 = PeerName(0x020000000102)
H3 = PeerName(0x020000000103)
C2 = "02:42:0a:28:00:02"


@pytest.fixture
def kernel() -> Iterator[tuple[Netns, FastdpKernel]]:
    with Netns("wfdk") as ns:
        ns.ip("link", "add", "weave", "type", "bridge")
        ns.ip("link", "set", "weave", "address", "02:00:00:00:01:01", "up")
        k = FastdpKernel(ipr=NetNS(ns.name))
        try:
            yield ns, k
        finally:
            k.close()


def observe(k: FastdpKernel) -> State:
    return observed_state(Device(), k.observe_link(Device()), k.device_rows(Device()))


def converge(k: FastdpKernel, want: State) -> int:
    plan = make_plan(want, observe(k))
    return k.execute(plan, DEV)


PATHS = [
    PeerPath(H2, "host2", "192.0.2.12", 6784, True, frozenset({C2}), 1.0),
    PeerPath(H3, "host3", "192.0.2.13", 6790, False, frozenset(), 1.0),
]


def test_create_observe_and_nothing_left_to_do(kernel: tuple[Netns, FastdpKernel]) -> None:
    _, k = kernel
    want = desired_state(DEV, PATHS)
    assert converge(k, want) > 0
    assert make_plan(want, observe(k)).empty
    assert converge(k, want) == 0
    link = k.observe_link(Device())
    assert link is not None and (link.kind, link.vni, link.dstport, link.mtu) == (
        "vxlan",
        6784,
        6784,
        1450,
    )
    assert (link.learning, link.df, link.master, link.port_learning, link.isolated) == (
        False,
        "set",
        "weave",
        False,
        True,
    )
    rows = {(r.mac, r.master, r.state, r.dst, r.dst_port) for r in k.device_rows(Device())}
    assert (C2, False, "permanent", "192.0.2.12", None) in rows  # the default port is implied
    assert (C2, True, "static", None, None) in rows
    assert ("02:00:00:00:01:03", False, "permanent", "192.0.2.13", 6790) in rows
    # the bridge's own MAC counts as local; no learning on the tunnel port
    assert any(r.mac == "02:00:00:00:01:01" and r.port == "weave" for r in k.bridge_rows("weave"))


def test_falling_back_and_drift(kernel: tuple[Netns, FastdpKernel]) -> None:
    ns, k = kernel
    converge(k, desired_state(DEV, PATHS))
    fallen = [PATHS[0].__class__(**{**PATHS[0].__dict__, "served": False}), PATHS[1]]
    want = desired_state(DEV, fallen)
    converge(k, want)
    assert make_plan(want, observe(k)).empty
    assert not any(r.mac == C2 for r in k.device_rows(Device()))
    # drift: an MTU change is updated in place, a detached device is replaced
    ns.ip("link", "set", "vxlan-6784", "mtu", "1300")
    plan = make_plan(want, observe(k))
    assert [(c.action, c.fields) for c in plan.changes] == [(Action.UPDATE, ("mtu",))]
    k.execute(plan, DEV)
    ns.ip("link", "set", "vxlan-6784", "nomaster")
    plan = make_plan(want, observe(k))
    assert plan.changes[0].action is Action.REPLACE
    for _ in range(2):  # the replaced device lost its entries: the next round puts them back
        converge(k, want)
    assert make_plan(want, observe(k)).empty
    # off: everything goes
    converge(k, State())
    assert k.observe_link(Device()) is None


def test_reset_removes_the_device(kernel: tuple[Netns, FastdpKernel]) -> None:
    ns, k = kernel
    converge(k, desired_state(DEV, PATHS))
    ns.ip("link", "del", "weave")  # what reset does to the bridge; its ports stay
    assert k.observe_link(Device()) is not None
    assert remove_fastdp(ipr=NetNS(ns.name))
    assert k.observe_link(Device()) is None
    assert not remove_fastdp(ipr=NetNS(ns.name))
