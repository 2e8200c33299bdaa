"""Anti-spoofing (pure): each container port sends only from the addresses it was given.

The rules match every container port of weaved's bridge by name prefix (`vethwepl*`: attach
and CNI; `vethwl*`: the Docker plugin) and drop IPv4 and ARP whose (input port . source
address) is not an element of the named set `ports` in weaved's bridge table. So a port
nobody has told the set about sends nothing (fail closed): the plug adds a port's elements
before it brings the port up, the unplug removes them after the port is gone, and the rule
text never depends on which containers are attached (an attach changes no rule).

The set and its elements are owned like the rest: compiled here from the parts' records
(facts), observed, planned, repaired on drift. An element is keyed by port and address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from weaved.compile.facts import ContainerPort
from weaved.compile.firewall import CONTAINER_PORTS, PLUGIN_PORTS, quote_ifname, rule
from weaved.model.resources import NFT_TABLE, Kind, Resource, State, attrs

SET_FAMILY = "bridge"
SET_NAME = "ports"
SET_TYPE = "ifname . ipv4_addr"
SET_KEY = f"nftset/{SET_FAMILY}/{NFT_TABLE}/{SET_NAME}"
NOTE = "containers send only from their own addresses"

Pair = tuple[str, ipaddress.IPv4Address]


def element_key(veth: str, ip: ipaddress.IPv4Address) -> str:
    return f"{SET_KEY}/{veth}/{ip}"


def element_of(key: str) -> Pair:
    """The (port, address) an element key names (inverse of element_key)."""
    veth, ip = key[len(SET_KEY) + 1 :].split("/")
    return veth, ipaddress.IPv4Address(ip)


def set_resource() -> Resource:
    return Resource(SET_KEY, Kind.NFT_SET, attrs(family=SET_FAMILY, type=SET_TYPE))


def element_resource(veth: str, ip: ipaddress.IPv4Address, note: str = "") -> Resource:
    return Resource(element_key(veth, ip), Kind.NFT_ELEMENT, attrs(set=SET_NAME), note)


def pairs_of(veth: str, addresses: Iterable[ipaddress.IPv4Address]) -> list[Pair]:
    return sorted({(veth, ip) for ip in addresses})


def element_text(pairs: Iterable[Pair]) -> str:
    """Elements as nft writes them: `{ "vethwepl12" . 10.32.0.5, … }` (names are checked like
    every interface name in a rule; addresses are ipaddress objects)."""
    return "{ " + ", ".join(f"{quote_ifname(v)} . {ip}" for v, ip in sorted(set(pairs))) + " }"


def unrecorded_ports(
    observed: State, links: Iterable[str], recorded: Iterable[str]
) -> tuple[ContainerPort, ...]:
    """The set's elements (as `observed`) of ports whose link exists (`links`) but that no
    record names. Whoever added them was root (a `weaved attach` with no daemon running, or
    this daemon before it stopped): they are left as found, like the port itself, so the
    container keeps sending. Elements of ports that no longer exist are not kept."""
    present, named = set(links), set(recorded)
    found: dict[str, list[ipaddress.IPv4Address]] = {}
    for element in observed.by_kind(Kind.NFT_ELEMENT):
        veth, ip = element_of(element.key)
        if veth in present and veth not in named:
            found.setdefault(veth, []).append(ip)
    return tuple(ContainerPort(v, tuple(sorted(ips))) for v, ips in sorted(found.items()))


def antispoof_resources(
    ports: Iterable[ContainerPort], unrecorded: Iterable[ContainerPort] = ()
) -> Iterator[Resource]:
    """The set, one element per (port, address) the parts recorded or found on a port no
    record names (`unrecorded_ports`), and the rules."""
    yield set_resource()
    for p in sorted(ports, key=lambda p: p.veth):
        for veth, ip in pairs_of(p.veth, p.addresses):
            yield element_resource(veth, ip, f"{veth} sends from {ip}")
    for p in unrecorded:
        for veth, ip in pairs_of(p.veth, p.addresses):
            yield element_resource(veth, ip, f"{veth} sends from {ip} (no record: kept as found)")
    for prefix, suffix in ((CONTAINER_PORTS, ""), (PLUGIN_PORTS, "-plugin")):
        iif = f"iifname {quote_ifname(prefix)}"
        own = f"@{SET_NAME}"
        body = f"{iif} iifname . ip saddr != {own} drop"
        yield rule("bridge", "prerouting", f"spoof-ip{suffix}", body, NOTE)
        yield rule(
            "bridge",
            "prerouting",
            f"spoof-arp{suffix}",
            f"{iif} arp saddr ip != 0.0.0.0 iifname . arp saddr ip != {own} drop",
            NOTE,
        )
    yield rule(
        "bridge",
        "prerouting",
        "vlan",
        f"iifname {quote_ifname(CONTAINER_PORTS)} ether type {{ 8021q, 8021ad }} drop",
        "containers send no VLAN-tagged frames (a way around the address checks)",
    )
