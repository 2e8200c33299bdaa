"""The firewall part of the desired State (pure): weaved's nftables tables, chains and rules
(isolation, what reaches the host, forwarding, masquerading, services) and the
iptables compatibility rules. Anti-spoofing is `antispoof.py`'s.

Rule text is assembled only from values that cannot change a rule's structure: ipaddress
objects, integers, fixed words, and interface names that pass `quote_ifname` (the spec
validates them the same way; this is the second lock). No other text reaches a rule.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from weaved.compile.facts import Facts
from weaved.model.resources import BRIDGE, NFT_TABLE, Kind, Resource, attrs
from weaved.spec.models import (
    DNS_LINK_ADDRESS,
    IFNAME_RE,
    Spec,
)

MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
CONTAINER_PORTS = "vethwepl*"  # every container's host-side veth (attach.model.VETH_PREFIX)
PLUGIN_PORTS = "vethwl*"  # the Docker plugin's host-side veths (docker.core.HOST_PREFIX)
_RULE_ID = re.compile(r"[A-Za-z0-9_.:-]+")
ANY_ORDER = "*"  # ends the hash of a rule whose place among its chain's last ones is free


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
    NftChainDef("ip", "input", "filter", "input", 0),
    NftChainDef("ip", "prerouting", "nat", "prerouting", -100),
    NftChainDef("ip", "output", "nat", "output", -100),
    NftChainDef("ip", "postrouting", "nat", "postrouting", 100),
    NftChainDef("bridge", "prerouting", "filter", "prerouting", -200),
    NftChainDef("bridge", "input", "filter", "input", -200),
    NftChainDef("bridge", "forward", "filter", "forward", 0),
    NftChainDef("bridge", "output", "filter", "output", -200),
)


def quote_ifname(name: str) -> str:
    """An interface name as a quoted nft string; anything that could be more than a name (a
    quote, a space, a brace) is refused, whatever the caller checked before."""
    if not IFNAME_RE.fullmatch(name) and name not in (CONTAINER_PORTS, PLUGIN_PORTS):
        raise ValueError(f"refusing {name!r} as an interface name in an nftables rule")
    return f'"{name}"'


def addr_set(items: Iterable[ipaddress.IPv4Address | ipaddress.IPv4Network]) -> str:
    values = sorted({str(i) for i in items})
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def network_order(net: ipaddress.IPv4Network) -> tuple[int, int]:
    """The order of `sorted(networks)`, without ipaddress's Python-level comparisons (sorting
    1 000 exposed subnets that way cost ~7 ms, three times per compile)."""
    return int(net.network_address), int(net.netmask)


def interface_order(iface: ipaddress.IPv4Interface) -> tuple[int, int, int]:
    return (*network_order(iface.network), int(iface.ip))


def rule_key(family: str, chain: str, rule_id: str) -> str:
    # Rule ids end up in keys and nft comments, where "/" would be ambiguous.
    return f"nft/{family}/{NFT_TABLE}/{chain}/{rule_id.replace('/', '_')}"


def rule_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:10]


@functools.lru_cache(maxsize=16384)  # pure; an edit compiles thousands of unchanged rules again
def rule(
    family: str, chain: str, rule_id: str, body: str, note: str = "", any_order: bool = False
) -> Resource:
    """An nft rule; its order is its place in the desired state (the table is rebuilt whole).

    The hash of the body travels in the rule's comment, so a restarted weaved can tell an
    unchanged rule from a hand-edited one without parsing the kernel's canonical form.
    `any_order`: no other rule of the chain matches what this one matches (nor decides
    otherwise), so its place among the chain's last such rules does not matter; the hash says
    so (ANY_ORDER), and an edit of it is a delete and an add at the end (dataplane/nft_delta)."""
    if not _RULE_ID.fullmatch(rule_id.replace("/", "_")):
        raise ValueError(f"refusing {rule_id!r} as an nftables rule id")
    digest = rule_hash(body) + (ANY_ORDER if any_order else "")
    return Resource(
        rule_key(family, chain, rule_id),
        Kind.NFT_RULE,
        attrs(chain=f"{family} {chain}", hash=digest),
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


def _isolation(
    spec: Spec, facts: Facts, addresses: list[ipaddress.IPv4Interface]
) -> Iterator[Resource]:
    ipalloc_range = ipaddress.IPv4Network(spec.ipalloc.range)
    subnets = _subnets(spec, addresses, facts)
    if len(subnets) < 2:
        return
    for net in subnets:
        body = f"ip saddr {net} ip daddr != {net} ip daddr {ipalloc_range} drop"
        yield rule("bridge", "forward", f"isolate-{net}", body, "isolation between subnets")
        yield rule(
            "ip",
            "forward",
            f"isolate-{net}",
            f"iifname {quote_ifname(BRIDGE)} oifname {quote_ifname(BRIDGE)} {body}",
            "isolation between subnets",
        )
    # Subnets are IPv4; IPv6 (every ethwe has a link-local address) would cross them all.
    yield rule(
        "bridge", "forward", "isolate-ipv6", "ether type ip6 drop", "isolation between subnets"
    )


def underlay_devices(facts: Facts) -> list[str]:
    """Devices of the host's default routes: where the underlay (other machines) comes from."""
    return sorted(
        {
            r.dev
            for r in facts.host_routes
            if r.dst.prefixlen == 0 and r.dev != BRIDGE and IFNAME_RE.fullmatch(r.dev)
        }
    )


