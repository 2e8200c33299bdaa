"""plan/apply/reset against the real kernel, each test in a fresh network namespace."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, Netns, netns

SPEC = """\
version: 1
peer: {name: "3e:80:e7:5a:63:a7"}
datapath: {mtu: 1400}
expose:
  - cidr: 10.2.1.1/24
  - cidr: 10.32.0.1/12
services:
  export:
    - {name: web, port: 8080, to: "10.2.1.21:80"}
  import:
    - {name: db, address: "10.2.1.1:5432", to: "192.0.2.50:5432"}
"""


@pytest.fixture
def ns() -> object:
    with netns() as n:
        yield n


def write_spec(tmp_path: Path, text: str = SPEC) -> Path:
    spec = tmp_path / "weave.yaml"
    spec.write_text(text)
    return spec


def plan_json(ns: Netns, spec: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(ns.weaved(spec, "plan", "--json").stdout)
    return data


def keys(plan: dict[str, object]) -> list[tuple[str, str]]:
    changes = plan["changes"]
    assert isinstance(changes, list)
    return [(c["action"], c["key"]) for c in changes]


def test_apply_creates_then_second_apply_writes_nothing(ns: Netns, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    assert ns.weaved(spec, "plan", "--detailed-exitcode", check=False).returncode == 2
    out = ns.weaved(spec, "apply").stdout
    assert "verified in sync" in out
    link = ns.ip("-d", "-j", "link", "show", "weave").stdout
    info = json.loads(link)[0]
    assert (
        info["mtu"] == 1400
        and info["address"] == "3e:80:e7:5a:63:a7"
        and info["ifalias"] == "weaved"
    )
    assert ns.run(["cat", "/proc/sys/net/ipv6/conf/weave/autoconf"]).stdout.strip() == "0"
    addrs = ns.ip("-4", "-o", "addr", "show", "dev", "weave").stdout
    assert "10.2.1.1/24" in addrs and "10.32.0.1/12" in addrs
    routes = ns.ip("route", "show", "proto", "87").stdout
    assert "10.2.1.0/24 dev weave" in routes and "10.32.0.0/12 dev weave" in routes
    ruleset = ns.nft("list", "table", "ip", "weaved").stdout
    assert "dnat to 10.2.1.21:80" in ruleset and "dnat to 192.0.2.50:5432" in ruleset
    second = ns.weaved(spec, "apply").stdout
    assert "no changes, 0 kernel writes" in second
    assert ns.weaved(spec, "plan", "--detailed-exitcode").returncode == 0


def test_drift_is_planned_exactly_and_repaired(ns: Netns, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    ns.weaved(spec, "apply")
    ns.ip("addr", "del", "10.2.1.1/24", "dev", "weave")
    handles = ns.nft("-a", "list", "chain", "ip", "weaved", "prerouting").stdout
    handle = next(line.rsplit(" ", 1)[1] for line in handles.splitlines() if "wd:import-db" in line)
    ns.nft("delete", "rule", "ip", "weaved", "prerouting", "handle", handle)
    ns.ip("link", "set", "weave", "mtu", "1500")
    ns.run(["sysctl", "-qw", "net.ipv4.conf.weave.promote_secondaries=0"])
    text = ns.weaved(spec, "plan").stdout
    assert "promote_secondaries: off → on" in text, text
    plan = plan_json(ns, spec)
    # The kernel drops a route whose source address goes away, so the route is drift too.
    assert keys(plan) == [
        ("~", "link/weave"),
        ("+", "addr/weave/10.2.1.1/24"),
        ("+", "route/10.2.1.0/24"),
        ("+", "nft/ip/weaved/prerouting/import-db"),
    ]
    ns.weaved(spec, "apply")
    assert keys(plan_json(ns, spec)) == []
    assert "10.2.1.0/24 dev weave" in ns.ip("route", "show", "proto", "87").stdout
    promote = ns.run(["cat", "/proc/sys/net/ipv4/conf/weave/promote_secondaries"]).stdout
    assert promote.strip() == "1"


def test_deleted_bridge_is_recreated(ns: Netns, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    ns.weaved(spec, "apply")
    ns.ip("link", "del", "weave")
    plan = keys(plan_json(ns, spec))
    assert ("+", "link/weave") in plan and ("+", "addr/weave/10.32.0.1/12") in plan
    assert not any(k.startswith("nft/") for _a, k in plan)  # the nft table did not drift
    ns.weaved(spec, "apply")
    assert keys(plan_json(ns, spec)) == []


def test_spec_edit_removes_what_is_no_longer_wanted(ns: Netns, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    ns.weaved(spec, "apply")
    spec.write_text(
        SPEC.replace("  - cidr: 10.2.1.1/24\n", "").replace(
            '  import:\n    - {name: db, address: "10.2.1.1:5432", to: "192.0.2.50:5432"}\n', ""
        )
    )
    plan = keys(plan_json(ns, spec))
    assert ("-", "addr/weave/10.2.1.1/24") in plan and (
        "-",
        "nft/ip/weaved/prerouting/import-db",
    ) in plan
    ns.weaved(spec, "apply")
    assert "10.2.1.1" not in ns.ip("-4", "-o", "addr", "show", "dev", "weave").stdout


def test_foreign_objects_are_never_touched(ns: Netns, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    ns.weaved(spec, "apply")
    ns.ip("addr", "add", "10.2.9.9/24", "dev", "weave")  # someone else's address on our bridge
    ns.ip("link", "add", "other0", "type", "bridge")
    ns.ip("link", "set", "other0", "up")
    ns.ip("route", "add", "198.51.100.0/24", "dev", "other0")
    ns.nft("add", "table", "ip", "theirs")
    ns.nft("add", "chain", "ip", "theirs", "c", "{ type filter hook forward priority 0; }")
    ns.nft("add", "rule", "ip", "theirs", "c", "iifname", "weave", "counter")
    assert keys(plan_json(ns, spec)) == []
    ns.weaved(spec, "reset")
    assert ns.ip("link", "show", "weave", check=False).returncode != 0
    assert "other0" in ns.ip("link", "show").stdout
    assert "198.51.100.0/24" in ns.ip("route").stdout
    tables = ns.nft("list", "tables").stdout
    assert "theirs" in tables and "weaved" not in tables


def test_reset_removes_everything_weaved_owns(ns: Netns, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    ns.weaved(spec, "apply")
    out = ns.weaved(spec, "reset").stdout
    assert "Removed every object weaved owned" in out
    assert "weave" not in ns.ip("-o", "link").stdout
    assert ns.ip("route", "show", "proto", "87").stdout.strip() == ""
    assert "weaved" not in ns.nft("list", "tables").stdout
    assert "0 kernel writes" in ns.weaved(spec, "reset").stdout


def test_range_overlapping_a_host_route_is_refused(ns: Netns, tmp_path: Path) -> None:
    ns.ip("link", "add", "up0", "type", "bridge")
    ns.ip("link", "set", "up0", "up")
    ns.ip("route", "add", "10.40.0.0/16", "dev", "up0")
    spec = write_spec(tmp_path, "version: 1\n")
    proc = ns.weaved(spec, "apply", check=False)
    assert proc.returncode == 1
    assert "overlaps the host route '10.40.0.0/16 dev up0'" in proc.stderr
    assert ns.ip("link", "show", "weave", check=False).returncode != 0  # nothing half-applied


def test_nft_transaction_is_all_or_nothing(ns: Netns, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    ns.weaved(spec, "apply")
    before = ns.nft("list", "table", "ip", "weaved").stdout
    # A desired state with one rule the kernel refuses: the whole transaction must fail.
    code = (
        "from weaved.dataplane.nft import Nft\n"
        "from weaved.model.resources import Kind, Resource, State, attrs\n"
        "import sys\n"
        "good = [Resource('nft/ip/weaved', Kind.NFT_TABLE, attrs(family='ip')),\n"
        "  Resource('nft/ip/weaved/forward', Kind.NFT_CHAIN,\n"
        "    attrs(type='filter', hook='forward', priority=0, policy='accept')),\n"
        "  Resource('nft/ip/weaved/forward/a', Kind.NFT_RULE, attrs(chain='ip forward', hash='1'),\n"
        "    body='accept'),\n"
        "  Resource('nft/ip/weaved/forward/b', Kind.NFT_RULE, attrs(chain='ip forward', hash='2'),\n"
        "    body='ip saddr 10.0.0.0/33 drop')]\n"
        "try:\n"
        "    Nft().commit(State.of(good))\n"
        "except Exception as e:\n"
        "    print('refused', e); sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    proc = ns.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == 0 and "nothing was changed" in proc.stdout
    assert ns.nft("list", "table", "ip", "weaved").stdout == before


@pytest.mark.parametrize(
    "example",
    sorted(
        p.relative_to(REPO / "examples").as_posix() for p in (REPO / "examples").rglob("*.yaml")
    ),
)
def test_every_example_applies(example: str, ns: Netns, tmp_path: Path) -> None:
    text = (REPO / "examples" / example).read_text()
    if "password_file:" in text:
        secret = tmp_path / "password"
        secret.write_text("example-password\n")
        secret.chmod(0o600)
        text = text.replace("/etc/weave/password", str(secret))
    spec = write_spec(tmp_path, text)
    ns.weaved(spec, "apply")
    assert ns.weaved(spec, "plan", "--detailed-exitcode").returncode == 0
    ns.weaved(spec, "reset")
    assert "weaved" not in ns.nft("list", "tables").stdout
