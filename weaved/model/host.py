"""Bridge ports and kernel settings as plain data: what a port of `weave` must look like, what
netlink shows of one, and the sysctls weaved may own.

A port's flags are weaved's contract with the bridge: sleeve's TAP is *isolated* like
`vxlan-6784`, so the bridge never forwards between the two overlays (a frame that came over
one is never sent again over the other); container ports are not isolated (they must reach
each other and both overlays); no port is in hairpin mode (a frame never goes back out where
it came from); every port but the VXLAN one learns and floods (sleeve relies on learning the
MACs behind the TAP). The VXLAN port's own flags live on its `link/vxlan-6784` object.
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


TAP_FLAGS = PortFlags(isolated=True)
CONTAINER_FLAGS = PortFlags(isolated=False)


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
        ),
        want.note,
    )


def observed_port(row: PortRow, note: str = "") -> Resource:
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
        ),
        note,
    )


def sysctl_key(name: str) -> str:
    return f"{Kind.SYSCTL.value}/{name}"


def sysctl_resource(name: str, value: str, note: str = "") -> Resource:
    return Resource(sysctl_key(name), Kind.SYSCTL, attrs(value=value), note)
