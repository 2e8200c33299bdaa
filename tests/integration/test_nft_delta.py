"""An edit changes only the nftables rules that differ, in place and in order, in one
transaction; hand-made rules and chains in weaved's table are drift, planned and removed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.helpers import Netns, netns
from tests.integration.test_apply import keys, plan_json, write_spec

SPEC = """\
version: 1
peer: {name: "3e:80:e7:5a:63:a7"}
expose:
  - cidr: 10.2.1.1/24
services:
  export:
%s
"""
_LINE = re.compile(r'comment "wd:([^:"]+):[^"]*" # handle (\d+)$')


def exports(*entries: tuple[str, int, int]) -> str:
    return SPEC % "\n".join(
        f'    - {{name: {name}, port: {port}, to: "10.2.1.{20 + port % 200}:{to}"}}'
        for name, port, to in entries
    )


def rules(ns: Netns, chain: str) -> list[tuple[str, int]]:
    """(rule id, handle) of weaved's rules in `chain`, in the kernel's order."""
    text = ns.nft("-a", "list", "chain", "ip", "weaved", chain).stdout
    return [
        (m.group(1), int(m.group(2))) for line in text.splitlines() if (m := _LINE.search(line))
    ]


def table_handle(ns: Netns) -> str:
    return ns.nft("-a", "list", "table", "ip", "weaved").stdout.splitlines()[0]


@pytest.fixture
def ns() -> object:
    with netns("wdB") as n:
        yield n


def test_an_edited_rule_is_replaced_and_nothing_else_is_rewritten(
    ns: Netns, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, exports(("a", 1001, 80), ("b", 1002, 80), ("c", 1003, 80)))
    ns.weaved(spec, "apply")
    table, before = table_handle(ns), rules(ns, "prerouting")
    others = {c: rules(ns, c) for c in ("input", "forward")}
    spec.write_text(exports(("a", 1001, 80), ("b", 1002, 8080), ("c", 1003, 80)))
    assert "1 kernel writes" in ns.weaved(spec, "apply").stdout  # one transaction
    assert table_handle(ns) == table  # the table was not rebuilt
    # No other service matches what export-b matches: its place is free, so it is deleted and
    # added at the end (no replace: libnftables would fetch every rule first); the rest keep
    # their handles and order.
    after = rules(ns, "prerouting")
    assert after[:-1] == [x for x in before if x[0] != "export-b"]
    assert after[-1][0] == "export-b" and after[-1] not in before
    assert "dnat to 10.2.1.22:8080" in ns.nft("list", "chain", "ip", "weaved", "output").stdout
    assert {c: rules(ns, c) for c in others} == others
    assert keys(plan_json(ns, spec)) == []


def test_added_rules_take_their_place_between_untouched_neighbours(
    ns: Netns, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, exports(("a", 1001, 80), ("c", 1003, 80)))
    ns.weaved(spec, "apply")
    table, before = table_handle(ns), dict(rules(ns, "prerouting"))
    spec.write_text(exports(("a", 1001, 80), ("b", 1002, 80), ("c", 1003, 80), ("d", 1004, 80)))
    ns.weaved(spec, "apply")
    after = rules(ns, "prerouting")
    assert table_handle(ns) == table
    ids = [rid for rid, _ in after]
    # Places free (no two services overlap): the new ones at the end.
    assert ids[ids.index("export-a") :][:4] == ["export-a", "export-c", "export-b", "export-d"]
    assert all(dict(after)[rid] == handle for rid, handle in before.items())
    spec.write_text(exports(("a", 1001, 80), ("d", 1004, 80)))  # and removed again
    ns.weaved(spec, "apply")
    assert [rid for rid, _ in rules(ns, "prerouting") if rid.startswith("export-")] == [
        "export-a",
        "export-d",
    ]
    assert keys(plan_json(ns, spec)) == []


def test_hand_made_rules_and_chains_in_our_table_are_drift(ns: Netns, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, exports(("a", 1001, 80), ("b", 1002, 80)))
    ns.weaved(spec, "apply")
    before = rules(ns, "prerouting")
    ns.nft("add", "rule", "ip", "weaved", "prerouting", "tcp", "dport", "22", "accept")
    copy = next(h for rid, h in before if rid == "export-a")
    listing = ns.nft("-a", "list", "chain", "ip", "weaved", "prerouting").stdout
    body = next(x for x in listing.splitlines() if f"# handle {copy}" in x).strip()
    ns.run(["nft", f"add rule ip weaved prerouting {body.rsplit(' # handle', 1)[0]}"])
    plan = keys(plan_json(ns, spec))
    assert len(plan) == 2 and all(
        a == "-" and k.startswith("nft/ip/weaved/prerouting/~handle-") for a, k in plan
    ), plan
    ns.weaved(spec, "apply")
    assert rules(ns, "prerouting") == before
    assert "dport 22" not in ns.nft("list", "chain", "ip", "weaved", "prerouting").stdout
    ns.nft("add", "chain", "ip", "weaved", "mine")
    assert ("-", "nft/ip/weaved/mine") in keys(plan_json(ns, spec))
    ns.weaved(spec, "apply")
    assert keys(plan_json(ns, spec)) == []
    ns.run(["nft", "chain ip weaved input { policy drop; }"])  # a hand-changed chain
    assert keys(plan_json(ns, spec)) == [("~", "nft/ip/weaved/input")]
    ns.weaved(spec, "apply")
    assert "policy accept" in ns.nft("list", "chain", "ip", "weaved", "input").stdout
    assert keys(plan_json(ns, spec)) == []


def test_a_chain_out_of_order_is_rewritten_in_order_and_later_edits_stay_small(
    ns: Netns, tmp_path: Path
) -> None:
    """One process (as the daemon): the handles a rewrite made are the ones its next edit uses."""
    specs = [
        exports(("a", 1001, 80), ("b", 1002, 80), ("c", 1003, 80)),
        exports(("a", 1001, 80), ("b", 1002, 81), ("c", 1003, 80)),
        exports(("a", 1001, 80), ("b", 1002, 81), ("c", 1003, 82)),
    ]
    for index, text in enumerate(specs):
        (tmp_path / f"{index}.yaml").write_text(text)
    code = f"""
