"""observe → compile → plan → execute → verify, around any Dataplane."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from weaved.compile.antispoof import element_of, unrecorded_ports
from weaved.compile.desired import Compiled, compile_spec
from weaved.compile.facts import ContainerPort, Facts
from weaved.compile.host import observed_view, without_vanished_ports
from weaved.dataplane.base import ApplyReport, Dataplane, Observation
from weaved.dataplane.portcalls import PORT_CALLS
from weaved.errors import ApplyError
from weaved.model.host import WantedPort
from weaved.model.resources import Kind, State
from weaved.plan.changes import Change, Plan, make_plan
from weaved.plan.render import render_plan
from weaved.spec.identity import resolve_peer_name
from weaved.spec.models import DNS_LINK_ADDRESS, Spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeFacts:
    """Facts only a running daemon has (IPAM allocations, attached containers' subnets)."""

    expose_allocations: Mapping[int, str] = field(default_factory=dict)
    container_subnets: tuple[str, ...] = ()
    # Links the parts own that must be ports of the bridge (sleeve's TAP, container veths)
    ports: tuple[WantedPort, ...] = ()
    # veth → the addresses its container was given (anti-spoofing, DNS replies)
    container_ports: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # The daemon's own peer name (derived once at its start, e.g. from IPAM's persisted one):
    # the bridge's MAC follows it when the spec names no peer.
    peer_name: str | None = None
    # dataplane/portcalls.PORT_CALLS.now() before the parts' records were read (a daemon's
    # converge): element changes of ports whose calls ran since are left to the next converge
    calls_since: int | None = None


@dataclass(frozen=True)
class Planned:
    plan: Plan
    compiled: Compiled
    observation: Observation
    peer_name: str
    # Seconds per phase ("observe", "compile", "plan"; apply_spec adds "execute", "verify"):
    # the converge log line shows them, so a slow edit says where its time went.
    phases: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Applied:
    planned: Planned
    report: ApplyReport
    seconds: float


def facts_for(spec: Spec, observation: Observation, runtime: RuntimeFacts) -> Facts:
    recorded = [veth for veth, _ in runtime.container_ports] + [p.name for p in runtime.ports]
    return Facts(
        peer_name=(
            runtime.peer_name
            if runtime.peer_name and not spec.peer.name
            else resolve_peer_name(spec, observation.bridge_mac)
        ),
        expose_allocations=dict(runtime.expose_allocations),
        host_routes=observation.host_routes,
        foreign_forward_drop=observation.foreign_forward_drop,
        container_subnets=tuple(ipaddress.IPv4Network(s) for s in runtime.container_subnets),
        wanted_ports=runtime.ports,
        port_rows=observation.ports,
        foreign_bridge=observation.foreign_bridge,
        container_ports=tuple(
            ContainerPort(veth, tuple(ipaddress.IPv4Address(a) for a in addresses))
            for veth, addresses in runtime.container_ports
        ),
        unrecorded_ports=unrecorded_ports(observation.state, observation.ports, recorded),
    )


def owned(observation: Observation, desired: State) -> State:
    return observed_view(observation.state, desired, observation.ports, observation.sysctls)


class CompileCache:
    """compile_spec, remembered for the last (spec, facts): compile is pure, and the daemon
    plans the same spec object against the same facts at every resync of a healthy host (1 000
    service rules are ~0.15 s of compiling). The spec is compared by identity (the daemon
    replaces it on every edit), the facts by value. One per daemon (its dataplane thread and
    its plan requests share it)."""

    def __init__(self) -> None:
        self._last: tuple[Spec, Facts, Compiled] | None = None
        self._lock = threading.Lock()

    def compiled(self, spec: Spec, facts: Facts) -> Compiled:
        with self._lock:
            last = self._last
        if last is not None and last[0] is spec and last[1] == facts:
            return last[2]
        compiled = compile_spec(spec, facts)
        with self._lock:
            self._last = (spec, facts, compiled)
        return compiled


def plan_spec(
    spec: Spec,
    dataplane: Dataplane,
    runtime: RuntimeFacts | None = None,
    compiles: CompileCache | None = None,
) -> Planned:
    t0 = time.perf_counter()
    observation = dataplane.observe()
    t1 = time.perf_counter()
    facts = facts_for(spec, observation, runtime or RuntimeFacts())
    compiled = compile_spec(spec, facts) if compiles is None else compiles.compiled(spec, facts)
    t2 = time.perf_counter()
    deferred = tuple((d.what, d.reason) for d in compiled.deferred)
    plan = make_plan(compiled.state, owned(observation, compiled.state), deferred)
    phases = (("observe", t1 - t0), ("compile", t2 - t1), ("plan", time.perf_counter() - t2))
    return Planned(plan, compiled, observation, facts.peer_name, phases)


def apply_spec(
    spec: Spec,
    dataplane: Dataplane,
    runtime: RuntimeFacts | None = None,
    compiles: CompileCache | None = None,
) -> Applied:
    """Converge and verify; a plan that is already empty makes no kernel write at all."""
    started = time.monotonic()
    planned = plan_spec(spec, dataplane, runtime, compiles)
    if runtime is not None and runtime.calls_since is not None:
        busy = PORT_CALLS.busy_since(runtime.calls_since)
        planned = replace(planned, plan=without_elements_of(planned.plan, busy))
    report = ApplyReport()
    phases = list(planned.phases)
    if not planned.plan.empty:
        t0 = time.perf_counter()
        report = dataplane.execute(planned.plan, planned.compiled.state)
        t1 = time.perf_counter()
        phases.append(("execute", t1 - t0))
        # Verify: observe again what the plan touched (the rest was in sync a moment ago),
        # less what the parts also write (written_by_parts).
        touched = frozenset(c.kind for c in planned.plan.changes)
        fresh = dataplane.observe(touched)
        wanted = without_vanished_ports(planned.compiled.state.by_kinds(touched), fresh.ports)
        after = owned(fresh, wanted).by_kinds(touched)
        residue = Plan(
            tuple(c for c in make_plan(wanted, after).changes if not written_by_parts(c))
        )
        if not residue.empty:
            raise ApplyError(
                "applied, but the kernel does not match the spec afterwards:\n"
                + render_plan(residue)
            )
        phases.append(("verify", time.perf_counter() - t1))
    seconds = time.monotonic() - started
    # A no-op converge (every periodic resync of a healthy host) is not news.
    log.log(
        logging.INFO if report.writes or not planned.plan.empty else logging.DEBUG,
        "converged changes=%d writes=%d seconds=%.3f %s",
        len(planned.plan.changes),
        report.writes,
        seconds,
        " ".join(f"{name}={spent:.3f}" for name, spent in phases),
    )
    return Applied(planned, report, seconds)


def without_elements_of(plan: Plan, ports: frozenset[str]) -> Plan:
    """`plan` less the anti-spoofing element changes of `ports` (dataplane/portcalls.py: a
    part's call plugged or unplugged them after the facts were taken)."""
    if not ports:
        return plan
    kept = tuple(
        c
        for c in plan.changes
        if c.kind is not Kind.NFT_ELEMENT or element_of(c.key)[0] not in ports
    )
    return plan if len(kept) == len(plan.changes) else replace(plan, changes=kept)


def written_by_parts(change: Change) -> bool:
    """An object the attach, CNI and Docker-plugin parts also write, at any time, for the
    containers they plug and unplug: a port's anti-spoofing element, weaveDNS's route back to
    a container. A converge plans them from the facts taken at its start, and a part may make
    or remove them again (a call for the same container) between the converge's execute and
    its verify: the kernel then differs from the converge's plan and is right. So verify
    leaves them out (the kernel acknowledged each write; the next converge's plan, from the
    parts' records, repairs any drift)."""
    if change.kind is Kind.NFT_ELEMENT:
        return True
    return change.kind is Kind.ROUTE and change.resource.get("src") == DNS_LINK_ADDRESS


def reset(dataplane: Dataplane) -> ApplyReport:
    """Remove every object weaved owns (observe only ever reports our own) and restore the
    settings it changed."""
    observation = dataplane.observe()
    plan = make_plan(State(), observation.state)
    if plan.empty:
        return ApplyReport()
    return dataplane.execute(plan, State())
