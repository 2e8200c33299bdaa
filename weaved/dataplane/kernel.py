"""The real Dataplane: netlink for links/addresses/routes, one nft transaction, iptables compat."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from weaved.compile.facts import HostRoute
from weaved.dataplane.base import ApplyReport, Observation
from weaved.dataplane.iptables import Iptables
from weaved.dataplane.netlink import Netlink
from weaved.dataplane.nft import Nft
from weaved.dataplane.nftsets import apply_element_changes
from weaved.dataplane.sysctl import Originals, read_sysctl, write_sysctl
from weaved.errors import ApplyError, WeavedError
from weaved.model.host import SYSCTLS, sysctl_resource
from weaved.model.resources import BRIDGE, Kind, State
from weaved.plan.changes import Action, Change, Plan

log = logging.getLogger(__name__)

NETLINK_KINDS = {Kind.LINK, Kind.PORT, Kind.ADDR, Kind.ROUTE}
PORT_PREFIX = "vethwe"  # sleeve's TAP and container veths: candidates, owned only by record
NFT_KINDS = {Kind.NFT_TABLE, Kind.NFT_SET, Kind.NFT_CHAIN, Kind.NFT_RULE}


def inverse(change: Change) -> Change:
    """The change that undoes `change` (for rolling back a failed apply)."""
    flipped = {Action.CREATE: Action.DELETE, Action.DELETE: Action.CREATE}
    action = flipped.get(change.action, change.action)
    return Change(action, change.key, change.kind, change.after, change.before, change.fields)


class KernelDataplane:
    def __init__(self, state_dir: Path | None = None) -> None:
        """`state_dir`: where the original values of changed sysctls are recorded."""
        self.netlink = Netlink()
        self.nft = Nft()
        self.iptables = Iptables()
        self.originals = Originals(state_dir)
        self.sysctl_writes = 0
        self.element_writes = 0

    def close(self) -> None:
        self.netlink.close()

    @property
    def writes(self) -> int:
        return (
            self.netlink.writes
            + self.nft.writes
            + self.iptables.writes
            + self.sysctl_writes
            + self.element_writes
        )

    def observe(self, kinds: frozenset[Kind] | None = None) -> Observation:
        """Everything weaved owns, or only objects of `kinds` (then host facts stay empty)."""

        def wanted(*group: Kind) -> bool:
            return kinds is None or any(k in kinds for k in group)

        resources = []
        # One link dump serves the bridge, its ports and the routes' devices.
        links = self.netlink.links() if wanted(*NETLINK_KINDS) else {}
        bridge, foreign_bridge = (
            self.netlink.observe_bridge(links) if wanted(Kind.LINK) else (None, "")
        )
        if bridge is not None:
            resources.append(bridge)
        ports = self.netlink.observe_ports(links, PORT_PREFIX) if wanted(Kind.PORT) else {}
        if wanted(Kind.ADDR):
            resources += self.netlink.observe_addresses(links)
        host_routes: list[HostRoute] = []
        if wanted(Kind.ROUTE):
            routes, host_routes = self.netlink.observe_routes(links)
            resources += routes
        sysctls: dict[str, str] = {}
        if wanted(Kind.SYSCTL):
            sysctls = {k: v for k in SYSCTLS if (v := read_sysctl(k)) is not None}
            # Ours: the settings weaved changed (recorded); the rest are only facts.
            resources += [
                sysctl_resource(k, sysctls[k]) for k in self.originals.load() if k in sysctls
            ]
        if wanted(*NFT_KINDS, Kind.NFT_ELEMENT):
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
            ports,
            sysctls,
            foreign_bridge,
        )

    def _sysctl_change(self, change: Change) -> None:
        name = change.key.split("/", 1)[1]
        if change.action is Action.DELETE:
            original = self.originals.load().get(name)
            if original is not None and read_sysctl(name) not in (None, original):
                self._write_sysctl(name, original)
            self.originals.forget(name)  # restored, or gone with its interface
            return
        assert change.after is not None
        current = read_sysctl(name)
        if current is None:
            raise ApplyError(f"cannot set {name}: the setting does not exist here")
        self.originals.record(name, current)  # before the change: a crash keeps the original
        self._write_sysctl(name, change.after.get("value"))

    def _write_sysctl(self, name: str, value: str) -> None:
        try:
            write_sysctl(name, value)
        except OSError as exc:
            raise ApplyError(f"set {name}={value}: {exc.strerror}") from exc
        self.sysctl_writes += 1

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
        elif change.kind is Kind.PORT:
            if change.action is not Action.DELETE and after:  # a port is never deleted here
                nl.set_port(change.key.split("/", 1)[1], after, before)
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
            for change in plan.changes:
                if change.kind is Kind.SYSCTL:
                    self._sysctl_change(change)
                    done.append(change)
                    report.done.append(change.key)
            nft = [c for c in plan.changes if c.kind in NFT_KINDS or c.kind is Kind.NFT_ELEMENT]
            if any(c.kind in NFT_KINDS for c in nft):
                self.nft.commit(desired)  # the rules that differ, or a rebuild (with elements)
            if any(c.kind is Kind.NFT_ELEMENT for c in nft):  # idempotent after a rebuild
                self.element_writes += apply_element_changes(nft)
            report.done += [c.key for c in nft]
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
            Kind.SYSCTL: self._sysctl_change,
            Kind.ADDR: self._netlink_change,
            Kind.ROUTE: self._netlink_change,
        }
        for change in reversed(done):
            step = steps.get(change.kind)
            if step is None:
                continue  # a port's flags: nothing worth undoing
            try:
                step(inverse(change))
            except WeavedError as exc:
                log.error("rollback step failed key=%s error=%s", change.key, exc)