def _forward(facts: Facts, addresses: list[ipaddress.IPv4Interface]) -> Iterator[Resource]:
    """Routed traffic into the bridge: replies and service DNAT always; new flows only into
    exposed subnets and never from another local bridge (Docker's docker0: a container with an
    interface there as well as on weave must not get around isolation through the host), nor
    new flows from the bridge to another local bridge."""
    br = quote_ifname(BRIDGE)
    note = "routed traffic into the bridge"
    underlay = underlay_devices(facts)
    # Nor the other way: a container starts nothing towards another bridge's containers (with
    # br_netfilter, frames bridged on weave itself pass here as weave → weave).
    others = ", ".join(map(quote_ifname, [BRIDGE, *underlay]))
    yield rule(
        "ip",
        "forward",
        "out-bridges",
        f'iifname {br} meta oifkind "bridge" oifname != {{ {others} }} ct state new drop',
        "no way around isolation through another local bridge (docker0)",
    )
    yield rule("ip", "forward", "bridge-out", f"iifname {br} accept", "forwarding from the bridge")
    yield rule(
        "ip", "forward", "in-replies", f"oifname {br} ct state established,related accept", note
    )
    yield rule("ip", "forward", "in-services", f"oifname {br} ct status dnat accept", note)
    unless = f" iifname != {{ {', '.join(map(quote_ifname, underlay))} }}" if underlay else ""
    yield rule(
        "ip",
        "forward",
        "in-bridges",
        f'oifname {br} meta iifkind "bridge"{unless} drop',
        "no way around isolation through another local bridge (docker0)",
    )
    exposed = sorted({a.network for a in addresses}, key=network_order)
    if exposed:
        yield rule(
            "ip", "forward", "in-exposed", f"oifname {br} ip daddr {addr_set(exposed)} accept", note
        )
    yield rule("ip", "forward", "in-other", f"oifname {br} drop", note)


def dns_server(spec: Spec) -> tuple[ipaddress.IPv4Address, int]:
    """Where weaveDNS listens: `dns.listen`, by default the link address on the bridge."""
    if spec.dns.listen:
        host, port = spec.dns.listen.rsplit(":", 1)
        return ipaddress.IPv4Address(host), int(port)
    return ipaddress.IPv4Address(DNS_LINK_ADDRESS), 53


