"""A converge's verify while attaches and detaches run: the parts write their containers'
anti-spoofing elements (and weaveDNS's routes back) at any time, so a verify that compared
them with the facts taken at the converge's start failed when a call plugged or unplugged a
container between the converge's execute and its verify (the daemon logged "applied, but
the kernel does not match"; `weaved apply` returned it) though the kernel was right."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import replace

import pytest

from weaved.compile.antispoof import element_key, element_resource
from weaved.dataplane.base import ApplyReport
from weaved.dataplane.fake import FakeDataplane
from weaved.engine.reconcile import RuntimeFacts, apply_spec
from weaved.errors import ApplyError
from weaved.model.host import CONTAINER_FLAGS, WantedPort
from weaved.model.resources import Kind, State
from weaved.plan.changes import Plan
from weaved.spec.models import Spec

SPEC = Spec.model_validate({"version": 1, "peer": {"name": "3e:80:e7:5a:63:a7"}})
IP1, IP2, IP3 = "10.32.0.1", "10.32.0.2", "10.32.0.3"


def runtime(*containers: tuple[str, str]) -> RuntimeFacts:
    return RuntimeFacts(
        container_subnets=("10.32.0.0/12",),
        ports=tuple(WantedPort(v, CONTAINER_FLAGS, f"container {v}") for v, _ in containers),
        container_ports=tuple((v, (ip,)) for v, ip in containers),
    )


class Racing(FakeDataplane):
    """Runs `meanwhile` (what an attach or detach does to the kernel) right after execute."""

    meanwhile: Callable[[FakeDataplane], None] = staticmethod(lambda dp: None)

    def execute(self, plan: Plan, desired: State) -> ApplyReport:
        report = super().execute(plan, desired)
        self.meanwhile(self)
        return report


def element(veth: str, ip: str) -> str:
    return element_key(veth, ipaddress.IPv4Address(ip))


def without(dp: FakeDataplane, key: str) -> None:
    dp.state = State({k: r for k, r in dp.state.resources.items() if k != key})


def converged(facts: RuntimeFacts) -> Racing:
    """In sync with `facts`, but for vethwepl1's element (drift the next converge repairs,
    so its plan and its verify deal with elements)."""
    dp = Racing()
    apply_spec(SPEC, dp, facts)
    without(dp, element("vethwepl1", IP1))
    return dp


def test_an_attach_between_execute_and_verify_is_no_verify_failure() -> None:
    def attach(dp: FakeDataplane) -> None:
        made = element_resource("vethwepl3", ipaddress.IPv4Address(IP3))
        dp.state = State({**dp.state.resources, made.key: made})

    dp = converged(facts := runtime(("vethwepl1", IP1)))
    dp.meanwhile = attach
    apply_spec(SPEC, dp, facts)
    assert element("vethwepl1", IP1) in dp.state.resources  # repaired
    assert element("vethwepl3", IP3) in dp.state.resources  # the attach's, left alone


def test_a_detach_between_execute_and_verify_is_no_verify_failure() -> None:
    dp = converged(facts := runtime(("vethwepl1", IP1), ("vethwepl2", IP2)))
    dp.meanwhile = lambda dp: without(dp, element("vethwepl2", IP2))
    apply_spec(SPEC, dp, facts)
    assert element("vethwepl1", IP1) in dp.state.resources


def test_an_element_the_converge_wrote_and_a_detach_removed_is_no_verify_failure() -> None:
    dp = converged(facts := runtime(("vethwepl1", IP1)))
    dp.meanwhile = lambda dp: without(dp, element("vethwepl1", IP1))
    apply_spec(SPEC, dp, facts)


def test_a_lost_rule_still_fails_verify() -> None:
    dp = converged(facts := runtime(("vethwepl1", IP1)))
    rule = next(r.key for r in dp.state.by_kind(Kind.NFT_RULE))
    without(dp, rule)  # drift the converge repairs…
    dp.meanwhile = lambda dp: without(dp, rule)  # …and the kernel loses again
    with pytest.raises(ApplyError, match="does not match"):
        apply_spec(SPEC, dp, facts)


def test_a_route_back_made_between_execute_and_verify_is_no_verify_failure() -> None:
    def attach(dp: FakeDataplane) -> None:
        ours = dp.state.resources["route/10.32.0.1/32"]
        made = replace(ours, key="route/10.32.0.3/32")
        dp.state = State({**dp.state.resources, made.key: made})

    dp = converged(facts := runtime(("vethwepl1", IP1)))
    without(dp, "route/10.32.0.1/32")
    dp.meanwhile = attach
    apply_spec(SPEC, dp, facts)
    assert "route/10.32.0.3/32" in dp.state.resources
