"""weaved's nftables tables through libnftables (Debian's python3-nftables binding).

Only the tables named `weaved` (families ip and bridge) are ever read or written. A change is
one transaction that rebuilds the tables whole: the kernel commits all of it or none of it.
"""

from __future__ import annotations

import json
from typing import Any

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


class Nft:
    def __init__(self) -> None:
        self.nft = _load_binding()
        self.nft.set_json_output(True)
        self.writes = 0

    def _list(self, family: str) -> list[dict[str, Any]]:
        rc, out, err = self.nft.cmd(f"list table {family} {NFT_TABLE}")
        if rc != 0:
            if "No such file or directory" in err:
                return []
            raise ApplyError(f"nft list table {family} {NFT_TABLE}: {err.strip()}")
        items: list[dict[str, Any]] = json.loads(out)["nftables"]
        return items

    def observe(self) -> list[Resource]:
        out: list[Resource] = []
        for family in FAMILIES:
            for item in self._list(family):
                if "table" in item:
                    out.append(
                        Resource(f"nft/{family}/{NFT_TABLE}", Kind.NFT_TABLE, attrs(family=family))
                    )
                elif "chain" in item:
                    c = item["chain"]
                    if "hook" not in c:
                        continue
                    out.append(
                        Resource(
                            f"nft/{family}/{NFT_TABLE}/{c['name']}",
                            Kind.NFT_CHAIN,
                            attrs(
                                type=c["type"],
                                hook=c["hook"],
                                priority=c["prio"],
                                policy=c["policy"],
                            ),
                        )
                    )
                elif "rule" in item:
                    r = item["rule"]
                    comment = r.get("comment", "")
                    if not comment.startswith(COMMENT_PREFIX):
                        continue  # not written by weaved; the table is rebuilt without it
                    rule_id, _, digest = comment[len(COMMENT_PREFIX) :].rpartition(":")
                    out.append(
                        Resource(
                            f"nft/{family}/{NFT_TABLE}/{r['chain']}/{rule_id}",
                            Kind.NFT_RULE,
                            attrs(chain=f"{family} {r['chain']}", hash=digest),
                        )
                    )
        return out

    def commit(self, desired: State) -> None:
        script = render_script(desired)
        rc, _, err = self.nft.cmd(script)
        if rc != 0:
            raise ApplyError(f"nftables transaction refused, nothing was changed: {err.strip()}")
        self.writes += 1