import subprocess
from weaved.dataplane.kernel import KernelDataplane
from weaved.engine.reconcile import apply_spec
from weaved.spec.loader import load_spec
dp = KernelDataplane()
apply_spec(load_spec("{tmp_path}/0.yaml"), dp)
# By hand: the loopback guard (which must come first) moved to the end of its chain (same rule,
# same comment).
listing = subprocess.run(["nft", "-a", "list", "chain", "ip", "weaved", "prerouting"],
    capture_output=True, text=True, check=True).stdout
line = next(x for x in listing.splitlines() if '"wd:localnet-guard:' in x).strip()
body, _, handle = line.rpartition(" # handle ")
subprocess.run(["nft", f"delete rule ip weaved prerouting handle {{handle}}\\n"
    f"add rule ip weaved prerouting {{body}}"], check=True)
apply_spec(load_spec("{tmp_path}/1.yaml"), dp)
apply_spec(load_spec("{tmp_path}/2.yaml"), dp)
print("rebuilds", dp.nft.rebuilds)
"""
    out = ns.run([sys.executable, "-c", code]).stdout
    assert "rebuilds 1" in out, out  # the first apply only
    ids = [rid for rid, _ in rules(ns, "prerouting")]
    assert ids == ["localnet-guard", "export-a", "export-b", "export-c"]  # b, then c edited
    assert "dnat to 10.2.1.23:82" in ns.nft("list", "chain", "ip", "weaved", "output").stdout
    assert keys(plan_json(ns, tmp_path / "2.yaml")) == []


def test_rules_whose_matches_overlap_are_replaced_in_place(ns: Netns, tmp_path: Path) -> None:
    """The first of two DNATs of one port wins: their order stays, an edit replaces in place."""
    text = SPEC % (
        '    - {name: a, port: 1001, to: "10.2.1.21:80", in_interface: lo}\n'
        '    - {name: b, port: 1001, to: "10.2.1.22:%d"}'
    )
    spec = write_spec(tmp_path, text % 80)
    ns.weaved(spec, "apply")
    before = rules(ns, "prerouting")
    spec.write_text(text % 8080)
    ns.weaved(spec, "apply")
    assert rules(ns, "prerouting") == before  # same handles, same order
    assert "dnat to 10.2.1.22:8080" in ns.nft("list", "chain", "ip", "weaved", "output").stdout
    assert keys(plan_json(ns, spec)) == []


def test_the_commits_notifications_name_the_new_handles_so_nothing_is_listed_again(
    ns: Netns, tmp_path: Path
) -> None:
    """libnftables' echo would fetch every rule first; the kernel's notifications say the same."""
    (tmp_path / "0.yaml").write_text(exports(("a", 1001, 80), ("b", 1002, 80)))
    (tmp_path / "1.yaml").write_text(exports(("a", 1001, 80), ("b", 1002, 81), ("c", 1003, 80)))
    code = f"""
from weaved.dataplane.kernel import KernelDataplane
from weaved.engine.reconcile import apply_spec
from weaved.spec.loader import load_spec
dp = KernelDataplane()
apply_spec(load_spec("{tmp_path}/0.yaml"), dp)
dp.nft.observe()
apply_spec(load_spec("{tmp_path}/1.yaml"), dp)
assert dp.nft._listed is not None, "listed again"
kept = sorted((r.key, r.attrs) for r in dp.nft._listed[1].resources)
assert kept == sorted((r.key, r.attrs) for r in dp.nft._list().resources), "not as listed"
for (family, chain), rules in dp.nft._listed[1].chains.items():
    if family == "ip" and chain == "prerouting":
        print(sorted((r.rule_id, r.handle) for r in rules))
"""
    out = ns.run([sys.executable, "-c", code]).stdout
    assert out.strip() == str(sorted(rules(ns, "prerouting")))
