"""weaved's nftables tables through libnftables (Debian's python3-nftables binding).

Only the tables named `weaved` (families ip and bridge) are ever read or written. A change is
one transaction that rebuilds the tables whole: the kernel commits all of it or none of it.

Reading is cached by the ruleset's generation: the kernel counts every committed nftables
transaction in the namespace (anyone's: `nft add rule` by hand too), so while that number stays
the same the tables are what they were at the last listing, and a no-op plan costs one small
netlink request instead of listing (and parsing) thousands of rules.
"""

from __future__ import annotations

import re
import socket
import struct
from typing import Any

from weaved.dataplane import rtnl
from weaved.errors import ApplyError, DependencyError
from weaved.model.resources import NFT_TABLE, Kind, Resource, State, attrs

COMMENT_PREFIX = "wd:"
FAMILIES = ("ip", "bridge")


def _load_binding() -> Any:
    try:
        import nftables
    except ImportError as exc:
        raise DependencyError(
            "cannot import the libnftables binding 'nftables'\n"
            "  hint: apt-get install python3-nftables (bootstrap.sh links it into the venv)"
        ) from exc
    return nftables.Nftables()


def rule_comment(resource: Resource) -> str:
    rule_id = resource.key.rsplit("/", 1)[1]
    return f"{COMMENT_PREFIX}{rule_id}:{resource.get('hash')}"


def render_script(desired: State) -> str:
    """The transaction that makes the kernel's weaved tables equal to `desired`."""
    lines: list[str] = []
    tables = {r.get("family") for r in desired.by_kind(Kind.NFT_TABLE)}
    for family in FAMILIES:
        # `table` then `delete table` succeeds whether or not it existed.
        lines += [f"table {family} {NFT_TABLE}", f"delete table {family} {NFT_TABLE}"]
        if family not in tables:
            continue
        lines.append(f"table {family} {NFT_TABLE} {{")
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
                    lines.append(f'    {rule.body} comment "{rule_comment(rule)}"')
            lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"


# `nft list` prints standard priorities by name; these are their numbers per family.
NAMED_PRIORITIES = {
    "ip": {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100},
    "bridge": {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300},
}
_CHAIN = re.compile(r"^\tchain (\S+) \{$")
_HOOK = re.compile(r"^\t\ttype (\S+) hook (\S+) priority ([^;]+); policy (\S+);$")
_COMMENT = re.compile(r' comment "wd:([^"]*)"$')


def parse_listing(family: str, text: str) -> list[Resource]:
    """weaved's objects from `nft list table` text output.

    The text form is parsed rather than JSON because libnftables produces it about three times
    faster, and only the chain headers and rule comments matter here."""
    out = [Resource(f"nft/{family}/{NFT_TABLE}", Kind.NFT_TABLE, attrs(family=family))]
    chain = ""
    for line in text.splitlines():
        if m := _CHAIN.match(line):
            chain = m.group(1)
        elif (m := _HOOK.match(line)) and chain:
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
        elif (m := _COMMENT.search(line)) and chain:
            rule_id, _, digest = m.group(1).rpartition(":")
            out.append(
                Resource(
                    f"nft/{family}/{NFT_TABLE}/{chain}/{rule_id}",
                    Kind.NFT_RULE,
                    attrs(chain=f"{family} {chain}", hash=digest),
                )
            )
    return out


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
        self.nft = _load_binding()
        self.writes = 0
        self._listed: tuple[int, list[Resource]] | None = None  # (generation, what was listed)

    def observe(self) -> list[Resource]:
        generation = ruleset_generation()  # before listing: a change meanwhile bumps it again
        if generation is not None and self._listed is not None and self._listed[0] == generation:
            return list(self._listed[1])
        out = self._list()
        self._listed = None if generation is None else (generation, out)
        return list(out)

    def _list(self) -> list[Resource]:
        out: list[Resource] = []
        for family in FAMILIES:
            rc, text, err = self.nft.cmd(f"list table {family} {NFT_TABLE}")
            if rc != 0:
                if "No such file or directory" in err:
                    continue
                raise ApplyError(f"nft list table {family} {NFT_TABLE}: {err.strip()}")
            out += parse_listing(family, text)
        return out

    def commit(self, desired: State) -> None:
        script = render_script(desired)
        rc, _, err = self.nft.cmd(script)
        if rc != 0:
            raise ApplyError(f"nftables transaction refused, nothing was changed: {err.strip()}")
        self.writes += 1
