"""The real Dataplane: netlink for links/addresses/routes, one nft transaction, iptables compat."""

from __future__ import annotations

import logging
from collections.abc import Callable

from weaved.compile.facts import HostRoute
from weaved.dataplane.base import ApplyReport, Observation
from weaved.dataplane.iptables import Iptables
from weaved.dataplane.netlink import Netlink
from weaved.dataplane.nft import Nft
from weaved.errors import ApplyError, WeavedError
from weaved.model.resources import BRIDGE, Kind, State
from weaved.plan.changes import Action, Change, Plan

log = logging.getLogger(__name__)

NETLINK_KINDS = {Kind.LINK, Kind.ADDR, Kind.ROUTE}
NFT_KINDS = {Kind.NFT_TABLE, Kind.NFT_CHAIN, Kind.NFT_RULE}


def inverse(change: Change) -> Change:
    """The change that undoes `change` (for rolling back a failed apply)."""
    flipped = {Action.CREATE: Action.DELETE, Action.DELETE: Action.CREATE}
    action = flipped.get(change.action, change.action)
    return Change(action, change.key, change.kind, change.after, change.before, change.fields)


class KernelDataplane:
    def __init__(self) -> None:
        self.netlink = Netlink()
        self.nft = Nft()
        self.iptables = Iptables()

    def close(self) -> None:
        self.netlink.close()

    @property
    def writes(self) -> int:
        return self.netlink.writes + self.nft.writes + self.iptables.writes

    def observe(self, kinds: frozenset[Kind] | None = None) -> Observation:
        """Everything weaved owns, or only objects of `kinds` (then host facts stay empty)."""

        def wanted(*group: Kind) -> bool:
            return kinds is None or any(k in kinds for k in group)

        resources = []
        bridge = self.netlink.observe_bridge() if wanted(Kind.LINK) else None
        if bridge is not None:
            resources.append(bridge)
        if wanted(Kind.ADDR):
            resources += self.netlink.observe_addresses()
        host_routes: list[HostRoute] = []
        if wanted(Kind.ROUTE):
            routes, host_routes = self.netlink.observe_routes()
            resources += routes
        if wanted(*NFT_KINDS):
            resources += self.nft.observe()
        forward_drop = False
        if wanted(Kind.IPT_RULE):
            ipt_rules, forward_drop = self.iptables.observe()
            resources += ipt_rules
        return Observation(
            State.of(resources),
            tuple(host_routes),
            forward_drop,
            bridge.get("mac") if bridge is not None else None,
        )

    def _netlink_change(self, change: Change) -> None:
        nl = self.netlink
        before, after = change.before, change.after
        if change.kind is Kind.LINK:
            if change.action is Action.CREATE and after:
                nl.create_bridge(after)
            elif change.action is Action.UPDATE and after:
                nl.update_bridge(after, before)
            elif change.action is Action.REPLACE and after:
                nl.delete_link(BRIDGE)
                nl.create_bridge(after)
            elif change.action is Action.DELETE:
                nl.delete_link(BRIDGE)
        elif change.kind is Kind.ADDR:
            if change.action in (Action.DELETE, Action.REPLACE):
                nl.delete_address(change.key)
            if change.action in (Action.CREATE, Action.REPLACE):
                nl.add_address(change.key)
        elif change.kind is Kind.ROUTE:
            if change.action in (Action.DELETE, Action.REPLACE) and before:
                nl.delete_route(before)
            if change.action in (Action.CREATE, Action.REPLACE) and after:
                nl.add_route(after)

    def _ipt_change(self, change: Change) -> None:
        if change.action in (Action.DELETE, Action.REPLACE) and change.before:
            self.iptables.delete(change.before)
        if change.action in (Action.CREATE, Action.REPLACE) and change.after:
            self.iptables.insert(change.after)

    def execute(self, plan: Plan, desired: State) -> ApplyReport:
        start = self.writes
        report = ApplyReport()
        done: list[Change] = []
        try:
            for change in plan.changes:
                if change.kind in NETLINK_KINDS:
                    self._netlink_change(change)
                    done.append(change)
                    report.done.append(change.key)
            if any(c.kind in NFT_KINDS for c in plan.changes):
                self.nft.commit(desired)
                report.done += [c.key for c in plan.changes if c.kind in NFT_KINDS]
            for change in plan.changes:
                if change.kind is Kind.IPT_RULE:
                    self._ipt_change(change)
                    done.append(change)
                    report.done.append(change.key)
        except WeavedError as exc:
            self._rollback(done)
            raise ApplyError(f"apply failed and was rolled back: {exc}") from exc
        report.writes = self.writes - start
        return report

    def _rollback(self, done: list[Change]) -> None:
        steps: dict[Kind, Callable[[Change], None]] = {
            Kind.IPT_RULE: self._ipt_change,
            Kind.LINK: self._netlink_change,
            Kind.ADDR: self._netlink_change,
            Kind.ROUTE: self._netlink_change,
        }
        for change in reversed(done):
            try:
                steps[change.kind](inverse(change))
            except WeavedError as exc:
                log.error("rollback step failed key=%s error=%s", change.key, exc)
