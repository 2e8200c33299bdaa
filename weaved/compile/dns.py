"""weaveDNS's kernel objects (pure): the link address on the bridge and the routes back.

Every attached container reaches weaveDNS at one well-known link-local address
(`DNS_LINK_ADDRESS`), through an on-link route in the container set at attach: whatever its
subnet, and whether or not the host exposes anything. The address sits on every host's bridge;
the bridge rules in compile/firewall.py keep its traffic between a host and its own
containers. The host answers a container through a /32 route to it (protocol 87, source the
link address); containers in an exposed subnet need none, their subnet's route is there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from weaved.compile.facts import Facts
from weaved.model.resources import ADDR_LABEL, BRIDGE, RTPROT_WEAVED, Kind, Resource, attrs
from weaved.spec.models import DNS_LINK_ADDRESS, Spec


def uses_link_address(spec: Spec) -> bool:
    """Containers are sent to the link address unless `dns.listen` names another one."""
    if not spec.dns.enabled:
        return False
    if not spec.dns.listen:
        return True
    host = spec.dns.listen.rsplit(":", 1)[0]
    return ipaddress.IPv4Address(host).is_unspecified or host == DNS_LINK_ADDRESS


def dns_resources(
    spec: Spec, facts: Facts, addresses: list[ipaddress.IPv4Interface]
) -> Iterator[Resource]:
    if not uses_link_address(spec):
        return
    link = ipaddress.IPv4Address(DNS_LINK_ADDRESS)
    yield Resource(f"addr/{BRIDGE}/{link}/32", Kind.ADDR, attrs(label=ADDR_LABEL), "weaveDNS")
    routed = [a.network for a in addresses]
    wanted = {
        ip
        for port in facts.container_ports
        for ip in port.addresses
        if not any(ip in net for net in routed)
    }
    for ip in sorted(wanted):
        yield Resource(
            f"route/{ip}/32",
            Kind.ROUTE,
            attrs(dev=BRIDGE, src=link, scope="link", proto=RTPROT_WEAVED),
            "weaveDNS answers this container",
        )
