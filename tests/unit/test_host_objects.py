"""Kernel settings, bridge ports and the bridge's ownership in the pure core."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from weaved.compile.desired import compile_spec
from weaved.compile.facts import Facts
from weaved.compile.host import observed_view, without_vanished_ports
from weaved.dataplane.fake import FakeDataplane
from weaved.dataplane.sysctl import Originals
from weaved.engine.reconcile import RuntimeFacts, apply_spec, plan_spec, reset
from weaved.errors import ApplyError, ConflictError
from weaved.model.host import CONTAINER_FLAGS, TAP_FLAGS, PortRow, WantedPort, sysctl_resource
from weaved.model.resources import Kind, State
from weaved.plan.changes import Action, make_plan
from weaved.plan.render import render_plan
from weaved.spec.models import Spec

BASE = {"version": 1, "peer": {"name": "3e:80:e7:5a:63:a7"}}
EXPORT = {"export": [{"name": "web", "port": 8080, "to": "10.2.1.21:80"}]}


def spec(**extra: object) -> Spec:
    return Spec.model_validate({**BASE, **extra})


def sysctls(s: Spec) -> dict[str, str]:
    state = compile_spec(s, Facts()).state
    return {r.key: r.get("value") for r in state.by_kind(Kind.SYSCTL)}


def test_no_feature_touches_no_setting() -> None:
    assert sysctls(spec()) == {}


def test_routed_features_need_forwarding_and_exports_need_local_access() -> None:
    assert sysctls(spec(expose=[{"cidr": "10.2.1.1/24"}])) == {"sysctl/net.ipv4.ip_forward": "1"}
    imports = {"import": [{"name": "db", "address": "10.2.1.1:5432", "to": "192.0.2.5:5432"}]}
    assert sysctls(spec(services=imports)) == {"sysctl/net.ipv4.ip_forward": "1"}
    state = compile_spec(spec(services=EXPORT), Facts()).state
    assert {r.key for r in state.by_kind(Kind.SYSCTL)} == {
        "sysctl/net.ipv4.ip_forward",
        "sysctl/net.ipv4.conf.weave.route_localnet",
    }
    guard = state.resources["nft/ip/weaved/prerouting/localnet-guard"]
    assert guard.body == 'iifname "weave" ip daddr 127.0.0.0/8 drop'
    first = next(r for r in state.by_kind(Kind.NFT_RULE) if r.get("chain") == "ip prerouting")
    assert first.key == guard.key  # before any DNAT of the chain


def test_a_setting_not_yet_ours_is_an_update_and_never_a_delete() -> None:
    want = compile_spec(spec(services=EXPORT), Facts()).state
    current = {"net.ipv4.ip_forward": "0", "net.ipv4.conf.weave.route_localnet": "1"}
    plan = make_plan(want, observed_view(State(), want, {}, current))
    keys = {c.key: c for c in plan.changes if c.kind is Kind.SYSCTL}
    assert list(keys) == ["sysctl/net.ipv4.ip_forward"]
    assert keys["sysctl/net.ipv4.ip_forward"].action is Action.UPDATE
    assert "~ sysctl/net.ipv4.ip_forward  value: 0 → 1" in render_plan(plan)
    # Not wanted and never changed by us: not observed, so never "restored".
    assert make_plan(State(), observed_view(State(), State(), {}, current)).empty


def test_a_setting_we_changed_is_restored_when_no_longer_needed_and_on_reset() -> None:
    ours = State.of([sysctl_resource("net.ipv4.ip_forward", "1")])
    plan = make_plan(compile_spec(spec(), Facts()).state, ours)
    assert [(c.action, c.key) for c in plan.changes if c.kind is Kind.SYSCTL] == [
        (Action.DELETE, "sysctl/net.ipv4.ip_forward")
    ]
    dp = FakeDataplane(ours)
    reset(dp)
    assert "- sysctl/net.ipv4.ip_forward" in dp.executed


def test_ports_are_wanted_while_their_link_exists_else_reported() -> None:
    tap = WantedPort("vethwe-tap", TAP_FLAGS, "sleeve TAP")
    veth = WantedPort("vethwepl123", CONTAINER_FLAGS, "container c1")
    rows = {"vethwe-tap": PortRow("vethwe-tap", "weave", True, False, False, True, True)}
    compiled = compile_spec(spec(), Facts(wanted_ports=(tap, veth), port_rows=rows))
    port = compiled.state.resources["port/vethwe-tap"]
    assert dict(port.attrs) == {
        "master": "weave",
        "state": "up",
        "isolated": "on",
        "hairpin": "off",
        "learning": "on",
        "flood": "on",
    }
    assert "port/vethwepl123" not in compiled.state
    assert [d.what for d in compiled.deferred] == ["port vethwepl123 (container c1)"]
    plan = make_plan(compiled.state, observed_view(State(), compiled.state, rows, {}))
    (change,) = [c for c in plan.changes if c.kind is Kind.PORT]
    assert change.action is Action.UPDATE and change.fields == ("isolated",)


def test_a_container_port_wants_its_own_ipv6_off_and_the_tap_leaves_it() -> None:
    """Container ports plan `ipv6: off` (an upgraded host's ports with IPv6 on are fixed by
    the next converge); the TAP's IPv6 is neither shown nor planned."""
    tap = WantedPort("vethwe-tap", TAP_FLAGS, "sleeve TAP")
    veth = WantedPort("vethwepl123", CONTAINER_FLAGS, "container c1")
    row = PortRow("vethwepl123", "weave", True, False, False, True, True, ipv6=True)
    rows = {"vethwe-tap": PortRow("vethwe-tap", "weave", True, True, False, True, True, True)}
    rows["vethwepl123"] = row
    compiled = compile_spec(spec(), Facts(wanted_ports=(tap, veth), port_rows=rows))
    assert compiled.state.resources["port/vethwepl123"].get("ipv6") == "off"
    assert compiled.state.resources["port/vethwe-tap"].get("ipv6") == ""
    view = observed_view(State(), compiled.state, rows, {})
    assert view.resources["port/vethwe-tap"].get("ipv6") == ""
    plan = make_plan(compiled.state, view)
    (change,) = [c for c in plan.changes if c.kind is Kind.PORT]
    assert change.key == "port/vethwepl123" and change.fields == ("ipv6",)
    assert change.action is Action.UPDATE
    rows["vethwepl123"] = replace(row, ipv6=False)
    view = observed_view(State(), compiled.state, rows, {})
    assert not [c for c in make_plan(compiled.state, view).changes if c.kind is Kind.PORT]


