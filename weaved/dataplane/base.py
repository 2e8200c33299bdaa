"""The interface between the engine and the kernel, shared by real drivers and the fake."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from weaved.compile.facts import HostRoute
from weaved.model.host import PortRow
from weaved.model.resources import Kind, State
from weaved.plan.changes import Plan


@dataclass(frozen=True)
class Observation:
    """weaved's own objects as the kernel has them, plus host facts compile needs."""

    state: State
    host_routes: tuple[HostRoute, ...] = ()
    foreign_forward_drop: bool = False
    bridge_mac: str | None = None
    # Links that may be bridge ports (named vethwe*): ours only if a part's record names them
    ports: Mapping[str, PortRow] = field(default_factory=dict)
    # Current values of the settings weaved may own (model.host.SYSCTLS)
    sysctls: Mapping[str, str] = field(default_factory=dict)
    # A link named like the bridge without weaved's alias: what it is ("" if none)
    foreign_bridge: str = ""


@dataclass
class ApplyReport:
    writes: int = 0  # kernel write operations (netlink requests, nft transactions, commands)
    done: list[str] = field(default_factory=list)  # keys of executed changes, in order


class Dataplane(Protocol):
    def observe(self, kinds: frozenset[Kind] | None = None) -> Observation:
        """weaved's own objects (only those of `kinds`, if given) and the host facts."""
        ...

    def execute(self, plan: Plan, desired: State) -> ApplyReport:
        """Carry out `plan`; on failure undo what this call did and raise ApplyError."""
        ...
