"""The services part of the firewall (pure): each service rule's DNAT and masquerade rules,
which come last in their chains (after `firewall.nft_resources`' rules).

Most service rules can sit anywhere among the chain's last rules (`any_order`), which lets an
edit of one be a delete and an add instead of a positioned write (dataplane/nft_delta.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from weaved.compile.firewall import quote_ifname, rule
from weaved.model.addresses import ipv4_address
from weaved.model.resources import BRIDGE, Resource
from weaved.spec.models import BindRule, ExportRule, ImportRule, RouteRule, Spec


def _endpoint(text: str) -> tuple[ipaddress.IPv4Address, int]:
    host, port = text.rsplit(":", 1)
    return ipv4_address(host), int(port)


# A DNAT rule's match: protocol, port, input interface (None: any), destination (None: any
# local address).
_Match = tuple[str, int, str | None, ipaddress.IPv4Address | None]


def _meet(one: str | None, other: str | None) -> bool:
    """Whether two rules' input interfaces (None: any; a final '*': every name starting so,
    as nft's iifname reads it) can name the same interface."""
    if one is None or other is None:
        return True
    a, b = one.removesuffix("*"), other.removesuffix("*")
    if one.endswith("*") and other.endswith("*"):
        return a.startswith(b) or b.startswith(a)
    if one.endswith("*"):
        return b.startswith(a)
    if other.endswith("*"):
        return a.startswith(b)
    return one == other


def overlapping(matches: dict[str, _Match]) -> set[str]:
    """The rule ids whose match some other rule's match overlaps: their order decides which
    DNAT applies, so they keep their place (any other service rule can go anywhere after
    the chain's ordered rules)."""
    by_port: dict[tuple[str, int], list[tuple[str, _Match]]] = {}
    for rule_id, match in matches.items():
        by_port.setdefault(match[:2], []).append((rule_id, match))
    out: set[str] = set()
    for group in by_port.values():
        for index, (one, (_, _, iif, daddr)) in enumerate(group):
            for other, (_, _, iif2, daddr2) in group[index + 1 :]:
                if _meet(iif, iif2) and (daddr in (None, daddr2) or daddr2 is None):
                    out |= {one, other}
    return out


def _by_direction(
    spec: Spec,
) -> tuple[list[tuple[str, ExportRule | RouteRule]], list[tuple[str, ImportRule | BindRule]]]:
    """The service rules by kind name: those reached from outside (export, route) and those
    reached from the overlay (import, bind), in the spec's order."""
    svc = spec.services
    inbound: list[tuple[str, ExportRule | RouteRule]] = [
        *(("export", r) for r in svc.export),
        *(("route", r) for r in svc.route),
    ]
    onward: list[tuple[str, ImportRule | BindRule]] = [
        *(("import", r) for r in svc.import_),
        *(("bind", r) for r in svc.bind),
    ]
    return inbound, onward


def _tied(spec: Spec) -> tuple[set[str], set[str]]:
    """The service rules of prerouting and of output whose place matters (`overlapping`)."""
    prerouting: dict[str, _Match] = {}
    output: dict[str, _Match] = {}
    inbound, onward = _by_direction(spec)
    for kind, ex in inbound:
        proto = ex.protocol.value
        prerouting[f"{kind}-{ex.name}"] = (proto, int(ex.port), ex.in_interface, None)
        output[f"{kind}-{ex.name}"] = (proto, int(ex.port), None, None)
    for kind, im in onward:
        ip, port = _endpoint(im.address)
        prerouting[f"{kind}-{im.name}"] = (im.protocol.value, port, BRIDGE, ip)
    return overlapping(prerouting), overlapping(output)


def service_resources(spec: Spec) -> Iterator[Resource]:
    """Each service's DNAT (prerouting, output) and masquerade (postrouting) rules, last in
    their chains. A masquerade rule's place never matters (every rule it could meet
    masquerades too, or returns multicast, which no service endpoint is); a DNAT rule's
    matters only when another service's match overlaps it (`overlapping`)."""
    br = quote_ifname(BRIDGE)
    tied_pre, tied_out = _tied(spec)
    inbound, onward = _by_direction(spec)
    for kind, ex in inbound:
        to_ip, to_port = _endpoint(ex.to)
        proto = ex.protocol.value
        iif = f"iifname {quote_ifname(ex.in_interface)} " if ex.in_interface else ""
        match = f"{proto} dport {int(ex.port)}"
        note = f"services.{kind} {ex.name}"
        dnat = f"fib daddr type local {match} dnat to {to_ip}:{to_port}"
        rid = f"{kind}-{ex.name}"
        yield rule("ip", "prerouting", rid, iif + dnat, note, rid not in tied_pre)
        yield rule("ip", "output", rid, dnat, note, rid not in tied_out)
        snat = f"oifname {br} ip daddr {to_ip} {proto} dport {to_port}"
        yield rule("ip", "postrouting", rid, f"{snat} ct status dnat masquerade", note, True)
    for kind, im in onward:
        ip, port = _endpoint(im.address)
        to_ip, to_port = _endpoint(im.to)
        proto = im.protocol.value
        note = f"services.{kind} {im.name}"
        rid = f"{kind}-{im.name}"
        yield rule(
            "ip",
            "prerouting",
            rid,
            f"iifname {br} ip daddr {ip} {proto} dport {port} dnat to {to_ip}:{to_port}",
            note,
            rid not in tied_pre,
        )
        yield rule(
            "ip",
            "postrouting",
            rid,
            f"ip daddr {to_ip} {proto} dport {to_port} ct status dnat masquerade",
            note,
            True,
        )
