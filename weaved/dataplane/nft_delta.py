"""weaved's nftables tables as listed (with each rule's handle and place), and the smallest
transaction that turns them into the desired State (pure: text in, text out).

An edit of one service rule on a host with thousands of rules should not rewrite the table:
the rules whose comment (`wd:<id>:<hash>`) already says the right thing keep their handle and
place; a changed rule is replaced in place by its handle, a new one inserted before the next
rule it must precede, an unwanted one (ours no longer wanted, a hand-added one without our
comment, a second copy of ours) deleted by handle. A chain's last rules that compile marked as
working in any order (ANY_ORDER: service rules no other rule's match overlaps) have no place
to keep: a changed or new one is added at the end, its old copy deleted by handle.
Everything else — a table, set or chain missing or different, anything in the table that is
not a chain or set, rules in an order an insert cannot fix — is left to the full rebuild
(`render_script`), which is always right.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from weaved.compile.firewall import ANY_ORDER
from weaved.dataplane.nftsets import parse_sets
from weaved.model.resources import NFT_TABLE, Kind, Resource, State, attrs

COMMENT_PREFIX = "wd:"
STRAY = "~handle-"  # key part of a rule in our table without our comment ("~" is no rule id)
META_KINDS = (Kind.NFT_TABLE, Kind.NFT_SET, Kind.NFT_CHAIN)  # a set's elements: nftsets.py


@dataclass(frozen=True, slots=True)
class ListedRule:
    rule_id: str  # STRAY + handle for a rule that is not weaved's (or a second copy of one)
    digest: str
    handle: int


ChainKey = tuple[str, str]  # (family, chain)
Chains = Mapping[ChainKey, tuple[ListedRule, ...]]


@dataclass(frozen=True)
class Listing:
    """What `nft -a list table` showed: weaved's objects, and each chain's rules in order."""

    resources: tuple[Resource, ...]
    chains: Chains
    # Something in a table besides chains, rules and sets (a map): only a rebuild knows it.
    others: bool = False

    @functools.cached_property
    def meta(self) -> dict[str, Resource]:
        """The tables, sets and chains by key (once per listing: it holds thousands of rules)."""
        return {r.key: r for r in self.resources if r.kind in META_KINDS}


def rule_comment(resource: Resource) -> str:
    rule_id = resource.key.rsplit("/", 1)[1]
    return f"{COMMENT_PREFIX}{rule_id}:{resource.get('hash')}"


def rule_line(resource: Resource) -> str:
    return f'{resource.body} comment "{rule_comment(resource)}"'


# `nft list` prints standard priorities by name; these are their numbers per family.
NAMED_PRIORITIES = {
    "ip": {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100},
    "bridge": {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300},
}
_BLOCK = re.compile(r"^\t(\S+) (\S+) \{")  # a table's chain, set, map, … (with -a: "# handle N")
_HOOK = re.compile(r"^\t\ttype (\S+) hook (\S+) priority ([^;]+); policy (\S+);$")


def parse_listing(family: str, text: str) -> Listing:
    """weaved's objects from `nft -a list table` text output (handles shown).

    The text form is parsed rather than JSON because libnftables produces it about three times
    faster, and only the chain headers, rule comments and handles matter here."""
    out = [Resource(f"nft/{family}/{NFT_TABLE}", Kind.NFT_TABLE, attrs(family=family))]
    chains: dict[ChainKey, list[ListedRule]] = {}
    chain = ""
    others = False
    seen: set[str] = set()  # the rule ids of the current chain
    for line in text.splitlines():
        if chain and line.startswith("\t\t") and not line.startswith("\t\ttype "):
            rest, found, handle_text = line.rpartition(" # handle ")
            if not found:
                continue
            handle = int(handle_text)
            rule_id, digest = f"{STRAY}{handle}", ""
            if rest.endswith('"') and (at := rest.rfind(' comment "wd:')) >= 0:
                rule_id, _, digest = rest[at + 13 : -1].rpartition(":")
            if rule_id in seen:  # a second copy of one of ours: not ours
                rule_id, digest = f"{STRAY}{handle}", ""
            seen.add(rule_id)
            chains[(family, chain)].append(ListedRule(rule_id, digest, handle))
        elif m := _BLOCK.match(line):
            chain = m.group(2) if m.group(1) == "chain" else ""
            others |= m.group(1) not in ("chain", "set")  # sets: dataplane/nftsets.py
            if chain:
                chains[(family, chain)] = []
                seen = set()
        elif chain and (m := _HOOK.match(line)):
            prio_text = m.group(3).strip()
            names = NAMED_PRIORITIES.get(family, {})
            prio = names[prio_text] if prio_text in names else int(prio_text)
            out.append(
                Resource(
                    f"nft/{family}/{NFT_TABLE}/{chain}",
                    Kind.NFT_CHAIN,
                    attrs(type=m.group(1), hook=m.group(2), priority=prio, policy=m.group(4)),
                )
            )
    based = {r.key for r in out}
    for (fam, name), rules in chains.items():
        if f"nft/{fam}/{NFT_TABLE}/{name}" not in based:  # no hook: not one of ours
            out.append(Resource(f"nft/{fam}/{NFT_TABLE}/{name}", Kind.NFT_CHAIN, attrs(hook="-")))
        out += [listed_resource(fam, name, r) for r in rules]
    out += parse_sets(family, text)
    return Listing(tuple(out), {k: tuple(v) for k, v in chains.items()}, others)


def listed_resource(family: str, chain: str, rule: ListedRule) -> Resource:
    # attrs(chain=…, hash=…) spelled out: built for every listed rule, already sorted
    fields = (("chain", f"{family} {chain}"), ("hash", rule.digest))
    return Resource(f"nft/{family}/{NFT_TABLE}/{chain}/{rule.rule_id}", Kind.NFT_RULE, fields)


def desired_chains(desired: State) -> dict[ChainKey, list[Resource]]:
    """Each desired chain's rules in their order (the order of the desired State)."""
    out: dict[ChainKey, list[Resource]] = {}
    for chain in desired.by_kind(Kind.NFT_CHAIN):
        fam, _, name = chain.key.split("/")[1:4]
        out[(fam, name)] = []
    for rule in desired.by_kind(Kind.NFT_RULE):
        fam, _, name = rule.get("chain").partition(" ")
        out.setdefault((fam, name), []).append(rule)
    return out


