"""The firewall part of the desired State (pure): weaved's nftables tables, chains and rules
(isolation, forwarding, masquerading, services) and the iptables compatibility rules."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from weaved.compile.facts import Facts
from weaved.model.resources import BRIDGE, NFT_TABLE, Kind, Resource, attrs
from weaved.spec.models import BindRule, ExportRule, ImportRule, RouteRule, Spec

MULTICAST = "224.0.0.0/4"


@dataclass(frozen=True)
class NftChainDef:
    family: str
    name: str
    type: str
    hook: str
    priority: int
    policy: str = "accept"


# Chains in the order they are created; priorities are the standard named ones.
CHAINS = (
    NftChainDef("ip", "forward", "filter", "forward", 0),
    NftChainDef("ip", "prerouting", "nat", "prerouting", -100),
    NftChainDef("ip", "output", "nat", "output", -100),
    NftChainDef("ip", "postrouting", "nat", "postrouting", 100),
    NftChainDef("bridge", "forward", "filter", "forward", 0),
)


def rule_key(family: str, chain: str, rule_id: str) -> str:
    # Rule ids end up in keys and nft comments, where "/" would be ambiguous.
    return f"nft/{family}/{NFT_TABLE}/{chain}/{rule_id.replace('/', '_')}"


def rule_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:10]


def rule(family: str, chain: str, rule_id: str, body: str, note: str = "") -> Resource:
    """An nft rule; its order is its place in the desired state (the table is rebuilt whole).

    The hash of the body travels in the rule's comment, so a restarted weaved can tell an
    unchanged rule from a hand-edited one without parsing the kernel's canonical form."""
    return Resource(
        rule_key(family, chain, rule_id),
        Kind.NFT_RULE,
        attrs(chain=f"{family} {chain}", hash=rule_hash(body)),
        note,
        body,
    )


def _subnets(
    spec: Spec, addresses: list[ipaddress.IPv4Interface], facts: Facts
) -> list[ipaddress.IPv4Network]:
    """Subnets that are isolated from each other on the bridge."""
    ipalloc_range = ipaddress.IPv4Network(spec.ipalloc.range)
    nets = {ipaddress.IPv4Network(spec.ipalloc.default_subnet or spec.ipalloc.range)}
    for entry in spec.expose:
        if entry.cidr.startswith("net:") and entry.cidr != "net:default":
            nets.add(ipaddress.IPv4Network(entry.cidr[4:]))
    nets.update(a.network for a in addresses if a.network.subnet_of(ipalloc_range))
    nets.update(facts.container_subnets)
    # A subnet that contains another is not isolated from it (the default subnet may be the range).
    return sorted(n for n in nets if not any(n != m and m.subnet_of(n) for m in nets))


def nft_resources(
    spec: Spec, facts: Facts, addresses: list[ipaddress.IPv4Interface]
) -> Iterator[Resource]:
    yield Resource(f"nft/ip/{NFT_TABLE}", Kind.NFT_TABLE, attrs(family="ip"))
    yield Resource(f"nft/bridge/{NFT_TABLE}", Kind.NFT_TABLE, attrs(family="bridge"))
    for c in CHAINS:
        yield Resource(
            f"nft/{c.family}/{NFT_TABLE}/{c.name}",
            Kind.NFT_CHAIN,
            attrs(type=c.type, hook=c.hook, priority=c.priority, policy=c.policy),
        )
    ipalloc_range = ipaddress.IPv4Network(spec.ipalloc.range)
    subnets = _subnets(spec, addresses, facts)
    if len(subnets) > 1:
        for net in subnets:
            body = f"ip saddr {net} ip daddr != {net} ip daddr {ipalloc_range} drop"
            yield rule("bridge", "forward", f"isolate-{net}", body, "isolation between subnets")
            yield rule(
                "ip",
                "forward",
                f"isolate-{net}",
                f'iifname "{BRIDGE}" oifname "{BRIDGE}" {body}',
                "isolation between subnets",
            )
    yield rule(
        "ip", "forward", "bridge-out", f'iifname "{BRIDGE}" accept', "forwarding from the bridge"
    )
    yield rule(
        "ip", "forward", "bridge-in", f'oifname "{BRIDGE}" accept', "forwarding to the bridge"
    )

    exposed_nets = sorted({a.network for a in addresses})
    if exposed_nets:
        yield rule(
            "ip",
            "postrouting",
            "multicast",
            f"ip daddr {MULTICAST} return",
            "multicast is never NATed",
        )
    for net in exposed_nets:
        yield rule(
            "ip",
            "postrouting",
            f"masq-{net}",
            f'ip saddr {net} ip daddr != {net} oifname != "{BRIDGE}" masquerade',
            f"masquerade traffic from exposed {net} leaving the host",
        )

    svc = spec.services
    inbound: list[tuple[str, ExportRule | RouteRule]] = [
        *(("export", r) for r in svc.export),
        *(("route", r) for r in svc.route),
    ]
    for kind, ex in inbound:
        to_ip, to_port = ex.to.rsplit(":", 1)
        iif = f'iifname "{ex.in_interface}" ' if ex.in_interface else ""
        match = f"{ex.protocol.value} dport {ex.port}"
        note = f"services.{kind} {ex.name}"
        dnat = f"fib daddr type local {match} dnat to {ex.to}"
        yield rule("ip", "prerouting", f"{kind}-{ex.name}", iif + dnat, note)
        yield rule("ip", "output", f"{kind}-{ex.name}", dnat, note)
        snat = f'oifname "{BRIDGE}" ip daddr {to_ip} {ex.protocol.value} dport {to_port}'
        yield rule(
            "ip", "postrouting", f"{kind}-{ex.name}", f"{snat} ct status dnat masquerade", note
        )
    onward: list[tuple[str, ImportRule | BindRule]] = [
        *(("import", r) for r in svc.import_),
        *(("bind", r) for r in svc.bind),
    ]
    for kind, im in onward:
        ip, port = im.address.rsplit(":", 1)
        to_ip, to_port = im.to.rsplit(":", 1)
        proto = im.protocol.value
        note = f"services.{kind} {im.name}"
        yield rule(
            "ip",
            "prerouting",
            f"{kind}-{im.name}",
            f'iifname "{BRIDGE}" ip daddr {ip} {proto} dport {port} dnat to {im.to}',
            note,
        )
        yield rule(
            "ip",
            "postrouting",
            f"{kind}-{im.name}",
            f"ip daddr {to_ip} {proto} dport {to_port} ct status dnat masquerade",
            note,
        )


def firewall_compat(facts: Facts) -> Iterator[Resource]:
    """When another table drops forwarded packets by default, an accept in our own table cannot
    override it; these two rules in that FORWARD chain let weaved's table decide for the bridge."""
    if not facts.foreign_forward_drop:
        return
    for direction, flag in (("in", "-i"), ("out", "-o")):
        yield Resource(
            f"ipt/filter/FORWARD/{BRIDGE}-{direction}",
            Kind.IPT_RULE,
            attrs(table="filter", chain="FORWARD", match=f"{flag} {BRIDGE}", target="ACCEPT"),
            "another firewall drops forwarding by default (Docker)",
        )
