"""Spec + facts → the desired State (pure)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from weaved.compile.antispoof import antispoof_resources
from weaved.compile.dns import dns_resources
from weaved.compile.facts import Facts
from weaved.compile.firewall import firewall_compat, nft_resources
from weaved.compile.host import check_bridge_is_ours, port_resources, sysctl_resources
from weaved.compile.services import service_resources
from weaved.errors import ConflictError
from weaved.model.addresses import ipv4_interface
from weaved.model.resources import (
    ADDR_LABEL,
    ALIAS,
    BRIDGE,
    RTPROT_WEAVED,
    Kind,
    Resource,
    State,
    attrs,
)
from weaved.spec.models import Spec


@dataclass(frozen=True)
class Deferred:
    """Something the spec asks for that cannot be built yet, and why (shown by plan)."""

    what: str
    reason: str


@dataclass(frozen=True)
class Compiled:
    state: State
    deferred: tuple[Deferred, ...] = ()


def exposed_networks(
    spec: Spec, facts: Facts
) -> tuple[list[ipaddress.IPv4Interface], list[Deferred]]:
    addresses: list[ipaddress.IPv4Interface] = []
    deferred: list[Deferred] = []
    for index, entry in enumerate(spec.expose):
        if entry.cidr.startswith("net:"):
            allocated = facts.expose_allocations.get(index)
            if allocated is None:
                deferred.append(
                    Deferred(f"expose[{index}] {entry.cidr}", "waiting for an IPAM allocation")
                )
                continue
            addresses.append(ipv4_interface(allocated))
        else:
            addresses.append(ipv4_interface(entry.cidr))
    return addresses, deferred


def check_range_overlap(spec: Spec, facts: Facts) -> None:
    """Weave refuses a range that overlaps a route it does not own; so do we, naming the route."""
    ipalloc_range = ipaddress.IPv4Network(spec.ipalloc.range)
    for route in facts.host_routes:
        if route.dev == BRIDGE or route.dst.prefixlen == 0:
            continue
        if route.dst.overlaps(ipalloc_range):
            raise ConflictError(
                f"ipalloc.range {ipalloc_range} overlaps the host route '{route.text}'\n"
                "  hint: choose a range that no route on this host covers, or remove that route"
            )


def _bridge(spec: Spec, facts: Facts) -> Resource:
    return Resource(
        f"link/{BRIDGE}",
        Kind.LINK,
        attrs(
            type="bridge",
            mtu=spec.mtu,
            alias=ALIAS,
            mac=facts.peer_name,
            state="up",
            ipv6_autoconf="off",
            # Removing the first address of a subnet must not take the others with it.
            promote_secondaries="on",
        ),
    )


def _addresses(addresses: list[ipaddress.IPv4Interface]) -> Iterator[Resource]:
    routed: set[ipaddress.IPv4Network] = set()
    for iface in addresses:
        address, route = _address_and_route(iface)
        yield address
        if iface.network in routed:
            continue  # one route per subnet, sourced from its first exposed address
        routed.add(iface.network)
        yield route


@functools.lru_cache(maxsize=8192)  # pure; an edit compiles the same addresses again
def _address_and_route(iface: ipaddress.IPv4Interface) -> tuple[Resource, Resource]:
    address = Resource(f"addr/{BRIDGE}/{iface.with_prefixlen}", Kind.ADDR, attrs(label=ADDR_LABEL))
    # Addresses go on without a prefix route; weaved owns the route (protocol 87) instead, so
    # the route is an object of its own that drift detection can see.
    route = Resource(
        f"route/{iface.network}",
        Kind.ROUTE,
        attrs(dev=BRIDGE, src=iface.ip, scope="link", proto=RTPROT_WEAVED),
    )
    return address, route


def compile_spec(spec: Spec, facts: Facts) -> Compiled:
    """The desired host state for `spec`; raises ConflictError for host conflicts."""
    check_bridge_is_ours(facts)
    check_range_overlap(spec, facts)
    addresses, deferred = exposed_networks(spec, facts)
    ports, missing = port_resources(facts)
    deferred += [Deferred(what, why) for what, why in missing]
    resources = [
        _bridge(spec, facts),
        *ports,
        *_addresses(addresses),
        *sysctl_resources(spec),  # before the firewall: its guard rule leads its chain
        *dns_resources(spec, facts, addresses),
        *nft_resources(spec, facts, addresses),
        *service_resources(spec),  # last in their chains
        *antispoof_resources(facts.container_ports, facts.unrecorded_ports),
        *firewall_compat(facts),
    ]
    return Compiled(State.of(resources), tuple(deferred))
