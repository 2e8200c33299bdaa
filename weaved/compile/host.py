"""The host part of the desired State (pure): kernel settings the spec's features depend on,
the bridge ports the daemon's parts own, and the proof that the bridge is ours.

Settings. Routed traffic needs `net.ipv4.ip_forward` (exposed subnets reaching out, every
service rule: DNAT'd packets are forwarded to or from the bridge). Local access to an exported
service (`curl 127.0.0.1:8080` on the exporting host) needs `route_localnet` on the bridge:
the output-hook DNAT keeps the source 127.0.0.1, and the kernel refuses to route a loopback
source out of any device without it (no output-hook rule can change the source before that
routing decision; SNAT exists only after it). It is set on the bridge only, never for `all`
(Docker does the same for docker0), and a guard rule drops what route_localnet would let in
from the bridge: packets from containers to 127.0.0.0/8 (kube-proxy's fix for CVE-2020-8558).
Nothing is set when no feature needs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from weaved.compile.facts import Facts
from weaved.compile.firewall import rule
from weaved.errors import ConflictError
from weaved.model.host import (
    BRIDGE_ROUTE_LOCALNET,
    IP_FORWARD,
    PortRow,
    observed_port,
    port_key,
    port_resource,
    sysctl_key,
    sysctl_resource,
)
from weaved.model.resources import ALIAS, BRIDGE, Kind, Resource, State
from weaved.spec.models import Spec


def check_bridge_is_ours(facts: Facts) -> None:
    if facts.foreign_bridge:
        raise ConflictError(
            f'a link named "{BRIDGE}" exists that weaved did not create: {facts.foreign_bridge}\n'
            f"  weaved leaves it alone (its own bridge carries the alias {ALIAS!r})\n"
            f"  hint: if it is a leftover of Weave Net, run `weave reset`; otherwise remove or"
            f" rename it (`ip link del {BRIDGE}`) and apply again"
        )


def _routed(spec: Spec) -> str:
    """Why the host must forward (empty: it need not)."""
    svc = spec.services
    if svc.export or svc.import_ or svc.route or svc.bind:
        return "services are forwarded to and from the bridge"
    if spec.expose:
        return "exposed subnets are routed to and from the host"
    return ""


def sysctl_resources(spec: Spec) -> Iterator[Resource]:
    if why := _routed(spec):
        yield sysctl_resource(IP_FORWARD, "1", why)
    if spec.services.export or spec.services.route:
        yield sysctl_resource(
            BRIDGE_ROUTE_LOCALNET, "1", "local access to exported services (127.0.0.1:PORT)"
        )
        yield rule(
            "ip",
            "prerouting",
            "localnet-guard",
            f'iifname "{BRIDGE}" ip daddr 127.0.0.0/8 drop',
            "containers never reach the host's loopback (route_localnet is on)",
        )


def port_resources(facts: Facts) -> tuple[list[Resource], list[tuple[str, str]]]:
    """Ports whose link exists are wanted with their flags; the others are reported (their
    part recreates the link, or releases it if its container is gone)."""
    ports: list[Resource] = []
    missing: list[tuple[str, str]] = []
    for want in facts.wanted_ports:
        if want.name in facts.port_rows:
            ports.append(port_resource(want))
        else:
            missing.append((f"port {want.name} ({want.note})", "the link is missing; recreating"))
    return ports, missing


def observed_view(
    observed: State,
    desired: State,
    port_rows: Mapping[str, PortRow],
    sysctls: Mapping[str, str],
) -> State:
    """What weaved owns as the kernel has it: `observed` (objects proven ours) plus the ports
    and settings the desired state claims. A port is ours because a part's record names it,
    never because of its name; a setting weaved has not changed yet is shown with its value,
    so the plan says `value: 0 → 1`, and is never deleted (there is nothing to restore)."""
    extra: dict[str, Resource] = {}
    for want in desired.by_kind(Kind.PORT):
        name = want.key.split("/", 1)[1]
        if name in port_rows:
            extra[want.key] = observed_port(port_rows[name], want.note, ipv6=bool(want.get("ipv6")))
    for want in desired.by_kind(Kind.SYSCTL):
        name = want.key.split("/", 1)[1]
        if want.key not in observed and name in sysctls:
            extra[want.key] = sysctl_resource(name, sysctls[name], want.note)
    if not extra:
        return observed
    return State({**observed.resources, **extra})


def without_vanished_ports(state: State, port_rows: Mapping[str, PortRow]) -> State:
    """`state` less the ports whose link is gone (a container died meanwhile): the next plan
    reports them; they are no reason to call an apply failed."""
    gone = {r.key for r in state.by_kind(Kind.PORT) if r.key.split("/", 1)[1] not in port_rows}
    if not gone:
        return state
    return State({k: r for k, r in state.resources.items() if k not in gone})


def port_names(keys: Iterable[str]) -> list[str]:
    prefix = port_key("")
    return [k[len(prefix) :] for k in keys if k.startswith(prefix)]


__all__ = [
    "check_bridge_is_ours",
    "observed_view",
    "port_names",
    "port_resources",
    "sysctl_key",
    "sysctl_resources",
    "without_vanished_ports",
]
