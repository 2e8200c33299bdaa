"""weaved's nftables tables through libnftables (Debian's python3-nftables binding).

Only the tables named `weaved` (families ip and bridge) are ever read or written. A change is
one transaction, committed by the kernel all or nothing: the rules that differ, by handle, when
the tables are otherwise as last listed (`nft_delta`), else the tables rebuilt whole.

Reading is cached by the ruleset's generation: the kernel counts every committed nftables
transaction in the namespace (anyone's: `nft add rule` by hand too), so while that number stays
the same the tables are what they were at the last listing, and a no-op plan costs one small
netlink request instead of listing (and parsing) thousands of rules.
"""

from __future__ import annotations

import logging
import socket
import struct

from weaved.dataplane import rtnl
from weaved.dataplane.nft_delta import (
    ListedRule,
    Listing,
    delta_script,
    listed_resource,
    parse_listing,
    rule_line,
)
from weaved.dataplane.nftlib import load_binding
from weaved.dataplane.nftnotify import CommitNotes
from weaved.dataplane.nftsets import render_sets
from weaved.errors import ApplyError
from weaved.model.resources import NFT_TABLE, Kind, Resource, State

log = logging.getLogger(__name__)
FAMILIES = ("ip", "bridge")


def render_script(desired: State) -> str:
    """The transaction that rebuilds the kernel's weaved tables whole as `desired`."""
    lines: list[str] = []
    tables = {r.get("family") for r in desired.by_kind(Kind.NFT_TABLE)}
    for family in FAMILIES:
        # `table` then `delete table` succeeds whether or not it existed.
        lines += [f"table {family} {NFT_TABLE}", f"delete table {family} {NFT_TABLE}"]
        if family not in tables:
            continue
        lines.append(f"table {family} {NFT_TABLE} {{")
        lines += render_sets(desired, family)  # before the rules that name them
        for chain in desired.by_kind(Kind.NFT_CHAIN):
            fam, _, name = chain.key.split("/")[1:4]
            if fam != family:
                continue
            lines.append(f"  chain {name} {{")
            lines.append(
                f"    type {chain.get('type')} hook {chain.get('hook')}"
                f" priority {chain.get('priority')};"
                f" policy {chain.get('policy')};"
            )
            for rule in desired.by_kind(Kind.NFT_RULE):
                if rule.get("chain") == f"{family} {name}":
                    lines.append(f"    {rule_line(rule)}")
            lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"


NETLINK_NETFILTER = 12
NFT_MSG_GETGEN = (10 << 8) | 16  # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN
NFT_MSG_NEWGEN = (10 << 8) | 15
NFTA_GEN_ID = 1


