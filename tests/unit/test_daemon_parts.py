from __future__ import annotations

import asyncio

from weaved.datapath.overlays import OVERLAYS
from weaved.mesh.gossip_api import PeerName
from weaved.mesh.part import MeshPart
from weaved.plan.changes import Action, make_plan
from weaved.plan.render import render_plan
from weaved.spec.models import Spec


def test_mesh_targets_are_planned_and_converged_like_other_objects() -> None:
    async def scenario() -> None:
        spec = Spec.model_validate({"version": 1, "peers": ["192.0.2.11", "192.0.2.12:7000"]})
        part = MeshPart(spec, PeerName(0x020000000101), overlay_factories=OVERLAYS)
        plan = make_plan(part.desired(spec), part.observed())
        assert [(c.action, c.key) for c in plan.changes] == [
            (Action.CREATE, "mesh/target/192.0.2.11:6783"),
            (Action.CREATE, "mesh/target/192.0.2.12:7000"),
        ]
        assert "+ mesh/target/192.0.2.11:6783" in render_plan(plan)
        assert part.converge(spec) == 2
        assert make_plan(part.desired(spec), part.observed()).empty
        assert part.converge(spec) == 0
        fewer = Spec.model_validate({"version": 1, "peers": ["192.0.2.12:7000"]})
        plan = make_plan(part.desired(fewer), part.observed())
        assert [(c.action, c.key) for c in plan.changes] == [
            (Action.DELETE, "mesh/target/192.0.2.11:6783")
        ]
        assert part.converge(fewer) == 1
        assert list(part.router.status().targets) == ["192.0.2.12:7000"]

    asyncio.run(scenario())


def test_mesh_targets_reach_the_router_as_typed_so_inbound_connections_satisfy_them() -> None:
    """Weave's rule: a target typed without a port is satisfied by an inbound connection from
    its IP. The spec stores `192.0.2.11:6783`, which used to defeat the rule: every host that
    dialled a peer already connected inbound showed a failed duplicate-connection target."""

    async def scenario() -> None:
        spec = Spec.model_validate({"version": 1, "peers": ["192.0.2.11", "192.0.2.12:7000"]})
        part = MeshPart(spec, PeerName(0x020000000101), overlay_factories=OVERLAYS)
        part.converge(spec)
        assert part.router.maker.direct == {
            "192.0.2.11": ("192.0.2.11", None),  # no port: any inbound connection satisfies it
            "192.0.2.12:7000": ("192.0.2.12", 7000),
        }
        assert make_plan(part.desired(spec), part.observed()).empty

    asyncio.run(scenario())