def delta_script(desired: State, listing: Listing) -> tuple[str, Chains] | None:
    """The transaction that makes the listed tables equal to `desired` touching only rules, and
    each changed chain's rules as they will be (new rules without a handle yet, 0); None when
    only a rebuild can do it. An empty script: nothing to change."""
    wanted_meta = {r.key: r for kind in META_KINDS for r in desired.by_kind(kind)}
    if listing.others or wanted_meta != listing.meta:
        return None
    wanted = desired_chains(desired)
    if set(wanted) != set(listing.chains):
        return None  # a chain without a hook (not in listed_meta) is someone's
    lines: list[str] = []
    after: dict[ChainKey, tuple[ListedRule, ...]] = {}
    for key, rules in wanted.items():
        script, order = _chain_delta(key, rules, listing.chains[key])
        if script:
            lines += script
            after[key] = order
    return "\n".join(lines) + ("\n" if lines else ""), after


def _listed(rule: Resource, handle: int = 0) -> ListedRule:
    return ListedRule(rule.key.rsplit("/", 1)[1], rule.get("hash"), handle)


def any_order_tail(rules: list[Resource]) -> set[str]:
    """The ids of the chain's last rules that compile marked as working in any order (their
    hash ends in ANY_ORDER); a marked rule with an ordered one after it keeps its place."""
    tail: set[str] = set()
    for rule in reversed(rules):
        if not rule.get("hash").endswith(ANY_ORDER):
            break
        tail.add(rule.key.rsplit("/", 1)[1])
    return tail