def test_a_port_nobody_recorded_is_never_planned() -> None:
    rows = {"vethwepl777": PortRow("vethwepl777", "weave", True, True, True, True, True)}
    dp = FakeDataplane()
    planned = plan_spec(spec(), dp)
    view = observed_view(planned.observation.state, planned.compiled.state, rows, {})
    assert not any(k.startswith("port/") for k in view.resources)


def test_a_bridge_after_deletion_gets_its_ports_back_in_one_plan() -> None:
    veth = WantedPort("vethwepl123", CONTAINER_FLAGS, "container c1")
    loose = {"vethwepl123": PortRow("vethwepl123", "", True)}
    dp = FakeDataplane()
    runtime = RuntimeFacts(ports=(veth,))
    # The fake has no port rows: the port is reported, the bridge is planned.
    planned = plan_spec(spec(), dp, runtime)
    assert [d[0] for d in planned.plan.deferred] == ["port vethwepl123 (container c1)"]
    compiled = compile_spec(spec(), Facts(wanted_ports=(veth,), port_rows=loose))
    plan = make_plan(compiled.state, observed_view(State(), compiled.state, loose, {}))
    order = [(c.action, c.key) for c in plan.changes][:2]
    assert order == [(Action.CREATE, "link/weave"), (Action.UPDATE, "port/vethwepl123")]
    assert "master: none → weave" in render_plan(plan)
    assert apply_spec(spec(), dp, runtime).report.writes > 0


def test_a_foreign_bridge_is_a_conflict_with_a_hint() -> None:
    with pytest.raises(ConflictError) as err:
        compile_spec(spec(), Facts(foreign_bridge="a bridge with no alias"))
    text = str(err.value)
    assert 'a link named "weave" exists that weaved did not create' in text
    assert "hint:" in text


def test_a_port_that_vanished_during_apply_does_not_fail_the_verification() -> None:
    veth = WantedPort("vethwepl123", CONTAINER_FLAGS, "container c1")
    rows = {"vethwepl123": PortRow("vethwepl123", "", True)}
    want = compile_spec(spec(), Facts(wanted_ports=(veth,), port_rows=rows)).state
    assert "port/vethwepl123" in want
    assert "port/vethwepl123" not in without_vanished_ports(want, {})
    assert without_vanished_ports(want, rows) is want


def test_originals_keep_the_first_value_and_survive_a_restart(tmp_path: Path) -> None:
    originals = Originals(tmp_path)
    originals.record("net.ipv4.ip_forward", "0")
    originals.record("net.ipv4.ip_forward", "1")  # a later change never overwrites it
    assert Originals(tmp_path).load() == {"net.ipv4.ip_forward": "0"}
    originals.forget("net.ipv4.ip_forward")
    assert not (tmp_path / Originals.FILE).exists()
    (tmp_path / Originals.FILE).write_text("{not json")
    with pytest.raises(ApplyError, match="fix or remove it"):
        Originals(tmp_path).load()
