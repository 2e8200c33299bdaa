"""A converge whose facts were taken before a part's call was recorded leaves that call's
anti-spoofing elements alone (dataplane/portcalls.py). A CI run showed the loss: a named netns
attached while the converge asked for by the attach before it ran, and its element was gone
when the attach answered (the converge observed the element but not the record)."""

from __future__ import annotations

import ipaddress

from weaved.compile.antispoof import element_key, element_resource
from weaved.dataplane.base import Observation
from weaved.dataplane.fake import FakeDataplane
from weaved.dataplane.portcalls import PORT_CALLS, PortCalls
from weaved.engine.reconcile import RuntimeFacts, apply_spec
from weaved.model.host import CONTAINER_FLAGS, WantedPort
from weaved.model.resources import Kind, State
from weaved.spec.models import Spec

SPEC = Spec.model_validate({"version": 1, "peer": {"name": "3e:80:e7:5a:63:a8"}})
OLD, NEW = ("vethwepl1", "10.32.0.1"), ("vethwepl9", "10.32.0.9")


def facts(since: int | None, *containers: tuple[str, str]) -> RuntimeFacts:
    return RuntimeFacts(
        container_subnets=("10.32.0.0/12",),
        ports=tuple(WantedPort(v, CONTAINER_FLAGS, f"container {v}") for v, _ in containers),
        container_ports=tuple((v, (ip,)) for v, ip in containers),
        calls_since=since,
    )


def key(veth: str, ip: str) -> str:
    return element_key(veth, ipaddress.IPv4Address(ip))


class PlugWhileObserving(FakeDataplane):
    """A part's call for NEW adds its element while the converge observes (after the facts);
    `ends` says whether the call has ended (its record stored) before the converge executes."""

    def __init__(self, ends: bool) -> None:
        super().__init__()
        self.ends = ends
        self.call = PORT_CALLS.call(NEW[0])
        self.plugging = False

    def observe(self, kinds: frozenset[Kind] | None = None) -> Observation:
        if self.plugging:
            self.plugging = False
            self.call.__enter__()
            made = element_resource(NEW[0], ipaddress.IPv4Address(NEW[1]))
            self.state = State({**self.state.resources, made.key: made})
            if self.ends:
                self.call.__exit__(None, None, None)
        return super().observe(kinds)


def converged(ends: bool) -> PlugWhileObserving:
    dp = PlugWhileObserving(ends)
    apply_spec(SPEC, dp, facts(None, OLD))
    dp.plugging = True
    return dp


def test_an_element_plugged_after_the_facts_were_taken_stays() -> None:
    for ends in (True, False):
        dp = converged(ends)
        applied = apply_spec(SPEC, dp, facts(PORT_CALLS.now(), OLD))
        assert key(*NEW) in dp.state.resources, ends
        assert key(*OLD) in dp.state.resources
        assert not any(c.kind is Kind.NFT_ELEMENT for c in applied.planned.plan.changes)
        if not ends:
            dp.call.__exit__(None, None, None)


def test_the_next_converge_plans_from_the_new_record() -> None:
    dp = converged(True)
    apply_spec(SPEC, dp, facts(PORT_CALLS.now(), OLD))
    assert PORT_CALLS.busy_since(PORT_CALLS.now()) == frozenset()
    apply_spec(SPEC, dp, facts(PORT_CALLS.now(), OLD))  # no record names it: drift, removed
    assert key(*NEW) not in dp.state.resources
    assert key(*OLD) in dp.state.resources


def test_without_a_daemons_facts_every_element_is_planned() -> None:
    """`weaved apply` with no daemon: no part's call can run in this process."""
    dp = converged(True)
    apply_spec(SPEC, dp, facts(None, OLD))
    assert key(*NEW) not in dp.state.resources


def test_a_stale_element_of_a_port_with_no_call_is_still_removed() -> None:
    dp = converged(True)
    dp.plugging = False
    stale = element_resource("vethwepl7", ipaddress.IPv4Address("10.32.0.7"))
    dp.state = State({**dp.state.resources, stale.key: stale})
    apply_spec(SPEC, dp, facts(PORT_CALLS.now(), OLD))
    assert stale.key not in dp.state.resources


def test_calls_are_counted_per_port_and_ends_are_forgotten_once_seen() -> None:
    calls = PortCalls()
    start = calls.now()
    with calls.call("a", ""), calls.call("a", "b"):
        assert calls.busy_since(start) == {"a", "b"}
    middle = calls.now()
    assert calls.busy_since(start) == {"a", "b"}  # ended after `start`
    assert calls.busy_since(middle) == frozenset()
    assert calls.busy_since(start) == frozenset()  # forgotten: converges come in order