def ruleset_generation() -> int | None:
    """The namespace's nftables generation (bumped by every committed transaction); None when
    it cannot be read (then nothing is cached)."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
            sock.settimeout(2.0)
            sock.bind((0, 0))
            body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)  # nfgenmsg
            header = rtnl.HEADER.pack(rtnl.HEADER.size + len(body), NFT_MSG_GETGEN, 1, 1, 0)
            sock.send(header + body)
            data = sock.recv(4096)
    except OSError:
        return None
    if len(data) < rtnl.HEADER.size + 4:
        return None
    length, kind, _flags, _seq, _pid = rtnl.HEADER.unpack_from(data)
    if kind != NFT_MSG_NEWGEN:
        return None
    for attr, start, stop in rtnl.attrs(data, rtnl.HEADER.size + 4, min(len(data), length)):
        if attr == NFTA_GEN_ID and stop - start >= 4:
            return int(struct.unpack_from("!I", data, start)[0])
    return None


class Nft:
    def __init__(self) -> None:
        self.nft = load_binding()
        self.nft.set_handle_output(True)  # listings show each rule's handle
        self.writes = 0
        self.rebuilds = 0  # transactions that rewrote the tables whole
        self._listed: tuple[int, Listing] | None = None  # (generation, what was listed)

    def observe(self) -> list[Resource]:
        return list(self._listing().resources)

    def _listing(self) -> Listing:
        generation = ruleset_generation()  # before listing: a change meanwhile bumps it again
        if generation is not None and self._listed is not None and self._listed[0] == generation:
            return self._listed[1]
        listing = self._list()
        self._listed = None if generation is None else (generation, listing)
        return listing

    def _list(self) -> Listing:
        resources: list[Resource] = []
        chains: dict[tuple[str, str], tuple[ListedRule, ...]] = {}
        others = False
        for family in FAMILIES:
            rc, text, err = self.nft.cmd(f"list table {family} {NFT_TABLE}")
            if rc != 0:
                if "No such file or directory" in err:
                    continue
                raise ApplyError(f"nft list table {family} {NFT_TABLE}: {err.strip()}")
            listing = parse_listing(family, text)
            resources += listing.resources
            chains.update(listing.chains)
            others |= listing.others
        return Listing(tuple(resources), chains, others)

    def commit(self, desired: State) -> None:
        """Make weaved's tables equal to `desired` in one transaction: only the rules that
        differ when the tables are otherwise as listed (and nobody changed them since), or the
        tables rebuilt whole."""
        if self._commit_delta(desired):
            return
        rc, _, err = self.nft.cmd(render_script(desired))
        if rc != 0:
            raise ApplyError(f"nftables transaction refused, nothing was changed: {err.strip()}")
        self.writes += 1
        self.rebuilds += 1

    def _commit_delta(self, desired: State) -> bool:
        """The rules that differ, replaced/inserted/deleted by handle; False when only a
        rebuild can do it (nothing was changed then). The kernel's notifications of the
        transaction name the new rules' handles and the generation it made, so the listing
        stays known without listing again when no one else committed in between."""
        listing = self._listing()  # as planned, or listed afresh when someone committed since
        before = None if self._listed is None else self._listed[0]  # None: not readable
        delta = delta_script(desired, listing)
        if delta is None:
            return False
        script, after = delta
        if not script:
            return True
        with CommitNotes() as notes:  # not libnftables' echo: it fetches every rule first
            rc, _, err = self.nft.cmd(script)
            handles, generation = notes.read()
        if rc != 0:  # e.g. a rule deleted by hand meanwhile: the rebuild is always right
            log.debug("nft delta refused, rebuilding error=%s", err.strip())
            return False
        self.writes += 1
        self._listed = None
        if generation is None:
            generation = ruleset_generation()
        if before is None or generation != before + 1:
            return True  # someone else committed too: the next observe lists again
        chains = dict(listing.chains)
        for key, rules in after.items():
            # A rule written now is known from the kernel's notice of it, not from our script.
            same = {(r.rule_id, r.digest) for r in chains.get(key, ())}
            chains[key] = tuple(
                r
                if r.handle and (r.rule_id, r.digest) in same  # kept as it was
                else ListedRule(r.rule_id, r.digest, handles.get((key, _comment(r)), 0))
                for r in rules
            )
            if any(r.handle == 0 for r in chains[key]):
                return True  # not notified as written: list again
        # The changed chains' rules in their new order; only the rules that changed are made
        # again (a table holds thousands of rules).
        touched = tuple(f"nft/{family}/{NFT_TABLE}/{chain}/" for family, chain in after)
        resources: list[Resource] = []
        old: dict[str, Resource] = {}
        for r in listing.resources:
            if r.kind is Kind.NFT_RULE and r.key.startswith(touched):
                old[r.key] = r
            else:
                resources.append(r)
        for (family, chain), rules in ((k, chains[k]) for k in after):
            for rule in rules:
                was = old.get(f"nft/{family}/{NFT_TABLE}/{chain}/{rule.rule_id}")
                if was is None or was.get("hash") != rule.digest:
                    was = listed_resource(family, chain, rule)
                resources.append(was)
        self._listed = (generation, Listing(tuple(resources), chains, listing.others))
        return True


def _comment(rule: ListedRule) -> str:
    return f"{rule.rule_id}:{rule.digest}"
