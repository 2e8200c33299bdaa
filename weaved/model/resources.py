"""Kernel objects as plain data: what the spec wants and what the kernel has, in one shape.

A Resource is identified by its key ("link/weave", "addr/weave/10.2.1.1/24", "nft/rule/…") and
described by a flat, sorted tuple of attribute strings, so planning is one generic diff and every
object renders the same way. Which attributes can change in place is a property of the kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

BRIDGE = "weave"
ALIAS = "weaved"
ADDR_LABEL = "weave:wd"  # IPv4 labels must start with the device name
RTPROT_WEAVED = 87
NFT_TABLE = "weaved"
NFT_FAMILY = "ip"
IPT_COMMENT = "weaved"


class Kind(StrEnum):
    LINK = "link"
    PORT = "port"  # a bridge port's master and flags (the link itself belongs to its part)
    ADDR = "addr"
    ROUTE = "route"
    FDB = "fdb"
    SYSCTL = "sysctl"
    NFT_TABLE = "nft-table"
    NFT_CHAIN = "nft-chain"
    NFT_RULE = "nft-rule"
    NFT_SET = "nft-set"  # a named set in weaved's table (compile/antispoof.py)
    NFT_ELEMENT = "nft-element"  # one element of such a set
    IPT_RULE = "ipt-rule"
    MESH_TARGET = "mesh-target"
    MESH = "mesh"  # the router's settings (mesh/part.py)


# Attributes that can be changed without deleting the object; anything else means replace.
UPDATABLE: Mapping[Kind, frozenset[str]] = {
    Kind.LINK: frozenset({"mtu", "alias", "mac", "state", "ipv6_autoconf", "promote_secondaries"}),
    Kind.PORT: frozenset({"master", "state", "isolated", "hairpin", "learning", "flood", "ipv6"}),
    Kind.SYSCTL: frozenset({"value"}),
    Kind.FDB: frozenset({"sticky"}),  # a bridge entry's flag, set by replacing it in place
    Kind.NFT_CHAIN: frozenset({"policy"}),
    Kind.NFT_RULE: frozenset(),
    Kind.MESH: frozenset(
        {"name", "nickname", "listen", "port", "password", "trusted_subnets", "conn_limit"}
        | {"discovery", "overlays", "peer_name_unique"}
    ),
}

Attrs = tuple[tuple[str, str], ...]


def attrs(**values: object) -> Attrs:
    return tuple(sorted((k, str(v)) for k, v in values.items() if v is not None))


@dataclass(frozen=True, order=True)
class Resource:
    key: str
    kind: Kind
    attrs: Attrs = ()
    # Shown in plans; never compared (e.g. which spec entry asked for it).
    note: str = field(default="", compare=False)
    # What the kernel is told (an nft rule's text); compared through a hash attribute instead,
    # because the kernel hands back its own canonical form.
    body: str = field(default="", compare=False)

    def get(self, name: str, default: str = "") -> str:
        for k, v in self.attrs:
            if k == name:
                return v
        return default


@dataclass(frozen=True)
class State:
    """A set of resources by key; desired and observed states have the same shape."""

    resources: Mapping[str, Resource] = field(default_factory=dict)

    @staticmethod
    def of(items: Iterable[Resource]) -> State:
        out: dict[str, Resource] = {}
        for r in items:
            out[r.key] = r
        return State(out)

    def __contains__(self, key: object) -> bool:
        return key in self.resources

    def __len__(self) -> int:
        return len(self.resources)

    def by_kinds(self, kinds: frozenset[Kind]) -> State:
        return State({k: r for k, r in self.resources.items() if r.kind in kinds})

    def by_kind(self, kind: Kind) -> list[Resource]:
        return [r for r in self.resources.values() if r.kind is kind]
