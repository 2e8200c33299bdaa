"""What compile needs to know beyond the spec: facts from the host, the mesh and IPAM."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from weaved.model.host import PortRow, WantedPort


@dataclass(frozen=True)
class HostRoute:
    """A route on the host that weaved did not create (for the range overlap check)."""

    dst: ipaddress.IPv4Network
    dev: str
    text: str


@dataclass(frozen=True)
class ContainerPort:
    """An attached container's host-side veth and the addresses it was given (anti-spoofing,
    DNS replies)."""

    veth: str
    addresses: tuple[ipaddress.IPv4Address, ...] = ()


@dataclass(frozen=True)
class Facts:
    peer_name: str = "02:00:00:00:00:01"  # the bridge MAC is the peer name (Weave's convention)
    # expose index → allocated ADDR/LEN for `net:` entries (from IPAM); absent = not allocated yet
    expose_allocations: Mapping[int, str] = field(default_factory=dict)
    host_routes: tuple[HostRoute, ...] = ()
    # Another table's FORWARD chain drops by default (Docker sets iptables' FORWARD policy to DROP)
    foreign_forward_drop: bool = False
    # Extra subnets in use by attached containers (for isolation), from the data plane
    container_subnets: tuple[ipaddress.IPv4Network, ...] = ()
    # Links the daemon's parts own that must be ports of the bridge (sleeve's TAP, containers)
    wanted_ports: tuple[WantedPort, ...] = ()
    # Those links as they are now (absent: the link does not exist)
    port_rows: Mapping[str, PortRow] = field(default_factory=dict)
    # A link named like the bridge that weaved cannot prove to be its own: "" if none
    foreign_bridge: str = ""
    # Containers attached on this host (from the attachment records), one entry per veth
    container_ports: tuple[ContainerPort, ...] = ()
    # Ports no record names whose link exists (a `weaved attach` made with no daemon running,
    # or every container while the daemon is stopped), with the anti-spoofing elements the set
    # already has for them: kept as found, as such a port itself is left alone
    unrecorded_ports: tuple[ContainerPort, ...] = ()
