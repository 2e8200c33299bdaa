"""Plans as text (one line per object, fields that change) and as JSON."""

from __future__ import annotations

from typing import Any

from weaved.model.resources import Resource
from weaved.plan.changes import Action, Change, Plan

_SKIP = {"hash"}  # derived from other attributes; noise in a human diff


def _fmt_attrs(resource: Resource) -> str:
    text = " ".join(f"{k}={_quote(v)}" for k, v in resource.attrs if k not in _SKIP)
    return f"{text} rule={_quote(resource.body)}" if resource.body else text


def _quote(value: str) -> str:
    if '"' in value:
        return f"'{value}'"
    return f'"{value}"' if " " in value or not value else value


def _line(change: Change) -> str:
    head = f"{change.action.value:>3} {change.key}"
    if change.action in (Action.CREATE, Action.DELETE):
        body = _fmt_attrs(change.resource)
    else:
        before = dict(change.before.attrs) if change.before else {}
        after = dict(change.after.attrs) if change.after else {}
        body = " ".join(
            f"{k}: {_quote(before.get(k, '(none)'))} → {_quote(after.get(k, '(none)'))}"
            for k in change.fields
            if k not in _SKIP
        )
        if change.after is not None and change.after.body and "hash" in change.fields:
            body = f"{body} rule={_quote(change.after.body)}".strip()
    note = f"  # {change.note}" if change.note else ""
    return f"{head}  {body}{note}".rstrip()


def render_plan(plan: Plan) -> str:
    lines = [_line(c) for c in plan.changes]
    for what, reason in plan.deferred:
        lines.append(f"  … {what}: {reason}")
    if plan.empty:
        lines.append("No changes: the host matches the spec.")
    else:
        lines.append(
            f"Plan: {plan.count(Action.CREATE)} to add, {plan.count(Action.UPDATE)} to change, "
            f"{plan.count(Action.REPLACE)} to replace, {plan.count(Action.DELETE)} to delete."
        )
    return "\n".join(lines)


def _resource_json(resource: Resource | None) -> dict[str, str] | None:
    if resource is None:
        return None
    return {**dict(resource.attrs), **({"rule": resource.body} if resource.body else {})}


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "in_sync": plan.empty,
        "changes": [
            {
                "action": c.action.value,
                "key": c.key,
                "kind": c.kind.value,
                "fields": list(c.fields),
                "before": _resource_json(c.before),
                "after": _resource_json(c.after),
                "note": c.note,
            }
            for c in plan.changes
        ],
        "deferred": [{"what": w, "reason": r} for w, r in plan.deferred],
        "summary": {a.name.lower(): plan.count(a) for a in Action},
    }
