"""desired State and observed State → Plan: ordered changes, each with a before and an after."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from weaved.model.resources import UPDATABLE, Kind, Resource, State


class Action(StrEnum):
    CREATE = "+"
    UPDATE = "~"
    REPLACE = "-/+"
    DELETE = "-"


# Creation order; deletion runs in reverse.
KIND_ORDER: tuple[Kind, ...] = (
    Kind.LINK,
    Kind.PORT,
    Kind.ADDR,
    Kind.ROUTE,
    Kind.FDB,
    Kind.SYSCTL,
    Kind.NFT_TABLE,
    Kind.NFT_SET,
    Kind.NFT_ELEMENT,
    Kind.NFT_CHAIN,
    Kind.NFT_RULE,
    Kind.IPT_RULE,
    Kind.MESH_TARGET,
    Kind.MESH,
)


@dataclass(frozen=True)
class Change:
    action: Action
    key: str
    kind: Kind
    before: Resource | None
    after: Resource | None
    fields: tuple[str, ...] = ()  # attributes that differ (update/replace)
    note: str = ""

    @property
    def resource(self) -> Resource:
        chosen = self.after or self.before
        assert chosen is not None
        return chosen


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()
    deferred: tuple[tuple[str, str], ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.changes

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)


def merge_plans(*plans: Plan) -> Plan:
    """One plan of several (kernel objects and the daemon's own), in one order."""
    changes = [c for p in plans for c in p.changes]
    deferred = tuple(d for p in plans for d in p.deferred)
    return Plan(tuple(sorted(changes, key=_order)), deferred)


def _differing(a: Resource, b: Resource) -> tuple[str, ...]:
    da, db = dict(a.attrs), dict(b.attrs)
    return tuple(sorted(k for k in da.keys() | db.keys() if da.get(k) != db.get(k)))


def _order(change: Change) -> tuple[int, int, str]:
    rank = KIND_ORDER.index(change.kind)
    if change.action is Action.DELETE:
        return (0, -rank, change.key)  # deletions first, children before parents
    return (1, rank, change.key)


def make_plan(desired: State, observed: State, deferred: Sequence[tuple[str, str]] = ()) -> Plan:
    """Every observed object is weaved's own (observe filters by ownership), so anything
    observed but not desired is deleted."""
    changes: list[Change] = []
    for key, want in desired.resources.items():
        have = observed.resources.get(key)
        if have is None:
            changes.append(Change(Action.CREATE, key, want.kind, None, want, note=want.note))
            continue
        if have.attrs == want.attrs:
            continue  # the common case, without building the attributes' dicts
        fields = _differing(have, want)
        if not fields:
            continue
        in_place = UPDATABLE.get(want.kind, frozenset())
        action = Action.UPDATE if set(fields) <= in_place else Action.REPLACE
        changes.append(Change(action, key, want.kind, have, want, fields, want.note))
    for key, have in observed.resources.items():
        if key not in desired:
            changes.append(Change(Action.DELETE, key, have.kind, have, None, note=have.note))
    return Plan(tuple(sorted(changes, key=_order)), tuple(deferred))