def _input(spec: Spec, addresses: list[ipaddress.IPv4Interface]) -> Iterator[Resource]:
    """What containers may reach on their host: never the mesh ports; DNS; replies; service
    DNAT; the host's exposed address from its own subnet (Weave's `expose`). Nothing else."""
    br = quote_ifname(BRIDGE)
    note = "containers reach the host only where a feature needs it"
    yield rule("ip", "input", "mesh-tcp", f"iifname {br} tcp dport {spec.port} drop", note)
    yield rule(
        "ip",
        "input",
        "mesh-udp",
        f"iifname {br} udp dport {{ {spec.port}, {spec.port + 1} }} drop",
        note,
    )
    yield rule("ip", "input", "replies", f"iifname {br} ct state established,related accept", note)
    yield rule("ip", "input", "services", f"iifname {br} ct status dnat accept", note)
    if spec.dns.enabled:
        server, port = dns_server(spec)
        to = "" if server.is_unspecified else f" ip daddr {server}"
        yield rule(
            "ip",
            "input",
            "dns",
            f"iifname {br}{to} meta l4proto {{ tcp, udp }} th dport {port} accept",
            "weaveDNS",
        )
    for iface in sorted(set(addresses), key=interface_order):
        yield _exposed_rule(iface)
    yield rule("ip", "input", "other", f"iifname {br} drop", note)


@functools.lru_cache(maxsize=8192)  # ipaddress's str() is slow, and an edit keeps most of them
def _exposed_rule(iface: ipaddress.IPv4Interface) -> Resource:
    return rule(
        "ip",
        "input",
        f"exposed-{iface.ip}",
        f"iifname {quote_ifname(BRIDGE)} ip saddr {iface.network} ip daddr {iface.ip} accept",
        f"containers in {iface.network} reach the exposed {iface.ip}",
    )


@functools.lru_cache(maxsize=8192)
def _masquerade_rule(net: ipaddress.IPv4Network) -> Resource:
    return rule(
        "ip",
        "postrouting",
        f"masq-{net}",
        f"ip saddr {net} ip daddr != {net} oifname != {quote_ifname(BRIDGE)} masquerade",
        f"masquerade traffic from exposed {net} leaving the host",
    )


def _dns_locality(spec: Spec) -> Iterator[Resource]:
    """The DNS link address exists on every host's bridge: its traffic stays between this
    host and its own containers, never crossing the mesh to another host's bridge."""
    if not spec.dns.enabled:
        return
    dns = ipaddress.IPv4Address(DNS_LINK_ADDRESS)
    ports = quote_ifname(CONTAINER_PORTS)
    plugin = quote_ifname(PLUGIN_PORTS)
    note = f"DNS at {dns} is local to this host"
    for field in ("ip daddr", "arp daddr ip"):
        rid = field.replace(" ", "-")
        yield rule(
            "bridge",
            "input",
            f"dns-{rid}",
            f"iifname != {ports} iifname != {plugin} {field} {dns} drop",
            note,
        )
        yield rule("bridge", "forward", f"dns-{rid}", f"{field} {dns} drop", note)
    for field in ("ip saddr", "arp saddr ip"):
        rid = field.replace(" ", "-")
        yield rule("bridge", "forward", f"dns-{rid}", f"{field} {dns} drop", note)
        yield rule(
            "bridge",
            "output",
            f"dns-{rid}",
            f"oifname != {ports} oifname != {plugin} {field} {dns} drop",
            note,
        )


def _masquerade(addresses: list[ipaddress.IPv4Interface]) -> Iterator[Resource]:
    exposed_nets = sorted({a.network for a in addresses}, key=network_order)
    if exposed_nets:
        yield rule(
            "ip",
            "postrouting",
            "multicast",
            f"ip daddr {MULTICAST} return",
            "multicast is never NATed",
        )
    for net in exposed_nets:
        yield _masquerade_rule(net)


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
    yield from _isolation(spec, facts, addresses)
    yield from _forward(facts, addresses)
    yield from _input(spec, addresses)
    yield from _dns_locality(spec)
    yield from _masquerade(addresses)  # then compile/services.py's rules, last


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
