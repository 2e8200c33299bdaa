"""Bridge ports and kernel settings as plain data: what a port of `weave` must look like, what
netlink shows of one, and the sysctls weaved may own.

A port's flags are weaved's contract with the bridge: sleeve's TAP is *isolated* like
`vxlan-6784`, so the bridge never forwards between the two overlays (a frame that came over
one is never sent again over the other); container ports are not isolated (they must reach
each other and both overlays); no port is in hairpin mode (a frame never goes back out where
it came from); every port but the VXLAN one learns and floods (sleeve relies on learning the
MACs behind the TAP). The VXLAN port's own flags live on its `link/vxlan-6784` object.

A container's host-side veth has no IPv6 of its own (`ipv6: off`): a bridge port never uses its
own IP stack (its frames go to the bridge), and with a link-local address each port adds its
link-local and local routes to the host's IPv6 FIB, which the kernel walks under its rtnl lock
at every port that comes up (an attach's cost grew with the containers attached), and sends
MLD reports and DAD probes. A plug makes the port before it is up with addr_gen_mode none (by
netlink: no address is ever made; its disable_ipv6 sysctl spins on the rtnl lock while other
attaches hold it); a repair of a port found with IPv6 sets its disable_ipv6. Either counts as
off. Sleeve's TAP switches its IPv6 off itself (datapath/sleeve/tap.py); it is not planned here.
"""

from __future__ import annotations

from dataclasses import dataclass

from weaved.model.resources import BRIDGE, Kind, Resource, attrs

SLEEVE_TAP = "vethwe-tap"

# The sysctls weaved may change, and only when a feature needs them; the original value is
# persisted before the first change and restored when no feature needs it any more or on reset.
IP_FORWARD = "net.ipv4.ip_forward"
BRIDGE_ROUTE_LOCALNET = f"net.ipv4.conf.{BRIDGE}.route_localnet"
SYSCTLS = (IP_FORWARD, BRIDGE_ROUTE_LOCALNET)


@dataclass(frozen=True)
class PortFlags:
    isolated: bool
    hairpin: bool = False
    learning: bool = True
    flood: bool = True
    ipv6: bool | None = None  # the port's own IPv6; None: not weaved's to set


TAP_FLAGS = PortFlags(isolated=True)
CONTAINER_FLAGS = PortFlags(isolated=False, ipv6=False)


@dataclass(frozen=True)
class WantedPort:
    """A link some part owns (sleeve's TAP, a container's host-side veth) that must be a port
    of the bridge with `flags`; `note` says whose it is (shown by plan)."""

    name: str
    flags: PortFlags
    note: str = ""


@dataclass(frozen=True)
class PortRow:
    """A link as netlink shows it, with its bridge-port flags (None when it is no port)."""

    name: str
    master: str  # "" when it has none
    up: bool
    isolated: bool | None = None
    hairpin: bool | None = None
    learning: bool | None = None
    flood: bool | None = None
    ipv6: bool = False  # the link's own IPv6 is on (off too when the kernel has no IPv6)


def _on_off(value: bool | None) -> str | None:
    return None if value is None else ("on" if value else "off")


def port_key(name: str) -> str:
    return f"{Kind.PORT.value}/{name}"


def port_resource(want: WantedPort) -> Resource:
    f = want.flags
    return Resource(
        port_key(want.name),
        Kind.PORT,
        attrs(
            master=BRIDGE,
            state="up",
            isolated=_on_off(f.isolated),
            hairpin=_on_off(f.hairpin),
            learning=_on_off(f.learning),
            flood=_on_off(f.flood),
            ipv6=_on_off(f.ipv6),
        ),
        want.note,
    )


def observed_port(row: PortRow, note: str = "", *, ipv6: bool = False) -> Resource:
    """The port as the kernel has it; its IPv6 setting shown when it is wanted (`ipv6`)."""
    return Resource(
        port_key(row.name),
        Kind.PORT,
        attrs(
            master=row.master or "none",
            state="up" if row.up else "down",
            isolated=_on_off(row.isolated),
            hairpin=_on_off(row.hairpin),
            learning=_on_off(row.learning),
            flood=_on_off(row.flood),
            ipv6=_on_off(row.ipv6) if ipv6 else None,
        ),
        note,
    )


def sysctl_key(name: str) -> str:
    return f"{Kind.SYSCTL.value}/{name}"


def sysctl_resource(name: str, value: str, note: str = "") -> Resource:
    return Resource(sysctl_key(name), Kind.SYSCTL, attrs(value=value), note)
