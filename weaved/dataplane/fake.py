"""An in-memory Dataplane for tests: executes plans against a State and counts writes."""

from __future__ import annotations

from weaved.dataplane.base import ApplyReport, Observation
from weaved.model.resources import Kind, State
from weaved.plan.changes import Action, Plan


class FakeDataplane:
    def __init__(self, state: State | None = None, *, foreign_forward_drop: bool = False) -> None:
        self.state = state or State()
        self.foreign_forward_drop = foreign_forward_drop
        self.writes = 0
        self.executed: list[str] = []

    def observe(self, kinds: frozenset[Kind] | None = None) -> Observation:
        bridge = self.state.resources.get("link/weave")
        state = self.state if kinds is None else self.state.by_kinds(kinds)
        return Observation(
            state,
            (),
            self.foreign_forward_drop,
            bridge.get("mac") if bridge else None,
        )

    def execute(self, plan: Plan, desired: State) -> ApplyReport:
        resources = dict(self.state.resources)
        report = ApplyReport()
        for change in plan.changes:
            if change.action is Action.DELETE:
                resources.pop(change.key, None)
            else:
                assert change.after is not None
                resources[change.key] = change.after
            self.writes += 1
            report.writes += 1
            report.done.append(change.key)
            self.executed.append(f"{change.action.value} {change.key}")
        self.state = State(resources)
        return report
