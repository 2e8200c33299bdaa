from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from weaved.compile.desired import compile_spec
from weaved.compile.facts import Facts
from weaved.dataplane.fake import FakeDataplane
from weaved.engine.reconcile import apply_spec, plan_spec, reset
from weaved.model.resources import Kind, Resource, State, attrs
from weaved.plan.changes import Action, make_plan
from weaved.plan.render import plan_json, render_plan
from weaved.spec.loader import load_spec
from weaved.spec.models import Spec

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
FACTS = Facts(peer_name="3e:80:e7:5a:63:a7")


def desired(spec: Spec, facts: Facts = FACTS) -> State:
    return compile_spec(spec, facts).state


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.read_text() == text, f"golden {name} differs (UPDATE_GOLDEN=1 to rewrite)"


def test_golden_fresh_host() -> None:
    spec = load_spec(REPO / "examples" / "services.yaml")
    plan = make_plan(desired(spec), State())
    check_golden("services-fresh.plan.txt", render_plan(plan) + "\n")
    check_golden("services-fresh.plan.json", json.dumps(plan_json(plan), indent=2) + "\n")
    assert plan.count(Action.CREATE) == len(plan.changes)


def test_golden_drift() -> None:
    spec = load_spec(REPO / "examples" / "services.yaml")
    want = desired(spec)
    have = dict(want.resources)
    bridge = have["link/weave"]
    have["link/weave"] = Resource(
        bridge.key, bridge.kind, attrs(**{**dict(bridge.attrs), "mtu": "1500"})
    )
    del have["addr/weave/10.2.1.4/24"]
    del have["nft/ip/weaved/prerouting/import-db"]
    have["nft/ip/weaved/postrouting/export-old"] = Resource(
        "nft/ip/weaved/postrouting/export-old",
        Kind.NFT_RULE,
        attrs(chain="ip postrouting", hash="0"),
    )
    plan = make_plan(want, State(have))
    text = render_plan(plan)
    check_golden("services-drift.plan.txt", text + "\n")
    assert [c.action for c in plan.changes] == [
        Action.DELETE,
        Action.UPDATE,
        Action.CREATE,
        Action.CREATE,
    ]
    assert "mtu: 1500 → 1376" in text


def test_replace_when_kind_differs() -> None:
    spec = Spec.model_validate({"version": 1})
    want = desired(spec)
    have = dict(want.resources)
    have["link/weave"] = Resource("link/weave", Kind.LINK, attrs(type="veth", mtu=1376))
    plan = make_plan(want, State(have))
    assert [(c.action, c.key) for c in plan.changes] == [(Action.REPLACE, "link/weave")]


def test_deferred_expose_is_shown() -> None:
    spec = Spec.model_validate({"version": 1, "expose": [{"cidr": "net:default"}]})
    compiled = compile_spec(spec, FACTS)
    assert compiled.deferred and "waiting for an IPAM allocation" in compiled.deferred[0].reason
    facts = Facts(peer_name=FACTS.peer_name, expose_allocations={0: "10.32.0.1/12"})
    assert "addr/weave/10.32.0.1/12" in compile_spec(spec, facts).state


def test_firewall_compat_only_when_forward_drops() -> None:
    spec = Spec.model_validate({"version": 1})
    assert not desired(spec).by_kind(Kind.IPT_RULE)
    facts = Facts(peer_name=FACTS.peer_name, foreign_forward_drop=True)
    assert {r.key for r in desired(spec, facts).by_kind(Kind.IPT_RULE)} == {
        "ipt/filter/FORWARD/weave-in",
        "ipt/filter/FORWARD/weave-out",
    }


def test_fake_apply_then_reset() -> None:
    spec = load_spec(REPO / "examples" / "services.yaml")
    dp = FakeDataplane()
    first = apply_spec(spec, dp)
    assert first.report.writes == len(first.planned.plan.changes) > 0
    again = apply_spec(spec, dp)
    assert again.planned.plan.empty and again.report.writes == 0
    reset(dp)
    assert len(dp.state) == 0


# --- property tests ----------------------------------------------------------------------
octet = st.integers(min_value=1, max_value=254)
expose_entry = st.one_of(
    st.builds(lambda a, b, n: {"cidr": f"10.{a}.{b}.1/{n}"}, octet, octet, st.integers(16, 28)),
    st.builds(
        lambda a, n: {
            "cidr": "net:" + str(ipaddress.IPv4Network(f"10.{32 + a % 16}.{a}.0/{n}", strict=False))
        },
        octet,
        st.integers(16, 29),
    ),
)
export_rule = st.builds(
    lambda i, port, a: {"name": f"e{i}", "port": port, "to": f"10.32.0.{a}:80"},
    st.integers(0, 1000),
    st.integers(1, 65535),
    octet,
)


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    exposes = draw(st.lists(expose_entry, max_size=6))
    seen: set[str] = set()
    unique = []
    for entry in exposes:
        key = entry["cidr"].split("/")[0]
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    rules = draw(
        st.lists(export_rule, max_size=5, unique_by=(lambda r: r["name"], lambda r: r["port"]))
    )
    return Spec.model_validate(
        {
            "version": 1,
            "expose": unique,
            "services": {"export": rules},
            "datapath": {"mtu": draw(st.integers(1280, 9000))},
        }
    )


@st.composite
def facts(draw: st.DrawFn, spec: Spec) -> Facts:
    allocations = {
        i: f"10.{32 + i}.0.{draw(octet)}/16"
        for i, e in enumerate(spec.expose)
        if e.cidr.startswith("net:")
    }
    return Facts(
        peer_name="02:00:00:00:00:01",
        expose_allocations=allocations,
        foreign_forward_drop=draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_plan_of_a_state_against_itself_is_empty(data: st.DataObject) -> None:
    spec = data.draw(specs())
    state = compile_spec(spec, data.draw(facts(spec))).state
    assert make_plan(state, state).empty


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_apply_then_plan_is_empty_from_any_start(data: st.DataObject) -> None:
    spec = data.draw(specs())
    f = data.draw(facts(spec))
    want = compile_spec(spec, f).state
    # Start from a random mix: part of what is wanted, mutated objects, and stale objects.
    keys = sorted(want.resources)
    kept = data.draw(st.lists(st.sampled_from(keys), unique=True)) if keys else []
    start = {k: want.resources[k] for k in kept}
    for k in data.draw(st.lists(st.sampled_from(keys), unique=True, max_size=3)) if keys else []:
        r = want.resources[k]
        start[k] = Resource(k, r.kind, attrs(**{**dict(r.attrs), "hash": "stale"}))
    for i in range(data.draw(st.integers(0, 3))):
        key = f"nft/ip/weaved/forward/stale-{i}"
        start[key] = Resource(key, Kind.NFT_RULE, attrs(chain="ip forward", hash="x"))
    dp = FakeDataplane(State(start))
    plan = make_plan(want, dp.observe().state)
    dp.execute(plan, want)
    assert make_plan(want, dp.observe().state).empty
    assert dp.state == want


def test_plan_spec_uses_observed_bridge_mac_as_peer_name() -> None:
    spec = Spec.model_validate({"version": 1})
    dp = FakeDataplane(
        State.of([Resource("link/weave", Kind.LINK, attrs(mac="aa:bb:cc:dd:ee:02"))])
    )
    planned = plan_spec(spec, dp)
    assert planned.peer_name == "aa:bb:cc:dd:ee:02"