def _chain_delta(
    key: ChainKey, rules: list[Resource], listed: tuple[ListedRule, ...]
) -> tuple[list[str], tuple[ListedRule, ...]]:
    """The lines for one chain, and its rules as they will be in the kernel's order.

    The chain's any-order tail (service rules whose matches no other rule shares) needs no
    place: a changed one is deleted and added again at the end. That is what makes an edit
    cheap: libnftables fetches every rule of the ruleset before a `replace` or a positioned
    `insert` (60-70 ms with thousands of rules), never before a plain `add` or a delete."""
    family, chain = key
    where = f"{family} {NFT_TABLE} {chain}"
    wanted_ids = [r.key.rsplit("/", 1)[1] for r in rules]
    wanted_set = set(wanted_ids)
    free = any_order_tail(rules)
    kept = [r for r in listed if r.rule_id in wanted_set]
    kept_ids = {r.rule_id for r in kept}
    lines = [f"delete rule {where} handle {r.handle}" for r in listed if r.rule_id not in kept_ids]
    tail = [r for r in kept if r.rule_id in free]  # in the kernel's order
    head = [r.rule_id for r in kept if r.rule_id not in free]
    if head != [i for i in wanted_ids if i in kept_ids and i not in free] or any(
        r.rule_id not in free
        for r in kept[len(head) :]  # an ordered rule inside the tail
    ):
        # Rules out of order: an insert cannot move them; the chain is written again.
        lines = [f"flush chain {where}"]
        lines += [f"add rule {where} {rule_line(r)}" for r in rules]
        return lines, tuple(_listed(r) for r in rules)
    by_id = {r.rule_id: r for r in kept}
    anchor: ListedRule | None = tail[0] if tail else None  # the next kept rule
    ahead: list[str] = []
    replaced: list[str] = []
    ordered = [(r, i) for r, i in zip(rules, wanted_ids, strict=True) if i not in free]
    for rule, rule_id in reversed(ordered):  # backwards: each new rule knows its successor
        old = by_id.get(rule_id)
        if old is not None:
            if old.digest != rule.get("hash") and "{" in rule.body:
                # libnftables 1.0.6 aborts the process on `replace rule` with an anonymous
                # interval set ("BUG: unhandled op 2"): the new rule goes in before the old
                # one, which is deleted after every insert that names it as their position.
                ahead.append(f"insert rule {where} position {old.handle} {rule_line(rule)}")
                replaced.append(f"delete rule {where} handle {old.handle}")
            elif old.digest != rule.get("hash"):
                ahead.append(f"replace rule {where} handle {old.handle} {rule_line(rule)}")
            anchor = old
        elif anchor is None:
            ahead.append(f"add rule {where} {rule_line(rule)}")
        else:
            ahead.append(f"insert rule {where} position {anchor.handle} {rule_line(rule)}")
    order = [_listed(r, by_id[i].handle if i in by_id else 0) for r, i in ordered]
    # The tail: unchanged rules stay where they are; changed and new ones go at the end.
    moved: list[str] = []
    appended: list[str] = []
    hashes = {i: r.get("hash") for r, i in zip(rules, wanted_ids, strict=True)}
    order += [r for r in tail if r.digest == hashes[r.rule_id]]
    for rule, rule_id in zip(rules, wanted_ids, strict=True):
        old = by_id.get(rule_id)
        if rule_id not in free or (old is not None and old.digest == hashes[rule_id]):
            continue
        if old is not None:
            moved.append(f"delete rule {where} handle {old.handle}")
        appended.append(f"add rule {where} {rule_line(rule)}")
        order.append(_listed(rule))
    # Appends and inserts before one anchor must run in the desired order.
    return lines + ahead[::-1] + replaced + moved + appended, tuple(order)
